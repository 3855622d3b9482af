//! The waiting room of a campaign (off unless configured): users join a queue — before
//! the opening a pre-queue in a secret-keyed random order ([`order`]), after it FIFO —
//! and are let in at a set rate ([`pace`]) by every issuer's admission runs, each run
//! one atomic script in Redis ([`queue`]). An admitted user gets a signed [`pass`] that
//! the apply requires; a ticket's holder polls its state and wait ([`place`]).

pub mod metrics;
pub mod order;
pub mod pace;
pub mod pass;
pub mod place;
pub mod queue;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use firstcome_contract::{CampaignConfig, WaitingRoom};

use metrics::RoomMetrics;

/// Shortest room secret accepted: 256 bits.
pub const MIN_SECRET_BYTES: usize = 32;
/// How often each issuer runs the admission script of each room; several runs a second
/// (from every issuer) keep the pace smooth, see [`pace`].
pub const ADMISSION_RUN_EVERY: Duration = Duration::from_millis(50);

/// The secret tickets, pre-queue order and passes derive from: a file (a mounted Secret)
/// shared by every issuer of the campaign, read at start.
#[derive(Clone)]
pub struct RoomSecret(Arc<[u8]>);

#[derive(Debug, thiserror::Error)]
pub enum RoomSecretError {
    #[error("reading the waiting-room secret file {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the waiting-room secret file {} holds fewer than {MIN_SECRET_BYTES} bytes", path.display())]
    Short { path: PathBuf },
}

impl RoomSecret {
    /// The file's bytes, one trailing newline dropped.
    pub fn read(path: &Path) -> Result<Self, RoomSecretError> {
        let bytes = std::fs::read(path).map_err(|source| RoomSecretError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let secret = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
        if secret.len() < MIN_SECRET_BYTES {
            return Err(RoomSecretError::Short {
                path: path.to_path_buf(),
            });
        }
        Ok(Self(secret.into()))
    }
}

/// A campaign's waiting room as one issuer serves it.
pub struct Room {
    pub config: WaitingRoom,
    campaign: String,
    opens_at: Option<DateTime<Utc>>,
    secret: RoomSecret,
    pub metrics: RoomMetrics,
}

/// Why an apply's pass is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PassRefused {
    #[error("no pass")]
    Missing,
    #[error(transparent)]
    Pass(#[from] pass::PassError),
}

impl Room {
    /// The room `config` describes, if it has one.
    pub fn of(config: &CampaignConfig, secret: &RoomSecret, metrics: RoomMetrics) -> Option<Self> {
        Some(Self {
            config: config.waiting_room.clone()?,
            campaign: config.name.clone(),
            opens_at: config.opens_at,
            secret: secret.clone(),
            metrics,
        })
    }

    pub fn ticket(&self, user: &str) -> String {
        order::ticket(&self.secret.0, &self.campaign, user)
    }

    pub fn prequeue_score(&self, user: &str) -> u64 {
        order::prequeue_score(&self.secret.0, &self.campaign, user)
    }

    /// From when users may join; `None`: always.
    pub fn joinable_from(&self) -> Option<DateTime<Utc>> {
        self.config.joinable_from(self.opens_at)
    }

    /// When admission starts (Unix ms; 0 for a campaign open from the start).
    pub fn opens_ms(&self) -> u64 {
        self.opens_at.map_or(0, |opens| {
            u64::try_from(opens.timestamp_millis()).unwrap_or(0)
        })
    }

    pub fn pass(&self, user: &str, expires_ms: u64) -> String {
        pass::sign(&self.secret.0, &self.campaign, user, expires_ms)
    }

    /// Whether `presented` lets `user` apply at `now`.
    pub fn check_pass(
        &self,
        presented: Option<&[u8]>,
        user: &str,
        now: DateTime<Utc>,
    ) -> Result<(), PassRefused> {
        let presented = presented.ok_or(PassRefused::Missing)?;
        let now_ms = u64::try_from(now.timestamp_millis()).unwrap_or(0);
        pass::verify(&self.secret.0, &self.campaign, presented, user, now_ms)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_is_read_without_its_trailing_newline_and_must_be_long_enough() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, format!("{}\n", "s".repeat(MIN_SECRET_BYTES))).unwrap();
        let secret = RoomSecret::read(&path).unwrap();
        assert_eq!(secret.0.len(), MIN_SECRET_BYTES);
        std::fs::write(&path, format!("{}\n", "s".repeat(MIN_SECRET_BYTES - 1))).unwrap();
        assert!(matches!(
            RoomSecret::read(&path),
            Err(RoomSecretError::Short { .. })
        ));
        assert!(matches!(
            RoomSecret::read(&dir.path().join("absent")),
            Err(RoomSecretError::Read { .. })
        ));
    }
}
