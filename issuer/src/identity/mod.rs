//! Who an apply comes from, as each campaign's identity mode says: `jwt` verifies a
//! bearer token ([`jwt`], keys from [`keys`] or [`jwks`]), `header` believes an authenticating
//! gateway ([`header`]), `none` believes the body (the HTTP layer's `Caller` decides
//! what a request may claim).
//!
//! No error of this module holds a token or a secret: they may be logged as they are.

pub mod header;
pub mod jwks;
pub mod jwt;
pub mod keys;
pub mod token;

use axum::http::{HeaderMap, header::AUTHORIZATION};
use firstcome_contract::{IdentityConfig, IdentityConfigError};

use crate::user_id::UserId;
use header::{GatewayError, GatewayHeaders, SecretFileError};
use jwks::JwksError;
use jwt::JwtVerifier;
use keys::KeyError;
use token::TokenError;

/// How one campaign authenticates its callers.
pub enum Identity {
    /// The body's `userId` is believed.
    None,
    /// Boxed: one per campaign, and far larger than the other modes.
    Jwt(Box<JwtVerifier>),
    Header(GatewayHeaders),
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("the identity configuration")]
    Config(#[from] IdentityConfigError),
    #[error("loading the JWT keys")]
    Keys(#[from] KeyError),
    #[error("preparing the key set client")]
    Jwks(#[from] JwksError),
    #[error("loading the gateway secret")]
    Secret(#[from] SecretFileError),
}

/// Why a request is not authenticated.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("send the token as 'Authorization: Bearer <token>'")]
    MissingToken,
    #[error("the token is not valid")]
    InvalidToken(#[source] TokenError),
    /// Not the token's fault: the provider's key set cannot be fetched.
    #[error("the identity provider's keys are unavailable")]
    KeysUnavailable(#[source] JwksError),
    #[error("the gateway headers are not accepted")]
    Gateway(#[source] GatewayError),
}

impl Identity {
    /// Loads what `config` verifies with. A campaign in `none` is warned about, once.
    pub fn load(campaign: &str, config: &IdentityConfig) -> Result<Self, LoadError> {
        Ok(match config {
            IdentityConfig::None => {
                tracing::warn!(
                    campaign,
                    "identity none: the body's userId is believed, anyone can apply as anyone; use jwt or header outside a demo"
                );
                Self::None
            }
            IdentityConfig::Jwt { jwt } => Self::Jwt(Box::new(JwtVerifier::open(jwt)?)),
            IdentityConfig::Header { header } => Self::Header(GatewayHeaders::open(header)?),
        })
    }

    /// The authenticated user of a request; `None` under identity `none`.
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Option<UserId>, IdentityError> {
        match self {
            Self::None => Ok(None),
            Self::Jwt(verifier) => {
                let token = bearer_token(headers)?;
                verifier.verify(token).await.map(Some)
            }
            Self::Header(gateway) => gateway
                .authenticate(headers)
                .map(Some)
                .map_err(IdentityError::Gateway),
        }
    }
}

/// The token of `Authorization: Bearer <token>`; anything else is no token.
fn bearer_token(headers: &HeaderMap) -> Result<&str, IdentityError> {
    let value = headers
        .get(AUTHORIZATION)
        .ok_or(IdentityError::MissingToken)?;
    if value.len() > token::MAX_TOKEN_BYTES + "Bearer ".len() {
        return Err(IdentityError::InvalidToken(TokenError::Oversized));
    }
    let value = value.to_str().map_err(|_| IdentityError::MissingToken)?;
    match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => match token.trim() {
            "" => Err(IdentityError::MissingToken),
            token => Ok(token),
        },
        _ => Err(IdentityError::MissingToken),
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn with_authorization(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn only_a_bearer_scheme_carries_a_token() {
        for (value, token) in [("Bearer abc", "abc"), ("bearer  abc ", "abc")] {
            assert_eq!(bearer_token(&with_authorization(value)).unwrap(), token);
        }
        for none in ["", "Bearer", "Bearer ", "Basic YWxpY2U6cHc=", "abc"] {
            assert!(
                matches!(
                    bearer_token(&with_authorization(none)),
                    Err(IdentityError::MissingToken)
                ),
                "{none:?}"
            );
        }
        assert!(matches!(
            bearer_token(&HeaderMap::new()),
            Err(IdentityError::MissingToken)
        ));
        let huge = format!("Bearer {}", "a".repeat(token::MAX_TOKEN_BYTES + 1));
        assert!(matches!(
            bearer_token(&with_authorization(&huge)),
            Err(IdentityError::InvalidToken(TokenError::Oversized))
        ));
    }
}
