//! A campaign's keys in Redis: its limit written (never below what was admitted) and its
//! counts read on every reconcile; on delete, a tombstone left and every key removed.

use std::time::Duration;

use firstcome_contract::{CampaignConfig, CampaignKeys, RedisConnection, RedisTarget};
use redis::AsyncCommands;

use super::{BackendError, Connections, TIMEOUT, cached};

/// What Redis says about a provisioned campaign.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisCounts {
    /// The limit in force (the spec's, unless it was refused).
    pub limit: u64,
    pub admitted: u64,
    /// The spec's limit, when it was refused for being below `admitted`.
    pub refused_limit: Option<u64>,
    /// Tickets in the campaign's waiting room, if it has one.
    pub waiting: Option<u64>,
}

/// How long a deleted campaign's tombstone outlives it: far longer than its issuers,
/// which go with the campaign's Deployment.
const TOMBSTONE_TTL: Duration = Duration::from_secs(24 * 60 * 60);

pub(super) fn set_limit_script() -> redis::Script {
    redis::Script::new(include_str!("set_limit.lua"))
}

impl Connections {
    /// A connection to wherever `url` says Redis is: one primary, Sentinel or Cluster.
    async fn redis(&self, url: &str) -> Result<RedisConnection, BackendError> {
        cached(&self.redis, url, async |url| {
            let target: RedisTarget = url.parse().map_err(BackendError::InvalidRedisUrl)?;
            RedisConnection::connect(&target, TIMEOUT)
                .await
                .map_err(BackendError::RedisUnreachable)
        })
        .await
    }

    /// Writes the campaign's limit (never below what was admitted) and reads its counts.
    /// `first_time`: the campaign was never provisioned, so its counter starts at zero.
    pub async fn provision_redis(
        &self,
        url: &str,
        config: &CampaignConfig,
        first_time: bool,
    ) -> Result<RedisCounts, BackendError> {
        let mut conn = self.redis(url).await?;
        let keys = CampaignKeys::new(&config.name);
        let (applied, limit, admitted): (i64, u64, i64) = self
            .set_limit
            .key(&keys.limit)
            .key(&keys.admitted)
            .key(&keys.deleted)
            .key(&keys.free)
            .arg(config.limit)
            .arg(if first_time { "1" } else { "0" })
            .invoke_async(&mut conn)
            .await
            .map_err(BackendError::Redis)?;
        let admitted = u64::try_from(admitted).map_err(|_| BackendError::AdmissionStateMissing)?;
        let waiting = match config.waiting_room {
            Some(_) => Some(
                redis::cmd("ZCARD")
                    .arg(&keys.room_queue)
                    .query_async(&mut conn)
                    .await
                    .map_err(BackendError::Redis)?,
            ),
            None => None,
        };
        Ok(RedisCounts {
            limit,
            admitted,
            refused_limit: (applied == 0).then_some(config.limit),
            waiting,
        })
    }

    /// Leaves the campaign's tombstone, then removes every key of it: the issuers still
    /// running until their Deployment is gone answer "unprovisioned" instead of
    /// restoring the keys from PostgreSQL.
    pub async fn delete_redis_keys(&self, url: &str, campaign: &str) -> Result<(), BackendError> {
        let mut conn = self.redis(url).await?;
        let keys = CampaignKeys::new(campaign);
        conn.set_ex::<_, _, ()>(&keys.deleted, 1, TOMBSTONE_TTL.as_secs())
            .await
            .map_err(BackendError::Redis)?;
        conn.del::<_, ()>(&keys.all()[..])
            .await
            .map_err(BackendError::Redis)
    }
}
