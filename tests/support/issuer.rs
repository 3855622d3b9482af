//! Helpers of the issuer's own tests: issuer processes (distributed or standalone), plain
//! spikes that record every answer, and the coupons in PostgreSQL.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::Services;
use crate::process::{Process, free_port};

/// Starts `firstcome-issuer` with `args` on a free port and waits until it is ready.
pub async fn start_issuer(args: &[String]) -> Process {
    let port = free_port();
    let mut full = args.to_vec();
    full.extend(["--listen".into(), format!("127.0.0.1:{port}")]);
    Process::start("firstcome-issuer", &full, &[], port, "/readyz").await
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

/// One apply over HTTP.
pub async fn apply(
    client: &reqwest::Client,
    base: &str,
    campaign: &str,
    user: &str,
) -> (StatusCode, Value) {
    let response = client
        .post(format!("{base}/v1/campaigns/{campaign}/applications"))
        .json(&json!({ "userId": user }))
        .send()
        .await
        .expect("apply request");
    let status = response.status();
    (status, response.json().await.expect("apply answers JSON"))
}

/// The answer one user got in a spike.
pub struct Reply {
    pub user: String,
    pub status: StatusCode,
    pub body: Value,
}

/// Fires one apply per entry of `users`, `in_flight` at a time, spread round-robin over
/// `bases` (issuer URLs).
pub async fn spike(
    bases: &[&str],
    campaign: &str,
    users: Vec<String>,
    in_flight: usize,
) -> Vec<Reply> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(in_flight)
        .build()
        .unwrap();
    futures::stream::iter(users.into_iter().enumerate())
        .map(|(i, user)| {
            let client = client.clone();
            let base = bases[i % bases.len()].to_string();
            async move {
                let (status, body) = apply(&client, &base, campaign, &user).await;
                Reply { user, status, body }
            }
        })
        .buffer_unordered(in_flight)
        .collect()
        .await
}

/// How many answers had each reason.
pub fn count_reasons(answers: &[Reply]) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for answer in answers {
        let reason = answer.body["reason"]
            .as_str()
            .unwrap_or("<none>")
            .to_string();
        *counts.entry(reason).or_default() += 1;
    }
    counts
}

/// Sequences of the admitted answers, sorted.
pub fn admitted_sequences(answers: &[Reply]) -> Vec<u64> {
    let mut sequences: Vec<u64> = answers
        .iter()
        .filter(|a| a.status == StatusCode::CREATED)
        .map(|a| {
            a.body["sequence"]
                .as_u64()
                .expect("admitted answers carry a sequence")
        })
        .collect();
    sequences.sort_unstable();
    sequences
}

pub async fn postgres(services: &Services) -> PgPool {
    PgPool::connect(&services.database_url)
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

pub fn users(prefix: &str, count: usize) -> Vec<String> {
    (0..count).map(|i| format!("{prefix}-{i}")).collect()
}
