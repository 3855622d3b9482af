//! A bearer token's own checks, apart from where its key comes from: its size, its
//! header, then — given the key its `kid` names — the algorithms that key allows, its
//! signature, `iss`, `aud`, `exp` and `nbf`, and the claim naming the user.
//!
//! Self-contained (jsonwebtoken, serde_json and the user id only), so the fuzz target
//! `token` compiles it as it is (fuzz/fuzz_targets/token.rs).

use jsonwebtoken::{Algorithm, DecodingKey, Header, Validation, decode, decode_header};
use serde_json::{Map, Value};

use crate::user_id::{InvalidUserId, UserId};

/// Longest token considered: far above any real one, short of a memory cost.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Why a token is refused. Never holds the token itself, so logging it leaks nothing.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("the token is longer than {MAX_TOKEN_BYTES} bytes")]
    Oversized,
    #[error("the token is not a well-formed JWT with a supported algorithm")]
    Malformed(#[source] jsonwebtoken::errors::Error),
    #[error("the token is not a well-formed JWT: it holds characters other than visible ASCII")]
    NotAscii,
    #[error("the token names no key this issuer knows")]
    UnknownKey,
    #[error("the token's algorithm is not one its key may sign with")]
    AlgorithmNotAllowed,
    #[error("the token is refused")]
    Refused(#[source] jsonwebtoken::errors::Error),
    #[error("the token has no string claim {0:?}")]
    NoUserClaim(String),
    #[error("the token's claim {claim:?} is not a valid user id")]
    InvalidUser {
        claim: String,
        #[source]
        source: InvalidUserId,
    },
}

/// A bearer token's text: a JWT is base64url and dots, so a token with anything but
/// visible ASCII is malformed, before it is parsed.
pub fn text(token: &[u8]) -> Result<&str, TokenError> {
    match token.iter().all(u8::is_ascii_graphic) {
        true => std::str::from_utf8(token).map_err(|_| TokenError::NotAscii),
        false => Err(TokenError::NotAscii),
    }
}

/// The header of a token not over [`MAX_TOKEN_BYTES`]: its `alg` and `kid`, unchecked.
pub fn header(token: &str) -> Result<Header, TokenError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(TokenError::Oversized);
    }
    decode_header(token).map_err(TokenError::Malformed)
}

/// A token's key, and the algorithms a token signed with it may name.
pub struct KeyUse<'a> {
    pub decoding: &'a DecodingKey,
    pub algorithms: &'a [Algorithm],
}

/// The user a token vouches for, its `header` read by [`header`] and `key` the one
/// its `kid` names; `validation` holds the campaign's `iss`, `aud` and leeway.
pub fn verify(
    token: &str,
    header: &Header,
    key: KeyUse<'_>,
    validation: &Validation,
    user_claim: &str,
) -> Result<UserId, TokenError> {
    if !key.algorithms.contains(&header.alg) {
        return Err(TokenError::AlgorithmNotAllowed);
    }
    let mut validation = validation.clone();
    validation.algorithms = key.algorithms.to_vec();
    let claims = decode::<Map<String, Value>>(token, key.decoding, &validation)
        .map_err(TokenError::Refused)?
        .claims;
    user_of(&claims, user_claim)
}

/// The user a verified token's claims name.
pub fn user_of(claims: &Map<String, Value>, claim: &str) -> Result<UserId, TokenError> {
    let raw = claims
        .get(claim)
        .and_then(Value::as_str)
        .ok_or_else(|| TokenError::NoUserClaim(claim.to_string()))?;
    UserId::parse(raw.to_string()).map_err(|source| TokenError::InvalidUser {
        claim: claim.to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn claims(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn the_configured_claim_names_the_user() {
        let c = claims(json!({ "sub": "alice", "email": "a@example.com" }));
        assert_eq!(user_of(&c, "sub").unwrap().as_str(), "alice");
        assert_eq!(user_of(&c, "email").unwrap().as_str(), "a@example.com");
    }

    #[test]
    fn a_missing_or_invalid_claim_is_refused() {
        let c = claims(json!({ "sub": "a b", "n": 42 }));
        assert!(matches!(
            user_of(&c, "sub"),
            Err(TokenError::InvalidUser {
                source: InvalidUserId::NotVisible,
                ..
            })
        ));
        assert!(matches!(user_of(&c, "n"), Err(TokenError::NoUserClaim(_))));
        assert!(matches!(
            user_of(&c, "email"),
            Err(TokenError::NoUserClaim(_))
        ));
    }
}
