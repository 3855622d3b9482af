//! Wires a process together from its configuration: backends, the issuer, consumers,
//! background tasks and the HTTP server, and shuts them down in order.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use firstcome_contract::{CampaignConfig, CampaignsFile};
use futures::FutureExt;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::admission::embedded::EmbeddedAdmission;
use crate::admission::redis::RedisAdmission;
use crate::cli::{Mode, ServeArgs};
use crate::http::{self, OpsState};
use crate::issuer::{Backend, Distributed, Issuer};
use crate::kafka::consumer::{Lane, WinnerConsumer};
use crate::kafka::producer::WinnerPublisher;
use crate::kafka::topics::ensure_topics;
use crate::metrics::Metrics;
use crate::readiness::Readiness;
use crate::reconcile::{Winner, reconcile};
use crate::store::postgres::CouponStore;
use crate::store::sqlite::SqliteStore;

/// How often sold-out campaigns re-read their limit.
const LIMIT_REFRESH: Duration = Duration::from_secs(1);
/// How often a consumer retries the failed events.
const FAILED_EVENTS_RETRY: Duration = Duration::from_secs(60);

/// The campaigns to serve: the file's plus the `--campaign` ones; `demo:100` for a
/// standalone issuer given none.
pub fn load_campaigns(args: &ServeArgs, standalone: bool) -> anyhow::Result<Vec<CampaignConfig>> {
    let mut file = match &args.campaigns_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading campaigns file {}", path.display()))?;
            serde_json::from_str::<CampaignsFile>(&text)
                .with_context(|| format!("parsing campaigns file {}", path.display()))?
        }
        None => CampaignsFile::default(),
    };
    file.campaigns.extend(args.campaigns.iter().cloned());
    if file.campaigns.is_empty() {
        if !standalone {
            bail!("no campaign configured: pass --campaigns-file or --campaign NAME:LIMIT");
        }
        file.campaigns.push(CampaignConfig::new("demo", 100));
    }
    file.validate()?;
    Ok(file.campaigns)
}

