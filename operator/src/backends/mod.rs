//! The operator's side of Redis, Kafka and PostgreSQL: provisioning a campaign's keys and
//! topic, reading its counts, and removing them on delete. Connection settings come from
//! the campaign's backends Secret; connections are kept per URL.

mod error;
mod kafka;
mod keys;
mod postgres;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use firstcome_contract::RedisConnection;
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};
use sqlx::postgres::PgPool;
use tokio::sync::Mutex;

pub use self::error::{BackendError, TopicAction};
pub use self::keys::RedisCounts;
pub use self::postgres::Persistence;
use crate::desired::SECRET_KEYS;

const TIMEOUT: Duration = Duration::from_secs(3);

/// Connection settings of one campaign, read from its Secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    pub redis_url: String,
    pub kafka_brokers: String,
    pub database_url: String,
}

/// Reads the backends Secret; the error names what is missing.
pub async fn settings(
    client: &Client,
    namespace: &str,
    secret: &str,
) -> Result<Settings, BackendError> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let found = secrets
        .get_opt(secret)
        .await
        .map_err(|source| BackendError::SecretUnreadable {
            namespace: namespace.into(),
            name: secret.into(),
            source,
        })?
        .ok_or_else(|| BackendError::SecretMissing {
            namespace: namespace.into(),
            name: secret.into(),
        })?;
    let data = found.data.unwrap_or_default();
    let value = |key: &'static str| {
        data.get(key)
            .and_then(|v| String::from_utf8(v.0.clone()).ok())
            .filter(|v| !v.is_empty())
            .ok_or_else(|| BackendError::SecretKeyMissing {
                namespace: namespace.into(),
                name: secret.into(),
                key,
            })
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
    redis: Mutex<HashMap<String, RedisConnection>>,
    postgres: Mutex<HashMap<String, PgPool>>,
    kafka: Mutex<HashMap<String, Arc<kafka::Admin>>>,
    /// Hashed once; sent by SHA on every reconcile.
    set_limit: redis::Script,
}

impl Default for Connections {
    fn default() -> Self {
        Self {
            redis: Mutex::default(),
            postgres: Mutex::default(),
            kafka: Mutex::default(),
            set_limit: keys::set_limit_script(),
        }
    }
}

/// The connection to `url` from `cache`, made by `connect` on first use. The lock is held
/// while connecting, so concurrent reconciles share one connection.
async fn cached<T: Clone>(
    cache: &Mutex<HashMap<String, T>>,
    url: &str,
    connect: impl AsyncFnOnce(&str) -> Result<T, BackendError>,
) -> Result<T, BackendError> {
    let mut cache = cache.lock().await;
    if let Some(conn) = cache.get(url) {
        return Ok(conn.clone());
    }
    let conn = connect(url).await?;
    cache.insert(url.to_string(), conn.clone());
    Ok(conn)
}
