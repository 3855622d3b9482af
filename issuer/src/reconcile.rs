//! Reconciliation: compares the winners Redis recorded with the coupons PostgreSQL holds,
//! reports the difference (drift), and re-publishes winners still missing one interval
//! later — an event lost after its ack, or stuck in a failed state. Winners whose first
//! publish is unconfirmed are left to the re-publisher. Re-publishing is always safe:
//! persistence ignores duplicates.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;

use chrono::Utc;

use crate::admission::Admission;
use crate::issuer::{Campaign, Distributed, IssuerError, winner_event};
use crate::metrics::Metrics;

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

fn unavailable(error: impl std::fmt::Display) -> IssuerError {
    IssuerError::Unavailable(error.to_string())
}

/// One pass over `campaign`. `seen_missing` carries the winners missing at the previous
/// pass: only those still missing now are re-published (they had a whole interval to
/// arrive). Pass `None` to re-publish every missing winner at once.
pub async fn reconcile(
    distributed: &Distributed,
    metrics: &Metrics,
    campaign: &Campaign,
    seen_missing: Option<&mut HashSet<Winner>>,
) -> Result<Drift, IssuerError> {
    let name = &campaign.config.name;
    let counts = distributed
        .redis
        .counts(&campaign.keys)
        .await
        .map_err(unavailable)?;
    let issued = distributed
        .coupons
        .issued_count(name)
        .await
        .map_err(unavailable)?;
    let mut drift = Drift {
        campaign: name.clone(),
        ..Drift::default()
    };
    // Missing winner -> its ordinal (its position among the user's sequences).
    let missing: HashMap<Winner, u32> = if counts.admitted == issued {
        HashMap::new()
    } else {
        let holders = distributed
            .redis
            .holders(&campaign.keys)
            .await
            .map_err(unavailable)?;
        let pending: HashSet<u64> = distributed
            .redis
            .pending(&campaign.keys)
            .await
            .map_err(unavailable)?
            .into_iter()
            .map(|p| p.admission.sequence)
            .collect();
        let persisted: HashSet<Winner> = distributed
            .coupons
            .holders_of(name)
            .await
            .map_err(unavailable)?
            .into_iter()
            .flat_map(|(user, held)| held.into_iter().map(move |s| (user.clone(), s)))
            .collect();
        holders
            .into_iter()
            .flat_map(|(user, held)| {
                held.into_iter()
                    .enumerate()
                    .map(move |(i, s)| ((user.clone(), s), i as u32 + 1))
            })
            .filter(|(winner, _)| !pending.contains(&winner.1) && !persisted.contains(winner))
            .collect()
    };
    drift.missing = missing.len();
    campaign
        .drift
        .store(missing.len() as u64, Ordering::Relaxed);
    metrics.missing_coupons(name, missing.len());

    let due: Vec<(&Winner, u32)> = missing
        .iter()
        .filter(|(winner, _)| {
            seen_missing
                .as_deref()
                .is_none_or(|before| before.contains(*winner))
        })
        .map(|(winner, ordinal)| (winner, *ordinal))
        .collect();
    for ((user, sequence), ordinal) in due {
        // The admission time went with the pending entry; the re-publish time stands in.
        let admission = Admission {
            sequence: *sequence,
            ordinal,
            admitted_at: Utc::now(),
        };
        let event = winner_event(name, user, &admission);
        distributed
            .publisher
            .publish(&campaign.config.topic, &event)
            .await
            .map_err(unavailable)?;
        metrics.republished(name);
        drift.republished += 1;
    }
    if let Some(before) = seen_missing {
        *before = missing.into_keys().collect();
    }
    Ok(drift)
}
