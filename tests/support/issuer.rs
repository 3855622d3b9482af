//! Issuers as processes (distributed or standalone) and the coupons they persist in
//! PostgreSQL; also the raw spike tests/operator.rs uses.

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use sqlx::{Connection, PgConnection, PgPool};

use crate::Services;
use crate::process::{Ports, Process};
use crate::spike::{Retry, Spike};

/// Starts `firstcome-issuer` with `args` on free ports (API and operations) and waits
/// until it is ready.
pub async fn start_issuer(args: &[String]) -> Process {
    let ports = Ports::free();
    let mut full = args.to_vec();
    full.extend(listen_args(ports));
    Process::start("firstcome-issuer", &full, &[], ports, "/readyz").await
}

/// The issuer's arguments that make it listen on `ports`.
pub fn listen_args(ports: Ports) -> [String; 4] {
    [
        "--listen".into(),
        format!("127.0.0.1:{}", ports.api),
        "--ops-listen".into(),
        format!("127.0.0.1:{}", ports.ops),
    ]
}

/// A distributed issuer (API and consumer) against the test bed.
pub async fn start_distributed(services: &Services, extra: &[&str]) -> Process {
    let mut args = vec![
        "--redis-url".to_string(),
        services.redis_url.clone(),
        "--kafka-brokers".into(),
        services.kafka_brokers.clone(),
        "--database-url".into(),
        services.database_url.clone(),
        // Short, so a new campaign is provisioned quickly (see Distributed::provision).
        "--delivery-timeout-ms".into(),
        "2000".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    start_issuer(&args).await
}

/// A standalone issuer keeping its ledger in `data_dir`.
pub async fn start_standalone(data_dir: &Path, extra: &[&str]) -> Process {
    let mut args = vec!["--data-dir".to_string(), data_dir.display().to_string()];
    args.extend(extra.iter().map(|s| s.to_string()));
    start_issuer(&args).await
}

/// A fresh directory under the system's temporary directory.
pub fn temp_dir(prefix: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(crate::unique_name(prefix));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The answer one user got in [`spike`].
pub struct Reply {
    pub user: String,
    pub status: StatusCode,
    pub body: Value,
}

/// A raw spike ([`Spike`] under [`Retry::Never`]) answered as [`Reply`]s, the shape
/// tests/operator.rs counts.
pub async fn spike(
    bases: &[&str],
    campaign: &str,
    users: Vec<String>,
    in_flight: usize,
) -> Vec<Reply> {
    let answers = Spike::new(bases, campaign)
        .in_flight(in_flight)
        .retry(Retry::Never)
        .run(users)
        .await;
    answers
        .into_iter()
        .map(|a| Reply {
            user: a.user,
            status: a
                .status
                .expect("under Retry::Never every apply is answered"),
            body: a.body,
        })
        .collect()
}

/// A pool on the test bed's PostgreSQL.
///
/// A server just restarted, or one at its connection limit, refuses for a while: a
/// connection is tried for at most 60 s, and a failure names the server's own error
/// (a pool's first connect would only say it timed out).
pub async fn postgres(services: &Services) -> PgPool {
    let url = &services.database_url;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        match PgConnection::connect(url).await {
            Ok(probe) => {
                let _ = probe.close().await;
                break;
            }
            Err(error) if std::time::Instant::now() < deadline => {
                println!("the test bed's PostgreSQL refused a connection, again in 1 s: {error}");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(error) => panic!("connecting to the test bed's PostgreSQL: {error}"),
        }
    }
    PgPool::connect(url)
        .await
        .expect("connecting to the test bed's PostgreSQL")
}

async fn try_coupons(pool: &PgPool, campaign: &str) -> sqlx::Result<Vec<(String, i64)>> {
    sqlx::query_as("SELECT user_id, sequence FROM coupons WHERE campaign = $1 ORDER BY sequence")
        .bind(campaign)
        .fetch_all(pool)
        .await
}

/// The coupons of a campaign in PostgreSQL: (user id, sequence), by sequence; none while
/// PostgreSQL cannot be read.
pub async fn coupons(pool: &PgPool, campaign: &str) -> Vec<(String, i64)> {
    try_coupons(pool, campaign).await.unwrap_or_default()
}

/// Waits (at most 60 s, else fails) until the campaign has at least `expected` coupons,
/// and returns them.
pub async fn wait_for_coupons(
    pool: &PgPool,
    campaign: &str,
    expected: usize,
) -> Vec<(String, i64)> {
    crate::wait_until(
        &format!("{expected} coupons of {campaign} in PostgreSQL"),
        Duration::from_secs(60),
        || async {
            match try_coupons(pool, campaign).await {
                Ok(found) if found.len() >= expected => Ok(found),
                Ok(found) => Err(format!("{} coupons", found.len())),
                Err(error) => Err(format!("an error: {error}")),
            }
        },
    )
    .await
}
