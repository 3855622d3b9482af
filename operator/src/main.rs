//! The operator's binary: flags, logs, the /healthz, /readyz and /metrics listener, the
//! leader lease, then the controller until SIGTERM; the lease is released on the way out.

// See lib.rs: the reconcile future is deep.
#![recursion_limit = "256"]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use clap::{ArgAction, Parser, ValueEnum};
use firstcome_operator::controller::{self, Context};
use firstcome_operator::defaults::IssuerDefaults;
use firstcome_operator::leader::{Leadership, LeaseLock};
use firstcome_operator::metrics::Metrics;
use k8s_openapi::api::core::v1::ResourceRequirements;
use kube::{Api, Client};
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Kubernetes operator for firstcome coupon campaigns.
#[derive(Parser, Debug)]
#[command(name = "firstcome-operator", version)]
struct Args {
    /// Image of the issuers when a campaign names none.
    #[arg(long, env = "FIRSTCOME_ISSUER_IMAGE", default_value = concat!("firstcome:", env!("CARGO_PKG_VERSION")))]
    issuer_image: String,

    /// Issuer pods of a campaign that names no `issuer.replicas`.
    #[arg(long, env = "FIRSTCOME_DEFAULT_ISSUER_REPLICAS", default_value_t = 2)]
    default_issuer_replicas: i32,

    /// Resources (JSON, as in a container spec) of issuers whose campaign names none.
    #[arg(long, env = "FIRSTCOME_DEFAULT_ISSUER_RESOURCES", value_parser = parse_resources)]
    default_issuer_resources: Option<ResourceRequirements>,

    /// The backends Secret of a campaign that names no `backends.secretName`.
    #[arg(
        long,
        env = "FIRSTCOME_DEFAULT_BACKENDS_SECRET",
        default_value = "firstcome-backends"
    )]
    default_backends_secret: String,

    /// Address of /healthz, /readyz and /metrics.
    #[arg(
        long,
        env = "FIRSTCOME_OPERATOR_LISTEN",
        default_value = "127.0.0.1:8081"
    )]
    listen: SocketAddr,

    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "FIRSTCOME_WATCH_NAMESPACE")]
    watch_namespace: Option<String>,

    /// Elect a leader with a Lease, so several replicas can run.
    #[arg(long, env = "FIRSTCOME_LEADER_ELECTION", default_value_t = true, action = ArgAction::Set)]
    leader_election: bool,

    /// Namespace of the leader Lease.
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,

    /// Name of the leader Lease.
    #[arg(
        long,
        env = "FIRSTCOME_LEASE_NAME",
        default_value = "firstcome-operator"
    )]
    lease_name: String,

    /// Seconds a lease stays valid without renewal.
    #[arg(long, env = "FIRSTCOME_LEASE_SECONDS", default_value_t = 15)]
    lease_seconds: u64,

    /// This replica's identity in the Lease (default: POD_NAME, else host name and pid).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,

    #[arg(long, env = "FIRSTCOME_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,

    /// The OpenTelemetry collector the issuers export their traces to (their
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`, OTLP/HTTP base URL); none by default.
    #[arg(long, env = "FIRSTCOME_ISSUER_OTLP_ENDPOINT")]
    issuer_otlp_endpoint: Option<String>,
}

fn parse_resources(json: &str) -> Result<ResourceRequirements, String> {
    serde_json::from_str(json).map_err(|e| format!("not a resources object: {e}"))
}

impl Args {
    fn defaults(&self) -> IssuerDefaults {
        let builtin = IssuerDefaults::default();
        IssuerDefaults {
            image: self.issuer_image.clone(),
            replicas: self.default_issuer_replicas,
            resources: self
                .default_issuer_resources
                .clone()
                .unwrap_or(builtin.resources),
            backends_secret: self.default_backends_secret.clone(),
            otlp_endpoint: self.issuer_otlp_endpoint.clone(),
        }
    }

    fn lease_lock(&self, client: &Client) -> LeaseLock {
        let identity = self.identity.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
            format!("{}-{}", host.trim(), std::process::id())
        });
        LeaseLock::new(
            Api::namespaced(client.clone(), &self.lease_namespace),
            &self.lease_name,
            &identity,
            Duration::from_secs(self.lease_seconds),
        )
    }
}

fn init_logs(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
}

/// Serves /healthz, /readyz and /metrics in the background.
fn serve_ops(listener: TcpListener, metrics: Arc<Metrics>) {
    let ops = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ok" }))
        .route("/metrics", get(move || async move { metrics.render() }));
    tokio::spawn(async move { axum::serve(listener, ops).await });
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    init_logs(args.log_format);
    let client = Client::try_default().await?;
    let metrics = Arc::new(Metrics::default());
    serve_ops(TcpListener::bind(args.listen).await?, metrics.clone());

    let leadership = if args.leader_election {
        let leadership = Leadership::acquire(args.lease_lock(&client)).await;
        metrics.leader.set(1);
        Some(leadership)
    } else {
        None
    };
    let ctx = Arc::new(Context::new(client, metrics.clone(), args.defaults()));
    tracing::info!(namespace = ?args.watch_namespace, "reconciling CouponCampaigns");
    controller::run(ctx, args.watch_namespace.as_deref()).await;
    if let Some(leadership) = leadership {
        leadership.step_down().await;
        metrics.leader.set(0);
    }
    Ok(())
}
