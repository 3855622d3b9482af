//! The standalone process: admission in process, coupons in SQLite, nothing else to run.

use std::sync::Arc;

use anyhow::Context;
use firstcome_contract::CampaignConfig;

use super::Wiring;
use crate::admission::embedded::EmbeddedAdmission;
use crate::backend::Backend;
use crate::cli::ServeArgs;
use crate::issuer::Issuer;
use crate::store::sqlite::SqliteStore;

pub async fn wire(args: &ServeArgs, configs: &[CampaignConfig]) -> anyhow::Result<Wiring> {
    let dir = &args.data_dir;
    let store = SqliteStore::open(dir)
        .await
        .with_context(|| format!("opening the standalone ledger in {}", dir.display()))?;
    let embedded = EmbeddedAdmission::open(store, configs).await?;
    let mut wiring = Wiring::new(args);
    // The ledger is rebuilt from SQLite on open: every campaign is provisioned.
    let campaigns = wiring.campaigns(configs, true)?;
    let backend = Backend::Standalone(Arc::new(embedded));
    wiring.serve_issuer(Issuer::new(&campaigns, backend));
    tracing::info!(data_dir = %dir.display(), "standalone: admission in process, coupons in SQLite");
    Ok(wiring)
}
