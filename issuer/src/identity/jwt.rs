//! Bearer tokens of one campaign: the key a token's `kid` names, from a keys directory
//! or a provider's key set, then the token's own checks ([`super::token`]).

use std::sync::Arc;

use firstcome_contract::{JwtConfig, JwtKeys};
use jsonwebtoken::Validation;

use super::jwks::{JwksError, JwksKeys};
use super::keys::{Key, KeyDir};
use super::token::{self, KeyUse, TokenError};
use super::{IdentityError, LoadError};
use crate::user_id::UserId;

/// Where one campaign's verification keys come from.
enum KeySource {
    Dir(KeyDir),
    Jwks(Arc<JwksKeys>),
}

impl KeySource {
    async fn key(&self, kid: Option<&str>) -> Result<Option<Arc<Key>>, JwksError> {
        match self {
            Self::Dir(dir) => Ok(dir.key(kid)),
            Self::Jwks(jwks) => jwks.key(kid).await,
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
    pub async fn verify(&self, token: &str) -> Result<UserId, IdentityError> {
        let header = token::header(token).map_err(IdentityError::InvalidToken)?;
        let key = (self.keys.key(header.kid.as_deref()).await)
            .map_err(IdentityError::KeysUnavailable)?
            .ok_or(IdentityError::InvalidToken(TokenError::UnknownKey))?;
        let key = KeyUse {
            decoding: &key.decoding,
            algorithms: &key.algorithms,
        };
        token::verify(token, &header, key, &self.validation, &self.user_claim)
            .map_err(IdentityError::InvalidToken)
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
