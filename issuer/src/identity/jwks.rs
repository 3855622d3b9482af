//! Keys from an identity provider's JSON Web Key Set. The set is fetched when a token
//! names a key not seen yet — at most once per [`REFETCH_ON_MISS`], however many tokens
//! name unknown keys, the tokens waiting for that one fetch — and again in the
//! background once the last fetch is older than [`REFETCH_ANYWAY`], so a key the
//! provider rotates in is used, and one it drops refused, without a restart.
//!
//! Only public keys are taken (RSA, EC P-256/P-384, Ed25519), each for the algorithms
//! of its type, or the one its `alg` names: a symmetric (`oct`) key served over the
//! network is refused, as is an HMAC token (algorithm confusion).

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::DecodingKey;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, PublicKeyUse};

use super::keys::{EC_P256, EC_P384, ED, Key, KeySet, RSA};

/// Least time between two fetches caused by tokens naming unknown keys.
pub const REFETCH_ON_MISS: Duration = Duration::from_secs(10);
/// Most time a fetched set is trusted, so dropped keys stop working.
const REFETCH_ANYWAY: Duration = Duration::from_secs(300);
/// Longest a fetch may take, connection included.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest key set read: far above any provider's, short of a memory cost.
const MAX_JWKS_BYTES: usize = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    #[error("building the HTTP client")]
    Client(#[source] reqwest::Error),
    #[error("fetching the key set")]
    Fetch(#[source] reqwest::Error),
    #[error("the key set answer is larger than {MAX_JWKS_BYTES} bytes")]
    TooLarge,
    #[error("the key set is not a JSON Web Key Set")]
    Malformed(#[source] serde_json::Error),
    #[error("the key set could not be fetched lately; tokens naming unknown keys wait for it")]
    Unavailable,
}

/// Why one key of a set is not used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JwkProblem {
    #[error("a symmetric key does not belong in a public key set")]
    Symmetric,
    #[error("an encryption key, not a signing key")]
    NotForSigning,
    #[error("its alg is not one its key type signs with")]
    AlgorithmMismatch,
    #[error("an unsupported key type or curve")]
    Unsupported,
    #[error("its parameters are not a valid key")]
    Invalid,
}

/// The keys of a set by `kid` (a key without one is kept under the empty name, so a
/// set of one key serves tokens without `kid`), and the problem of each key skipped.
pub fn key_set(set: &JwkSet) -> (KeySet, Vec<(Option<String>, JwkProblem)>) {
    let mut problems = Vec::new();
    let keys = set.keys.iter().filter_map(|jwk| match key_of(jwk) {
        Ok(key) => Some((jwk.common.key_id.clone().unwrap_or_default(), key)),
        Err(problem) => {
            problems.push((jwk.common.key_id.clone(), problem));
            None
        }
    });
    (KeySet::from_keys(keys), problems)
}

/// The verification key one JWK holds.
fn key_of(jwk: &Jwk) -> Result<Key, JwkProblem> {
    if matches!(
        jwk.common.public_key_use,
        Some(PublicKeyUse::Encryption | PublicKeyUse::Other(_))
    ) {
        return Err(JwkProblem::NotForSigning);
    }
    let algorithms = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => RSA,
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => EC_P256,
            EllipticCurve::P384 => EC_P384,
            _ => return Err(JwkProblem::Unsupported),
        },
        AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => ED,
        AlgorithmParameters::OctetKey(_) => return Err(JwkProblem::Symmetric),
        _ => return Err(JwkProblem::Unsupported),
    };
    let algorithms = match jwk.common.key_algorithm {
        None => algorithms.to_vec(),
        Some(named) => {
            let named: jsonwebtoken::Algorithm = named
                .try_into()
                .map_err(|_| JwkProblem::AlgorithmMismatch)?;
            if !algorithms.contains(&named) {
                return Err(JwkProblem::AlgorithmMismatch);
            }
            vec![named]
        }
    };
    let decoding = DecodingKey::from_jwk(jwk).map_err(|_| JwkProblem::Invalid)?;
    Ok(Key {
        decoding,
        algorithms,
    })
}

/// When the set was last fetched, and whether that worked.
#[derive(Clone, Copy)]
struct LastFetch {
    at: Instant,
    ok: bool,
}

/// A provider's key set as the issuer serves it.
pub struct JwksKeys {
    url: String,
    client: reqwest::Client,
    keys: RwLock<Arc<KeySet>>,
    /// Held while fetching, so concurrent misses wait for one fetch.
    last_fetch: tokio::sync::Mutex<Option<LastFetch>>,
}

impl JwksKeys {
    /// Nothing is fetched yet: the first token fetches the set.
    pub fn open(url: &str) -> Result<Arc<Self>, JwksError> {
        let client = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(JwksError::Client)?;
        Ok(Arc::new(Self {
            url: url.to_string(),
            client,
            keys: RwLock::default(),
            last_fetch: tokio::sync::Mutex::new(None),
        }))
    }

    /// The key a token names (see [`KeySet::get`]). An unknown one waits for a fetch,
    /// unless one was made less than [`REFETCH_ON_MISS`] ago; an error when the set
    /// could not be fetched, so the caller cannot tell a new key from a forged one.
    pub async fn key(self: &Arc<Self>, kid: Option<&str>) -> Result<Option<Arc<Key>>, JwksError> {
        if let Some(key) = self.current().get(kid) {
            self.refresh_in_background_if_old();
            return Ok(Some(key));
        }
        match self.refresh(REFETCH_ON_MISS).await {
            LastFetch { ok: true, .. } => Ok(self.current().get(kid)),
            LastFetch { ok: false, .. } => Err(JwksError::Unavailable),
        }
    }

