//! Re-publishing: admissions whose first publish was never confirmed (it failed, or the
//! issuer that admitted them died before the broker acked) are published again.
//! Publishing twice is safe: persistence ignores duplicates. Of the issuers serving a
//! campaign, the one holding the campaign's lease in Redis re-publishes, so a backlog
//! left by a broker outage reaches the broker once, not once per replica.

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

/// This issuer's claim on campaigns' re-publishing leases.
pub struct Lease {
    /// Unique per issuer process.
    pub holder: String,
    /// How long a lease lasts unless extended: an issuer that died holding it is replaced
    /// after this long.
    pub length: Duration,
}

impl Lease {
    /// A lease outlasting a few passes, `every` apart.
    pub fn new(every: Duration) -> Self {
        Self {
            holder: uuid::Uuid::new_v4().as_simple().to_string(),
            length: 4 * every,
        }
    }
}

impl Distributed {
    /// One pass over a campaign's backlog: every issuer reports its size; the one holding
    /// the lease (taking it when free) re-publishes the winners whose first publish is
    /// older than `grace`. A pass that fails gives the lease up, so that an issuer that
    /// reaches the broker takes over. `None`: nothing was due here.
    pub async fn republish_if_leased(
        &self,
        campaign: &Campaign,
        grace: Duration,
        lease: &Lease,
    ) -> Result<Option<usize>, IssuerError> {
        let keys = &campaign.keys;
        let backlog = self.redis.pending_count(keys).await?;
        self.metrics.unconfirmed_winners(campaign.name(), backlog);
        if backlog == 0
            || !(self.redis)
                .hold_republish_lease(keys, &lease.holder, lease.length)
                .await?
        {
            return Ok(None);
        }
        let passed = self.republish_pending(campaign, grace).await;
        if passed.is_err()
            && let Err(error) = self
                .redis
                .release_republish_lease(keys, &lease.holder)
                .await
        {
            tracing::warn!(%error, "cannot give the re-publishing lease up; it lapses");
        }
        passed.map(Some)
    }

    /// Publishes winners whose first publish is older than `grace` and still unconfirmed.
    async fn republish_pending(
        &self,
        campaign: &Campaign,
        grace: Duration,
    ) -> Result<usize, IssuerError> {
        let pending = self.redis.pending(&campaign.keys).await?;
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

/// Re-publishes every campaign's unconfirmed winners until `stop`. After a failed pass
/// over a campaign this issuer sits its next pass out, leaving the lease to another.
pub async fn republish_periodically(
    distributed: Arc<Distributed>,
    campaigns: Vec<Arc<Campaign>>,
    stop: CancellationToken,
) {
    // A first publish older than the longest ack wait is no longer in flight.
    let grace = distributed.publisher.ack_wait();
    let every = grace / 2;
    let lease = Lease::new(every);
    let mut sitting_out = vec![false; campaigns.len()];
    let mut tick = tokio::time::interval(every);
    while stop.run_until_cancelled(tick.tick()).await.is_some() {
        for (campaign, sits_out) in campaigns.iter().zip(&mut sitting_out) {
            if std::mem::take(sits_out) {
                continue;
            }
            match distributed
                .republish_if_leased(campaign, grace, &lease)
                .await
            {
                Ok(None | Some(0)) => {}
                Ok(Some(count)) => {
                    tracing::info!(campaign = %campaign.name(), count, "re-published unconfirmed winners")
                }
                Err(error) => {
                    *sits_out = true;
                    tracing::warn!(%error, campaign = %campaign.name(), "re-publishing failed; will retry")
                }
            }
        }
    }
}
