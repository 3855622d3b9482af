//! Who a campaign's issuer believes an apply comes from: its identity configuration.
//!
//! `none` trusts the `userId` of the body (the standalone demo); `jwt` verifies a bearer
//! token against keys in a directory or an identity provider's JWKS; `header` trusts a user header set by an
//! authenticating gateway, together with a shared secret header. The configuration holds
//! paths, never key material.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The claim a token names its user in, when the campaign does not say.
pub const DEFAULT_USER_CLAIM: &str = "sub";
/// Clock skew allowed on `exp` and `nbf`, when the campaign does not say.
pub const DEFAULT_LEEWAY_SECONDS: u64 = 30;
/// Most clock skew a campaign may allow: more would keep expired tokens alive.
pub const MAX_LEEWAY_SECONDS: u64 = 300;

/// How a campaign's issuer learns who applies. Absent in a campaigns file means `none`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "lowercase", deny_unknown_fields)]
pub enum IdentityConfig {
    /// The body's `userId` is believed: anyone may apply as anyone.
    #[default]
    None,
    /// `Authorization: Bearer <JWT>`, verified with the keys of `jwt.keysDir` or
    /// `jwt.jwksUrl`.
    Jwt { jwt: JwtConfig },
    /// A user header from an authenticating gateway, with its shared secret.
    Header { header: HeaderConfig },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JwtConfig {
    /// The `iss` every token must carry.
    pub issuer: String,
    /// The `aud` every token must carry (one of its values).
    pub audience: String,
    /// The claim holding the user id.
    #[serde(default = "default_user_claim")]
    pub user_claim: String,
    /// Clock skew allowed on `exp` and `nbf`.
    #[serde(default = "default_leeway_seconds")]
    pub leeway_seconds: u64,
    /// A directory of key files, one key each (a mounted Secret): PEM public keys
    /// (RSA, EC P-256, Ed25519) or an HMAC secret; the file name is the key's `kid`.
    /// Exactly one of `keysDir` and `jwksUrl`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys_dir: Option<PathBuf>,
    /// The identity provider's JSON Web Key Set (public keys only): `https`, or `http`
    /// to a loopback host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_url: Option<String>,
}

/// Where a campaign's token verification keys come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JwtKeys<'a> {
    Dir(&'a Path),
    Jwks(&'a str),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderConfig {
    /// The header the gateway puts the authenticated user id in.
    pub user_header: String,
    /// The header the gateway puts the shared secret in.
    pub secret_header: String,
    /// The file holding the shared secret (a mounted Secret).
    pub secret_file: PathBuf,
}

/// What is wrong with an identity configuration.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdentityConfigError {
    #[error("identity mode {0} needs its settings under {0}")]
    MissingSettings(&'static str),
    #[error("identity jwt: {0} must not be empty")]
    Empty(&'static str),
    #[error("identity jwt: give exactly one of keysDir and jwksUrl")]
    KeySource,
    #[error("identity jwt: jwksUrl must be an https URL (http only to a loopback host)")]
    JwksUrl,
    #[error("identity jwt: leewaySeconds must be at most {MAX_LEEWAY_SECONDS}")]
    LeewayTooLong,
    #[error("identity header: {0:?} is not a header name (use letters, digits and '-')")]
    InvalidHeaderName(String),
    #[error("identity header: userHeader and secretHeader must differ")]
    SameHeader,
}

fn default_user_claim() -> String {
    DEFAULT_USER_CLAIM.to_string()
}

fn default_leeway_seconds() -> u64 {
    DEFAULT_LEEWAY_SECONDS
}

impl IdentityConfig {
    pub fn is_none(&self) -> bool {
        matches!(self, Self::None)
    }

    /// The mode's name, as the API shows it.
    pub fn mode(&self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Jwt { .. } => "jwt",
            Self::Header { .. } => "header",
        }
    }

    pub fn validate(&self) -> Result<(), IdentityConfigError> {
        match self {
            Self::None => Ok(()),
            Self::Jwt { jwt } => jwt.validate(),
            Self::Header { header } => header.validate(),
        }
    }
}

impl JwtConfig {
    fn validate(&self) -> Result<(), IdentityConfigError> {
        for (field, value) in [
            ("issuer", &self.issuer),
            ("audience", &self.audience),
            ("userClaim", &self.user_claim),
        ] {
            if value.is_empty() {
                return Err(IdentityConfigError::Empty(field));
            }
        }
        self.keys()?;
        if self.leeway_seconds > MAX_LEEWAY_SECONDS {
            return Err(IdentityConfigError::LeewayTooLong);
        }
        Ok(())
    }
}

impl JwtConfig {
    /// Where the keys come from; an error unless exactly one source is given and usable.
    pub fn keys(&self) -> Result<JwtKeys<'_>, IdentityConfigError> {
        match (&self.keys_dir, &self.jwks_url) {
            (Some(dir), None) if dir.as_os_str().is_empty() => {
                Err(IdentityConfigError::Empty("keysDir"))
            }
            (Some(dir), None) => Ok(JwtKeys::Dir(dir)),
            (None, Some(url)) if is_jwks_url(url) => Ok(JwtKeys::Jwks(url)),
            (None, Some(_)) => Err(IdentityConfigError::JwksUrl),
            _ => Err(IdentityConfigError::KeySource),
        }
    }
}

/// An `https` URL, or an `http` one to a loopback host (a sidecar, a test's provider):
/// keys fetched in clear text from anywhere else could be swapped on the way.
fn is_jwks_url(url: &str) -> bool {
    let Ok(url) = url::Url::parse(url) else {
        return false;
    };
    let loopback = match url.host() {
        Some(url::Host::Domain(domain)) => domain == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => return false,
    };
    url.username().is_empty()
        && url.password().is_none()
        && (url.scheme() == "https" || (url.scheme() == "http" && loopback))
}

impl HeaderConfig {
    fn validate(&self) -> Result<(), IdentityConfigError> {
        for name in [&self.user_header, &self.secret_header] {
            if !is_header_name(name) {
                return Err(IdentityConfigError::InvalidHeaderName(name.clone()));
            }
        }
        if self.user_header.eq_ignore_ascii_case(&self.secret_header) {
            return Err(IdentityConfigError::SameHeader);
        }
        Ok(())
    }
}

/// [`is_header_name`] as a regular expression, for schemas.
pub const HEADER_NAME_PATTERN: &str = r"^[A-Za-z0-9-]+$";

/// A header name both HTTP and Kubernetes accept: letters, digits and '-'.
fn is_header_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<IdentityConfig, serde_json::Error> {
        serde_json::from_str(json)
    }

