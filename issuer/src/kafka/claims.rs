//! Claims: which user holds each sequence of a campaign, as the campaign topic says.
//!
//! Winner events are keyed by sequence, so every event that claims one sequence lands on
//! one partition, in order. The first of them there holds the sequence; a later one by
//! another user comes from a Redis that had lost admissions and handed the sequence out
//! again. Each API issuer tails the topic from its start ([`tail`]) and, after the
//! broker acked a winner's event, waits until it has read past that event before it
//! answers "admitted" ([`Claims::read_back`]): nobody is told they won a sequence
//! someone else already holds.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use firstcome_contract::{CampaignConfig, WinnerEvent};
use futures::FutureExt;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// How often the tail looks for partitions added to the topic.
const PARTITIONS_REFRESH: Duration = Duration::from_secs(10);
/// Most messages the tail records in one step (one lock, one wake-up of the hand-offs).
const MAX_READ_BATCH: usize = 1024;
const METADATA_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest the broker holds the tail's fetch when nothing new is there (librdkafka's
/// `fetch.wait.max.ms`).
const TAIL_FETCH_WAIT_MS: &str = "100";

/// What the topic said so far: pure, so it is tested without a broker.
#[derive(Debug, Default)]
pub struct ClaimBook {
    holders: HashMap<u64, String>,
    /// Per partition, the next offset to read.
    read_to: HashMap<i32, i64>,
    /// Per assigned partition, its (low, high) watermarks when it was assigned: the book
    /// is caught up once every partition was read up to its high watermark.
    targets: HashMap<i32, (i64, i64)>,
    highest: u64,
}

impl ClaimBook {
    /// Records the message at (`partition`, `offset`): `event` is its winner event, or
    /// `None` for a message that is not one of the campaign's winners.
    pub fn record(&mut self, partition: i32, offset: i64, event: Option<&WinnerEvent>) {
        self.read_to.insert(partition, offset + 1);
        if let Some(event) = event {
            self.holders
                .entry(event.sequence)
                .or_insert_with(|| event.user_id.clone());
            self.highest = self.highest.max(event.sequence);
        }
    }

    /// The holder of `sequence`, once the message at (`partition`, `offset`) was read.
    pub fn holder_once_read(
        &self,
        partition: i32,
        offset: i64,
        sequence: u64,
    ) -> Option<Option<&str>> {
        (self.read_past(partition, offset)).then(|| self.holders.get(&sequence).map(String::as_str))
    }

    /// Whether the message at (`partition`, `offset`) was read.
    fn read_past(&self, partition: i32, offset: i64) -> bool {
        (self.read_to.get(&partition)).is_some_and(|next| *next > offset)
    }

    /// The highest sequence any winner event on the topic claims.
    pub fn highest(&self) -> u64 {
        self.highest
    }

    /// The holder of `sequence` as read so far.
    pub fn holder(&self, sequence: u64) -> Option<&str> {
        self.holders.get(&sequence).map(String::as_str)
    }

    /// A partition was assigned, holding the messages from `low` to before `high`.
    pub fn assigned(&mut self, partition: i32, (low, high): (i64, i64)) {
        self.targets.insert(partition, (low, high));
    }

    /// Whether every assigned partition was read up to where it stood when assigned (and
    /// at least one was assigned): only then does the book know every earlier claim.
    pub fn caught_up(&self) -> bool {
        !self.targets.is_empty()
            && self.targets.iter().all(|(partition, (low, high))| {
                high <= low || self.read_to.get(partition).is_some_and(|next| next >= high)
            })
    }
}

/// The claim book of one campaign, shared by its tail and its hand-offs.
#[derive(Debug, Default)]
pub struct Claims {
    state: Mutex<State>,
}

/// The book and the hand-offs waiting on it, under one lock: a hand-off that finds its
/// event unread registers before the tail can record it, so no wake-up is lost.
#[derive(Debug, Default)]
struct State {
    book: ClaimBook,
    waiting: Vec<Waiting>,
}

/// A hand-off waiting until the tail read past one of its events; woken once it has
/// (not every waiting hand-off on every read). Weak: a hand-off that gave up is dropped.
#[derive(Debug)]
struct Waiting {
    partition: i32,
    offset: i64,
    wake: Weak<Notify>,
}

/// The holder could not be read in time: the tail is behind or cannot reach the broker.
#[derive(Debug, thiserror::Error)]
#[error(
    "the campaign topic was not read up to partition {partition} offset {offset} within {waited:?}"
)]
pub struct ClaimsBehind {
    pub partition: i32,
    pub offset: i64,
    pub waited: Duration,
}

impl Claims {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn highest(&self) -> u64 {
        self.state().book.highest()
    }

    /// Whether the topic, as read so far, names `user` the holder of `sequence`.
    pub fn names_holder(&self, sequence: u64, user: &str) -> bool {
        self.state().book.holder(sequence) == Some(user)
    }

