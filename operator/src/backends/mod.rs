//! The operator's side of Redis, Kafka and PostgreSQL: provisioning a campaign's keys and
//! topic, reading its counts, and removing them on delete. Connection settings come from
//! the campaign's backends Secret; connections are kept per URL.

use std::collections::HashMap;
use std::time::Duration;

use firstcome_contract::{CampaignConfig, CampaignKeys};
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewPartitions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use sqlx::postgres::{PgPool, PgPoolOptions};
use tokio::sync::Mutex;

use crate::desired::SECRET_KEYS;
use crate::status::{Persistence, RedisCounts};

const TIMEOUT: Duration = Duration::from_secs(3);

/// Writes the limit unless it would drop below what was already admitted. Creates the
/// admission counter only on a campaign's first provisioning (ARGV[2] = 1): a counter
/// that vanished later means Redis lost its data, and only an issuer may recreate it,
/// from PostgreSQL. Returns {limit applied?, limit in force, admitted or -1 if missing}.
const SET_LIMIT_SCRIPT: &str = r"
if ARGV[2] == '1' then
  redis.call('SET', KEYS[2], 0, 'NX')
end
local admitted = tonumber(redis.call('GET', KEYS[2]) or '-1')
if tonumber(ARGV[1]) < admitted then
  return {0, tonumber(redis.call('GET', KEYS[1]) or '0'), admitted}
end
redis.call('SET', KEYS[1], ARGV[1])
return {1, tonumber(ARGV[1]), admitted}
";

/// Connection settings of one campaign, read from its Secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    pub redis_url: String,
    pub kafka_brokers: String,
    pub database_url: String,
}

/// Reads the backends Secret; the error names what is missing.
pub async fn settings(client: &Client, namespace: &str, secret: &str) -> Result<Settings, String> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let found = secrets
        .get_opt(secret)
        .await
        .map_err(|e| format!("cannot read Secret {namespace}/{secret}: {e}"))?
        .ok_or_else(|| format!("Secret {namespace}/{secret} does not exist"))?;
    let data = found.data.unwrap_or_default();
    let value = |key: &str| {
        data.get(key)
            .and_then(|v| String::from_utf8(v.0.clone()).ok())
            .filter(|v| !v.is_empty())
            .ok_or_else(|| format!("Secret {namespace}/{secret} has no key {key:?}"))
    };
    let [(redis, _), (kafka, _), (database, _)] = SECRET_KEYS;
    Ok(Settings {
        redis_url: value(redis)?,
        kafka_brokers: value(kafka)?,
        database_url: value(database)?,
    })
}

/// Connections shared by all reconciles, by URL.
pub struct Connections {
    redis: Mutex<HashMap<String, ConnectionManager>>,
    postgres: Mutex<HashMap<String, PgPool>>,
    /// Hashed once; sent by SHA on every reconcile.
    set_limit: redis::Script,
}

impl Default for Connections {
    fn default() -> Self {
        Self {
            redis: Mutex::default(),
            postgres: Mutex::default(),
            set_limit: redis::Script::new(SET_LIMIT_SCRIPT),
        }
    }
}