    fn jwt() -> JwtConfig {
        JwtConfig {
            issuer: "https://login.example".into(),
            audience: "coupons".into(),
            user_claim: DEFAULT_USER_CLAIM.into(),
            leeway_seconds: DEFAULT_LEEWAY_SECONDS,
            keys_dir: Some("/keys".into()),
            jwks_url: None,
        }
    }

    #[test]
    fn jwt_fills_claim_and_leeway() {
        let parsed = parse(
            r#"{"mode":"jwt","jwt":{"issuer":"https://login.example","audience":"coupons","keysDir":"/keys"}}"#,
        )
        .unwrap();
        assert_eq!(parsed, IdentityConfig::Jwt { jwt: jwt() });
        assert_eq!(parsed.validate(), Ok(()));
    }

    #[test]
    fn each_mode_needs_its_settings() {
        let no_jwt = parse(r#"{"mode":"jwt"}"#).unwrap_err();
        assert!(no_jwt.to_string().contains("jwt"), "{no_jwt}");
        let no_header = parse(r#"{"mode":"header"}"#).unwrap_err();
        assert!(no_header.to_string().contains("header"), "{no_header}");
        let no_keys = parse(r#"{"mode":"jwt","jwt":{"issuer":"i","audience":"a"}}"#).unwrap();
        assert_eq!(no_keys.validate(), Err(IdentityConfigError::KeySource));
        assert!(parse(r#"{"mode":"basic"}"#).is_err());
        assert_eq!(parse(r#"{"mode":"none"}"#).unwrap(), IdentityConfig::None);
    }

    #[test]
    fn validate_refuses_each_bad_field() {
        let empty_issuer = JwtConfig {
            issuer: String::new(),
            ..jwt()
        };
        assert_eq!(
            empty_issuer.validate(),
            Err(IdentityConfigError::Empty("issuer"))
        );
        let long = JwtConfig {
            leeway_seconds: MAX_LEEWAY_SECONDS + 1,
            ..jwt()
        };
        assert_eq!(long.validate(), Err(IdentityConfigError::LeewayTooLong));
        let header = |user: &str, secret: &str| HeaderConfig {
            user_header: user.into(),
            secret_header: secret.into(),
            secret_file: "/s".into(),
        };
        assert_eq!(header("x-user", "x-gateway-secret").validate(), Ok(()));
        assert_eq!(
            header("x user", "x-s").validate(),
            Err(IdentityConfigError::InvalidHeaderName("x user".into()))
        );
        assert_eq!(
            header("X-User", "x-user").validate(),
            Err(IdentityConfigError::SameHeader)
        );
    }

    #[test]
    fn keys_come_from_exactly_one_source() {
        let jwks = |url: &str| JwtConfig {
            keys_dir: None,
            jwks_url: Some(url.into()),
            ..jwt()
        };
        assert_eq!(jwt().keys(), Ok(JwtKeys::Dir(Path::new("/keys"))));
        let url = "https://login.example/.well-known/jwks.json";
        assert_eq!(jwks(url).keys(), Ok(JwtKeys::Jwks(url)));
        let both = JwtConfig {
            jwks_url: Some(url.into()),
            ..jwt()
        };
        assert_eq!(both.validate(), Err(IdentityConfigError::KeySource));
        let empty_dir = JwtConfig {
            keys_dir: Some(PathBuf::new()),
            ..jwt()
        };
        assert_eq!(
            empty_dir.validate(),
            Err(IdentityConfigError::Empty("keysDir"))
        );
    }

    #[test]
    fn a_jwks_url_is_https_or_loopback_http() {
        for good in [
            "https://login.example/jwks",
            "https://login.example:8443/jwks?x=1",
            "http://127.0.0.1:8080/jwks",
            "http://localhost/jwks",
            "http://[::1]:9000/jwks",
        ] {
            assert!(is_jwks_url(good), "{good}");
        }
        for bad in [
            "http://login.example/jwks",
            "http://127.0.0.1.evil.example/jwks",
            "http://localhost@evil.example/jwks",
            "ftp://login.example/jwks",
            "https://",
            "login.example/jwks",
        ] {
            assert!(!is_jwks_url(bad), "{bad}");
        }
    }
}
