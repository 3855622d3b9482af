//! Leader election with a coordination.k8s.io Lease: only the holder reconciles, so two
//! operator replicas are safe. The holder renews the lease; a replica that loses it exits
//! (its successor takes over once the lease expires) rather than run without it. One that
//! stops gives the lease up, so a standby takes over at once.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Api;
use kube::api::PostParams;
use tokio::task::JoinHandle;

pub struct LeaseLock {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
}

/// Conflicting writes a release retries before giving up (the lease then expires).
const RELEASE_ATTEMPTS: usize = 3;

fn is_conflict(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 409)
}

impl LeaseLock {
    pub fn new(api: Api<Lease>, name: &str, identity: &str, duration: Duration) -> Self {
        Self {
            api,
            name: name.to_string(),
            identity: identity.to_string(),
            duration,
        }
    }

    /// Waits until this replica holds the lease.
    pub async fn acquire(&self) {
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => {
                    tracing::info!(lease = %self.name, identity = %self.identity, "became leader");
                    return;
                }
                Ok(false) => {}
                Err(error) => tracing::warn!(%error, "leader election failed; retrying"),
            }
            tokio::time::sleep(self.retry_period()).await;
        }
    }

    /// How often a standby looks at the lease: often enough to take over a released one
    /// within a few seconds (client-go's 2 s against a 15 s lease).
    fn retry_period(&self) -> Duration {
        self.duration / 8
    }

    /// Gives the lease up if this replica still holds it: no holder, and a duration of one
    /// second, so a standby takes it at once instead of waiting for it to expire. Returns
    /// whether it was released.
    pub async fn release(&self) -> Result<bool, kube::Error> {
        for _ in 0..RELEASE_ATTEMPTS {
            let Some(mut lease) = self.api.get_opt(&self.name).await? else {
                return Ok(false);
            };
            let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
            if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
                return Ok(false);
            }
            spec.holder_identity = None;
            spec.lease_duration_seconds = Some(1);
            spec.renew_time = Some(MicroTime(Timestamp::now()));
            match self
                .api
                .replace(&self.name, &PostParams::default(), &lease)
                .await
            {
                Ok(_) => return Ok(true),
                Err(e) if is_conflict(&e) => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(false)
    }

    /// Renews the lease until it is lost; returns then.
    pub async fn hold(&self) {
        let mut last_renewed = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(self.duration / 3).await;
            match self.try_acquire_or_renew().await {
                Ok(true) => last_renewed = tokio::time::Instant::now(),
                Ok(false) => {
                    tracing::error!(lease = %self.name, "another replica took the lease");
                    return;
                }
                Err(error) => {
                    tracing::warn!(%error, "renewing the lease failed");
                    if last_renewed.elapsed() >= self.duration {
                        tracing::error!(lease = %self.name, "lease expired without renewal");
                        return;
                    }
                }
            }
        }
    }

    /// Takes the lease if it is free, expired or ours; `false` when someone else holds it.
    async fn try_acquire_or_renew(&self) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        let seconds = self.duration.as_secs() as i32;
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(seconds),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(e) if is_conflict(&e) => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        let ours = spec.holder_identity.as_deref() == Some(self.identity.as_str());
        let held_for =
            SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(seconds)));
        let expired = spec
            .renew_time
            .as_ref()
            .is_none_or(|renewed| renewed.0.checked_add(held_for).is_ok_and(|end| end < now));
        let free = spec.holder_identity.as_deref().is_none_or(str::is_empty);
        if !(ours || expired || free) {
            return Ok(false);
        }
        if !ours {
            spec.holder_identity = Some(self.identity.clone());
            spec.acquire_time = Some(MicroTime(now));
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.renew_time = Some(MicroTime(now));
        spec.lease_duration_seconds = Some(seconds);
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if is_conflict(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// The lease, held: renewed in the background until [`Leadership::step_down`]. Losing it
/// stops the process, so a replica never reconciles without it.
pub struct Leadership {
    lock: Arc<LeaseLock>,
    renewal: JoinHandle<()>,
}

impl Leadership {
    /// Waits until this replica holds the lease, then keeps renewing it.
    pub async fn acquire(lock: LeaseLock) -> Self {
        lock.acquire().await;
        let lock = Arc::new(lock);
        let renewal = tokio::spawn({
            let lock = lock.clone();
            async move {
                lock.hold().await;
                // Never reconcile without the lease: stop, and let a replica take over.
                std::process::exit(1);
            }
        });
        Self { lock, renewal }
    }

    /// Stops renewing and releases the lease. Call it once nothing reconciles any more.
    pub async fn step_down(self) {
        self.renewal.abort();
        // A renewal in flight finishes (or is dropped) before the release reads the lease.
        let _ = self.renewal.await;
        match self.lock.release().await {
            Ok(true) => tracing::info!(lease = %self.lock.name, "released the lease"),
            Ok(false) => tracing::info!(lease = %self.lock.name, "the lease was no longer ours"),
            Err(error) => {
                tracing::warn!(%error, "cannot release the lease; a standby takes it once it expires");
            }
        }
    }
}
