//! What can go wrong with a campaign's backends, each failure keeping its source and
//! naming the reason its condition shows.

use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

use crate::reason::Reason;

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("cannot read Secret {namespace}/{name}")]
    SecretUnreadable {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("Secret {namespace}/{name} does not exist")]
    SecretMissing { namespace: String, name: String },
    #[error("Secret {namespace}/{name} has no key {key:?} (or it is empty or not UTF-8)")]
    SecretKeyMissing {
        namespace: String,
        name: String,
        key: &'static str,
    },
    #[error("invalid Redis URL")]
    InvalidRedisUrl(#[source] firstcome_contract::RedisTargetError),
    #[error("cannot reach Redis")]
    RedisUnreachable(#[source] redis::RedisError),
    #[error("Redis")]
    Redis(#[source] redis::RedisError),
    #[error(
        "the campaign's admission state is missing from Redis (data loss?); issuers restore it from PostgreSQL"
    )]
    AdmissionStateMissing,
    #[error("invalid Kafka client settings")]
    InvalidKafkaSettings(#[source] KafkaError),
    #[error("Kafka")]
    Kafka(#[source] KafkaError),
    #[error("Kafka refused to {action} topic {topic}: {code}")]
    KafkaRefused {
        action: TopicAction,
        topic: String,
        code: RDKafkaErrorCode,
    },
    #[error("Kafka answered nothing about topic {0}")]
    KafkaNoAnswer(String),
    #[error("invalid PostgreSQL URL")]
    InvalidPostgresUrl(#[source] sqlx::Error),
    #[error("PostgreSQL")]
    Postgres(#[source] sqlx::Error),
}

impl BackendError {
    /// The reason a condition shows for this failure.
    pub fn reason(&self) -> Reason {
        match self {
            Self::SecretUnreadable { .. } => Reason::BackendsSecretUnreadable,
            Self::SecretMissing { .. } => Reason::BackendsSecretMissing,
            Self::SecretKeyMissing { .. } => Reason::BackendsSecretIncomplete,
            Self::InvalidRedisUrl(_)
            | Self::InvalidKafkaSettings(_)
            | Self::InvalidPostgresUrl(_) => Reason::InvalidBackendSettings,
            Self::RedisUnreachable(_) => Reason::RedisUnavailable,
            Self::Redis(e) if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() => {
                Reason::RedisUnavailable
            }
            Self::Redis(_) => Reason::RedisCommandFailed,
            Self::AdmissionStateMissing => Reason::AdmissionStateMissing,
            Self::Kafka(_) | Self::KafkaNoAnswer(_) => Reason::KafkaUnavailable,
            Self::KafkaRefused { .. } => Reason::TopicRefused,
            Self::Postgres(_) => Reason::PostgresUnavailable,
        }
    }
}

/// What the operator asked Kafka to do with a topic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TopicAction {
    Create,
    Delete,
}

impl std::fmt::Display for TopicAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Create => "create",
            Self::Delete => "delete",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::describe;
    use firstcome_contract::RedisTarget;

    #[test]
    fn the_reason_follows_the_kind_of_failure() {
        let invalid_url = "not a url".parse::<RedisTarget>().unwrap_err();
        let refused =
            redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        let bad_reply =
            redis::RedisError::from((redis::ErrorKind::UnexpectedReturnType, "bad reply"));
        let missing = BackendError::SecretMissing {
            namespace: "shop".into(),
            name: "b".into(),
        };
        for (error, reason) in [
            (
                BackendError::InvalidRedisUrl(invalid_url),
                Reason::InvalidBackendSettings,
            ),
            (
                BackendError::RedisUnreachable(refused.clone()),
                Reason::RedisUnavailable,
            ),
            (BackendError::Redis(refused), Reason::RedisUnavailable),
            (BackendError::Redis(bad_reply), Reason::RedisCommandFailed),
            (missing, Reason::BackendsSecretMissing),
            (
                BackendError::KafkaRefused {
                    action: TopicAction::Create,
                    topic: "t".into(),
                    code: RDKafkaErrorCode::InvalidReplicationFactor,
                },
                Reason::TopicRefused,
            ),
        ] {
            assert_eq!(error.reason(), reason, "{}", describe(&error));
        }
    }

    #[test]
    fn the_message_keeps_the_source() {
        let error = BackendError::InvalidRedisUrl("not a url".parse::<RedisTarget>().unwrap_err());
        let message = describe(&error);
        assert!(message.starts_with("invalid Redis URL: "), "{message}");
        assert!(message.len() > "invalid Redis URL: ".len(), "{message}");
    }
}