impl Connections {
    async fn redis(&self, url: &str) -> Result<ConnectionManager, String> {
        let mut cache = self.redis.lock().await;
        if let Some(conn) = cache.get(url) {
            return Ok(conn.clone());
        }
        let client = redis::Client::open(url).map_err(|e| format!("invalid Redis URL: {e}"))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(TIMEOUT))
            .set_response_timeout(Some(TIMEOUT))
            .set_number_of_retries(1);
        let conn = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(|e| format!("cannot reach Redis: {e}"))?;
        cache.insert(url.to_string(), conn.clone());
        Ok(conn)
    }

    async fn postgres(&self, url: &str) -> Result<PgPool, String> {
        let mut cache = self.postgres.lock().await;
        if let Some(pool) = cache.get(url) {
            return Ok(pool.clone());
        }
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(TIMEOUT)
            .connect_lazy(url)
            .map_err(|e| format!("invalid PostgreSQL URL: {e}"))?;
        cache.insert(url.to_string(), pool.clone());
        Ok(pool)
    }

    /// Writes the campaign's limit (never below what was admitted) and reads its counts.
    /// `first_time`: the campaign was never provisioned, so its counter starts at zero.
    pub async fn provision_redis(
        &self,
        url: &str,
        config: &CampaignConfig,
        first_time: bool,
    ) -> Result<RedisCounts, String> {
        let mut conn = self.redis(url).await?;
        let keys = CampaignKeys::new(&config.name);
        let (applied, limit, admitted): (i64, u64, i64) = self
            .set_limit
            .key(&keys.limit)
            .key(&keys.admitted)
            .arg(config.limit)
            .arg(if first_time { "1" } else { "0" })
            .invoke_async(&mut conn)
            .await
            .map_err(|e| format!("Redis: {e}"))?;
        let Ok(admitted) = u64::try_from(admitted) else {
            return Err(
                "the campaign's admission state is missing from Redis (data loss?); \
                 issuers restore it from PostgreSQL"
                    .into(),
            );
        };
        Ok(RedisCounts {
            limit,
            admitted,
            limit_refused: (applied == 0).then(|| {
                format!(
                    "limit {} is below the {admitted} coupons already admitted; keeping {limit}",
                    config.limit
                )
            }),
        })
    }

    /// Removes every key of the campaign.
    pub async fn delete_redis_keys(&self, url: &str, campaign: &str) -> Result<(), String> {
        let mut conn = self.redis(url).await?;
        let keys = CampaignKeys::new(campaign);
        redis::cmd("DEL")
            .arg(&keys.all()[..])
            .query_async::<()>(&mut conn)
            .await
            .map_err(|e| format!("Redis: {e}"))
    }

    /// Coupons persisted and unresolved failed events of the campaign. Before the first
    /// issuer created the tables there are none of either.
    pub async fn persistence(&self, url: &str, campaign: &str) -> Result<Persistence, String> {
        let pool = self.postgres(url).await?;
        let counts: Result<(i64, i64), sqlx::Error> = sqlx::query_as(
            "SELECT (SELECT count(*) FROM coupons WHERE campaign = $1), \
                    (SELECT count(*) FROM failed_events WHERE campaign = $1 AND resolved_at IS NULL)",
        )
        .bind(campaign)
        .fetch_one(&pool)
        .await;
        match counts {
            Ok((issued, failed)) => Ok(Persistence {
                issued: issued as u64,
                failed_events: failed as u64,
            }),
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P01") => {
                Ok(Persistence {
                    issued: 0,
                    failed_events: 0,
                })
            }
            Err(e) => Err(format!("PostgreSQL: {e}")),
        }
    }
}

fn kafka_admin(brokers: &str) -> Result<AdminClient<DefaultClientContext>, String> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("socket.timeout.ms", "5000")
        .create()
        .map_err(|e| format!("Kafka: {e}"))
}

fn admin_options() -> AdminOptions {
    AdminOptions::new()
        .operation_timeout(Some(Duration::from_secs(10)))
        .request_timeout(Some(Duration::from_secs(10)))
}

/// Creates the topic if missing and grows it to `partitions` if it has fewer.
pub async fn ensure_topic(
    brokers: &str,
    topic: &str,
    partitions: i32,
    replication: i32,
) -> Result<(), String> {
    let admin = kafka_admin(brokers)?;
    let new_topic = NewTopic::new(topic, partitions, TopicReplication::Fixed(replication));
    let results = admin
        .create_topics([&new_topic], &admin_options())
        .await
        .map_err(|e| format!("Kafka: {e}"))?;
    match results.into_iter().next() {
        Some(Ok(_)) => return Ok(()),
        Some(Err((_, RDKafkaErrorCode::TopicAlreadyExists))) => {}
        Some(Err((_, code))) => {
            return Err(format!("Kafka refused to create topic {topic}: {code}"));
        }
        None => return Err("Kafka answered nothing".into()),
    }
    let metadata = {
        let admin_client = admin.inner();
        let topic = topic.to_string();
        tokio::task::block_in_place(|| admin_client.fetch_metadata(Some(&topic), TIMEOUT))
            .map_err(|e| format!("Kafka: {e}"))?
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
            .map_err(|e| format!("Kafka: {e}"))?;
    }
    Ok(())
}

pub async fn delete_topic(brokers: &str, topic: &str) -> Result<(), String> {
    let admin = kafka_admin(brokers)?;
    let results = admin
        .delete_topics(&[topic], &admin_options())
        .await
        .map_err(|e| format!("Kafka: {e}"))?;
    match results.into_iter().next() {
        Some(Ok(_)) | Some(Err((_, RDKafkaErrorCode::UnknownTopicOrPartition))) | None => Ok(()),
        Some(Err((_, code))) => Err(format!("Kafka refused to delete topic {topic}: {code}")),
    }
}
