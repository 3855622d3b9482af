use clap::Parser;
use firstcome_issuer::cli::{Cli, Command, LogFormat, ServeArgs};
use firstcome_issuer::traces::{Traces, default_log_filter};
use firstcome_issuer::wiring::{self, commands};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// mimalloc rather than glibc's malloc: an apply allocates many small objects on one
/// thread and frees them on another (requests, spans, events, channels), and glibc's
/// malloc and free took about 11 % of the issuer's CPU under load (docs/testing.md,
/// "Profile of phase A").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Logs to stderr in `format`; spans also to `traces` when they are exported.
fn init_logs(format: LogFormat, traces: Option<&Traces>) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(default_log_filter(traces.is_some())));
    let text = matches!(format, LogFormat::Text)
        .then(|| tracing_subscriber::fmt::layer().with_writer(std::io::stderr));
    let json = matches!(format, LogFormat::Json)
        .then(|| (tracing_subscriber::fmt::layer().json()).with_writer(std::io::stderr));
    tracing_subscriber::registry()
        .with(filter)
        .with(text)
        .with(json)
        .with(traces.map(Traces::layer))
        .init();
}

/// Serves until SIGTERM, then sends the spans still queued.
async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let traces = match &args.otlp_endpoint {
        Some(endpoint) => {
            let campaign = wiring::single_campaign(&args);
            Some(Traces::new(endpoint, campaign.as_deref())?)
        }
        None => None,
    };
    init_logs(args.log_format, traces.as_ref());
    let served = wiring::serve(args).await;
    if let Some(traces) = traces {
        tokio::task::spawn_blocking(move || traces.shutdown()).await?;
    }
    served
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::RetryFailed(args)) => {
            init_logs(LogFormat::Text, None);
            commands::retry_failed_once(&args.database_url).await
        }
        Some(Command::Audit(args)) => {
            init_logs(args.log_format, None);
            commands::audit_once(args).await
        }
        Some(Command::Serve(args)) => serve(args).await,
        None => serve(cli.serve).await,
    }
}
