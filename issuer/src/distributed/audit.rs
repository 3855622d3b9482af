//! The drift audit: compares the winners Redis recorded with the coupons PostgreSQL
//! holds, reports how many await their coupon (pending persistence) and the difference
//! that is not in flight (drift), and re-publishes winners still missing one
//! interval later — an event lost after its ack, or stuck in a failed state. Winners
//! whose first publish is unconfirmed are left to the re-publisher. Re-publishing is
//! always safe: persistence ignores duplicates.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use super::{Distributed, winner_event};
use crate::admission::Admission;
use crate::campaign::Campaign;
use crate::error::IssuerError;

/// (user, sequence) of a winner.
pub type Winner = (String, u64);

/// What one pass found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Drift {
    pub campaign: String,
    /// Winners in Redis without a coupon (and not awaiting their first publish).
    pub missing: usize,
    pub republished: usize,
}

impl Distributed {
    /// One pass over `campaign`. `seen_missing` carries the winners missing at the
    /// previous pass: only those still missing now are re-published (they had a whole
    /// interval to arrive). Pass `None` to re-publish every missing winner at once.
    pub async fn audit(
        &self,
        campaign: &Campaign,
        seen_missing: Option<&mut HashSet<Winner>>,
    ) -> Result<Drift, IssuerError> {
        let counts = self.redis.counts(&campaign.keys).await?;
        let issued = self.coupons.issued_count(campaign.name()).await?;
        self.metrics
            .pending_persistence(campaign.name(), counts.admitted.saturating_sub(issued));
        let missing = if counts.admitted == issued {
            HashMap::new()
        } else {
            self.missing_winners(campaign).await?
        };
        campaign
            .drift
            .store(missing.len() as u64, Ordering::Relaxed);
        self.metrics.missing_coupons(campaign.name(), missing.len());
        let due = missing.iter().filter(|(winner, _)| {
            seen_missing
                .as_deref()
                .is_none_or(|before| before.contains(*winner))
        });
        let mut republished = 0;
        for ((user, sequence), ordinal) in due {
            // The admission time went with the pending entry; the re-publish time stands in.
            let admission = Admission {
                sequence: *sequence,
                ordinal: *ordinal,
                admitted_at: Utc::now(),
            };
            let event = winner_event(campaign.name(), user, &admission);
            self.publisher.publish(&campaign.topic, &event).await?;
            self.metrics.republished(campaign.name());
            republished += 1;
        }
        let drift = Drift {
            campaign: campaign.name().to_string(),
            missing: missing.len(),
            republished,
        };
        if let Some(before) = seen_missing {
            *before = missing.into_keys().collect();
        }
        Ok(drift)
    }

    /// Winners in Redis without a coupon and not awaiting their first publish, each with
    /// its ordinal (its position among the user's sequences).
    async fn missing_winners(
        &self,
        campaign: &Campaign,
    ) -> Result<HashMap<Winner, u32>, IssuerError> {
        let holders = self.redis.holders(&campaign.keys).await?;
        let pending: HashSet<u64> = (self.redis.pending(&campaign.keys).await?)
            .into_iter()
            .map(|p| p.admission.sequence)
            .collect();
        let persisted: HashSet<Winner> = (self.coupons.holders_of(campaign.name()).await?)
            .into_iter()
            .flat_map(|(user, held)| held.into_iter().map(move |s| (user.clone(), s)))
            .collect();
        Ok(holders
            .into_iter()
            .flat_map(|(user, held)| {
                held.into_iter()
                    .enumerate()
                    .map(move |(i, s)| ((user.clone(), s), i as u32 + 1))
            })
            .filter(|(winner, _)| !pending.contains(&winner.1) && !persisted.contains(winner))
            .collect())
    }
}

/// Audits every campaign each `interval` until `stop`.
pub async fn audit_periodically(
    distributed: Arc<Distributed>,
    campaigns: Vec<Arc<Campaign>>,
    interval: Duration,
    stop: CancellationToken,
) {
    let mut seen_missing: HashMap<String, HashSet<Winner>> = HashMap::new();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while stop.run_until_cancelled(tick.tick()).await.is_some() {
        for campaign in &campaigns {
            let before = seen_missing.entry(campaign.name().to_string()).or_default();
            match distributed.audit(campaign, Some(before)).await {
                Ok(drift) if drift.republished > 0 => {
                    tracing::warn!(campaign = %drift.campaign, missing = drift.missing, republished = drift.republished, "re-published winners missing from PostgreSQL")
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(%error, campaign = %campaign.name(), "drift audit failed; will retry")
                }
            }
        }
    }
}
