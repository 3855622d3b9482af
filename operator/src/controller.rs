//! The reconcile of a `CouponCampaign`, as a pipeline: derive its configuration, ask the
//! backends ([`crate::observe`]), apply the issuers' objects ([`crate::owned`]), compute
//! and patch the status ([`crate::status`]), publish the Events of the change
//! ([`crate::transitions`]). Deletion runs through a finalizer that removes the Redis keys
//! (and, by policy, the topic); coupons in PostgreSQL are kept. A stored object that is
//! not a valid `CouponCampaign` is reported and skipped, never stalling the others.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Patch, PatchParams};
use kube::core::DeserializeGuard;
use kube::core::error_boundary::InvalidObject;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{self, Event as Finalizer, finalizer};
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;

use crate::backends::{self, BackendError, Connections};
use crate::campaign::{campaign_config, campaign_id};
use crate::defaults::IssuerDefaults;
use crate::describe;
use crate::metrics::{Metrics, Outcome};
use crate::observe;
use crate::owned::{self, MANAGER, OwnedError};
use crate::reason::Reason;
use crate::resource::{CouponCampaign, CouponCampaignStatus, Phase, TopicDeletion};
use crate::scaling::{self, Plan};
use crate::status::{self, Observation};
use crate::transitions::{self, Notice};

pub const FINALIZER: &str = "firstcome.dev/cleanup";

/// A CouponCampaign as watched: one that does not deserialize is reported, not fatal.
type Guarded = DeserializeGuard<CouponCampaign>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the stored object is not a valid CouponCampaign")]
    InvalidObject(#[source] Box<InvalidObject>),
    #[error(transparent)]
    Owned(#[from] OwnedError),
    #[error("cannot patch the campaign's status")]
    PatchStatus(#[source] kube::Error),
    #[error("cannot clean up the campaign's backends")]
    Cleanup(#[source] BackendError),
    #[error("finalizer")]
    Finalizer(#[source] Box<finalizer::Error<Error>>),
}

impl Error {
    /// The `error` label of the failure metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::InvalidObject(_) => "invalid_object",
            Self::Owned(e) => e.metric_label(),
            Self::PatchStatus(_) => "status",
            Self::Cleanup(_) => "cleanup",
            Self::Finalizer(e) => match e.as_ref() {
                finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => {
                    e.metric_label()
                }
                _ => "finalizer",
            },
        }
    }
}

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub connections: Connections,
    pub metrics: Arc<Metrics>,
    /// What a campaign leaves out.
    pub defaults: IssuerDefaults,
    /// Consecutive failures per campaign, for exponential backoff.
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    pub fn new(client: Client, metrics: Arc<Metrics>, defaults: IssuerDefaults) -> Self {
        let reporter = Reporter {
            controller: MANAGER.into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            connections: Connections::default(),
            metrics,
            defaults,
            failures: Mutex::default(),
        }
    }

    fn failures(&self) -> std::sync::MutexGuard<'_, HashMap<String, u32>> {
        self.failures.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Publishes an Event about `object`; a failure is logged, never fatal.
    async fn publish(&self, object: &impl Resource<DynamicType = ()>, action: &str, n: Notice) {
        let event = Event {
            type_: n.type_,
            reason: n.reason,
            note: Some(n.note),
            action: action.into(),
            secondary: None,
        };
        if let Err(error) = self.recorder.publish(&event, &object.object_ref(&())).await {
            tracing::warn!(error = %describe(&error), "cannot publish an event");
        }
    }
}

/// Runs the controller until SIGTERM or SIGINT (after the reconciles in flight finish).
pub async fn run(ctx: Arc<Context>, namespace: Option<&str>) {
    let client = ctx.client.clone();
    let (campaigns, deployments) = match namespace {
        Some(ns) => (
            Api::<Guarded>::namespaced(client.clone(), ns),
            Api::<Deployment>::namespaced(client, ns),
        ),
        None => (Api::all(client.clone()), Api::all(client)),
    };
    let owned =
        watcher::Config::default().labels("app.kubernetes.io/managed-by=firstcome-operator");
    Controller::new(campaigns, watcher::Config::default().any_semantic())
        .owns(deployments, owned)
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(error = %describe(&error), "reconcile failed");
            }
        })
        .await;
}

