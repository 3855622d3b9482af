//! Consumes a campaign's winner events into PostgreSQL.
//!
//! One consumer group per campaign. Messages are taken in batches, persisted in one
//! transaction (idempotent on (campaign, user, ordinal)), and only then are the offsets
//! committed: a crash between the two replays the batch, which inserts nothing new.
//! A message that cannot become a coupon is stored as a failed event in the same
//! transaction, so the partition moves on without dropping it. While PostgreSQL is
//! unreachable the batch is retried with backoff; past the retry budget it is parked on
//! the campaign's dead-letter topic (acked by the broker) and only then committed, so a
//! partition never blocks for long and nothing is dropped. A second consumer reads the
//! dead-letter topic and persists it the same way once PostgreSQL is back; that lane is
//! retried until it succeeds and never parked again.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use firstcome_contract::{CampaignConfig, WinnerEvent};
use prometheus_client::metrics::gauge::Gauge;
use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::{ClientConfig, ClientContext, Offset, Statistics, TopicPartitionList};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::kafka::producer::WinnerPublisher;
use crate::metrics::Metrics;
use crate::store::failed_event::{ConsumedWinner, EventSource, FailedEvent, FailureReason};
use crate::store::postgres::CouponStore;

/// Most messages persisted in one transaction.
const MAX_BATCH: usize = 1000;
/// How long a batch waits for more messages once it has one.
const BATCH_WINDOW: Duration = Duration::from_millis(20);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Longest the broker holds a fetch of the campaign topic that found less than 16 KB.
const PRIMARY_FETCH_WAIT_MS: &str = "50";
/// The same for the dead-letter topic, normally empty: asked twice a second, not 20 times
/// (a parked batch waits at most that much longer to be persisted once PostgreSQL is back).
const DEAD_LETTER_FETCH_WAIT_MS: &str = "500";

/// Reports the group's lag from librdkafka's statistics.
struct LagReporter {
    lag: Gauge,
}

impl ClientContext for LagReporter {
    fn stats(&self, statistics: Statistics) {
        let lag: i64 = statistics
            .topics
            .values()
            .flat_map(|t| t.partitions.values())
            .filter(|p| p.partition >= 0 && p.consumer_lag >= 0)
            .map(|p| p.consumer_lag)
            .sum();
        self.lag.set(lag);
    }
}

impl ConsumerContext for LagReporter {}

/// Which stream of a campaign's winners a consumer reads.
pub enum Lane {
    /// The campaign topic; batches that cannot be persisted within `retry_budget` are
    /// parked on the dead-letter topic.
    Primary {
        dead_letters: WinnerPublisher,
        retry_budget: Duration,
    },
    /// The dead-letter topic: retried until persisted.
    DeadLetter,
}

pub struct WinnerConsumer {
    campaign: CampaignConfig,
    consumer: StreamConsumer<LagReporter>,
    store: CouponStore,
    metrics: Arc<Metrics>,
    lane: Lane,
}

impl WinnerConsumer {
    pub fn new(
        brokers: &str,
        campaign: CampaignConfig,
        store: CouponStore,
        metrics: Arc<Metrics>,
        lane: Lane,
    ) -> Result<Self, KafkaError> {
        let (stream, lag, fetch_wait) = match lane {
            Lane::Primary { .. } => {
                // Counted from zero: dashboards and alerts see 0 before the first parking.
                metrics.dead_lettered(&campaign.name, 0);
                (
                    campaign.primary_lane(),
                    metrics.consumer_lag(&campaign.name),
                    PRIMARY_FETCH_WAIT_MS,
                )
            }
            // Only the main lane's lag is reported; the dead-letter lane is normally empty.
            Lane::DeadLetter => (
                campaign.dead_letter_lane(),
                Default::default(),
                DEAD_LETTER_FETCH_WAIT_MS,
            ),
        };
        let consumer: StreamConsumer<LagReporter> = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", &stream.group)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("statistics.interval.ms", "5000")
            // Persisting is not on the apply's path: the broker answers a fetch once 16 KB
            // (~100 events) are there or 50 ms passed, not on every produce request, so a
            // busy topic costs one wake-up and one statement per ~100 events.
            .set("fetch.min.bytes", "16384")
            .set("fetch.wait.max.ms", fetch_wait)
            // A consumer that dies without leaving the group (kill -9, a lost node) keeps
            // its partitions until the session times out: 10 s instead of librdkafka's
            // 45 s, so its share of the topic stalls (and a restore waiting on it) that
            // long at most. Heartbeats come from librdkafka's own thread every 3 s.
            .set("session.timeout.ms", "10000")
            .create_with_context(LagReporter { lag })?;
        consumer.subscribe(&[&stream.topic])?;
        Ok(Self {
            campaign,
            consumer,
            store,
            metrics,
            lane,
        })
    }

