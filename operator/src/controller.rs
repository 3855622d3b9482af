//! The reconcile of a `CouponCampaign`: provision Redis keys and the Kafka topic, apply
//! the issuer ConfigMap, Deployment and Service, compute and patch the status, publish
//! events on transitions. Deletion runs through a finalizer that removes the Redis keys
//! (and, by policy, the topic); coupons in PostgreSQL are kept.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;

use crate::backends::{self, Connections, Settings};
use crate::campaign::{campaign_config, issuer_name};
use crate::defaults::IssuerDefaults;
use crate::desired;
use crate::metrics::{Metrics, Outcome};
use crate::resource::{CouponCampaign, CouponCampaignStatus, Phase, TopicDeletion};
use crate::status::{self, Observation};

pub const FINALIZER: &str = "firstcome.dev/cleanup";
const MANAGER: &str = "firstcome-operator";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubernetes: {0}")]
    Kube(#[from] kube::Error),
    #[error("cleanup of {campaign} failed: {reason}")]
    Cleanup { campaign: String, reason: String },
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
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
}

/// Runs the controller until the stream ends (the process is stopped).
pub async fn run(ctx: Arc<Context>, namespace: Option<&str>) {
    let client = ctx.client.clone();
    let (campaigns, deployments) = match namespace {
        Some(ns) => (
            Api::<CouponCampaign>::namespaced(client.clone(), ns),
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
                tracing::debug!(%error, "reconcile failed");
            }
        })
        .await;
}

