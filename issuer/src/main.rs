use clap::Parser;
use firstcome_issuer::cli::{Cli, Command, LogFormat};
use firstcome_issuer::wiring::{self, commands};
use tracing_subscriber::EnvFilter;

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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::RetryFailed(args)) => {
            init_logs(LogFormat::Text);
            commands::retry_failed_once(&args.database_url).await
        }
        Some(Command::Audit(args)) => {
            init_logs(args.log_format);
            commands::audit_once(args).await
        }
        Some(Command::Serve(args)) => {
            init_logs(args.log_format);
            wiring::serve(args).await
        }
        None => {
            init_logs(cli.serve.log_format);
            wiring::serve(cli.serve).await
        }
    }
}
