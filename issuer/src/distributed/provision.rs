//! Provisioning: a campaign whose admission state Redis does not hold (a new campaign,
//! or Redis lost its data) is restored from PostgreSQL, the durable record, before it
//! admits anyone. Until then the admission script answers "unprovisioned" and applies
//! get 503. A campaign the operator deleted (its tombstone is in Redis) is never
//! restored: its issuers answer 503 until their Deployment is gone.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tracing::Instrument;

use super::Distributed;
use crate::admission::redis::{PendingWinner, Restore};
use crate::campaign::Campaign;
use crate::error::IssuerError;
use crate::kafka::lag::group_lag;

/// Pause between two attempts, and between two looks at the consumers' lag.
const RETRY: Duration = Duration::from_secs(1);
const LAG_POLL: Duration = Duration::from_millis(500);

/// Where provisioning left a campaign.
enum Provision {
    /// Redis holds its admission state.
    Ready,
    /// The operator deleted it.
    Deleted,
}

impl Distributed {
    /// Provisions `campaign` in the background, once at a time per campaign, retrying
    /// until Redis holds it or it turns out deleted.
    pub fn restore_in_background(self: &Arc<Self>, campaign: &Arc<Campaign>) {
        if !campaign.begin_restoring() {
            return;
        }
        let (distributed, campaign) = (Arc::clone(self), Arc::clone(campaign));
        let span = tracing::info_span!("provision", campaign = %campaign.name());
        let provision = async move {
            loop {
                match distributed.provision(&campaign).await {
                    Ok(Provision::Ready) => {
                        campaign.set_deleted(false);
                        break campaign.set_provisioned(true);
                    }
                    Ok(Provision::Deleted) => {
                        if campaign.set_deleted(true) {
                            tracing::info!("campaign deleted: its state is not restored");
                        }
                        break;
                    }
                    Err(error) => {
                        tracing::warn!(%error, "provisioning from PostgreSQL failed; retrying");
                        tokio::time::sleep(RETRY).await;
                    }
                }
            }
            campaign.finish_restoring();
        };
        tokio::spawn(provision.instrument(span));
    }

    /// Makes sure Redis holds the campaign's admission state, unless the campaign was
    /// deleted. When it does not, waits until no hand-off can still be in flight and the
    /// consumers have persisted everything on both lanes, then rebuilds the counter and
    /// the holders from PostgreSQL and the admissions still pending ([`with_pending`]).
    async fn provision(&self, campaign: &Campaign) -> Result<Provision, IssuerError> {
        if self.redis.is_provisioned(&campaign.keys).await?
            && !self.behind_postgres(campaign).await?
        {
            return Ok(Provision::Ready);
        }
        if self.redis.is_deleted(&campaign.keys).await? {
            return Ok(Provision::Deleted);
        }
        tracing::warn!("no admission state in Redis: restoring from PostgreSQL");
        tokio::time::sleep(self.publisher.ack_wait()).await;
        self.wait_for_consumers(campaign).await?;
        let persisted = self.coupons.holders_of(campaign.name()).await?;
        let pending = self.redis.pending(&campaign.keys).await?;
        let holders = with_pending(persisted, pending);
        let restore = self
            .redis
            .restore(&campaign.config, &campaign.keys, &holders);
        match restore.await? {
            Restore::Deleted => return Ok(Provision::Deleted),
            Restore::AlreadyProvisioned => {}
            Restore::Restored => {
                let admitted: usize = holders.iter().map(|(_, held)| held.len()).sum();
                tracing::info!(
                    admitted,
                    holders = holders.len(),
                    "campaign restored into Redis"
                );
            }
        }
        Ok(Provision::Ready)
    }

    /// Fences the campaign if Redis's counter is below the highest persisted sequence.
    async fn behind_postgres(&self, campaign: &Campaign) -> Result<bool, IssuerError> {
        let highest = self.coupons.highest_sequence(campaign.name()).await?;
        self.fence_if_behind(campaign, highest, None).await
    }

    /// Returns once both consumer lanes of the campaign have committed every message.
    async fn wait_for_consumers(&self, campaign: &Campaign) -> Result<(), IssuerError> {
        let lanes = [
            campaign.config.primary_lane(),
            campaign.config.dead_letter_lane(),
        ];
        loop {
            let mut lag = 0;
            for lane in &lanes {
                lag += group_lag(&self.kafka_brokers, &lane.group, &lane.topic).await?;
            }
            if lag == 0 {
                return Ok(());
            }
            tracing::info!(
                lag,
                "waiting for the consumers to persist the topic before restoring"
            );
            tokio::time::sleep(LAG_POLL).await;
        }
    }
}

/// The holders to restore: PostgreSQL's, plus the admissions whose events are still
/// pending in Redis (a campaign fenced keeps its pending marks, and the re-publisher
/// sends those events later), so that they count against their user's limit as they did
/// before and the user is not admitted again under the same ordinal (chaos seed 4103). A
/// pending sequence persisted for anyone is not added again.
fn with_pending(
    persisted: Vec<(String, Vec<u64>)>,
    mut pending: Vec<PendingWinner>,
) -> Vec<(String, Vec<u64>)> {
    let stored: HashSet<u64> = persisted
        .iter()
        .flat_map(|(_, held)| held)
        .copied()
        .collect();
    let mut holders: BTreeMap<String, Vec<u64>> = persisted.into_iter().collect();
    pending.sort_by_key(|winner| winner.admission.ordinal);
    for winner in pending {
        if !stored.contains(&winner.admission.sequence) {
            (holders.entry(winner.user_id).or_default()).push(winner.admission.sequence);
        }
    }
    holders.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;
    use crate::admission::Admission;

    fn pending(user: &str, ordinal: u32, sequence: u64) -> PendingWinner {
        PendingWinner {
            user_id: user.to_string(),
            admission: Admission {
                sequence,
                ordinal,
                admitted_at: Utc::now(),
            },
        }
    }

    #[test]
    fn pending_admissions_count_for_their_users_unless_persisted() {
        let persisted = vec![("u10".to_string(), vec![26]), ("u12".to_string(), vec![3])];
        let pending = vec![
            pending("u11", 1, 7),
            pending("u10", 2, 31),
            pending("u10", 1, 5),
            pending("u13", 1, 26), // given twice: u10's in PostgreSQL
        ];
        assert_eq!(
            with_pending(persisted, pending),
            vec![
                ("u10".to_string(), vec![26, 5, 31]),
                ("u11".to_string(), vec![7]),
                ("u12".to_string(), vec![3]),
            ]
        );
    }
}