    /// Runs until `stop` is cancelled; the batch in hand is finished first.
    pub async fn run(self, stop: CancellationToken) {
        let lane = match self.lane {
            Lane::Primary { .. } => "primary",
            Lane::DeadLetter => "dead_letter",
        };
        let span = tracing::info_span!("consumer", campaign = %self.campaign.name, lane);
        self.consume(stop).instrument(span).await
    }

    async fn consume(self, stop: CancellationToken) {
        tracing::info!("consumer started");
        loop {
            let batch = tokio::select! {
                _ = stop.cancelled() => break,
                batch = self.next_batch() => batch,
            };
            match batch {
                Ok(batch) => {
                    let span = tracing::info_span!("batch", messages = batch.len());
                    self.persist_then_commit(batch, &stop)
                        .instrument(span)
                        .await
                }
                Err(error) => {
                    tracing::warn!(%error, "consume failed");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        tracing::info!("consumer stopped");
    }

    async fn next_batch(&self) -> Result<Vec<OwnedMessage>, KafkaError> {
        let first = self.consumer.recv().await?.detach();
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + BATCH_WINDOW;
        while batch.len() < MAX_BATCH {
            match tokio::time::timeout_at(deadline, self.consumer.recv()).await {
                Ok(Ok(message)) => batch.push(message.detach()),
                Ok(Err(error)) => {
                    tracing::warn!(%error, "consume failed inside a batch");
                    break;
                }
                Err(_) => break,
            }
        }
        Ok(batch)
    }

    async fn persist_then_commit(&self, batch: Vec<OwnedMessage>, stop: &CancellationToken) {
        let (winners, failed) = decode(&self.campaign.name, &batch);
        let mut backoff = Duration::from_millis(100);
        let started = tokio::time::Instant::now();
        loop {
            match self.store.persist(&winners, &failed).await {
                Ok(report) => {
                    if report.conflicts > 0 {
                        tracing::error!(
                            conflicts = report.conflicts,
                            "winner events whose sequence another user holds: stored as failed events (sequence_conflict)"
                        );
                    }
                    self.metrics
                        .persisted(&self.campaign.name, report, failed.len() as u64);
                    break;
                }
                Err(error) => {
                    tracing::warn!(%error, retry_in = ?backoff, "persisting a batch failed; retrying");
                    if let Lane::Primary {
                        dead_letters,
                        retry_budget,
                    } = &self.lane
                        && started.elapsed() >= *retry_budget
                    {
                        match self.park(dead_letters, &batch).await {
                            Ok(()) => break,
                            Err(error) => {
                                tracing::error!(%error, "parking a batch on the dead-letter topic failed; retrying both");
                            }
                        }
                    }
                    if stop.is_cancelled() {
                        // Offsets stay uncommitted: the batch is consumed again after restart.
                        return;
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
        if let Err(error) = self.commit(&batch) {
            // Harmless: the batch is replayed and inserts nothing new.
            tracing::warn!(%error, "committing offsets failed");
        }
    }

    /// Puts every message of the batch on the dead-letter topic; Ok once all are acked.
    async fn park(
        &self,
        dead_letters: &WinnerPublisher,
        batch: &[OwnedMessage],
    ) -> Result<(), KafkaError> {
        let topic = self.campaign.dead_letter_topic();
        let sends = batch
            .iter()
            .map(|m| dead_letters.publish_raw(&topic, m.key(), m.payload()));
        for result in futures::future::join_all(sends).await {
            result?;
        }
        self.metrics
            .dead_lettered(&self.campaign.name, batch.len() as u64);
        tracing::warn!(campaign = %self.campaign.name, messages = batch.len(), %topic, "PostgreSQL unavailable past the retry budget: batch parked on the dead-letter topic");
        Ok(())
    }

    fn commit(&self, batch: &[OwnedMessage]) -> Result<(), KafkaError> {
        let mut offsets = TopicPartitionList::new();
        for ((topic, partition), offset) in next_offsets(batch) {
            offsets.add_partition_offset(topic, partition, Offset::Offset(offset))?;
        }
        self.consumer.commit(&offsets, CommitMode::Sync)
    }
}

/// Splits a batch into winners and messages that cannot be coupons of `campaign`.
fn decode(campaign: &str, batch: &[OwnedMessage]) -> (Vec<ConsumedWinner>, Vec<FailedEvent>) {
    let mut winners = Vec::with_capacity(batch.len());
    let mut failed = Vec::new();
    for message in batch {
        let source = EventSource {
            topic: message.topic().to_string(),
            partition: message.partition(),
            offset: message.offset(),
            payload: message.payload().map(<[u8]>::to_vec),
        };
        let decoded = WinnerEvent::from_payload(message.payload().unwrap_or_default())
            .map_err(|e| e.to_string())
            .and_then(|event| match event.check_belongs_to(campaign) {
                Ok(()) => Ok(event),
                Err(foreign) => Err(foreign.to_string()),
            });
        match decoded {
            Ok(event) => winners.push(ConsumedWinner { event, source }),
            Err(error) => {
                tracing::error!(%error, topic = message.topic(), partition = message.partition(), offset = message.offset(), "storing a failed event");
                failed.push(FailedEvent {
                    source,
                    campaign: Some(campaign.to_string()),
                    reason: FailureReason::InvalidEvent,
                    error,
                });
            }
        }
    }
    (winners, failed)
}

/// The offset to commit per (topic, partition): one past the last message of the batch.
fn next_offsets(batch: &[OwnedMessage]) -> BTreeMap<(&str, i32), i64> {
    let mut next = BTreeMap::new();
    for message in batch {
        let entry = next
            .entry((message.topic(), message.partition()))
            .or_insert(0);
        *entry = message.offset().max(*entry - 1) + 1;
    }
    next
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::Timestamp;

    fn message(partition: i32, offset: i64, payload: &[u8]) -> OwnedMessage {
        OwnedMessage::new(
            Some(payload.to_vec()),
            None,
            "t".into(),
            Timestamp::NotAvailable,
            partition,
            offset,
            None,
        )
    }

    fn winner(campaign: &str, sequence: u64) -> Vec<u8> {
        WinnerEvent {
            campaign: campaign.into(),
            user_id: format!("u{sequence}"),
            ordinal: 1,
            sequence,
            admitted_at: "2026-11-29T00:00:00Z".parse().unwrap(),
        }
        .to_payload()
    }

    #[test]
    fn decoding_keeps_winners_and_turns_the_rest_into_failed_events() {
        let batch = [
            message(0, 7, &winner("c", 1)),
            message(1, 3, b"not json"),
            message(1, 4, &winner("other", 2)),
            message(2, 9, &winner("c", 0)),
        ];
        let (winners, failed) = decode("c", &batch);
        assert_eq!(winners.len(), 1);
        assert_eq!(
            (winners[0].event.sequence, winners[0].source.offset),
            (1, 7)
        );
        let failed: Vec<(i32, i64, FailureReason)> = failed
            .iter()
            .map(|f| (f.source.partition, f.source.offset, f.reason))
            .collect();
        assert_eq!(
            failed,
            [
                (1, 3, FailureReason::InvalidEvent),
                (1, 4, FailureReason::InvalidEvent),
                (2, 9, FailureReason::InvalidEvent)
            ]
        );
    }

    #[test]
    fn commits_one_past_the_highest_offset_of_each_partition() {
        let batch = [
            message(0, 5, b""),
            message(1, 2, b""),
            message(0, 9, b""),
            message(0, 7, b""),
        ];
        let next: Vec<_> = next_offsets(&batch).into_iter().collect();
        assert_eq!(next, [(("t", 0), 10), (("t", 1), 3)]);
    }
}
