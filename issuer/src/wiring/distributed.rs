//! The distributed process: topics, PostgreSQL and the producer; consumers when its role
//! consumes; the Redis-backed issuer with its re-publisher and drift audit when it serves
//! applies.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use firstcome_contract::{CampaignConfig, RedisTarget};
use tokio_util::sync::CancellationToken;

use super::Wiring;
use crate::admission::redis::RedisAdmission;
use crate::backend::Backend;
use crate::cli::{Backends, ServeArgs};
use crate::distributed::Distributed;
use crate::distributed::audit::audit_periodically;
use crate::distributed::fence;
use crate::distributed::republish::republish_periodically;
use crate::issuer::Issuer;
use crate::kafka::claims;
use crate::kafka::consumer::{Lane, WinnerConsumer};
use crate::kafka::producer::WinnerPublisher;
use crate::kafka::topics::ensure_topics;
use crate::metrics::Metrics;
use crate::store::postgres::CouponStore;

/// How often a consumer retries the failed events.
const FAILED_EVENTS_RETRY: Duration = Duration::from_secs(60);

/// Longest a readiness check waits for the broker's metadata.
const KAFKA_PING: Duration = Duration::from_secs(2);

pub async fn wire(
    args: &ServeArgs,
    backends: &Backends<'_>,
    configs: &[CampaignConfig],
) -> anyhow::Result<Wiring> {
    create_topics(args, backends.kafka_brokers, configs).await?;
    let coupons = CouponStore::connect(backends.database_url, args.database_max_connections)
        .await
        .context("connecting to PostgreSQL")?;
    let publisher = WinnerPublisher::new(backends.kafka_brokers, args.delivery_timeout())?;
    let mut wiring = Wiring::new(args);
    wiring.readiness.add_ping(
        "postgres",
        coupons.clone(),
        |s| async move { s.ping().await },
    );
    wiring
        .readiness
        .add_ping("kafka", publisher.clone(), |p| async move {
            p.ping(KAFKA_PING).await
        });
    if args.role.consumes() {
        add_consumers(&mut wiring, args, backends, configs, &coupons, &publisher)?;
    }
    if let Some(redis_url) = backends.redis_url.filter(|_| args.role.serves_api()) {
        let metrics = wiring.metrics.clone();
        let distributed = connect(
            args,
            redis_url,
            backends,
            (publisher.clone(), coupons),
            metrics,
        )
        .await?;
        add_issuer(&mut wiring, args, Arc::new(distributed), configs)?;
        tracing::info!("distributed: admission in Redis, winners to Kafka");
    }
    wiring.publisher = Some(publisher);
    Ok(wiring)
}

async fn create_topics(
    args: &ServeArgs,
    brokers: &str,
    configs: &[CampaignConfig],
) -> anyhow::Result<()> {
    let topics: Vec<String> = configs
        .iter()
        .flat_map(|c| [c.topic.clone(), c.dead_letter_topic()])
        .collect();
    let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
    ensure_topics(
        brokers,
        &topics,
        args.topic_partitions,
        args.topic_replication_factor,
    )
    .await
    .context("creating campaign topics")
}

/// Both lanes of every campaign, and the periodic retry of failed events.
fn add_consumers(
    wiring: &mut Wiring,
    args: &ServeArgs,
    backends: &Backends<'_>,
    configs: &[CampaignConfig],
    coupons: &CouponStore,
    publisher: &WinnerPublisher,
) -> anyhow::Result<()> {
    let store = coupons.clone();
    wiring.run_in_background(|stop| retry_failed_periodically(store, stop));
    for campaign in configs {
        let lanes = [
            Lane::Primary {
                dead_letters: publisher.clone(),
                retry_budget: args.persist_retry_budget(),
            },
            Lane::DeadLetter,
        ];
        for lane in lanes {
            let consumer = WinnerConsumer::new(
                backends.kafka_brokers,
                campaign.clone(),
                coupons.clone(),
                wiring.metrics.clone(),
                lane,
            )?;
            wiring.run_in_background(|stop| consumer.run(stop));
        }
    }
    Ok(())
}

/// The Redis-backed issuer: campaigns are provisioned (restored if Redis lost them) in
/// the background; unconfirmed winners are re-published and drift is audited.
fn add_issuer(
    wiring: &mut Wiring,
    args: &ServeArgs,
    distributed: Arc<Distributed>,
    configs: &[CampaignConfig],
) -> anyhow::Result<()> {
    wiring
        .readiness
        .add_ping("redis", distributed.clone(), |d| async move {
            d.redis.ping().await
        });
    let campaigns = wiring.campaigns(configs, false)?;
    for campaign in &campaigns {
        distributed.restore_in_background(campaign);
        let (brokers, config) = (distributed.kafka_brokers.clone(), campaign.config.clone());
        let claims = campaign.claims.clone();
        wiring.run_in_background(|stop| claims::tail(brokers, config, claims, stop));
    }
    let read = campaigns.clone();
    wiring.check_campaigns("claims", "campaign topic not read yet", read, |c| {
        c.claims.caught_up()
    });
    let (watcher, watched) = (distributed.clone(), campaigns.clone());
    wiring.run_in_background(|stop| fence::watch(watcher, watched, stop));
    let (republisher, audited) = (distributed.clone(), campaigns.clone());
    let republished = campaigns.clone();
    wiring.run_in_background(|stop| republish_periodically(republisher, republished, stop));
    let (auditor, interval) = (distributed.clone(), args.audit_interval());
    wiring.run_in_background(|stop| audit_periodically(auditor, audited, interval, stop));
    let backend = Backend::Distributed(distributed);
    wiring.serve_issuer(Issuer::new(&campaigns, backend));
    Ok(())
}

/// The distributed backend over an already created producer and PostgreSQL store.
pub async fn connect(
    args: &ServeArgs,
    redis_url: &RedisTarget,
    backends: &Backends<'_>,
    (publisher, coupons): (WinnerPublisher, CouponStore),
    metrics: Arc<Metrics>,
) -> anyhow::Result<Distributed> {
    let redis = RedisAdmission::connect(redis_url, args.redis_timeout())
        .await
        .with_context(|| format!("connecting to Redis at {redis_url}"))?;
    Ok(Distributed {
        redis,
        publisher,
        coupons,
        kafka_brokers: backends.kafka_brokers.to_string(),
        metrics,
        replica_wait: args.replica_wait(),
        admissions: Default::default(),
    })
}

async fn retry_failed_periodically(store: CouponStore, stop: CancellationToken) {
    let mut tick = tokio::time::interval(FAILED_EVENTS_RETRY);
    while stop.run_until_cancelled(tick.tick()).await.is_some() {
        match store.retry_failed_events().await {
            Ok(report) if report.resolved > 0 => {
                tracing::info!(
                    resolved = report.resolved,
                    still_failing = report.still_failing,
                    "retried failed events"
                )
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "retrying failed events failed; will try again"),
        }
    }
}
