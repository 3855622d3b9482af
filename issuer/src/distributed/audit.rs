//! The drift audit: compares the winners Redis recorded with the coupons PostgreSQL
//! holds, reports how many await their coupon (pending persistence) and the difference
//! that is not in flight (drift), and re-publishes winners still missing one
//! interval later although the consumers have since read everything the topics held
//! then — an event lost after its ack, or stuck in a failed state. Winners whose first
//! publish is unconfirmed are left to the re-publisher. Re-publishing is always safe
//! (persistence ignores duplicates) but not free: while the consumers lag (a rebalance
//! after a consumer died, PostgreSQL slow), a copy of each winner they have not reached
//! yet would only add to what they must read.

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
use crate::kafka::lag::positions;

/// (user, sequence) of a winner.
pub type Winner = (String, u64);

/// Per (topic, partition) of a campaign's two consumer lanes: the offset their group
/// committed and the high watermark.
pub type Marks = HashMap<(String, i32), (i64, i64)>;

/// What the previous pass over a campaign saw.
#[derive(Debug, Default)]
pub struct Seen {
    /// Winners missing their coupon.
    missing: HashSet<Winner>,
    /// Where the consumers stood, read after the missing winners: every event of those
    /// was acked (they were not pending) and lies below these high watermarks, as does
    /// every copy the pass re-published.
    marks: Marks,
}

