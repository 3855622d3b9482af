//! Bearer tokens: a JWT's signature checked with the key its `kid` names (from a keys
//! directory or a provider's key set), its `iss`, `aud`, `exp` and `nbf` checked, and
//! its user claim turned into the applying user.

use std::sync::Arc;

use firstcome_contract::{JwtConfig, JwtKeys};
use jsonwebtoken::{Validation, decode, decode_header};
use serde_json::{Map, Value};

use super::LoadError;
use super::jwks::{JwksError, JwksKeys};
use super::keys::{Key, KeyDir};
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
    #[error("the token names no key this issuer knows")]
    UnknownKey,
    /// Not the token's fault: the provider's key set cannot be fetched.
    #[error("the identity provider's keys are unavailable")]
    KeysUnavailable(#[source] JwksError),
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

/// Where one campaign's verification keys come from.
enum KeySource {
    Dir(KeyDir),
    Jwks(Arc<JwksKeys>),
}

impl KeySource {
    async fn key(&self, kid: Option<&str>) -> Result<Option<Arc<Key>>, TokenError> {
        match self {
            Self::Dir(dir) => Ok(dir.key(kid)),
            Self::Jwks(jwks) => jwks.key(kid).await.map_err(TokenError::KeysUnavailable),
        }
    }
}

/// Verifies the tokens of one campaign.
pub struct JwtVerifier {
    keys: KeySource,
    /// `iss`, `aud`, leeway and required claims; the algorithms come from each key.
    validation: Validation,
    user_claim: String,
}

impl JwtVerifier {
    pub fn open(config: &JwtConfig) -> Result<Self, LoadError> {
        let keys = match config.keys()? {
            JwtKeys::Dir(dir) => KeySource::Dir(KeyDir::open(dir)?),
            JwtKeys::Jwks(url) => KeySource::Jwks(JwksKeys::open(url)?),
        };
        Ok(Self {
            keys,
            validation: validation(config),
            user_claim: config.user_claim.clone(),
        })
    }

    /// The user a token vouches for.
    pub async fn verify(&self, token: &str) -> Result<UserId, TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::Oversized);
        }
        let header = decode_header(token).map_err(TokenError::Malformed)?;
        let key = (self.keys.key(header.kid.as_deref()).await?).ok_or(TokenError::UnknownKey)?;
        if !key.algorithms.contains(&header.alg) {
            return Err(TokenError::AlgorithmNotAllowed);
        }
        let mut validation = self.validation.clone();
        validation.algorithms = key.algorithms.clone();
        let claims = decode::<Map<String, Value>>(token, &key.decoding, &validation)
            .map_err(TokenError::Refused)?
            .claims;
        user_of(&claims, &self.user_claim)
    }
}

/// What every token of the campaign must satisfy besides its signature.
fn validation(config: &JwtConfig) -> Validation {
    let mut validation = Validation::default();
    validation.set_issuer(&[&config.issuer]);
    validation.set_audience(&[&config.audience]);
    validation.set_required_spec_claims(&["exp", "iss", "aud"]);
    validation.validate_nbf = true;
    validation.leeway = config.leeway_seconds;
    validation
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
