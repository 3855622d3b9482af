//! How far a consumer group is behind on a topic: high watermark minus committed offset,
//! summed over partitions.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

const TIMEOUT: Duration = Duration::from_secs(10);

/// Messages of `topic` not yet committed by `group`.
pub async fn group_lag(brokers: &str, group: &str, topic: &str) -> Result<i64, KafkaError> {
    let (brokers, group, topic) = (brokers.to_string(), group.to_string(), topic.to_string());
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("group.id", &group)
            .set("enable.auto.commit", "false")
            .create()?;
        let metadata = consumer.fetch_metadata(Some(&topic), TIMEOUT)?;
        let mut partitions = TopicPartitionList::new();
        for topic_metadata in metadata.topics() {
            for partition in topic_metadata.partitions() {
                partitions.add_partition(&topic, partition.id());
            }
        }
        let committed = consumer.committed_offsets(partitions, TIMEOUT)?;
        let mut lag = 0;
        for element in committed.elements() {
            let (low, high) = consumer.fetch_watermarks(&topic, element.partition(), TIMEOUT)?;
            let at = match element.offset() {
                Offset::Offset(offset) => offset,
                _ => low,
            };
            lag += (high - at).max(0);
        }
        Ok(lag)
    })
    .await
    .unwrap_or(Err(KafkaError::Canceled))
}
