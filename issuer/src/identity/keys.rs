//! The keys a campaign's tokens are verified with: one file each in a directory (a
//! mounted Secret), named by the key's `kid`. The directory is read again when a token
//! names a key not seen yet (at most once a second) and at least once a minute, so a key
//! added to the Secret is used, and a removed one refused, without a restart.
//!
//! A file holding a PEM public key (`-----BEGIN PUBLIC KEY-----`, RSA, EC P-256/P-384 or
//! Ed25519) verifies the algorithms of its type only; any other file is an HMAC secret
//! (its bytes, one trailing newline dropped, at least 32 of them) for HS256/384/512. An
//! HMAC token is therefore never checked against a public key (algorithm confusion).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, DecodingKey};

/// Shortest HMAC secret accepted: 256 bits, as RFC 7518 asks of HS256.
pub const MIN_SECRET_BYTES: usize = 32;
/// Least time between two reads caused by tokens naming unknown keys.
const REREAD_ON_MISS: Duration = Duration::from_secs(1);
/// Most time a read of the directory is trusted, so removed keys stop working.
const REREAD_ANYWAY: Duration = Duration::from_secs(60);

/// One verification key and the algorithms a token signed with it may name.
pub struct Key {
    pub decoding: DecodingKey,
    pub algorithms: Vec<Algorithm>,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("reading key directory {}", dir.display())]
    ReadDir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("reading key file {}", path.display())]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("key file {}: {problem}", path.display())]
    Unusable { path: PathBuf, problem: KeyProblem },
}

/// Why the content of a key file is no key.
#[derive(Debug, thiserror::Error)]
pub enum KeyProblem {
    #[error("a private key does not belong in the keys directory; put its public key there")]
    PrivateKey,
    #[error("not an RSA, EC or Ed25519 public key in PEM")]
    NotAPublicKey,
    #[error("an HMAC secret must be at least {MIN_SECRET_BYTES} bytes")]
    ShortSecret,
}

pub const RSA: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
];
/// A PEM EC key's curve is not read: the signature check fails on the other one.
const EC: &[Algorithm] = &[Algorithm::ES256, Algorithm::ES384];
pub const EC_P256: &[Algorithm] = &[Algorithm::ES256];
pub const EC_P384: &[Algorithm] = &[Algorithm::ES384];
pub const ED: &[Algorithm] = &[Algorithm::EdDSA];
const HMAC: &[Algorithm] = &[Algorithm::HS256, Algorithm::HS384, Algorithm::HS512];

type PemParser = fn(&[u8]) -> jsonwebtoken::errors::Result<DecodingKey>;

/// The key a file's content holds.
pub fn parse_key(content: &[u8]) -> Result<Key, KeyProblem> {
    let text = String::from_utf8_lossy(content);
    if !text.trim_start().starts_with("-----BEGIN") {
        let secret = content.strip_suffix(b"\n").unwrap_or(content);
        if secret.len() < MIN_SECRET_BYTES {
            return Err(KeyProblem::ShortSecret);
        }
        let decoding = DecodingKey::from_secret(secret).map_err(|_| KeyProblem::ShortSecret)?;
        return Ok(Key {
            decoding,
            algorithms: HMAC.to_vec(),
        });
    }
    if text.contains("PRIVATE KEY") {
        return Err(KeyProblem::PrivateKey);
    }
    let attempts: [(PemParser, _); 3] = [
        (DecodingKey::from_rsa_pem, RSA),
        (DecodingKey::from_ec_pem, EC),
        (DecodingKey::from_ed_pem, ED),
    ];
    attempts
        .into_iter()
        .find_map(|(parse, algorithms)| {
            parse(content).ok().map(|decoding| Key {
                decoding,
                algorithms: algorithms.to_vec(),
            })
        })
        .ok_or(KeyProblem::NotAPublicKey)
}

/// The keys of a directory by `kid`.
#[derive(Default)]
pub struct KeySet(HashMap<String, Arc<Key>>);

impl KeySet {
    pub fn from_keys(keys: impl IntoIterator<Item = (String, Key)>) -> Self {
        Self(
            keys.into_iter()
                .map(|(kid, key)| (kid, Arc::new(key)))
                .collect(),
        )
    }

    /// Reads every file of `dir` (names starting with `.` are Kubernetes' own and
    /// skipped). An unreadable directory is an error; each unusable file is reported
    /// beside the keys of the others.
    pub fn read(dir: &Path) -> Result<(Self, Vec<KeyError>), KeyError> {
        let read_dir = |source| KeyError::ReadDir {
            dir: dir.to_path_buf(),
            source,
        };
        let (mut keys, mut problems) = (HashMap::new(), Vec::new());
        for entry in std::fs::read_dir(dir).map_err(read_dir)? {
            let path = entry.map_err(read_dir)?.path();
            let Some(kid) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if kid.starts_with('.') || !path.is_file() {
                continue;
            }
            match read_key(&path) {
                Ok(key) => drop(keys.insert(kid.to_string(), Arc::new(key))),
                Err(problem) => problems.push(problem),
            }
        }
        Ok((Self(keys), problems))
    }

