//! Bearer tokens from any bytes: never a panic; a token of anything but visible ASCII is
//! malformed, and one over the size bound is refused, before it is parsed; a token verifies only with an algorithm its key allows (an HMAC
//! token never with the RSA key: no algorithm confusion), and then names the user its
//! own `sub` claim holds. The seeds are signed with the HMAC secret below, so mutations
//! reach the claim checks.
#![no_main]

#[path = "../../issuer/src/identity/token.rs"]
mod token;
#[path = "../../issuer/src/user_id.rs"]
mod user_id;

use std::sync::LazyLock;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use libfuzzer_sys::fuzz_target;
use token::{KeyUse, MAX_TOKEN_BYTES, TokenError};

const HMAC_SECRET: &[u8] = b"fuzz-only-hmac-secret-of-32-bytes!!";
const RSA_PUBLIC: &[u8] =
    include_bytes!("../../issuer/tests/fixtures/identity/test-only-rsa.pub.pem");
const HMAC: &[Algorithm] = &[Algorithm::HS256, Algorithm::HS384, Algorithm::HS512];
const RSA: &[Algorithm] = &[Algorithm::RS256, Algorithm::PS256];

static KEYS: LazyLock<[(DecodingKey, &[Algorithm]); 2]> = LazyLock::new(|| {
    [
        (DecodingKey::from_secret(HMAC_SECRET).unwrap(), HMAC),
        (DecodingKey::from_rsa_pem(RSA_PUBLIC).unwrap(), RSA),
    ]
});

static VALIDATION: LazyLock<Validation> = LazyLock::new(|| {
    let mut validation = Validation::default();
    validation.set_issuer(&["https://login.fuzz"]);
    validation.set_audience(&["coupons"]);
    validation.set_required_spec_claims(&["exp", "iss", "aud"]);
    validation.validate_nbf = true;
    validation
});

/// The `sub` of a token's payload, read without any check.
fn unverified_sub(token: &str) -> Option<String> {
    let payload = URL_SAFE_NO_PAD.decode(token.split('.').nth(1)?).ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&payload).ok()?;
    claims["sub"].as_str().map(str::to_string)
}

fuzz_target!(|data: &[u8]| {
    let raw = match token::text(data) {
        Ok(raw) => raw,
        Err(TokenError::NotAscii) => return assert!(!data.iter().all(u8::is_ascii_graphic)),
        Err(other) => panic!("only NotAscii from text(): {other}"),
    };
    assert_eq!(raw.as_bytes(), data);
    let header = match token::header(raw) {
        Err(TokenError::Oversized) => return assert!(raw.len() > MAX_TOKEN_BYTES),
        Err(_) => return,
        Ok(header) => header,
    };
    assert!(raw.len() <= MAX_TOKEN_BYTES);
    for (decoding, algorithms) in KEYS.iter() {
        let key = KeyUse {
            decoding,
            algorithms,
        };
        if let Ok(user) = token::verify(raw, &header, key, &VALIDATION, "sub") {
            assert!(
                algorithms.contains(&header.alg),
                "verified with {:?}",
                header.alg
            );
            assert_eq!(Some(user.as_str().to_string()), unverified_sub(raw));
        }
    }
});