    /// Whether the tail has read the topic as it stood when the tail started.
    pub fn caught_up(&self) -> bool {
        self.state().book.caught_up()
    }

    /// Who holds `sequence`, once the tail read past (`partition`, `offset`) (`None`: no
    /// event claims it, which cannot be once the caller's own event was read); if it has
    /// not yet, `None`, and `wake` is woken once it has.
    pub fn read_back(
        &self,
        (partition, offset): (i32, i64),
        sequence: u64,
        wake: &Arc<Notify>,
    ) -> Option<Option<String>> {
        let mut state = self.state();
        if let Some(holder) = state.book.holder_once_read(partition, offset, sequence) {
            return Some(holder.map(str::to_string));
        }
        state.wait(Waiting {
            partition,
            offset,
            wake: Arc::downgrade(wake),
        });
        None
    }

    /// As [`Self::read_back`], for a read-back already waited for: nobody is woken.
    pub fn holder_once_read(
        &self,
        (partition, offset): (i32, i64),
        sequence: u64,
    ) -> Option<Option<String>> {
        let state = self.state();
        let holder = state.book.holder_once_read(partition, offset, sequence)?;
        Some(holder.map(str::to_string))
    }

    /// Records messages read together, then answers the hand-offs whose events were read.
    fn record(&self, read: &[(i32, i64, Option<WinnerEvent>)]) {
        let mut state = self.state();
        for (partition, offset, event) in read {
            state.book.record(*partition, *offset, event.as_ref());
        }
        state.answer_read();
    }
}

impl State {
    /// Registers `waiting`; first drops the hand-offs that gave up, before the list would
    /// grow (a tail that reads nothing wakes nobody, and their waits end).
    fn wait(&mut self, waiting: Waiting) {
        if self.waiting.len() == self.waiting.capacity() {
            self.waiting.retain(|w| w.wake.strong_count() > 0);
        }
        self.waiting.push(waiting);
    }

    /// Wakes every waiting hand-off whose event was read; drops those that gave up.
    fn answer_read(&mut self) {
        let Self { book, waiting } = self;
        let done =
            |w: &mut Waiting| w.wake.strong_count() == 0 || book.read_past(w.partition, w.offset);
        for w in waiting.extract_if(.., done) {
            if let Some(wake) = w.wake.upgrade() {
                wake.notify_one();
            }
        }
    }
}

/// Reads `campaign`'s topic from its start into `claims` until `stop`.
pub async fn tail(
    brokers: String,
    campaign: CampaignConfig,
    claims: Arc<Claims>,
    stop: CancellationToken,
) {
    let consumer = match tail_consumer(&brokers) {
        Ok(consumer) => Arc::new(consumer),
        Err(error) => {
            return tracing::error!(%error, campaign = %campaign.name, "cannot create the claims tail");
        }
    };
    let mut assigned = 0;
    let mut refresh = tokio::time::interval(PARTITIONS_REFRESH);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = refresh.tick() => match assign_new_partitions(&consumer, &campaign.topic, assigned, &claims).await {
                Ok(count) => assigned = count,
                Err(error) => tracing::warn!(%error, topic = %campaign.topic, "cannot assign the claims tail"),
            },
            message = consumer.recv(), if assigned > 0 => match message {
                Ok(message) => {
                    let mut read = vec![claim(&message, &campaign)];
                    drop(message);
                    read_ready(&consumer, &campaign, &mut read);
                    claims.record(&read);
                }
                Err(error) => tracing::warn!(%error, topic = %campaign.topic, "claims tail: consume failed"),
            },
        }
    }
}

/// What one message of the topic claims: its place, and its winner event if it is one of
/// the campaign's.
fn claim(
    message: &BorrowedMessage<'_>,
    campaign: &CampaignConfig,
) -> (i32, i64, Option<WinnerEvent>) {
    let event = (message.payload())
        .and_then(|p| WinnerEvent::from_payload(p).ok())
        .filter(|e| e.check_belongs_to(&campaign.name).is_ok());
    (message.partition(), message.offset(), event)
}

/// Adds the messages already received to `read`, without waiting for more (LMAX-style:
/// a busy topic is read back in batches, a quiet one message at a time).
fn read_ready(
    consumer: &StreamConsumer,
    campaign: &CampaignConfig,
    read: &mut Vec<(i32, i64, Option<WinnerEvent>)>,
) {
    while read.len() < MAX_READ_BATCH {
        match consumer.recv().now_or_never() {
            Some(Ok(message)) => read.push(claim(&message, campaign)),
            Some(Err(error)) => {
                tracing::warn!(%error, topic = %campaign.topic, "claims tail: consume failed");
                break;
            }
            None => break,
        }
    }
}

