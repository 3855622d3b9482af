//! Where a consumer group stands on a topic: per partition, the offset it committed and
//! the high watermark; the lag is their difference, summed over partitions.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

const TIMEOUT: Duration = Duration::from_secs(10);

/// One partition of a topic, as a consumer group stands on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    pub partition: i32,
    /// The next offset the group will read (the partition's first if it committed none).
    pub committed: i64,
    /// The offset the next message will get.
    pub high: i64,
}

/// Where `group` stands on each partition of `topic`.
pub async fn positions(
    brokers: &str,
    group: &str,
    topic: &str,
) -> Result<Vec<Position>, KafkaError> {
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
        let mut positions = Vec::new();
        for element in committed.elements() {
            let (low, high) = consumer.fetch_watermarks(&topic, element.partition(), TIMEOUT)?;
            let committed = match element.offset() {
                Offset::Offset(offset) => offset,
                _ => low,
            };
            let partition = element.partition();
            positions.push(Position {
                partition,
                committed,
                high,
            });
        }
        Ok(positions)
    })
    .await
    .unwrap_or(Err(KafkaError::Canceled))
}

/// Messages of `topic` not yet committed by `group`.
pub async fn group_lag(brokers: &str, group: &str, topic: &str) -> Result<i64, KafkaError> {
    let positions = positions(brokers, group, topic).await?;
    Ok(positions
        .iter()
        .map(|p| (p.high - p.committed).max(0))
        .sum())
}
