//! Re-publishing: admissions whose first publish was never confirmed (it failed, or the
//! issuer that admitted them died before the broker acked) are published again.
//! Publishing twice is safe: persistence ignores duplicates.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures::TryStreamExt;
use tokio_util::sync::CancellationToken;

use super::{Distributed, winner_event};
use crate::admission::redis::PendingWinner;
use crate::campaign::Campaign;
use crate::error::IssuerError;

/// Re-publishes in flight at once: a backlog left by a broker outage goes out in the
/// producer's batches, not one ack after another.
const IN_FLIGHT: usize = 256;

impl Distributed {
    /// Publishes winners whose first publish is older than `grace` and still unconfirmed.
    pub async fn republish_pending(
        &self,
        campaign: &Campaign,
        grace: Duration,
    ) -> Result<usize, IssuerError> {
        let pending = self.redis.pending(&campaign.keys).await?;
        self.metrics
            .unconfirmed_winners(campaign.name(), pending.len());
        let cutoff = Utc::now() - grace;
        let due: Vec<&PendingWinner> = pending
            .iter()
            .filter(|w| w.admission.admitted_at < cutoff)
            .collect();
        futures::stream::iter(due.iter().map(Ok))
            .try_for_each_concurrent(IN_FLIGHT, |winner| self.republish(campaign, winner))
            .await?;
        Ok(due.len())
    }

    /// Publishes one winner's event again and clears its pending mark once acked.
    async fn republish(
        &self,
        campaign: &Campaign,
        winner: &PendingWinner,
    ) -> Result<(), IssuerError> {
        let event = winner_event(campaign.name(), &winner.user_id, &winner.admission);
        self.publisher.publish(&campaign.topic, &event).await?;
        self.redis
            .confirm_published(&campaign.keys, winner.admission.sequence)
            .await?;
        self.metrics.republished(campaign.name());
        Ok(())
    }
}

/// Re-publishes every campaign's unconfirmed winners until `stop`.
pub async fn republish_periodically(
    distributed: Arc<Distributed>,
    campaigns: Vec<Arc<Campaign>>,
    stop: CancellationToken,
) {
    // A first publish older than the longest ack wait is no longer in flight.
    let grace = distributed.publisher.ack_wait();
    let mut tick = tokio::time::interval(grace / 2);
    while stop.run_until_cancelled(tick.tick()).await.is_some() {
        for campaign in &campaigns {
            match distributed.republish_pending(campaign, grace).await {
                Ok(0) => {}
                Ok(count) => {
                    tracing::info!(campaign = %campaign.name(), count, "re-published unconfirmed winners")
                }
                Err(error) => {
                    tracing::warn!(%error, campaign = %campaign.name(), "re-publishing failed; will retry")
                }
            }
        }
    }
}