fn tail_consumer(brokers: &str) -> Result<StreamConsumer, KafkaError> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        // Assigned, never subscribed: the group id is required but no group is joined
        // and nothing is committed.
        .set("group.id", "firstcome-claims")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        // The broker answers a fetch as soon as an event is appended (`fetch.min.bytes`
        // stays 1), so this wait never delays a read-back; it bounds only how often a
        // quiet topic is asked again: 10 times a second (at 5 ms an idle tail cost its
        // issuer ~12 ms of CPU per second, 200 fetches, and the broker as many).
        .set("fetch.wait.max.ms", TAIL_FETCH_WAIT_MS)
        .create()
}

/// Assigns the topic's partitions from `assigned` on, from their start, telling `claims`
/// where each stands; returns how many partitions are assigned now.
async fn assign_new_partitions(
    consumer: &Arc<StreamConsumer>,
    topic: &str,
    assigned: usize,
    claims: &Claims,
) -> Result<usize, KafkaError> {
    let (reader, name) = (Arc::clone(consumer), topic.to_string());
    let watermarks = tokio::task::spawn_blocking(move || {
        let metadata = reader.fetch_metadata(Some(&name), METADATA_TIMEOUT)?;
        let count = metadata
            .topics()
            .first()
            .map_or(0, |t| t.partitions().len());
        (assigned..count)
            .map(|p| reader.fetch_watermarks(&name, p as i32, METADATA_TIMEOUT))
            .collect::<Result<Vec<_>, _>>()
    })
    .await
    .unwrap_or(Err(KafkaError::Canceled))?;
    let mut partitions = TopicPartitionList::new();
    for partition in assigned..assigned + watermarks.len() {
        partitions.add_partition_offset(topic, partition as i32, Offset::Beginning)?;
    }
    if watermarks.is_empty() {
        return Ok(assigned);
    }
    consumer.incremental_assign(&partitions)?;
    let mut state = claims.state();
    for (i, marks) in watermarks.into_iter().enumerate() {
        state.book.assigned((assigned + i) as i32, marks);
    }
    Ok(state.book.targets.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(user: &str, sequence: u64) -> WinnerEvent {
        WinnerEvent {
            campaign: "c".into(),
            user_id: user.into(),
            ordinal: 1,
            sequence,
            admitted_at: "2026-11-29T00:00:00Z".parse().unwrap(),
        }
    }

    #[test]
    fn the_first_claim_on_the_partition_holds_the_sequence() {
        let mut book = ClaimBook::default();
        book.record(0, 10, Some(&event("first", 7)));
        book.record(0, 11, Some(&event("first", 7)));
        book.record(0, 12, Some(&event("second", 7)));
        assert_eq!(book.holder_once_read(0, 12, 7), Some(Some("first")));
        assert_eq!(book.highest(), 7);
    }

    #[test]
    fn nothing_is_answered_before_the_offset_was_read() {
        let mut book = ClaimBook::default();
        assert_eq!(book.holder_once_read(1, 0, 3), None);
        book.record(1, 4, None);
        assert_eq!(
            book.holder_once_read(1, 5, 3),
            None,
            "offset 5 not read yet"
        );
        assert_eq!(
            book.holder_once_read(1, 4, 3),
            Some(None),
            "read, but nobody claims 3"
        );
        assert_eq!(book.holder_once_read(0, 0, 3), None, "another partition");
        assert_eq!(
            book.highest(),
            0,
            "a message that is no winner claims nothing"
        );
    }

    #[test]
    fn caught_up_once_every_partition_is_read_to_where_it_stood() {
        let mut book = ClaimBook::default();
        assert!(!book.caught_up(), "nothing assigned yet");
        book.assigned(0, (0, 2));
        book.assigned(1, (5, 5));
        assert!(!book.caught_up());
        book.record(0, 0, Some(&event("a", 1)));
        assert!(!book.caught_up());
        book.record(0, 1, Some(&event("b", 2)));
        assert!(book.caught_up(), "partition 1 was empty");
    }

    #[tokio::test]
    async fn a_waiting_hand_off_wakes_when_the_tail_reads_its_event() {
        let claims = Claims::default();
        let wake = Arc::new(Notify::new());
        assert_eq!(claims.read_back((2, 5), 9, &wake), None, "not read yet");
        assert_eq!(claims.read_back((2, 6), 9, &wake), None, "not read yet");
        claims.record(&[(2, 5, Some(event("me", 9)))]);
        // Woken (the permit is kept for a waiter that comes after the wake-up).
        wake.notified().await;
        assert_eq!(
            claims.holder_once_read((2, 5), 9),
            Some(Some("me".to_string()))
        );
        assert_eq!(
            claims.holder_once_read((2, 6), 9),
            None,
            "offset 6 not read"
        );
        assert_eq!(claims.state().waiting.len(), 1, "offset 6 still waited for");
        drop(wake);
        claims.record(&[(1, 0, None)]);
        assert!(
            claims.state().waiting.is_empty(),
            "a hand-off that gave up is dropped"
        );
    }
}
