//! Bearer tokens for the tests, signed with the test-only keys of
//! issuer/tests/fixtures/identity: what an identity provider would hand a user.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::json;

/// The `iss` the tests' campaigns require.
pub const ISSUER: &str = "https://login.test";
/// The `aud` the tests' campaigns require.
pub const AUDIENCE: &str = "coupons";
/// The `kid` of the fixture RSA key, and its file name in a keys directory.
pub const KID: &str = "rsa-1";
/// Signs the real tokens; its public key is what a keys directory holds.
pub const SIGNER: &str = "test-only-rsa.key";
/// Signs forged tokens: its public key is in no keys directory.
pub const FORGER: &str = "test-only-rsa-forger.key";

const FIXTURES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../issuer/tests/fixtures/identity"
);

pub fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(Path::new(FIXTURES).join(name)).unwrap()
}

/// The issuer flags of identity jwt with the keys of `keys_dir`, [`ISSUER`] and
/// [`AUDIENCE`].
pub fn jwt_flags(keys_dir: &str) -> [&str; 8] {
    [
        "--identity",
        "jwt",
        "--jwt-keys-dir",
        keys_dir,
        "--jwt-issuer",
        ISSUER,
        "--jwt-audience",
        AUDIENCE,
    ]
}

/// A fresh keys directory holding the public key of [`SIGNER`] as [`KID`].
pub fn keys_dir() -> PathBuf {
    let keys = crate::issuer::temp_dir("identity-keys");
    std::fs::write(keys.join(KID), fixture("test-only-rsa.pub.pem")).unwrap();
    keys
}

/// An RS256 token (kid [`KID`]) for `user` signed with the fixture key `private`,
/// expiring at `exp` (seconds since the epoch).
pub fn token(private: &str, user: &str, exp: i64) -> String {
    signed(private, KID, user, exp)
}

/// A token for `user` naming key `kid`, signed with the fixture key `private` (ES256
/// for the EC key, RS256 for the others).
pub fn signed(private: &str, kid: &str, user: &str, exp: i64) -> String {
    signed_for((ISSUER, AUDIENCE), private, kid, user, exp)
}

/// A token of issuer and audience `(iss, aud)` for `user` naming key `kid`, signed with
/// the fixture key `private`.
pub fn signed_for(
    (iss, aud): (&str, &str),
    private: &str,
    kid: &str,
    user: &str,
    exp: i64,
) -> String {
    let claims = json!({ "sub": user, "iss": iss, "aud": aud, "exp": exp });
    let (alg, key) = encoding_key(private);
    let header = Header {
        kid: Some(kid.into()),
        ..Header::new(alg)
    };
    encode(&header, &claims, &key).unwrap()
}

/// RS256 tokens (kid [`KID`], signed by [`SIGNER`]) for each of `users`, expiring at
/// `exp`: user → token. Reads and parses the key once (per token, that took most of
/// the ~130 ms each token cost in a debug build).
pub fn tokens_for(users: &[String], exp: i64) -> HashMap<String, String> {
    let (alg, key) = encoding_key(SIGNER);
    let header = Header {
        kid: Some(KID.into()),
        ..Header::new(alg)
    };
    users
        .iter()
        .map(|user| {
            let claims = json!({ "sub": user, "iss": ISSUER, "aud": AUDIENCE, "exp": exp });
            (user.clone(), encode(&header, &claims, &key).unwrap())
        })
        .collect()
}

/// The fixture private key `private` and the algorithm it signs with.
pub fn encoding_key(private: &str) -> (Algorithm, EncodingKey) {
    let pem = fixture(private);
    match private.contains("-ec") {
        true => (Algorithm::ES256, EncodingKey::from_ec_pem(&pem).unwrap()),
        false => (Algorithm::RS256, EncodingKey::from_rsa_pem(&pem).unwrap()),
    }
}

pub fn in_five_minutes() -> i64 {
    chrono::Utc::now().timestamp() + 300
}
