use clap::Parser;
use firstcome_issuer::app;
use firstcome_issuer::cli::{Cli, Command, LogFormat};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let args = match cli.command {
        Some(Command::Serve(args)) => args,
        Some(Command::RetryFailed(args)) => {
            tracing_subscriber::fmt()
                .with_writer(std::io::stderr)
                .init();
            return app::retry_failed_once(&args.database_url).await;
        }
        None => cli.serve,
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
    app::serve(args).await
}
