//! Behind an authenticating gateway: the user is the gateway's user header, believed only
//! when the request also carries the gateway's shared secret, compared in constant time.

use std::path::{Path, PathBuf};

use axum::http::{HeaderMap, HeaderName};
use firstcome_contract::HeaderConfig;
use subtle::ConstantTimeEq;

use super::{RepeatedHeader, only_value};
use crate::user_id::{InvalidUserId, UserId};

#[derive(Debug, thiserror::Error)]
pub enum SecretFileError {
    #[error("reading the gateway secret file {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the gateway secret file {} is empty", path.display())]
    Empty { path: PathBuf },
    #[error("{0:?} is not a header name")]
    HeaderName(String),
}

/// Why a request's gateway headers are refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GatewayError {
    #[error("the request lacks the {0} header")]
    Missing(HeaderName),
    #[error("the gateway secret does not match")]
    WrongSecret,
    #[error(transparent)]
    Repeated(#[from] RepeatedHeader),
    #[error("the {header} header is not a valid user id")]
    InvalidUser {
        header: HeaderName,
        #[source]
        source: InvalidUserId,
    },
}

/// The gateway headers of one campaign and the secret they must carry.
pub struct GatewayHeaders {
    user: HeaderName,
    secret_header: HeaderName,
    secret: Vec<u8>,
}

impl GatewayHeaders {
    /// Reads the secret file (its bytes, one trailing newline dropped). A changed secret
    /// needs a restart.
    pub fn open(config: &HeaderConfig) -> Result<Self, SecretFileError> {
        let name = |n: &str| {
            HeaderName::from_bytes(n.as_bytes()).map_err(|_| SecretFileError::HeaderName(n.into()))
        };
        Ok(Self {
            user: name(&config.user_header)?,
            secret_header: name(&config.secret_header)?,
            secret: read_secret(&config.secret_file)?,
        })
    }

    /// The user the gateway vouches for. Either header sent twice is refused before
    /// anything else: which copy the gateway set is not for the issuer to guess.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<UserId, GatewayError> {
        let secret = only_value(headers, &self.secret_header)?;
        let user = only_value(headers, &self.user)?;
        let secret = secret.ok_or_else(|| GatewayError::Missing(self.secret_header.clone()))?;
        if !secret_matches(&self.secret, secret.as_bytes()) {
            return Err(GatewayError::WrongSecret);
        }
        let user = user.ok_or_else(|| GatewayError::Missing(self.user.clone()))?;
        let invalid = |source| GatewayError::InvalidUser {
            header: self.user.clone(),
            source,
        };
        let user = user
            .to_str()
            .map_err(|_| invalid(InvalidUserId::NotVisible))?;
        UserId::parse(user.to_string()).map_err(invalid)
    }
}

fn read_secret(path: &Path) -> Result<Vec<u8>, SecretFileError> {
    let mut secret = std::fs::read(path).map_err(|source| SecretFileError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    if secret.last() == Some(&b'\n') {
        secret.pop();
    }
    if secret.is_empty() {
        return Err(SecretFileError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(secret)
}

/// Whether `given` is the secret; the time taken depends on the lengths only, not on
/// where the bytes differ.
pub fn secret_matches(secret: &[u8], given: &[u8]) -> bool {
    secret.ct_eq(given).into()
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn gateway() -> GatewayHeaders {
        GatewayHeaders {
            user: HeaderName::from_static("x-user"),
            secret_header: HeaderName::from_static("x-gateway-secret"),
            secret: b"s3cret".to_vec(),
        }
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| (HeaderName::from_static(k), HeaderValue::from_static(v)))
            .collect()
    }

    #[test]
    fn only_the_exact_secret_matches() {
        assert!(secret_matches(b"s3cret", b"s3cret"));
        for wrong in [&b""[..], b"s3cre", b"s3cret ", b"S3cret", b"x3cret"] {
            assert!(!secret_matches(b"s3cret", wrong), "{wrong:?}");
        }
    }

    #[test]
    fn the_user_header_counts_only_with_the_secret() {
        let g = gateway();
        let ok = headers(&[("x-user", "alice"), ("x-gateway-secret", "s3cret")]);
        assert_eq!(g.authenticate(&ok).unwrap().as_str(), "alice");
        let wrong = headers(&[("x-user", "alice"), ("x-gateway-secret", "guess")]);
        assert_eq!(g.authenticate(&wrong), Err(GatewayError::WrongSecret));
        let no_secret = headers(&[("x-user", "alice")]);
        assert!(matches!(
            g.authenticate(&no_secret),
            Err(GatewayError::Missing(h)) if h == "x-gateway-secret"
        ));
        let no_user = headers(&[("x-gateway-secret", "s3cret")]);
        assert!(matches!(
            g.authenticate(&no_user),
            Err(GatewayError::Missing(h)) if h == "x-user"
        ));
    }

    #[test]
    fn either_header_sent_twice_is_refused() {
        let g = gateway();
        for twice in ["x-user", "x-gateway-secret"] {
            let mut sent = headers(&[("x-user", "alice"), ("x-gateway-secret", "s3cret")]);
            let copy = match twice {
                "x-user" => "mallory",
                _ => "s3cret",
            };
            sent.append(
                HeaderName::from_static(twice),
                HeaderValue::from_static(copy),
            );
            assert_eq!(
                g.authenticate(&sent),
                Err(GatewayError::Repeated(RepeatedHeader(
                    HeaderName::from_static(twice)
                ))),
                "{twice}"
            );
        }
    }

    #[test]
    fn secret_files_drop_one_newline_and_must_not_be_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, "s3cret\n").unwrap();
        assert_eq!(read_secret(&path).unwrap(), b"s3cret");
        std::fs::write(&path, "\n").unwrap();
        assert!(matches!(
            read_secret(&path),
            Err(SecretFileError::Empty { .. })
        ));
    }
}
