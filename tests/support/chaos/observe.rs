//! What a campaign ended with, read for the checker straight from the durable record:
//! PostgreSQL's coupons and failed events, every message of the campaign's topic, the
//! summary the issuers serve, and the counts the operator would publish (read from Redis
//! and PostgreSQL as operator/src/backends reads them).

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use serde_json::Value;
use sqlx::PgPool;

use firstcome_contract::{
    CampaignConfig, CampaignKeys, ConsumerLane, RedisConnection, RedisTarget,
};

use super::checker::{Coupon, CrdCounts, Event, FailedEvent, Observed, Summary};
use crate::Services;

/// The campaign `name` (limits as planned), its topic `topic`, and the issuers at `bases`.
pub struct Campaign<'a> {
    pub name: &'a str,
    pub topic: &'a str,
    pub limit: i64,
    pub per_user_limit: i64,
}

pub async fn observe(
    services: &Services,
    pool: &PgPool,
    campaign: &Campaign<'_>,
    bases: &[String],
) -> Observed {
    let brokers = services.kafka_brokers.clone();
    let topic = campaign.topic.to_string();
    let name = campaign.name.to_string();
    let events = tokio::task::spawn_blocking(move || read_topic(&brokers, &topic, &name))
        .await
        .expect("the topic reader's thread");
    Observed {
        topic: campaign.topic.to_string(),
        limit: campaign.limit,
        per_user_limit: campaign.per_user_limit,
        coupons: coupons(pool, campaign.name).await,
        events,
        unresolved: unresolved(pool, campaign).await,
        summary: summary(bases, campaign.name).await,
        crd: crd_counts(&services.redis_url, pool, campaign.name).await,
    }
}

/// The campaign's admission counter in Redis; `None` when Redis holds none (lost, or
/// fenced and not restored yet) or cannot be reached.
pub async fn counter(redis_url: &str, campaign: &str) -> Option<i64> {
    let target: RedisTarget = redis_url.parse().expect("the run's Redis URL");
    let mut conn = RedisConnection::connect(&target, Duration::from_secs(5))
        .await
        .ok()?;
    let keys = CampaignKeys::new(campaign);
    redis::cmd("GET")
        .arg(&keys.admitted)
        .query_async(&mut conn)
        .await
        .ok()?
}

/// Whether the consumer groups of the campaign's two lanes (its topic `topic` and the
/// dead-letter topic, the groups as firstcome-contract names them) have committed every
/// message their topics hold; `false` while a broker cannot tell.
pub async fn consumers_caught_up(brokers: &str, campaign: &str, topic: &str) -> bool {
    let mut config = CampaignConfig::new(campaign, 1);
    config.topic = topic.to_string();
    let brokers = brokers.to_string();
    let lanes = [config.primary_lane(), config.dead_letter_lane()];
    tokio::task::spawn_blocking(move || lanes.iter().all(|lane| lag(&brokers, lane) == Some(0)))
        .await
        .expect("the lag reader's thread")
}

/// The messages of `lane`'s topic its consumer group has not committed (a partition it
/// never committed counts from its low watermark); `None` when the broker cannot tell.
fn lag(brokers: &str, lane: &ConsumerLane) -> Option<i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", &lane.group)
        .set("enable.auto.commit", "false")
        .create()
        .ok()?;
    let timeout = Duration::from_secs(5);
    let metadata = consumer.fetch_metadata(Some(&lane.topic), timeout).ok()?;
    let mut partitions = TopicPartitionList::new();
    for partition in metadata.topics().iter().flat_map(|t| t.partitions()) {
        partitions.add_partition(&lane.topic, partition.id());
    }
    let committed = consumer.committed_offsets(partitions, timeout).ok()?;
    let mut lag = 0;
    for element in committed.elements() {
        let (low, high) =
            (consumer.fetch_watermarks(&lane.topic, element.partition(), timeout)).ok()?;
        let read = match element.offset() {
            Offset::Offset(next) => next.max(low),
            _ => low,
        };
        lag += (high - read).max(0);
    }
    Some(lag)
}

/// The operator's status counts: the limit and the counter less the free sequences from
/// Redis (operator/src/backends/keys.rs), the coupons and unresolved failed events of the
/// campaign from PostgreSQL (operator/src/backends/postgres.rs). `None` when Redis holds
/// no counter.
async fn crd_counts(redis_url: &str, pool: &PgPool, campaign: &str) -> Option<CrdCounts> {
    let target: RedisTarget = redis_url.parse().expect("the run's Redis URL");
    let mut conn = RedisConnection::connect(&target, Duration::from_secs(5))
        .await
        .expect("connecting to the run's Redis");
    let keys = CampaignKeys::new(campaign);
    let (limit, counter, free): (Option<i64>, Option<i64>, i64) = redis::pipe()
        .get(&keys.limit)
        .get(&keys.admitted)
        .zcard(&keys.free)
        .query_async(&mut conn)
        .await
        .expect("reading the campaign's limit, counter and free sequences");
    // The operator's set_limit.lua: the admissions are the counter less the free sequences.
    let admitted = counter.map(|counter| counter - free);
    let (issued, failed_events): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM coupons WHERE campaign = $1), \
                (SELECT count(*) FROM failed_events WHERE campaign = $1 AND resolved_at IS NULL)",
    )
    .bind(campaign)
    .fetch_one(pool)
    .await
    .expect("counting the coupons and failed events");
    Some(CrdCounts {
        limit: limit?,
        admitted: admitted?,
        issued,
        failed_events,
    })
}

