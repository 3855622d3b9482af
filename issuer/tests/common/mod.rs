//! Shared helpers of the issuer's integration tests: the real services of the test bed
//! (`scripts/testbed`), issuer processes, and spikes of concurrent applies.
#![allow(dead_code)] // each test binary uses a different part of this module

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;

/// Connection settings of the test bed's real services.
pub struct Services {
    pub redis_url: String,
    pub database_url: String,
    pub kafka_brokers: String,
}

fn required_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: run the tests through scripts/test, which starts the real services"
        )
    })
}

pub fn services() -> Services {
    Services {
        redis_url: required_env("FIRSTCOME_TEST_REDIS_URL"),
        database_url: required_env("FIRSTCOME_TEST_DATABASE_URL"),
        kafka_brokers: required_env("FIRSTCOME_TEST_KAFKA_BROKERS"),
    }
}

/// A campaign name no other test (or earlier run) uses.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "{prefix}-{}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        nanos % 1_000_000_007
    )
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `firstcome-issuer` process; killed when dropped.
pub struct IssuerProcess {
    child: Child,
    pub base: String,
    args: Vec<String>,
}

impl IssuerProcess {
    /// Starts the issuer binary with `args` and waits until it is ready.
    pub async fn start(args: &[String]) -> Self {
        let port = free_port();
        let mut full: Vec<String> = args.to_vec();
        full.extend(["--listen".into(), format!("127.0.0.1:{port}")]);
        let child = Command::new(env!("CARGO_BIN_EXE_firstcome-issuer"))
            .args(&full)
            .env("RUST_LOG", "warn,firstcome_issuer=info")
            .stdin(Stdio::null())
            .spawn()
            .expect("starting firstcome-issuer");
        let mut process = Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            args: args.to_vec(),
        };
        process.wait_ready().await;
        process
    }

    /// A distributed issuer (API and consumer) serving `campaigns` (NAME:LIMIT).
    pub async fn distributed(services: &Services, extra: &[&str]) -> Self {
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
        Self::start(&args).await
    }

    /// A standalone issuer keeping its ledger in `data_dir`.
    pub async fn standalone(data_dir: &Path, extra: &[&str]) -> Self {
        let mut args = vec!["--data-dir".to_string(), data_dir.display().to_string()];
        args.extend(extra.iter().map(|s| s.to_string()));
        Self::start(&args).await
    }

    async fn wait_ready(&mut self) {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "issuer exited during start-up ({status}); args {:?}",
                    self.args
                );
            }
            if let Ok(response) = client.get(format!("{}/readyz", self.base)).send().await
                && response.status() == StatusCode::OK
            {
                return;
            }
            assert!(Instant::now() < deadline, "issuer not ready within 60 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGKILL: the process gets no chance to clean up.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits for a graceful exit.
    pub fn terminate(&mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.child.try_wait().unwrap().is_none() {
            assert!(
                Instant::now() < deadline,
                "issuer did not stop within 30 s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(self.child.wait().unwrap().success(), "graceful exit");
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        let response = reqwest::get(format!("{}{path}", self.base)).await.unwrap();
        let status = response.status();
        (status, response.json().await.unwrap())
    }

    pub async fn metrics(&self) -> String {
        reqwest::get(format!("{}/metrics", self.base))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

impl Drop for IssuerProcess {
    fn drop(&mut self) {
        self.kill();
    }
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
pub struct Answer {
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
) -> Vec<Answer> {
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
                Answer { user, status, body }
            }
        })
        .buffer_unordered(in_flight)
        .collect()
        .await
}

/// How many answers had each reason.
pub fn count_reasons(answers: &[Answer]) -> HashMap<String, usize> {
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
pub fn admitted_sequences(answers: &[Answer]) -> Vec<u64> {
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

/// The coupons of a campaign in PostgreSQL: (user id, sequence), by sequence.
pub async fn coupons(pool: &PgPool, campaign: &str) -> Vec<(String, i64)> {
    sqlx::query_as("SELECT user_id, sequence FROM coupons WHERE campaign = $1 ORDER BY sequence")
        .bind(campaign)
        .fetch_all(pool)
        .await
        .unwrap_or_default()
}

/// Waits (bounded) until the campaign has `expected` coupons, and returns them.
pub async fn wait_for_coupons(
    pool: &PgPool,
    campaign: &str,
    expected: usize,
) -> Vec<(String, i64)> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let found = coupons(pool, campaign).await;
        if found.len() >= expected || Instant::now() > deadline {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub fn users(prefix: &str, count: usize) -> Vec<String> {
    (0..count).map(|i| format!("{prefix}-{i}")).collect()
}
