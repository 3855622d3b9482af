//! Readiness: a process is ready while it is not draining and every backend it uses
//! answers. Each check runs with a timeout so a hung backend reads as "not ready".

use std::fmt::Display;
use std::future::Future;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::FutureExt;
use futures::future::{BoxFuture, join_all};

const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

type Probe = Arc<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// Shared by the process's wiring (which adds checks) and `/readyz` (which runs them).
#[derive(Default)]
pub struct Readiness {
    draining: AtomicBool,
    checks: Mutex<Vec<(&'static str, Probe)>>,
}

impl Readiness {
    /// Adds a check; `probe` returns `Err(reason)` when the process is not usable.
    pub fn add<F, Fut>(&self, name: &'static str, probe: F)
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        let probe: Probe = Arc::new(move || probe().boxed());
        self.checks().push((name, probe));
    }

    /// Adds a check that pings a backend: ready while `ping(target)` succeeds.
    pub fn add_ping<T, F, Fut, E>(&self, name: &'static str, target: T, ping: F)
    where
        T: Clone + Send + Sync + 'static,
        F: Fn(T) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Display,
    {
        self.add(name, move || {
            let pinged = ping(target.clone());
            async move { pinged.await.map_err(|e| e.to_string()) }
        });
    }

    fn checks(&self) -> std::sync::MutexGuard<'_, Vec<(&'static str, Probe)>> {
        self.checks.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// From now on the process reports not ready (it is shutting down).
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// Every failing check with its reason; empty when ready.
    pub async fn failures(&self) -> Vec<(&'static str, String)> {
        if self.draining.load(Ordering::Acquire) {
            return vec![("process", "shutting down".to_string())];
        }
        let checks = self.checks().clone();
        let results = join_all(checks.into_iter().map(|(name, probe)| async move {
            let result = match tokio::time::timeout(CHECK_TIMEOUT, probe()).await {
                Ok(result) => result,
                Err(_) => Err(format!("no answer within {CHECK_TIMEOUT:?}")),
            };
            (name, result)
        }))
        .await;
        results
            .into_iter()
            .filter_map(|(name, result)| result.err().map(|reason| (name, reason)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reports_failing_checks_and_draining() {
        let readiness = Readiness::default();
        readiness.add("good", || async { Ok(()) });
        readiness.add_ping("bad", "down", |reason| async move { Err(reason) });
        assert_eq!(
            readiness.failures().await,
            vec![("bad", "down".to_string())]
        );
        readiness.start_draining();
        assert_eq!(readiness.failures().await.len(), 1);
        assert_eq!(readiness.failures().await[0].0, "process");
    }
}