async fn reconcile(campaign: Arc<CouponCampaign>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let namespace = campaign.namespace().unwrap_or_default();
    let api: Api<CouponCampaign> = Api::namespaced(ctx.client.clone(), &namespace);
    let result = finalizer(&api, FINALIZER, campaign, |event| async {
        match event {
            Finalizer::Apply(campaign) => apply(&campaign, &ctx).await,
            Finalizer::Cleanup(campaign) => cleanup(&campaign, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    ctx.metrics
        .reconcile_seconds
        .observe(started.elapsed().as_secs_f64());
    result
}

fn error_policy(campaign: Arc<CouponCampaign>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.reconciled(Outcome::error);
    let key = format!(
        "{}/{}",
        campaign.namespace().unwrap_or_default(),
        campaign.name_any()
    );
    let attempt = {
        let mut failures = ctx.failures();
        let n = failures.entry(key).or_insert(0);
        *n = n.saturating_add(1);
        *n
    };
    let backoff = Duration::from_secs(1 << attempt.min(8)).min(Duration::from_secs(300));
    tracing::warn!(%error, campaign = %campaign.name_any(), attempt, ?backoff, "reconcile failed");
    Action::requeue(backoff)
}

async fn apply(campaign: &CouponCampaign, ctx: &Context) -> Result<Action, Error> {
    let namespace = campaign.namespace().unwrap_or_default();
    let config = campaign_config(campaign).map_err(|e| e.to_string());
    let settings = backends::settings(
        &ctx.client,
        &namespace,
        ctx.defaults.backends_secret(campaign),
    )
    .await;

    let (redis, topic, persistence) = match (&config, &settings) {
        (Ok(config), Ok(settings)) => observe_backends(ctx, config, settings, campaign).await,
        (Err(e), _) | (_, Err(e)) => (Err(e.clone()), Err(e.clone()), Err(e.clone())),
    };

    let mut ready_issuers = 0;
    if let Ok(config) = &config {
        let params = PatchParams::apply(MANAGER).force();
        let name = issuer_name(campaign);
        Api::<ConfigMap>::namespaced(ctx.client.clone(), &namespace)
            .patch(
                &name,
                &params,
                &Patch::Apply(desired::config_map(campaign, config)),
            )
            .await?;
        let deployment = Api::<Deployment>::namespaced(ctx.client.clone(), &namespace)
            .patch(
                &name,
                &params,
                &Patch::Apply(desired::deployment(campaign, config, &ctx.defaults)),
            )
            .await?;
        Api::<Service>::namespaced(ctx.client.clone(), &namespace)
            .patch(&name, &params, &Patch::Apply(desired::service(campaign)))
            .await?;
        ready_issuers = deployment
            .status
            .and_then(|s| s.ready_replicas)
            .unwrap_or(0);
    }

    let observation = Observation {
        now: Utc::now(),
        generation: campaign.meta().generation,
        config,
        redis,
        topic,
        persistence,
        desired_issuers: ctx.defaults.replicas(campaign),
        ready_issuers,
    };
    let new_status = status::compute(campaign.status.as_ref(), &observation);
    publish_transitions(campaign, campaign.status.as_ref(), &new_status, ctx).await;
    if campaign.status.as_ref() != Some(&new_status) {
        let patch = json!({
            "apiVersion": "firstcome.dev/v1alpha1",
            "kind": "CouponCampaign",
            "status": new_status,
        });
        Api::<CouponCampaign>::namespaced(ctx.client.clone(), &namespace)
            .patch_status(
                &campaign.name_any(),
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(patch),
            )
            .await?;
    }
    ctx.failures()
        .remove(&format!("{namespace}/{}", campaign.name_any()));
    ctx.metrics.reconciled(Outcome::ok);
    Ok(requeue_after(&new_status, campaign, &observation))
}

async fn observe_backends(
    ctx: &Context,
    config: &firstcome_contract::CampaignConfig,
    settings: &Settings,
    campaign: &CouponCampaign,
) -> (
    Result<status::RedisCounts, String>,
    Result<(), String>,
    Result<status::Persistence, String>,
) {
    let topic_spec = &campaign.spec.topic;
    // Provisioned before if Redis was ever ready for it: then a missing counter is data
    // loss, not a new campaign.
    let first_time = campaign.status.as_ref().is_none_or(|s| {
        s.admitted == 0
            && status::condition(s, status::REDIS_READY).is_none_or(|c| c.status != "True")
    });
    tokio::join!(
        ctx.connections
            .provision_redis(&settings.redis_url, config, first_time),
        backends::ensure_topic(
            &settings.kafka_brokers,
            &config.topic,
            topic_spec.partitions,
            topic_spec.replication_factor
        ),
        ctx.connections
            .persistence(&settings.database_url, &config.name),
    )
}

/// Counts move while a campaign is open: look again soon. A scheduled campaign is looked
/// at when it opens.
fn requeue_after(
    status: &CouponCampaignStatus,
    campaign: &CouponCampaign,
    obs: &Observation,
) -> Action {
    let soon = Duration::from_secs(5);
    match status.phase {
        Phase::Open | Phase::Provisioning | Phase::Pending => Action::requeue(soon),
        Phase::SoldOut if status.pending_persistence > 0 || status.ready_issuers == 0 => {
            Action::requeue(soon)
        }
        Phase::Scheduled => {
            let until_open = campaign
                .spec
                .opens_at
                .and_then(|t| (t - obs.now).to_std().ok())
                .unwrap_or(soon);
            Action::requeue(until_open.clamp(Duration::from_millis(500), Duration::from_secs(300)))
        }
        Phase::SoldOut | Phase::Closed | Phase::Failed => Action::requeue(Duration::from_secs(60)),
    }
}

/// Events for a phase change, and for each condition that turned False with a new reason.
async fn publish_transitions(
    campaign: &CouponCampaign,
    old: Option<&CouponCampaignStatus>,
    new: &CouponCampaignStatus,
    ctx: &Context,
) {
    let mut events = Vec::new();
    let old_phase = old.map(|s| s.phase);
    if old_phase != Some(new.phase) {
        let (reason, note) = match new.phase {
            Phase::Open => ("Opened", "the campaign is open for applies".to_string()),
            Phase::SoldOut => ("SoldOut", format!("all {} coupons admitted", new.admitted)),
            Phase::Closed => ("Closed", "the campaign is closed".to_string()),
            Phase::Scheduled => ("Scheduled", "provisioned; waiting for opensAt".to_string()),
            Phase::Provisioning => ("Provisioning", "waiting for Redis and Kafka".to_string()),
            Phase::Failed => (
                "Failed",
                "the campaign cannot run; see its conditions".to_string(),
            ),
            Phase::Pending => ("Pending", String::new()),
        };
        let warning = new.phase == Phase::Failed;
        events.push((warning, reason.to_string(), note));
        if matches!(
            old_phase,
            None | Some(Phase::Pending) | Some(Phase::Provisioning)
        ) && !matches!(
            new.phase,
            Phase::Provisioning | Phase::Failed | Phase::Pending
        ) {
            events.push((
                false,
                "Provisioned".into(),
                "Redis keys, topic and issuers are in place".into(),
            ));
        }
    }
    for condition in new.conditions.iter().filter(|c| c.status == "False") {
        let before = old.and_then(|s| status::condition(s, &condition.type_));
        let is_problem = !matches!(condition.reason.as_str(), "CouponsRemaining" | "Paused");
        if is_problem && before.is_none_or(|b| b.status != "False" || b.reason != condition.reason)
        {
            events.push((true, condition.reason.clone(), condition.message.clone()));
        }
    }
    let reference = campaign.object_ref(&());
    for (warning, reason, note) in events {
        let event = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason,
            note: Some(note),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(error) = ctx.recorder.publish(&event, &reference).await {
            tracing::warn!(%error, "cannot publish an event");
        }
    }
}

async fn cleanup(campaign: &CouponCampaign, ctx: &Context) -> Result<Action, Error> {
    let namespace = campaign.namespace().unwrap_or_default();
    let failed = |reason: String| Error::Cleanup {
        campaign: campaign.name_any(),
        reason,
    };
    let config = match campaign_config(campaign) {
        Ok(config) => config,
        // An invalid campaign never provisioned anything.
        Err(_) => return Ok(Action::await_change()),
    };
    let settings = backends::settings(
        &ctx.client,
        &namespace,
        ctx.defaults.backends_secret(campaign),
    )
    .await
    .map_err(failed)?;
    ctx.connections
        .delete_redis_keys(&settings.redis_url, &config.name)
        .await
        .map_err(failed)?;
    if campaign.spec.deletion_policy.topic == TopicDeletion::Delete {
        for topic in [config.topic.clone(), config.dead_letter_topic()] {
            backends::delete_topic(&settings.kafka_brokers, &topic)
                .await
                .map_err(failed)?;
        }
    }
    let event = Event {
        type_: EventType::Normal,
        reason: "CleanedUp".into(),
        note: Some("Redis keys removed; coupons kept".into()),
        action: "Delete".into(),
        secondary: None,
    };
    if let Err(error) = ctx
        .recorder
        .publish(&event, &campaign.object_ref(&()))
        .await
    {
        tracing::warn!(%error, "cannot publish an event");
    }
    Ok(Action::await_change())
}
