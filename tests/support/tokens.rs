//! Bearer tokens for the tests, signed with the test-only keys of
//! issuer/tests/fixtures/identity: what an identity provider would hand a user.

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

/// A fresh keys directory holding the public key of [`SIGNER`] as [`KID`].
pub fn keys_dir() -> PathBuf {
    let keys = crate::issuer::temp_dir("identity-keys");
    std::fs::write(keys.join(KID), fixture("test-only-rsa.pub.pem")).unwrap();
    keys
}

/// An RS256 token (kid [`KID`]) for `user` signed with the fixture key `private`,
/// expiring at `exp` (seconds since the epoch).
pub fn token(private: &str, user: &str, exp: i64) -> String {
    let claims = json!({ "sub": user, "iss": ISSUER, "aud": AUDIENCE, "exp": exp });
    let header = Header {
        kid: Some(KID.into()),
        ..Header::new(Algorithm::RS256)
    };
    let key = EncodingKey::from_rsa_pem(&fixture(private)).unwrap();
    encode(&header, &claims, &key).unwrap()
}

pub fn in_five_minutes() -> i64 {
    chrono::Utc::now().timestamp() + 300
}