/// Whether the consumers, standing at `now`, have read every message the topics held
/// at `before` (of a partition whose log has shrunk since, every message it holds now).
pub fn read_past(before: &Marks, now: &Marks) -> bool {
    before.iter().all(|(partition, (_, high_then))| {
        now.get(partition)
            .is_some_and(|(committed, high)| *committed >= (*high_then).min(*high))
    })
}

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
    /// One pass over `campaign`. `seen` is what the previous pass saw: only winners
    /// missing then and now are re-published, and only once the consumers have read
    /// everything the topics held then. Pass `None` to re-publish every missing winner at
    /// once.
    pub async fn audit(
        &self,
        campaign: &Campaign,
        seen: Option<&mut Seen>,
    ) -> Result<Drift, IssuerError> {
        let counts = self.redis.counts(&campaign.keys).await?;
        let issued = self.coupons.issued_count(campaign.name()).await?;
        self.metrics
            .pending_persistence(campaign.name(), counts.admitted.saturating_sub(issued));
        let (missing, mut marks) = if counts.admitted == issued {
            (HashMap::new(), Marks::new())
        } else {
            self.missing_with_marks(campaign).await?
        };
        campaign
            .drift
            .store(missing.len() as u64, Ordering::Relaxed);
        self.metrics.missing_coupons(campaign.name(), missing.len());
        let due: Vec<(&Winner, u32)> = match seen.as_deref() {
            None => missing.iter().map(|(w, o)| (w, *o)).collect(),
            Some(before) if read_past(&before.marks, &marks) => (missing.iter())
                .filter(|(winner, _)| before.missing.contains(*winner))
                .map(|(w, o)| (w, *o))
                .collect(),
            Some(_) => Vec::new(),
        };
        let republished = self.republish_missing(campaign, &due, &mut marks).await?;
        let drift = Drift {
            campaign: campaign.name().to_string(),
            missing: missing.len(),
            republished,
        };
        if let Some(before) = seen {
            *before = Seen {
                missing: missing.into_keys().collect(),
                marks,
            };
        }
        Ok(drift)
    }

    /// Publishes each of `due` again; each copy's place raises `marks`, so that the copy
    /// too is read before the winner is re-published again.
    async fn republish_missing(
        &self,
        campaign: &Campaign,
        due: &[(&Winner, u32)],
        marks: &mut Marks,
    ) -> Result<usize, IssuerError> {
        for ((user, sequence), ordinal) in due {
            // The admission time went with the pending entry; the re-publish time stands in.
            let admission = Admission {
                sequence: *sequence,
                ordinal: *ordinal,
                admitted_at: Utc::now(),
            };
            let event = winner_event(campaign.name(), user, &admission);
            let delivery = self.publisher.publish(&campaign.topic, &event).await?;
            self.metrics.republished(campaign.name());
            let (_, high) =
                (marks.entry((campaign.topic.to_string(), delivery.partition))).or_default();
            *high = (*high).max(delivery.offset + 1);
        }
        Ok(due.len())
    }

    /// Where the groups of the campaign's two consumer lanes (its topic, and the
    /// dead-letter topic events wait on while PostgreSQL is down) stand.
    async fn consumer_marks(&self, campaign: &Campaign) -> Result<Marks, IssuerError> {
        let mut marks = Marks::new();
        let lanes = [
            campaign.config.primary_lane(),
            campaign.config.dead_letter_lane(),
        ];
        for lane in lanes {
            for p in positions(&self.kafka_brokers, &lane.group, &lane.topic).await? {
                marks.insert((lane.topic.clone(), p.partition), (p.committed, p.high));
            }
        }
        Ok(marks)
    }

    /// The winners missing their coupon ([`Self::missing_winners`]) and where the
    /// consumers stood: their committed offsets as read before the coupons (so a copy the
    /// consumers had committed, and so persisted, is never among the missing: read after,
    /// a copy persisted in between looked both read and missing, and was re-published
    /// again), the high watermarks as read after them (every missing winner's event lies
    /// below them).
    async fn missing_with_marks(
        &self,
        campaign: &Campaign,
    ) -> Result<(HashMap<Winner, u32>, Marks), IssuerError> {
        let committed_before = self.consumer_marks(campaign).await?;
        let missing = self.missing_winners(campaign).await?;
        if missing.is_empty() {
            return Ok((missing, Marks::new()));
        }
        let mut marks = self.consumer_marks(campaign).await?;
        for (partition, (committed, _)) in marks.iter_mut() {
            if let Some((before, _)) = committed_before.get(partition) {
                *committed = (*committed).min(*before);
            }
        }
        Ok((missing, marks))
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
    let mut seen: HashMap<String, Seen> = HashMap::new();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while stop.run_until_cancelled(tick.tick()).await.is_some() {
        for campaign in &campaigns {
            let before = seen.entry(campaign.name().to_string()).or_default();
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

#[cfg(test)]
mod tests {
    use super::*;

    fn marks(entries: &[(&str, i32, i64, i64)]) -> Marks {
        (entries.iter())
            .map(|(topic, partition, committed, high)| {
                ((topic.to_string(), *partition), (*committed, *high))
            })
            .collect()
    }

    #[test]
    fn consumers_read_past_once_each_lane_committed_what_the_topics_held_before() {
        let before = marks(&[("t", 0, 3, 10), ("t", 1, 0, 4), ("t.dlq", 0, 0, 0)]);
        let caught_up = marks(&[("t", 0, 10, 25), ("t", 1, 4, 4), ("t.dlq", 0, 2, 2)]);
        assert!(read_past(&before, &caught_up));
        let lagging = marks(&[("t", 0, 9, 25), ("t", 1, 4, 4), ("t.dlq", 0, 2, 2)]);
        assert!(!read_past(&before, &lagging), "partition 0 still below 10");
        let unknown = marks(&[("t", 0, 10, 25), ("t.dlq", 0, 2, 2)]);
        assert!(!read_past(&before, &unknown), "partition 1 not reported");
        assert!(
            read_past(&Marks::new(), &lagging),
            "nothing was held before"
        );
    }

    #[test]
    fn a_log_that_shrank_is_read_past_once_its_end_is_committed() {
        // An unclean leader election dropped offsets 6..10: the consumers cannot reach 10.
        let before = marks(&[("t", 0, 3, 10)]);
        assert!(read_past(&before, &marks(&[("t", 0, 6, 6)])));
        assert!(!read_past(&before, &marks(&[("t", 0, 5, 6)])));
    }
}
