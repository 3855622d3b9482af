//! The errors of the apply flow: which campaign, which backend, and what the broker did
//! not confirm; each keeps its source.

use rdkafka::error::KafkaError;

use crate::admission::Admission;
use crate::admission::redis::RedisAdmissionError;
use crate::kafka::claims::ClaimsBehind;
use crate::store::postgres::PostgresStoreError;
use crate::store::sqlite::SqliteStoreError;

#[derive(Debug, thiserror::Error)]
pub enum IssuerError {
    #[error("no campaign named {0:?} is served here")]
    UnknownCampaign(String),
    #[error("the admission backend is unavailable: {0}")]
    Unavailable(#[from] BackendError),
    /// Redis has no admission state for the campaign (yet); it is being restored.
    #[error("campaign {0} has no admission state in Redis: it is not provisioned (yet)")]
    Unprovisioned(String),
    /// The user was admitted, but the broker did not confirm the winner event in time.
    /// The admission stands and its event is published again until confirmed.
    #[error("admission {} recorded but not yet confirmed by the broker: {source}", .admission.sequence)]
    Unconfirmed {
        admission: Admission,
        source: HandOffError,
    },
    /// The admission script was sent to Redis but its answer was lost (a timeout, a
    /// dropped connection, a reply not understood): it may have admitted the user. What
    /// Redis holds for the user decides what applying again answers.
    #[error("the admission script may have run but its answer was lost: {0}")]
    OutcomeUnknown(#[source] RedisAdmissionError),
    /// This issuer has not read the campaign topic yet, so it could not tell a sequence
    /// someone already holds; nothing is admitted until it has.
    #[error("the topic of campaign {0} is not read yet")]
    ClaimsNotRead(String),
    /// Redis handed out a sequence the campaign topic says another user holds: it lost
    /// admissions. Nobody is admitted; the campaign is restored before it admits again.
    #[error("sequence {0} is already held: Redis lost admissions and the campaign is fenced")]
    Fenced(u64),
}

/// Why a hand-off could not confirm a winner.
#[derive(Debug, thiserror::Error)]
pub enum HandOffError {
    #[error("the broker did not ack the winner event: {0}")]
    Broker(#[from] KafkaError),
    #[error(transparent)]
    ClaimsBehind(#[from] ClaimsBehind),
}

/// A backend that failed to answer.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error(transparent)]
    Redis(#[from] RedisAdmissionError),
    #[error(transparent)]
    Postgres(#[from] PostgresStoreError),
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("standalone ledger: {0}")]
    Ledger(#[from] SqliteStoreError),
    #[error("waiting room: {0}")]
    WaitingRoom(#[from] crate::waiting_room::queue::QueueError),
    #[error("admission task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// `?` on any backend's own error gives an [`IssuerError::Unavailable`].
macro_rules! unavailable_from {
    ($($source:ty),*) => {$(
        impl From<$source> for IssuerError {
            fn from(error: $source) -> Self {
                Self::Unavailable(BackendError::from(error))
            }
        }
    )*};
}
unavailable_from!(
    RedisAdmissionError,
    PostgresStoreError,
    KafkaError,
    SqliteStoreError,
    tokio::task::JoinError
);
