//! Wiring: a process built from its configuration and run.
//!
//! [`build`] turns the command line into a [`Wiring`] — the issuer (if this process
//! serves applies), its readiness checks, and the background tasks of its mode
//! ([`standalone`], [`distributed`]) — without starting anything that serves. [`serve_on`]
//! runs a wiring on bound [`Listeners`] (the public API, operations) until a shutdown
//! future resolves, then stops it in order, so a test can run an issuer in process.

pub mod commands;
pub mod distributed;
pub mod standalone;

use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use firstcome_contract::{CampaignConfig, CampaignsFile};
use futures::future::BoxFuture;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::campaign::Campaign;
use crate::cli::{Mode, ServeArgs};
use crate::client_addr::TrustedProxies;
use crate::http::bare_refusals::{JsonRefusingListener, WithPeer};
use crate::http::{self, OpsState};
use crate::identity::Identity;
use crate::issuer::Issuer;
use crate::kafka::producer::WinnerPublisher;
use crate::metrics::Metrics;
use crate::readiness::Readiness;
use crate::waiting_room::queue::RoomQueue;
use crate::waiting_room::{ADMISSION_RUN_EVERY, Room, RoomSecret};

/// How often sold-out campaigns re-read their counts.
const SOLD_OUT_REFRESH: Duration = Duration::from_secs(1);
/// Longest wait for the producer's queue on shutdown.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(10);

/// A process, built and not yet running.
pub struct Wiring {
    /// Present when this process serves applies.
    pub issuer: Option<Arc<Issuer>>,
    pub metrics: Arc<Metrics>,
    pub readiness: Arc<Readiness>,
    /// How long readiness reads false before the listener stops, on shutdown.
    pub shutdown_delay: Duration,
    /// Whose X-Forwarded-For names the client an apply is rate limited under.
    trusted_proxies: TrustedProxies,
    /// Started by `serve_on`; each ends when `stop` is cancelled.
    background: Vec<BoxFuture<'static, ()>>,
    stop: CancellationToken,
    /// Flushed once the background tasks have stopped.
    publisher: Option<WinnerPublisher>,
    /// Where the waiting rooms' secret is (`--waiting-room-secret-file`).
    room_secret: Option<PathBuf>,
}

impl Wiring {
    fn new(args: &ServeArgs) -> Self {
        Self {
            issuer: None,
            metrics: Arc::new(Metrics::default()),
            readiness: Arc::default(),
            shutdown_delay: args.shutdown_delay(),
            trusted_proxies: args.trusted_proxies(),
            background: Vec::new(),
            stop: CancellationToken::new(),
            publisher: None,
            room_secret: args.waiting_room_secret_file.clone(),
        }
    }

    /// The public routes of this process: the API when it serves applies, and its
    /// OpenAPI document.
    pub fn api_router(&self) -> axum::Router {
        http::api_router(self.issuer.clone(), self.trusted_proxies.clone())
    }

    /// The operational routes: probes and metrics.
    pub fn ops_router(&self) -> axum::Router {
        http::ops_router(OpsState {
            metrics: self.metrics.clone(),
            readiness: self.readiness.clone(),
        })
    }

    /// Adds a readiness check that fails, naming them, while any of `campaigns` is not
    /// `ready`.
    fn check_campaigns(
        &self,
        name: &'static str,
        why: &'static str,
        campaigns: Vec<Arc<Campaign>>,
        ready: fn(&Campaign) -> bool,
    ) {
        self.readiness.add(name, move || {
            let waiting: Vec<&str> = (campaigns.iter())
                .filter(|c| !ready(c))
                .map(|c| c.name())
                .collect();
            let result = match waiting.is_empty() {
                true => Ok(()),
                false => Err(format!("{why}: {}", waiting.join(", "))),
            };
            async move { result }
        });
    }

    /// Adds a background task, given the token that stops it.
    fn run_in_background<F>(&mut self, task: impl FnOnce(CancellationToken) -> F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.background.push(Box::pin(task(self.stop.clone())));
    }

