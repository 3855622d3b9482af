//! Support for the end-to-end tests: the real services of the test bed
//! (`scripts/testbed`, with its Sentinel and Cluster beds in [`redis_beds`]), the real
//! control plane (`scripts/controlplane`), the real Prometheus (`scripts/prometheus`, in
//! [`prometheus`]), Toxiproxy (`scripts/toxiproxy`, in [`toxiproxy`]), and the project's
//! binaries started as processes.

pub mod browser;
pub mod chaos;
pub mod cluster;
pub mod invariants;
pub mod issuer;
pub mod kubelet;
pub mod node;
pub mod process;
pub mod prometheus;
pub mod redis_beds;
pub mod spike;
pub mod tokens;
pub mod toxiproxy;

use std::future::Future;
use std::time::{Duration, Instant};

/// Connection settings of the test bed's real services.
pub struct Services {
    pub redis_url: String,
    pub database_url: String,
    pub kafka_brokers: String,
}

pub fn required_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: run the tests through scripts/test, which starts the real services"
        )
    })
}

impl Services {
    pub fn from_env() -> Self {
        Self {
            redis_url: required_env("FIRSTCOME_TEST_REDIS_URL"),
            database_url: required_env("FIRSTCOME_TEST_DATABASE_URL"),
            kafka_brokers: required_env("FIRSTCOME_TEST_KAFKA_BROKERS"),
        }
    }
}

/// A name no other test (or earlier run) uses: lowercase, DNS-label safe.
pub fn unique_name(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{prefix}-{}-{}-{}",
        std::process::id() % 100_000,
        COUNTER.fetch_add(1, Ordering::Relaxed),
        nanos % 100_000
    )
}

/// Polls `probe` until it returns `Some`, for at most `timeout`; panics naming `what`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    wait_until(what, timeout, || {
        let check = probe();
        async move { check.await.ok_or("no match") }
    })
    .await
}

/// Polls `probe` until it returns `Ok`, for at most `timeout`; panics naming `what` and
/// what the last check saw instead (its `Err`).
pub async fn wait_until<T, E, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> T
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let seen = match probe().await {
            Ok(value) => return value,
            Err(seen) => seen,
        };
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}; the last check saw {seen}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