#[tracing::instrument(skip_all, fields(
    campaign = %guarded.name_any(),
    namespace = %guarded.namespace().unwrap_or_default(),
))]
async fn reconcile(guarded: Arc<Guarded>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let result = match &guarded.0 {
        Ok(campaign) => run_finalizer(Arc::new(campaign.clone()), &ctx).await,
        Err(invalid) => {
            report_invalid(&guarded, invalid, &ctx).await;
            Err(Error::InvalidObject(Box::new(invalid.clone())))
        }
    };
    ctx.metrics
        .reconcile_seconds
        .observe(started.elapsed().as_secs_f64());
    result
}

async fn run_finalizer(campaign: Arc<CouponCampaign>, ctx: &Context) -> Result<Action, Error> {
    let namespace = campaign.namespace().unwrap_or_default();
    let api: Api<CouponCampaign> = Api::namespaced(ctx.client.clone(), &namespace);
    finalizer(&api, FINALIZER, campaign, |event| async {
        match event {
            Finalizer::Apply(campaign) => apply(&campaign, ctx).await,
            Finalizer::Cleanup(campaign) => cleanup(&campaign, ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

/// A Warning Event on the object that cannot be read, so its author sees why nothing
/// happens.
async fn report_invalid(guarded: &Guarded, invalid: &InvalidObject, ctx: &Context) {
    tracing::warn!(error = %invalid, "skipping an invalid CouponCampaign until it changes");
    let notice = Notice {
        type_: EventType::Warning,
        reason: Reason::InvalidObject.to_string(),
        note: format!("not a valid CouponCampaign, skipped until it changes: {invalid}"),
    };
    ctx.publish(guarded, "Reconcile", notice).await;
}

fn error_policy(guarded: Arc<Guarded>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.reconciled(Outcome::error);
    ctx.metrics.failed(error.metric_label());
    let (campaign, namespace) = (guarded.name_any(), guarded.namespace().unwrap_or_default());
    if let Error::InvalidObject(_) = error {
        // Retrying cannot help: the next change of the object brings it back.
        return Action::await_change();
    }
    let attempt = {
        let mut failures = ctx.failures();
        let n = failures
            .entry(format!("{namespace}/{campaign}"))
            .or_insert(0);
        *n = n.saturating_add(1);
        *n
    };
    let backoff = Duration::from_secs(1 << attempt.min(8)).min(Duration::from_secs(300));
    tracing::warn!(error = %describe(error), %campaign, %namespace, attempt, ?backoff, "reconcile failed");
    Action::requeue(backoff)
}

async fn apply(campaign: &CouponCampaign, ctx: &Context) -> Result<Action, Error> {
    let config = campaign_config(campaign);
    let secret = ctx.defaults.backends_secret(campaign);
    let backends =
        observe::backends(&ctx.client, &ctx.connections, secret, campaign, &config).await;
    let old_status = campaign.status.as_ref();
    let now = Utc::now();
    let plan = scaling::plan(now, &campaign.spec, old_status, ctx.defaults.replicas);
    let ready_issuers = match &config {
        Ok(config) => owned::apply(&ctx.client, campaign, config, &ctx.defaults, plan).await?,
        Err(_) => 0,
    };
    let observation = Observation {
        now,
        generation: campaign.meta().generation,
        config,
        backends,
        desired_issuers: plan.replicas,
        ready_issuers,
    };
    let new_status = status::compute(old_status, &observation);
    let ready = status::condition(&new_status, status::READY).is_some_and(|c| c.status == "True");
    ctx.metrics
        .campaign_observed(&campaign_id(campaign), ready, campaign.spec.opens_at);
    for notice in transitions::notices(old_status, &new_status) {
        ctx.publish(campaign, "Reconcile", notice).await;
    }
    if old_status != Some(&new_status) {
        patch_status(campaign, &new_status, ctx).await?;
    }
    let namespace = campaign.namespace().unwrap_or_default();
    ctx.failures()
        .remove(&format!("{namespace}/{}", campaign.name_any()));
    ctx.metrics.reconciled(Outcome::ok);
    let by_phase = requeue_after(&new_status, campaign, &observation);
    Ok(Action::requeue(sooner(by_phase, plan, observation.now)))
}

async fn patch_status(
    campaign: &CouponCampaign,
    status: &CouponCampaignStatus,
    ctx: &Context,
) -> Result<(), Error> {
    let patch = json!({
        "apiVersion": "firstcome.dev/v1alpha1",
        "kind": "CouponCampaign",
        "status": status,
    });
    let namespace = campaign.namespace().unwrap_or_default();
    Api::<CouponCampaign>::namespaced(ctx.client.clone(), &namespace)
        .patch_status(
            &campaign.name_any(),
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(patch),
        )
        .await
        .map(|_| ())
        .map_err(Error::PatchStatus)
}

/// Counts move while a campaign is open: look again soon. A scheduled campaign is looked
/// at when it opens.
fn requeue_after(
    status: &CouponCampaignStatus,
    campaign: &CouponCampaign,
    obs: &Observation,
) -> Duration {
    let soon = Duration::from_secs(5);
    match status.phase {
        Phase::Open | Phase::Provisioning | Phase::Pending => soon,
        Phase::SoldOut if status.pending_persistence > 0 || status.ready_issuers == 0 => soon,
        Phase::Scheduled => until(campaign.spec.opens_at, obs.now).unwrap_or(soon),
        Phase::SoldOut | Phase::Closed | Phase::Failed => Duration::from_secs(60),
    }
}

/// The sooner of the phase's requeue and the scaling plan's next change.
fn sooner(by_phase: Duration, plan: Plan, now: DateTime<Utc>) -> Duration {
    until(plan.next, now).map_or(by_phase, |next| next.min(by_phase))
}

/// From `now` until `instant`, bounded: at least half a second, at most five minutes.
fn until(instant: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Option<Duration> {
    let wait = (instant? - now).to_std().unwrap_or_default();
    Some(wait.clamp(Duration::from_millis(500), Duration::from_secs(300)))
}

/// Removes the campaign's Redis keys and, by its deletion policy, its topics.
async fn cleanup(campaign: &CouponCampaign, ctx: &Context) -> Result<Action, Error> {
    ctx.metrics.campaign_removed(&campaign_id(campaign));
    let Ok(config) = campaign_config(campaign) else {
        // An invalid campaign never provisioned anything.
        return Ok(Action::await_change());
    };
    let namespace = campaign.namespace().unwrap_or_default();
    let secret = ctx.defaults.backends_secret(campaign);
    let settings = backends::settings(&ctx.client, &namespace, secret)
        .await
        .map_err(Error::Cleanup)?;
    ctx.connections
        .delete_redis_keys(&settings.redis_url, &config.name)
        .await
        .map_err(Error::Cleanup)?;
    if campaign.spec.deletion_policy.topic == TopicDeletion::Delete {
        for topic in [config.topic.clone(), config.dead_letter_topic()] {
            ctx.connections
                .delete_topic(&settings.kafka_brokers, &topic)
                .await
                .map_err(Error::Cleanup)?;
        }
    }
    let notice = Notice {
        type_: EventType::Normal,
        reason: Reason::CleanedUp.to_string(),
        note: "Redis keys removed; coupons kept".into(),
    };
    ctx.publish(campaign, "Delete", notice).await;
    Ok(Action::await_change())
}