    /// The campaigns this process serves applies of, each with its identity and its
    /// waiting room loaded.
    fn campaigns(
        &self,
        configs: &[CampaignConfig],
        provisioned: bool,
    ) -> anyhow::Result<Vec<Arc<Campaign>>> {
        let secret = self.room_secret(configs)?;
        configs
            .iter()
            .map(|config| {
                let identity = Identity::load(&config.name, &config.identity)
                    .with_context(|| format!("campaign {}: identity", config.name))?;
                tracing::info!(
                    campaign = %config.name,
                    "rate limits: {}",
                    config.rate_limits
                );
                let room = (secret.as_ref()).and_then(|secret| {
                    let metrics = self.metrics.waiting_room.of(&config.name);
                    Room::of(config, secret, metrics)
                });
                let campaign = Campaign::new(config.clone(), identity, &self.metrics, provisioned);
                Ok(Arc::new(campaign.with_room(room)))
            })
            .collect()
    }

    /// The waiting rooms' secret, read when a campaign has a waiting room.
    fn room_secret(&self, configs: &[CampaignConfig]) -> anyhow::Result<Option<RoomSecret>> {
        let Some(campaign) = configs.iter().find(|c| c.waiting_room.is_some()) else {
            return Ok(None);
        };
        let path = (self.room_secret.as_ref()).with_context(|| {
            format!(
                "campaign {} has a waiting room: pass --waiting-room-secret-file",
                campaign.name
            )
        })?;
        Ok(Some(RoomSecret::read(path)?))
    }

    /// Serves applies through `issuer`: readiness waits for its campaigns to be
    /// provisioned, and sold-out campaigns re-read their limit.
    fn serve_issuer(&mut self, issuer: Issuer) {
        let issuer = Arc::new(issuer);
        let campaigns: Vec<Arc<Campaign>> = issuer.campaigns().cloned().collect();
        self.check_campaigns(
            "campaigns",
            "not yet provisioned in Redis",
            campaigns,
            |c| c.is_provisioned(),
        );
        let refreshed = Arc::clone(&issuer);
        self.run_in_background(|stop| refresh_sold_out_boards(refreshed, stop));
        let rooms: Vec<Arc<Campaign>> = (issuer.campaigns())
            .filter(|c| c.room.is_some())
            .cloned()
            .collect();
        if let Some(queue) = issuer.rooms().filter(|_| !rooms.is_empty()) {
            let queue = queue.clone();
            self.run_in_background(|stop| admit_periodically(queue, rooms, stop));
        }
        self.issuer = Some(issuer);
    }
}

/// Builds the process `args` describe.
pub async fn build(args: &ServeArgs) -> anyhow::Result<Wiring> {
    let mode = args.mode().map_err(anyhow::Error::msg)?;
    let campaigns = load_campaigns(args, mode == Mode::Standalone)?;
    match mode {
        Mode::Standalone => standalone::wire(args, &campaigns).await,
        Mode::Distributed(backends) => distributed::wire(args, &backends, &campaigns).await,
    }
}

/// Where a process serves: the public API, and apart from it the operational endpoints.
pub struct Listeners {
    pub api: TcpListener,
    pub ops: TcpListener,
}

impl Listeners {
    pub async fn bind(api: SocketAddr, ops: SocketAddr) -> anyhow::Result<Self> {
        let bind = |address| async move {
            (TcpListener::bind(address).await).with_context(|| format!("binding {address}"))
        };
        Ok(Self {
            api: bind(api).await?,
            ops: bind(ops).await?,
        })
    }
}

/// Runs the process until SIGTERM or Ctrl-C.
pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let listeners = Listeners::bind(args.listen, args.ops_listen).await?;
    let wiring = build(&args).await?;
    tracing::info!(address = %args.listen, ops = %args.ops_listen, role = ?args.role, "listening");
    if let Some(campaign) = wiring.issuer.as_ref().and_then(|i| i.campaigns().next()) {
        tracing::info!(
            "try: curl -s -X POST http://{}/v1/campaigns/{}/applications -H 'content-type: application/json' -d '{{\"userId\":\"alice\"}}'",
            args.listen,
            campaign.name()
        );
    }
    serve_on(listeners, wiring, shutdown_signal()).await
}

