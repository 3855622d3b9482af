//! A campaign's winners topic in Kafka: created (or grown) on every reconcile, deleted
//! with the campaign when its deletion policy says so. One admin client per broker list
//! is kept in [`Connections`] (librdkafka reconnects it after a broker restart).

use std::sync::Arc;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewPartitions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;

use super::{BackendError, Connections, TIMEOUT, TopicAction, cached};

pub(super) type Admin = AdminClient<DefaultClientContext>;

fn kafka_admin(brokers: &str) -> Result<Arc<Admin>, BackendError> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("socket.timeout.ms", "5000")
        .create()
        .map(Arc::new)
        .map_err(BackendError::InvalidKafkaSettings)
}

fn admin_options() -> AdminOptions {
    AdminOptions::new()
        .operation_timeout(Some(Duration::from_secs(10)))
        .request_timeout(Some(Duration::from_secs(10)))
}

impl Connections {
    async fn kafka_admin(&self, brokers: &str) -> Result<Arc<Admin>, BackendError> {
        cached(&self.kafka, brokers, async |brokers| kafka_admin(brokers)).await
    }

    /// Creates the topic if missing and grows it to `partitions` if it has fewer.
    pub async fn ensure_topic(
        &self,
        brokers: &str,
        topic: &str,
        partitions: i32,
        replication: i32,
    ) -> Result<(), BackendError> {
        ensure_topic(
            &*self.kafka_admin(brokers).await?,
            topic,
            partitions,
            replication,
        )
        .await
    }

    /// Deletes the topic; one that does not exist is already gone.
    pub async fn delete_topic(&self, brokers: &str, topic: &str) -> Result<(), BackendError> {
        delete_topic(&*self.kafka_admin(brokers).await?, topic).await
    }
}

async fn ensure_topic(
    admin: &Admin,
    topic: &str,
    partitions: i32,
    replication: i32,
) -> Result<(), BackendError> {
    let new_topic = NewTopic::new(topic, partitions, TopicReplication::Fixed(replication));
    let results = admin
        .create_topics([&new_topic], &admin_options())
        .await
        .map_err(BackendError::Kafka)?;
    match results.into_iter().next() {
        Some(Ok(_)) => Ok(()),
        Some(Err((_, RDKafkaErrorCode::TopicAlreadyExists))) => {
            grow_topic(admin, topic, partitions).await
        }
        Some(Err((_, code))) => Err(BackendError::KafkaRefused {
            action: TopicAction::Create,
            topic: topic.into(),
            code,
        }),
        None => Err(BackendError::KafkaNoAnswer(topic.into())),
    }
}

/// Adds partitions to an existing topic that has fewer than `partitions`.
async fn grow_topic(admin: &Admin, topic: &str, partitions: i32) -> Result<(), BackendError> {
    let metadata = {
        let admin_client = admin.inner();
        tokio::task::block_in_place(|| admin_client.fetch_metadata(Some(topic), TIMEOUT))
            .map_err(BackendError::Kafka)?
    };
    let existing = metadata
        .topics()
        .first()
        .map_or(0, |t| t.partitions().len() as i32);
    if existing < partitions {
        let grow = NewPartitions::new(topic, partitions as usize);
        admin
            .create_partitions([&grow], &admin_options())
            .await
            .map_err(BackendError::Kafka)?;
    }
    Ok(())
}

async fn delete_topic(admin: &Admin, topic: &str) -> Result<(), BackendError> {
    let results = admin
        .delete_topics(&[topic], &admin_options())
        .await
        .map_err(BackendError::Kafka)?;
    match results.into_iter().next() {
        Some(Ok(_)) | Some(Err((_, RDKafkaErrorCode::UnknownTopicOrPartition))) | None => Ok(()),
        Some(Err((_, code))) => Err(BackendError::KafkaRefused {
            action: TopicAction::Delete,
            topic: topic.into(),
            code,
        }),
    }
}