/// Runs the process until SIGTERM or Ctrl-C.
pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let stop = CancellationToken::new();
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let mode = args.mode().map_err(anyhow::Error::msg)?;
    let campaigns = load_campaigns(&args, mode == Mode::Standalone)?;
    let metrics = Arc::new(Metrics::default());
    let mut tasks = JoinSet::new();
    let mut readiness = Readiness::default();
    let mut publisher_to_flush = None;

    let issuer = match mode {
        Mode::Standalone => {
            let store = SqliteStore::open(&args.data_dir).await.with_context(|| {
                format!(
                    "opening the standalone ledger in {}",
                    args.data_dir.display()
                )
            })?;
            let embedded = EmbeddedAdmission::open(store, &campaigns).await?;
            tracing::info!(data_dir = %args.data_dir.display(), "standalone: admission in process, coupons in SQLite");
            Some(Issuer::new(
                campaigns.clone(),
                Backend::Standalone(embedded),
                metrics.clone(),
            ))
        }
        Mode::Distributed {
            redis_url,
            kafka_brokers,
            database_url,
        } => {
            let topics: Vec<String> = campaigns
                .iter()
                .flat_map(|c| [c.topic.clone(), c.dead_letter_topic()])
                .collect();
            let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
            ensure_topics(
                kafka_brokers,
                &topics,
                args.topic_partitions,
                args.topic_replication_factor,
            )
            .await
            .context("creating campaign topics")?;
            let coupons = CouponStore::connect(database_url, args.database_max_connections)
                .await
                .context("connecting to PostgreSQL")?;
            {
                let store = coupons.clone();
                readiness = readiness.check("postgres", move || {
                    let store = store.clone();
                    async move { store.ping().await.map_err(|e| e.to_string()) }.boxed()
                });
            }
            let publisher = WinnerPublisher::new(kafka_brokers, args.delivery_timeout())?;
            if args.role.consumes() {
                tasks.spawn(retry_failed_events(coupons.clone(), stop.clone()));
                for campaign in &campaigns {
                    let lanes = [
                        Lane::Primary {
                            dead_letters: publisher.clone(),
                            retry_budget: args.persist_retry_budget(),
                        },
                        Lane::DeadLetter,
                    ];
                    for lane in lanes {
                        let consumer = WinnerConsumer::new(
                            kafka_brokers,
                            campaign.clone(),
                            coupons.clone(),
                            metrics.clone(),
                            lane,
                        )?;
                        tasks.spawn(consumer.run(stop.clone()));
                    }
                }
            }
            {
                let publisher = publisher.clone();
                readiness = readiness.check("kafka", move || {
                    let publisher = publisher.clone();
                    async move {
                        publisher
                            .ping(Duration::from_secs(2))
                            .await
                            .map_err(|e| e.to_string())
                    }
                    .boxed()
                });
            }
            match redis_url.filter(|_| args.role.serves_api()) {
                Some(url) => {
                    let distributed =
                        connect_distributed(&args, url, kafka_brokers, publisher, coupons).await?;
                    let probe = distributed.redis.clone();
                    readiness = readiness.check("redis", move || {
                        let redis = probe.clone();
                        async move { redis.ping().await.map_err(|e| e.to_string()) }.boxed()
                    });
                    publisher_to_flush = Some(distributed.publisher.clone());
                    tracing::info!("distributed: admission in Redis, winners to Kafka");
                    Some(Issuer::new(
                        campaigns.clone(),
                        Backend::Distributed(distributed),
                        metrics.clone(),
                    ))
                }
                None => None,
            }
        }
    };

    let issuer = issuer.map(Arc::new);
    if let Some(issuer) = &issuer {
        tasks.spawn(refresh_sold_out_boards(issuer.clone(), stop.clone()));
        if matches!(issuer.backend(), Backend::Distributed(_)) {
            // New campaigns get their counter; campaigns Redis lost are restored.
            for campaign in issuer.campaigns() {
                issuer.restore_in_background(campaign);
            }
            tasks.spawn(reconcile_periodically(
                issuer.clone(),
                metrics.clone(),
                args.reconcile_interval(),
                stop.clone(),
            ));
            tasks.spawn(republish_pending(
                issuer.clone(),
                metrics.clone(),
                stop.clone(),
            ));
        }
    }

    if let Some(issuer) = &issuer {
        let issuer = issuer.clone();
        readiness = readiness.check("campaigns", move || {
            let missing = issuer.unprovisioned();
            async move {
                if missing.is_empty() {
                    Ok(())
                } else {
                    Err(format!(
                        "not yet provisioned in Redis: {}",
                        missing.join(", ")
                    ))
                }
            }
            .boxed()
        });
    }
    let readiness = Arc::new(readiness);
    let app = http::router(
        issuer.clone(),
        OpsState {
            metrics: metrics.clone(),
            readiness: readiness.clone(),
        },
    );
    tracing::info!(address = %args.listen, role = ?args.role, campaigns = ?campaigns.iter().map(|c| &c.name).collect::<Vec<_>>(), "listening");
    if let Some(campaign) = campaigns.first().filter(|_| issuer.is_some()) {
        tracing::info!(
            "try: curl -s -X POST http://{}/v1/campaigns/{}/applications -H 'content-type: application/json' -d '{{\"userId\":\"alice\"}}'",
            args.listen,
            campaign.name
        );
    }

    let shutdown = {
        let readiness = readiness.clone();
        let delay = args.shutdown_delay();
        async move {
            shutdown_signal().await;
            tracing::info!(?delay, "shutting down: readiness is false, draining");
            readiness.start_draining();
            tokio::time::sleep(delay).await;
        }
    };
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .context("serving HTTP")?;

    // In-flight applies are answered; now stop consumers (each finishes its batch and
    // commits) and background tasks, then flush the producer.
    stop.cancel();
    while tasks.join_next().await.is_some() {}
    if let Some(publisher) = publisher_to_flush
        && let Err(error) =
            tokio::task::spawn_blocking(move || publisher.flush(Duration::from_secs(10))).await?
    {
        tracing::error!(%error, "flushing the producer failed; pending winners are re-published by the next issuer");
    }
    tracing::info!("stopped");
    Ok(())
}

async fn refresh_sold_out_boards(issuer: Arc<Issuer>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(LIMIT_REFRESH);
    while stop.run_until_cancelled(tick.tick()).await.is_some() {
        issuer.refresh_sold_out_boards().await;
    }
}

