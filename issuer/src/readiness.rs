//! Readiness: a process is ready while it is not draining and every backend it uses
//! answers. Each check runs with a timeout so a hung backend reads as "not ready".

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::future::{BoxFuture, join_all};

const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

type Probe = Box<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

#[derive(Default)]
pub struct Readiness {
    draining: AtomicBool,
    checks: Vec<(&'static str, Probe)>,
}

impl Readiness {
    /// Adds a backend check; `probe` returns `Err(reason)` when the backend is not usable.
    pub fn check<F>(mut self, name: &'static str, probe: F) -> Self
    where
        F: Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync + 'static,
    {
        self.checks.push((name, Box::new(probe)));
        self
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
        let results = join_all(self.checks.iter().map(|(name, probe)| async move {
            let result = match tokio::time::timeout(CHECK_TIMEOUT, probe()).await {
                Ok(result) => result,
                Err(_) => Err(format!("no answer within {CHECK_TIMEOUT:?}")),
            };
            (*name, result)
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
    use futures::FutureExt;

    #[tokio::test]
    async fn reports_failing_checks_and_draining() {
        let readiness = Readiness::default()
            .check("good", || async { Ok(()) }.boxed())
            .check("bad", || async { Err("down".to_string()) }.boxed());
        assert_eq!(
            readiness.failures().await,
            vec![("bad", "down".to_string())]
        );
        readiness.start_draining();
        assert_eq!(readiness.failures().await.len(), 1);
        assert_eq!(readiness.failures().await[0].0, "process");
    }
}