async fn coupons(pool: &PgPool, campaign: &str) -> Vec<Coupon> {
    let rows: Vec<(String, i32, i64)> = sqlx::query_as(
        "SELECT user_id, ordinal, sequence FROM coupons WHERE campaign = $1 ORDER BY sequence",
    )
    .bind(campaign)
    .fetch_all(pool)
    .await
    .expect("reading the coupons");
    rows.into_iter()
        .map(|(user, ordinal, sequence)| Coupon {
            user,
            ordinal: i64::from(ordinal),
            sequence,
        })
        .collect()
}

/// Unresolved failed events of the campaign, its topic or its dead-letter topic.
async fn unresolved(pool: &PgPool, campaign: &Campaign<'_>) -> Vec<FailedEvent> {
    let rows: Vec<(String, i32, i64, String, String)> = sqlx::query_as(
        "SELECT topic, partition, \"offset\", reason, error FROM failed_events \
         WHERE (campaign = $1 OR topic = $2 OR topic = $2 || '.dlq') AND resolved_at IS NULL",
    )
    .bind(campaign.name)
    .bind(campaign.topic)
    .fetch_all(pool)
    .await
    .expect("reading the failed events");
    rows.into_iter()
        .map(|(topic, partition, offset, reason, error)| FailedEvent {
            topic,
            partition,
            offset,
            reason,
            error,
        })
        .collect()
}

/// The first summary an issuer answers with.
pub async fn summary(bases: &[String], campaign: &str) -> Option<Summary> {
    for base in bases {
        let Ok(response) = reqwest::get(format!("{base}/v1/campaigns/{campaign}")).await else {
            continue;
        };
        let Ok(body) = response.json::<Value>().await else {
            continue;
        };
        let count = |field: &str| body[field].as_i64();
        if let (Some(admitted), Some(issued), Some(pending)) = (
            count("admitted"),
            count("issued"),
            count("pendingPersistence"),
        ) {
            return Some(Summary {
                admitted,
                issued,
                pending_persistence: pending,
            });
        }
    }
    None
}

/// A winner event of `campaign` as the topic carries it (JSON with `campaign`, `userId`,
/// `ordinal`, `sequence`); `None` for anything else.
fn claim(payload: Option<&[u8]>, campaign: &str) -> Option<Coupon> {
    let event: Value = serde_json::from_slice(payload?).ok()?;
    (event["campaign"] == campaign).then_some(())?;
    Some(Coupon {
        user: event["userId"].as_str()?.to_string(),
        ordinal: event["ordinal"].as_i64()?,
        sequence: event["sequence"].as_i64()?,
    })
}

/// Tries for the partition's watermarks to read them: a broker just started again may
/// not lead its partitions yet (`NotLeaderForPartition`) for a few seconds.
const WATERMARK_TRIES: u32 = 60;

/// The low and high watermarks of `partition`, asked again (at most [`WATERMARK_TRIES`]
/// times, every 500 ms) while the broker cannot tell them yet.
fn watermarks(consumer: &BaseConsumer, topic: &str, partition: i32) -> (i64, i64) {
    let timeout = Duration::from_secs(10);
    let mut tries = 0;
    loop {
        tries += 1;
        match consumer.fetch_watermarks(topic, partition, timeout) {
            Ok(marks) => return marks,
            Err(error) if tries < WATERMARK_TRIES => {
                eprintln!("chaos: the watermarks of {topic}/{partition}: {error}; asking again");
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(error) => panic!("the watermarks of {topic}/{partition}: {error}"),
        }
    }
}

/// Every message of `topic`, from the start of each partition to its end as it stands.
fn read_topic(brokers: &str, topic: &str, campaign: &str) -> Vec<Event> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set(
            "group.id",
            format!("chaos-checker-{}", crate::unique_name("read")),
        )
        .set("enable.auto.commit", "false")
        .create()
        .expect("a Kafka consumer");
    let timeout = Duration::from_secs(10);
    let metadata = consumer
        .fetch_metadata(Some(topic), timeout)
        .expect("the topic's metadata");
    let partitions: Vec<i32> = (metadata.topics().iter())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    let mut assignment = TopicPartitionList::new();
    let mut remaining = std::collections::HashMap::new();
    for &partition in &partitions {
        let (low, high) = watermarks(&consumer, topic, partition);
        if high > low {
            remaining.insert(partition, high);
        }
        assignment
            .add_partition_offset(topic, partition, Offset::Beginning)
            .expect("assigning a partition");
    }
    consumer.assign(&assignment).expect("assigning the topic");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut events = Vec::new();
    while !remaining.is_empty() {
        assert!(
            Instant::now() < deadline,
            "reading {topic}: {remaining:?} left"
        );
        let Some(message) = consumer.poll(Duration::from_millis(500)) else {
            continue;
        };
        let message = message.expect("a message of the topic");
        events.push(Event {
            partition: message.partition(),
            offset: message.offset(),
            claim: claim(message.payload(), campaign),
        });
        if remaining.get(&message.partition()) <= Some(&(message.offset() + 1)) {
            remaining.remove(&message.partition());
        }
    }
    events
}