/// Publishes admissions whose first publish was never confirmed (failed, or the issuer
/// that admitted them died before the broker acked).
async fn republish_pending(issuer: Arc<Issuer>, metrics: Arc<Metrics>, stop: CancellationToken) {
    let Backend::Distributed(distributed) = issuer.backend() else {
        return;
    };
    // A first publish older than the longest ack wait is no longer in flight.
    let grace = distributed.publisher.ack_wait();
    let mut tick = tokio::time::interval(grace / 2);
    while stop.run_until_cancelled(tick.tick()).await.is_some() {
        for campaign in issuer.campaigns() {
            match distributed
                .republish_pending(&metrics, campaign, grace)
                .await
            {
                Ok(0) => {}
                Ok(count) => {
                    tracing::info!(campaign = %campaign.config.name, count, "re-published unconfirmed winners")
                }
                Err(error) => {
                    tracing::warn!(%error, campaign = %campaign.config.name, "re-publishing failed; will retry")
                }
            }
        }
    }
}

/// The distributed API backend.
async fn connect_distributed(
    args: &ServeArgs,
    redis_url: &str,
    kafka_brokers: &str,
    publisher: WinnerPublisher,
    coupons: CouponStore,
) -> anyhow::Result<Distributed> {
    let redis = RedisAdmission::connect(redis_url, args.redis_timeout())
        .await
        .context("connecting to Redis")?;
    Ok(Distributed {
        redis,
        publisher,
        coupons,
        kafka_brokers: kafka_brokers.to_string(),
    })
}

/// `firstcome-issuer reconcile`: one pass over every campaign, drift printed as JSON.
pub async fn reconcile_once(args: ServeArgs) -> anyhow::Result<()> {
    let Ok(Mode::Distributed {
        redis_url: Some(redis_url),
        kafka_brokers,
        database_url,
    }) = args.mode()
    else {
        bail!("reconcile needs --redis-url, --kafka-brokers and --database-url");
    };
    let campaigns = load_campaigns(&args, false)?;
    let metrics = Arc::new(Metrics::default());
    let coupons = CouponStore::connect(database_url, 2)
        .await
        .context("connecting to PostgreSQL")?;
    let publisher = WinnerPublisher::new(kafka_brokers, args.delivery_timeout())?;
    let distributed =
        connect_distributed(&args, redis_url, kafka_brokers, publisher, coupons).await?;
    let publisher = distributed.publisher.clone();
    let issuer = Issuer::new(
        campaigns,
        Backend::Distributed(distributed),
        metrics.clone(),
    );
    let Backend::Distributed(distributed) = issuer.backend() else {
        unreachable!("built as distributed just above");
    };
    for campaign in issuer.campaigns() {
        let drift = reconcile(distributed, &metrics, campaign, None).await?;
        println!("{}", serde_json::to_string(&drift)?);
    }
    tokio::task::spawn_blocking(move || publisher.flush(Duration::from_secs(10))).await??;
    Ok(())
}

/// Compares Redis's winners with PostgreSQL's coupons every `interval`.
async fn reconcile_periodically(
    issuer: Arc<Issuer>,
    metrics: Arc<Metrics>,
    interval: Duration,
    stop: CancellationToken,
) {
    let Backend::Distributed(distributed) = issuer.backend() else {
        return;
    };
    let mut seen_missing: HashMap<String, HashSet<Winner>> = HashMap::new();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while stop.run_until_cancelled(tick.tick()).await.is_some() {
        for campaign in issuer.campaigns() {
            let before = seen_missing
                .entry(campaign.config.name.clone())
                .or_default();
            match reconcile(distributed, &metrics, campaign, Some(before)).await {
                Ok(drift) if drift.republished > 0 => {
                    tracing::warn!(campaign = %drift.campaign, missing = drift.missing, republished = drift.republished, "re-published winners missing from PostgreSQL")
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(%error, campaign = %campaign.config.name, "reconciliation failed; will retry")
                }
            }
        }
    }
}

/// `firstcome-issuer retry-failed`: one retry batch, its outcome printed as JSON.
pub async fn retry_failed_once(database_url: &str) -> anyhow::Result<()> {
    let store = CouponStore::connect(database_url, 2)
        .await
        .context("connecting to PostgreSQL")?;
    let report = store.retry_failed_events().await?;
    println!(
        "{}",
        serde_json::json!({ "resolved": report.resolved, "stillFailing": report.still_failing })
    );
    Ok(())
}

async fn retry_failed_events(store: CouponStore, stop: CancellationToken) {
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

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
