//! One-shot commands: `audit` (alias `reconcile`) and `retry-failed`.

use std::sync::Arc;

use anyhow::Context;
use anyhow::bail;

use super::{FLUSH_TIMEOUT, load_campaigns};
use crate::campaign::Campaign;
use crate::cli::{Backends, Mode, ServeArgs};
use crate::identity::Identity;
use crate::kafka::producer::WinnerPublisher;
use crate::metrics::Metrics;
use crate::store::postgres::CouponStore;

/// `firstcome-issuer audit`: one drift audit of every campaign, printed as JSON lines;
/// every missing winner is re-published at once.
pub async fn audit_once(args: ServeArgs) -> anyhow::Result<()> {
    let Ok(Mode::Distributed(
        backends @ Backends {
            redis_url: Some(redis_url),
            ..
        },
    )) = args.mode()
    else {
        bail!("audit needs --redis-url, --kafka-brokers and --database-url");
    };
    let configs = load_campaigns(&args, false)?;
    let metrics = Arc::new(Metrics::default());
    let coupons = CouponStore::connect(backends.database_url, 2)
        .await
        .context("connecting to PostgreSQL")?;
    let publisher = WinnerPublisher::new(backends.kafka_brokers, args.delivery_timeout())?;
    let parts = (publisher.clone(), coupons);
    let distributed =
        super::distributed::connect(&args, redis_url, &backends, parts, metrics.clone()).await?;
    for config in configs {
        // The audit serves no request: nobody to authenticate.
        let campaign = Campaign::new(config, Identity::None, &metrics, true);
        let drift = distributed.audit(&campaign, None).await?;
        println!("{}", serde_json::to_string(&drift)?);
    }
    tokio::task::spawn_blocking(move || publisher.flush(FLUSH_TIMEOUT)).await??;
    Ok(())
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
