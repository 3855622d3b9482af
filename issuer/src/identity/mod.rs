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

use axum::http::{HeaderMap, HeaderName, HeaderValue, header::AUTHORIZATION};
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
    /// Which value to believe is not for the issuer to guess: a gateway that appends its
    /// header instead of replacing it would let the client's own through.
    #[error(transparent)]
    Repeated(#[from] RepeatedHeader),
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

/// A request carrying a header that must come once more than once.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the request carries the {0} header more than once: send it once")]
pub struct RepeatedHeader(pub HeaderName);

/// The one value of header `name`, if present; refused when it comes more than once.
pub fn only_value<'a>(
    headers: &'a HeaderMap,
    name: &HeaderName,
) -> Result<Option<&'a HeaderValue>, RepeatedHeader> {
    let mut values = headers.get_all(name).iter();
    match (values.next(), values.next()) {
        (first, None) => Ok(first),
        _ => Err(RepeatedHeader(name.clone())),
    }
}

/// The token of `Authorization: Bearer <token>`; any other scheme is no token, a bearer
/// token that is not visible ASCII a malformed one.
fn bearer_token(headers: &HeaderMap) -> Result<&str, IdentityError> {
    let value = only_value(headers, &AUTHORIZATION)?.ok_or(IdentityError::MissingToken)?;
    if value.len() > token::MAX_TOKEN_BYTES + "Bearer ".len() {
        return Err(IdentityError::InvalidToken(TokenError::Oversized));
    }
    let value = value.as_bytes();
    let Some(space) = value.iter().position(|b| *b == b' ') else {
        return Err(IdentityError::MissingToken);
    };
    let (scheme, token) = (&value[..space], value[space + 1..].trim_ascii());
    if !scheme.eq_ignore_ascii_case(b"bearer") || token.is_empty() {
        return Err(IdentityError::MissingToken);
    }
    token::text(token).map_err(IdentityError::InvalidToken)
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

    #[test]
    fn a_bearer_token_beyond_visible_ascii_is_malformed() {
        for value in [&b"Bearer ab\xc3\xa9c"[..], b"Bearer \xff", b"bearer a\tb"] {
            let mut headers = HeaderMap::new();
            headers.insert(AUTHORIZATION, HeaderValue::from_bytes(value).unwrap());
            assert!(
                matches!(
                    bearer_token(&headers),
                    Err(IdentityError::InvalidToken(TokenError::NotAscii))
                ),
                "{value:?}"
            );
        }
        let mut basic = HeaderMap::new();
        basic.insert(
            AUTHORIZATION,
            HeaderValue::from_bytes(b"Basic \xff").unwrap(),
        );
        assert!(matches!(
            bearer_token(&basic),
            Err(IdentityError::MissingToken)
        ));
    }

    #[test]
    fn a_header_sent_twice_is_refused() {
        let mut headers = with_authorization("Bearer abc");
        assert_eq!(
            only_value(&headers, &AUTHORIZATION).unwrap(),
            Some(&HeaderValue::from_static("Bearer abc"))
        );
        headers.append(AUTHORIZATION, HeaderValue::from_static("Bearer def"));
        assert_eq!(
            only_value(&headers, &AUTHORIZATION),
            Err(RepeatedHeader(AUTHORIZATION))
        );
        assert!(matches!(
            bearer_token(&headers),
            Err(IdentityError::Repeated(RepeatedHeader(name))) if name == AUTHORIZATION
        ));
        assert_eq!(only_value(&HeaderMap::new(), &AUTHORIZATION), Ok(None));
    }
}