    /// The key named `kid`; a token naming none is verified with the only key, if the
    /// directory holds just one.
    pub fn get(&self, kid: Option<&str>) -> Option<Arc<Key>> {
        match kid {
            Some(kid) => self.0.get(kid).cloned(),
            None if self.0.len() == 1 => self.0.values().next().cloned(),
            None => None,
        }
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn read_key(path: &Path) -> Result<Key, KeyError> {
    let content = std::fs::read(path).map_err(|source| KeyError::ReadFile {
        path: path.to_path_buf(),
        source,
    })?;
    parse_key(&content).map_err(|problem| KeyError::Unusable {
        path: path.to_path_buf(),
        problem,
    })
}

/// A keys directory as the issuer serves it: read at start, read again as the module
/// says.
pub struct KeyDir {
    dir: PathBuf,
    keys: RwLock<Arc<KeySet>>,
    read_at: Mutex<Instant>,
}

impl KeyDir {
    /// Reads `dir`; fails when it cannot be read, warns of each unusable file.
    pub fn open(dir: &Path) -> Result<Self, KeyError> {
        let keys = read_logged(dir)?;
        if keys.is_empty() {
            tracing::warn!(dir = %dir.display(), "no usable key: every token is refused until one is added");
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            keys: RwLock::new(Arc::new(keys)),
            read_at: Mutex::new(Instant::now()),
        })
    }

    /// The key a token names (see [`KeySet::get`]), reading the directory again when it
    /// names none known or the last read is old.
    pub fn key(&self, kid: Option<&str>) -> Option<Arc<Key>> {
        let keys = self.current();
        let found = keys.get(kid);
        let stale = match found {
            Some(_) => REREAD_ANYWAY,
            None => REREAD_ON_MISS,
        };
        if !self.reread_if_older_than(stale) {
            return found;
        }
        self.current().get(kid)
    }

    fn current(&self) -> Arc<KeySet> {
        Arc::clone(&self.keys.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Reads the directory again if the last read is older than `age` and no other
    /// request is reading it; whether it did.
    fn reread_if_older_than(&self, age: Duration) -> bool {
        let Ok(mut read_at) = self.read_at.try_lock() else {
            return false;
        };
        if read_at.elapsed() < age {
            return false;
        }
        *read_at = Instant::now();
        match read_logged(&self.dir) {
            Ok(keys) => *self.keys.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(keys),
            // Keep the keys known: a directory briefly unreadable (a Secret being
            // updated) must not refuse every token.
            Err(error) => tracing::warn!(error = ?error, "keeping the keys read before"),
        }
        true
    }
}

/// Reads `dir`, logging each unusable file (its path and problem, never its content).
fn read_logged(dir: &Path) -> Result<KeySet, KeyError> {
    let (keys, problems) = KeySet::read(dir)?;
    for problem in problems {
        tracing::warn!(error = ?problem, "skipping a key file");
    }
    tracing::debug!(dir = %dir.display(), keys = keys.len(), "read the keys directory");
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/identity");

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(Path::new(FIXTURES).join(name)).unwrap()
    }

    fn algorithms(content: &[u8]) -> Vec<Algorithm> {
        parse_key(content).unwrap().algorithms
    }

    #[test]
    fn each_public_key_verifies_its_own_algorithms_only() {
        assert_eq!(algorithms(&fixture("test-only-rsa.pub.pem")), RSA);
        assert_eq!(algorithms(&fixture("test-only-ec.pub.pem")), EC);
        assert_eq!(algorithms(&fixture("test-only-ed25519.pub.pem")), ED);
        assert_eq!(algorithms(&[b'k'; MIN_SECRET_BYTES]), HMAC);
        for public in [RSA, EC, ED] {
            assert!(!public.iter().any(|a| HMAC.contains(a)));
        }
    }

    #[test]
    fn private_keys_short_secrets_and_garbage_are_refused() {
        assert!(matches!(
            parse_key(&fixture("test-only-rsa.key")),
            Err(KeyProblem::PrivateKey)
        ));
        let short = [b'k'; MIN_SECRET_BYTES - 1];
        assert!(matches!(parse_key(&short), Err(KeyProblem::ShortSecret)));
        let mut with_newline = vec![b'k'; MIN_SECRET_BYTES - 1];
        with_newline.push(b'\n');
        assert!(matches!(
            parse_key(&with_newline),
            Err(KeyProblem::ShortSecret)
        ));
        let garbage = b"-----BEGIN PUBLIC KEY-----\nnot base64\n-----END PUBLIC KEY-----\n";
        assert!(matches!(parse_key(garbage), Err(KeyProblem::NotAPublicKey)));
    }

    #[test]
    fn a_directory_reads_keys_by_file_name_and_reports_bad_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("k1"), fixture("test-only-rsa.pub.pem")).unwrap();
        std::fs::write(dir.path().join("bad"), "short").unwrap();
        std::fs::write(dir.path().join("..data"), "kubernetes' own").unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let (keys, problems) = KeySet::read(dir.path()).unwrap();
        assert_eq!(keys.len(), 1);
        assert!(keys.get(Some("k1")).is_some());
        assert!(
            keys.get(None).is_some(),
            "the only key serves tokens without kid"
        );
        assert!(keys.get(Some("bad")).is_none());
        assert!(matches!(
            problems.as_slice(),
            [KeyError::Unusable {
                problem: KeyProblem::ShortSecret,
                ..
            }]
        ));
        std::fs::write(dir.path().join("k2"), fixture("test-only-ec.pub.pem")).unwrap();
        let (keys, _) = KeySet::read(dir.path()).unwrap();
        assert!(
            keys.get(None).is_none(),
            "with two keys a token must name one"
        );
        assert!(KeySet::read(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn an_unknown_kid_rereads_the_directory_at_most_once_a_second() {
        let dir = tempfile::tempdir().unwrap();
        let keys = KeyDir::open(dir.path()).unwrap();
        assert!(keys.key(Some("new")).is_none());
        std::fs::write(dir.path().join("new"), fixture("test-only-ec.pub.pem")).unwrap();
        assert!(
            keys.key(Some("new")).is_none(),
            "read again less than a second ago"
        );
        std::thread::sleep(REREAD_ON_MISS);
        assert!(keys.key(Some("new")).is_some());
    }
}
