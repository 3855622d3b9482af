//! Failovers on the chaos bed's replicated Redis (the Sentinel and Cluster beds of
//! `scripts/testbed`, on the chaos bed's ports): a bed up for the seeds that draw it and
//! down after them, a primary killed, a lagging replica promoted, and the bed healed.

use std::time::{Duration, Instant};

use firstcome_contract::RedisTarget;

use super::bed::{CLUSTER_PORT, ChaosBed, SENTINEL_PORT, SENTINEL_REDIS_PORT};
use super::schedule::RedisBed;
use crate::redis_beds;

/// The Sentinels' master name (`scripts/testbed`'s).
const MASTER: &str = "firstcome";
/// Longest wait for the Sentinels or the Cluster to put a replica in a dead primary's
/// place (down-after 1 s, cluster-node-timeout 2 s, an election).
const FAILOVER_BUDGET: Duration = Duration::from_secs(30);

/// The `redis+sentinel://` or `redis+cluster://` URL of `redis`'s bed, brought up (`None`
/// for the single Redis, which is always up).
pub async fn up(bed: &ChaosBed, redis: RedisBed) -> Option<String> {
    let (command, url) = match redis {
        RedisBed::Single => return None,
        RedisBed::Sentinel => ("up-sentinel", "redis+sentinel://"),
        RedisBed::Cluster => ("up-cluster", "redis+cluster://"),
    };
    let exports = bed.testbed(&[command]).await;
    let value = |name: &str| super::bed::exported(&exports, name);
    Some(match redis {
        RedisBed::Sentinel => format!(
            "{url}{}/{}",
            value("FIRSTCOME_TEST_SENTINELS"),
            value("FIRSTCOME_TEST_SENTINEL_MASTER")
        ),
        _ => format!("{url}{}", value("FIRSTCOME_TEST_REDIS_CLUSTER")),
    })
}

/// Stops `redis`'s bed and deletes its state (nothing for the single Redis).
pub async fn down(bed: &ChaosBed, redis: RedisBed) {
    match redis {
        RedisBed::Single => {}
        RedisBed::Sentinel => drop(bed.testbed(&["down-sentinel"]).await),
        RedisBed::Cluster => drop(bed.testbed(&["down-cluster"]).await),
    }
}

async fn connection(port: u16) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
    redis_beds::connection(&format!("redis://127.0.0.1:{port}")).await
}

/// The port of the primary the first answering Sentinel of the chaos bed names.
async fn sentinel_primary() -> Option<u16> {
    let sentinels = (SENTINEL_PORT..SENTINEL_PORT + 3).map(|port| format!("127.0.0.1:{port}"));
    let url = format!(
        "redis+sentinel://{}/{MASTER}",
        sentinels.collect::<Vec<_>>().join(",")
    );
    let target: RedisTarget = url.parse().expect("the chaos bed's Sentinel URL");
    redis_beds::sentinel_primary_port(&target).await
}

