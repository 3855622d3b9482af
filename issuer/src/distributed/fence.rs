//! Fencing: a Redis that lost admissions (a promoted replica that lagged, a restart that
//! lost its last writes, a counter rolled back) never hands out a sequence again.
//!
//! The durable record decides. Every sequence Redis hands out reaches the campaign topic
//! before its winner is answered, so a healthy counter is never below the highest
//! sequence on the topic, nor below the highest persisted one, and Redis records every
//! holder the topic names. When it is behind, the campaign is fenced: its counter is
//! deleted, every issuer answers 503 "unprovisioned", and it is restored from PostgreSQL
//! once the consumers persisted the whole topic (see [`super::provision`]). Three paths
//! find it: the hand-off's read-back (the topic names another holder of the sequence
//! just handed out), a watch comparing the counter with the topic each second, and
//! provisioning comparing it with PostgreSQL.
//!
//! A Redis that lost the campaign altogether (no counter) answers the next apply
//! "unprovisioned", which restores it. A sold-out campaign's applies are answered from
//! memory and never reach Redis, so the watch restores a campaign whose counter is gone
//! while its topic names winners (soak seed 4019).

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Distributed;
use crate::campaign::Campaign;
use crate::error::IssuerError;

/// How often the watch compares each counter with the topic.
const WATCH_INTERVAL: Duration = Duration::from_secs(1);

impl Distributed {
    /// Fences `campaign` if Redis is behind `highest` (a sequence the durable record
    /// holds) or does not record that `holder` holds their sequence; then restores it in
    /// the background. Returns whether it fenced.
    pub async fn fence(
        self: &Arc<Self>,
        campaign: &Arc<Campaign>,
        highest: u64,
        holder: Option<(&str, u64)>,
    ) -> Result<bool, IssuerError> {
        let fenced = self.fence_if_behind(campaign, highest, holder).await?;
        if fenced {
            campaign.set_provisioned(false);
            self.restore_in_background(campaign);
        }
        Ok(fenced)
    }

    /// Deletes the counter if Redis is behind (see [`Self::fence`]); no restore.
    pub(super) async fn fence_if_behind(
        &self,
        campaign: &Campaign,
        highest: u64,
        holder: Option<(&str, u64)>,
    ) -> Result<bool, IssuerError> {
        let fenced = self.redis.fence(&campaign.keys, highest, holder).await?;
        if fenced {
            tracing::error!(
                highest,
                "Redis lost admissions: campaign fenced until it is restored from PostgreSQL"
            );
            self.metrics.fenced(campaign.name());
        }
        Ok(fenced)
    }
}

/// Fences every campaign whose counter falls behind its topic, and restores one whose
/// counter is gone while its topic names winners, until `stop`. Reads the counter (a
/// plain GET) and runs the fence script only when it is behind.
pub async fn watch(
    distributed: Arc<Distributed>,
    campaigns: Vec<Arc<Campaign>>,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(WATCH_INTERVAL);
    while stop.run_until_cancelled(tick.tick()).await.is_some() {
        for campaign in &campaigns {
            if let Err(error) = distributed.fence_if_topic_ahead(campaign).await {
                tracing::debug!(%error, campaign = %campaign.name(), "fence watch: cannot compare with Redis");
            }
        }
    }
}

impl Distributed {
    async fn fence_if_topic_ahead(
        self: &Arc<Self>,
        campaign: &Arc<Campaign>,
    ) -> Result<(), IssuerError> {
        let highest = campaign.claims.highest();
        if highest == 0 {
            return Ok(()); // the topic names no winner yet: no Redis read needed
        }
        let Some(counter) = self.redis.counter(&campaign.keys).await? else {
            campaign.set_provisioned(false); // Redis lost it, or the campaign was deleted
            self.restore_in_background(campaign);
            return Ok(());
        };
        if counter < highest {
            self.fence(campaign, highest, None).await?;
        }
        Ok(())
    }
}