/// Serves `wiring` on `listeners` until `shutdown` resolves. Then readiness turns false
/// for the wiring's shutdown delay (both listeners still serving), in-flight requests are
/// answered, background tasks (consumers finish and commit their batch) stop, and the
/// producer is flushed.
pub async fn serve_on(
    listeners: Listeners,
    wiring: Wiring,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (api, ops) = (wiring.api_router(), wiring.ops_router());
    let mut tasks = JoinSet::new();
    for task in wiring.background {
        tasks.spawn(task);
    }
    let (readiness, delay) = (wiring.readiness, wiring.shutdown_delay);
    let drained = CancellationToken::new();
    let drain = {
        let drained = drained.clone();
        async move {
            shutdown.await;
            tracing::info!(?delay, "shutting down: readiness is false, draining");
            readiness.start_draining();
            tokio::time::sleep(delay).await;
            drained.cancel();
        }
    };
    let api = axum::serve(JsonRefusingListener(listeners.api), WithPeer(api))
        .with_graceful_shutdown(drained.clone().cancelled_owned());
    let ops = axum::serve(listeners.ops, ops).with_graceful_shutdown(drained.cancelled_owned());
    let (_, api, ops) = tokio::join!(drain, api.into_future(), ops.into_future());
    api.context("serving the API")?;
    ops.context("serving the operational endpoints")?;
    wiring.stop.cancel();
    while tasks.join_next().await.is_some() {}
    if let Some(publisher) = wiring.publisher {
        flush(publisher).await?;
    }
    tracing::info!("stopped");
    Ok(())
}

async fn flush(publisher: WinnerPublisher) -> anyhow::Result<()> {
    let flushed = tokio::task::spawn_blocking(move || publisher.flush(FLUSH_TIMEOUT)).await?;
    if let Err(error) = flushed {
        tracing::error!(%error, "flushing the producer failed; pending winners are re-published by the next issuer");
    }
    Ok(())
}

/// The campaigns to serve: the file's plus the `--campaign` ones; `demo:100` for a
/// standalone issuer given none. The `--campaign` ones (and `demo`) take the identity of
/// the `--identity` flags and the rate limits of the `--rate-limit-*` flags; the file's
/// say their own.
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
    if let Some(room) = (file.campaigns.iter()).find(|c| standalone && c.waiting_room.is_some()) {
        bail!(
            "campaign {}: a waiting room needs the distributed issuer (its queue lives in Redis)",
            room.name
        );
    }
    let mut flagged = args.campaigns.clone();
    if file.campaigns.is_empty() && flagged.is_empty() {
        if !standalone {
            bail!("no campaign configured: pass --campaigns-file or --campaign NAME:LIMIT");
        }
        flagged.push(CampaignConfig::new("demo", 100));
    }
    let identity = args.identity.config().map_err(anyhow::Error::msg)?;
    file.campaigns
        .extend(flagged.into_iter().map(|campaign| CampaignConfig {
            identity: identity.clone(),
            rate_limits: args.shorthand_rate_limits(),
            ..campaign
        }));
    file.validate()?;
    Ok(file.campaigns)
}

/// The campaign a process serves, when it serves exactly one (as an issuer the operator
/// runs does): the resource its traces are exported under names it. `None` also when the
/// campaigns cannot be loaded, which [`build`] then reports.
pub fn single_campaign(args: &ServeArgs) -> Option<String> {
    let standalone = args.mode().is_ok_and(|mode| mode == Mode::Standalone);
    match load_campaigns(args, standalone).ok()?.as_slice() {
        [one] => Some(one.name.clone()),
        _ => None,
    }
}

async fn refresh_sold_out_boards(issuer: Arc<Issuer>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(SOLD_OUT_REFRESH);
    while stop.run_until_cancelled(tick.tick()).await.is_some() {
        issuer.refresh_sold_out_boards().await;
    }
}

/// Runs the admission script of every room in `campaigns` until `stop`, several times a
/// second; a failed run is logged and the next one tries again.
async fn admit_periodically(
    queue: RoomQueue,
    campaigns: Vec<Arc<Campaign>>,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(ADMISSION_RUN_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while stop.run_until_cancelled(tick.tick()).await.is_some() {
        for campaign in &campaigns {
            let Some(room) = &campaign.room else { continue };
            match queue
                .admit(&campaign.keys, &room.config, room.opens_ms())
                .await
            {
                Ok(run) => room.metrics.admitted(run.waiting, &run.waits_ms),
                Err(error) => {
                    tracing::warn!(%error, campaign = %campaign.name(), "waiting-room admission run failed")
                }
            }
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