    fn current(&self) -> Arc<KeySet> {
        Arc::clone(&self.keys.read().unwrap_or_else(|e| e.into_inner()))
    }

    fn refresh_in_background_if_old(self: &Arc<Self>) {
        let Ok(last) = self.last_fetch.try_lock() else {
            return; // a fetch is under way
        };
        if last.is_some_and(|last| last.at.elapsed() < REFETCH_ANYWAY) {
            return;
        }
        drop(last);
        let keys = Arc::clone(self);
        tokio::spawn(async move { keys.refresh(REFETCH_ANYWAY).await });
    }

    /// Fetches the set unless the last fetch is younger than `age`; that fetch's outcome.
    async fn refresh(&self, age: Duration) -> LastFetch {
        let mut last = self.last_fetch.lock().await;
        if let Some(recent) = last.filter(|last| last.at.elapsed() < age) {
            return recent;
        }
        let fetched = self.fetch().await;
        let ok = fetched.is_ok();
        match fetched {
            Ok(keys) => *self.keys.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(keys),
            // Keep the keys known: a provider briefly down must not refuse every token.
            Err(error) => {
                tracing::warn!(error = ?error, url = %self.url, "keeping the keys fetched before")
            }
        }
        *last = Some(LastFetch {
            at: Instant::now(),
            ok,
        });
        last.expect("just set")
    }

    async fn fetch(&self) -> Result<KeySet, JwksError> {
        let mut response = (self.client.get(&self.url).send().await)
            .and_then(reqwest::Response::error_for_status)
            .map_err(JwksError::Fetch)?;
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(JwksError::Fetch)? {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err(JwksError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        let set: JwkSet = serde_json::from_slice(&body).map_err(JwksError::Malformed)?;
        let (keys, problems) = key_set(&set);
        for (kid, problem) in problems {
            tracing::warn!(kid, error = %problem, "skipping a key of the key set");
        }
        tracing::debug!(url = %self.url, keys = keys.len(), "fetched the key set");
        Ok(keys)
    }
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::jwk::KeyAlgorithm;
    use jsonwebtoken::{Algorithm, EncodingKey};

    use super::*;

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/identity");

    fn jwk(private_pem: &str, alg: Algorithm, kid: &str) -> Jwk {
        let pem = std::fs::read(format!("{FIXTURES}/{private_pem}")).unwrap();
        let encoding = match alg {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(&pem),
            Algorithm::ES256 => EncodingKey::from_ec_pem(&pem),
            _ => EncodingKey::from_ed_pem(&pem),
        };
        let mut jwk = Jwk::from_encoding_key(&encoding.unwrap(), alg).unwrap();
        jwk.common.key_id = Some(kid.to_string());
        jwk.common.key_algorithm = None;
        jwk
    }

    fn algorithms(jwk: &Jwk) -> Result<Vec<Algorithm>, JwkProblem> {
        key_of(jwk).map(|key| key.algorithms)
    }

    #[test]
    fn each_public_key_verifies_its_own_algorithms() {
        let rsa = jwk("test-only-rsa.key", Algorithm::RS256, "r");
        assert_eq!(algorithms(&rsa).unwrap(), RSA);
        let ec = jwk("test-only-ec.key", Algorithm::ES256, "e");
        assert_eq!(algorithms(&ec).unwrap(), EC_P256);
        let ed = jwk("test-only-ed25519.key", Algorithm::EdDSA, "d");
        assert_eq!(algorithms(&ed).unwrap(), ED);
    }

    #[test]
    fn a_named_alg_narrows_the_key_to_it_and_must_fit_its_type() {
        let mut rsa = jwk("test-only-rsa.key", Algorithm::RS256, "r");
        rsa.common.key_algorithm = Some(KeyAlgorithm::PS256);
        assert_eq!(algorithms(&rsa).unwrap(), [Algorithm::PS256]);
        rsa.common.key_algorithm = Some(KeyAlgorithm::HS256);
        assert_eq!(algorithms(&rsa), Err(JwkProblem::AlgorithmMismatch));
        rsa.common.key_algorithm = Some(KeyAlgorithm::RSA1_5);
        assert_eq!(algorithms(&rsa), Err(JwkProblem::AlgorithmMismatch));
    }

    #[test]
    fn symmetric_and_encryption_keys_are_skipped() {
        let set: JwkSet = serde_json::from_value(serde_json::json!({ "keys": [
            { "kty": "oct", "kid": "s", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA" },
            { "kty": "RSA", "kid": "enc", "use": "enc", "n": "AQAB", "e": "AQAB" },
        ]}))
        .unwrap();
        let mut with_rsa = set.clone();
        with_rsa
            .keys
            .push(jwk("test-only-rsa.key", Algorithm::RS256, "r"));
        let (keys, problems) = key_set(&with_rsa);
        assert_eq!(keys.len(), 1);
        assert!(keys.get(Some("r")).is_some());
        assert!(keys.get(Some("s")).is_none());
        assert_eq!(
            problems,
            [
                (Some("s".to_string()), JwkProblem::Symmetric),
                (Some("enc".to_string()), JwkProblem::NotForSigning),
            ]
        );
    }

    #[test]
    fn a_single_key_without_kid_serves_tokens_without_kid() {
        let mut only = jwk("test-only-ec.key", Algorithm::ES256, "unused");
        only.common.key_id = None;
        let (keys, problems) = key_set(&JwkSet { keys: vec![only] });
        assert!(problems.is_empty());
        assert!(keys.get(None).is_some());
    }
}