/// Waits (at most [`FAILOVER_BUDGET`]) until `settled` says the failover is done.
async fn wait_for<F: std::future::Future<Output = bool>>(what: &str, settled: impl Fn() -> F) {
    let deadline = Instant::now() + FAILOVER_BUDGET;
    while !settled().await {
        if Instant::now() > deadline {
            eprintln!("chaos: {what} not within {FAILOVER_BUDGET:?}; healing the bed anyway");
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until the Sentinels name a primary other than `old`.
async fn sentinel_failed_over(old: u16) {
    wait_for("the Sentinels' failover", || async {
        sentinel_primary().await.is_some_and(|p| p != old)
    })
    .await;
}

/// `kill -9` of the Sentinel bed's primary; once the Sentinels promoted the replica and
/// `lasts` passed, the dead node is started again (a replica of the new primary).
pub async fn kill_sentinel_primary(bed: &ChaosBed, lasts: Duration) {
    let _one_at_a_time = bed.redis.lock().await;
    let Some(primary) = sentinel_primary().await else {
        panic!("no Sentinel of the chaos bed names a primary");
    };
    bed.testbed(&["redis-node", "kill", &primary.to_string()])
        .await;
    tokio::time::sleep(lasts).await;
    sentinel_failed_over(primary).await;
    bed.testbed(&["up-sentinel"]).await;
}

/// The replica stopped and dropped by the primary (its replication timeout cut to 1 s)
/// for `lasts` while admissions go on; then the primary killed and the replica resumed,
/// so the Sentinels promote a replica that lacks the admissions of that time.
pub async fn promote_lagging_replica(bed: &ChaosBed, lasts: Duration) {
    let _one_at_a_time = bed.redis.lock().await;
    let Some(primary) = sentinel_primary().await else {
        panic!("no Sentinel of the chaos bed names a primary");
    };
    let replica = if primary == SENTINEL_REDIS_PORT {
        SENTINEL_REDIS_PORT + 1
    } else {
        SENTINEL_REDIS_PORT
    };
    let timeout_cut: redis::RedisResult<()> = match connection(primary).await {
        Ok(mut conn) => {
            (redis::cmd("CONFIG").arg("SET").arg("repl-timeout").arg(1))
                .query_async(&mut conn)
                .await
        }
        Err(error) => Err(error),
    };
    if let Err(error) = timeout_cut {
        eprintln!("chaos: the primary's repl-timeout: {error}; the replica may lag less");
    }
    bed.testbed(&["redis-node", "stop", &replica.to_string()])
        .await;
    tokio::time::sleep(lasts).await;
    bed.testbed(&["redis-node", "kill", &primary.to_string()])
        .await;
    bed.testbed(&["redis-node", "cont", &replica.to_string()])
        .await;
    sentinel_failed_over(primary).await;
    bed.testbed(&["up-sentinel"]).await;
}

/// The Cluster node (`host:port`) serving `campaign`'s slot as `asked` tells it, without
/// following a redirect; `None` when `asked` does not answer.
async fn slot_owner(asked: u16, campaign: &str) -> Option<String> {
    let mut conn = connection(asked).await.ok()?;
    let keys = firstcome_contract::CampaignKeys::new(campaign);
    match (redis::cmd("EXISTS").arg(&keys.admitted))
        .query_async::<i64>(&mut conn)
        .await
    {
        Ok(_) => Some(format!("127.0.0.1:{asked}")),
        Err(error) => error
            .redirect_node()
            .map(|(owner, _slot)| owner.to_string()),
    }
}

/// What a node of the Cluster bed other than `not` says serves `campaign`'s slot.
async fn slot_owner_but(not: Option<u16>, campaign: &str) -> Option<String> {
    for port in (CLUSTER_PORT..CLUSTER_PORT + 6).filter(|p| Some(*p) != not) {
        if let Some(owner) = slot_owner(port, campaign).await {
            return Some(owner);
        }
    }
    None
}

/// `kill -9` of the Cluster primary serving `campaign`'s slot; once its replica took the
/// slot over and `lasts` passed, the dead node is started again (it rejoins as a
/// replica).
pub async fn kill_slot_primary(bed: &ChaosBed, campaign: &str, lasts: Duration) {
    let _one_at_a_time = bed.redis.lock().await;
    let owner = slot_owner_but(None, campaign).await;
    let Some(port) = owner
        .as_deref()
        .and_then(|o| o.rsplit(':').next()?.parse::<u16>().ok())
    else {
        panic!("no node of the chaos Cluster bed names {campaign}'s primary: {owner:?}");
    };
    bed.testbed(&["redis-node", "kill", &port.to_string()])
        .await;
    tokio::time::sleep(lasts).await;
    wait_for("the Cluster's failover", || async {
        slot_owner_but(Some(port), campaign)
            .await
            .is_some_and(|now| Some(now) != owner)
    })
    .await;
    bed.testbed(&["up-cluster"]).await;
}
