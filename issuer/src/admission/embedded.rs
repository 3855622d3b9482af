//! Admission inside one process, for the standalone issuer.
//!
//! Each campaign has an in-memory ledger behind a mutex; the decision is taken under the
//! lock ([`rule::decide`]) and the winner is written to SQLite before the apply is
//! answered. A failed write gives the slot back, so stock is never burnt. On start-up the
//! ledger is rebuilt from SQLite: nobody wins twice and the counter does not reset.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use chrono::Utc;
use firstcome_contract::CampaignConfig;
use uuid::Uuid;

use super::rule::{self, Decision};
use super::sold_out::SoldOutSnapshot;
use super::{Admission, Counts, Outcome};
use crate::store::sqlite::{NewCoupon, SqliteStore, SqliteStoreError};

#[derive(Debug, Default)]
struct Ledger {
    /// The next never-used sequence number.
    next_sequence: u64,
    /// Sequences given back by failed writes, handed out again first.
    released: BTreeSet<u64>,
    holders: HashMap<String, Vec<u64>>,
}

impl Ledger {
    fn rebuilt(held: impl IntoIterator<Item = (String, u64)>) -> Self {
        let mut holders: HashMap<String, Vec<u64>> = HashMap::new();
        let mut used = BTreeSet::new();
        for (user, sequence) in held {
            holders.entry(user).or_default().push(sequence);
            used.insert(sequence);
        }
        holders.values_mut().for_each(|held| held.sort_unstable());
        let highest = used.last().copied().unwrap_or(0);
        Self {
            next_sequence: highest + 1,
            released: (1..=highest).filter(|s| !used.contains(s)).collect(),
            holders,
        }
    }

    fn admitted(&self) -> u64 {
        self.next_sequence - 1 - self.released.len() as u64
    }

    /// Applies the rule and, when it admits, takes a sequence for the user.
    fn reserve(&mut self, user: &str, campaign: &CampaignConfig) -> Result<(u64, u32), Outcome> {
        let held = self.holders.get(user).map_or(0, Vec::len);
        match rule::decide(
            held,
            campaign.per_user_limit,
            self.admitted(),
            campaign.limit,
        ) {
            Decision::AlreadyApplied => Err(Outcome::AlreadyApplied(
                self.holders.get(user).cloned().unwrap_or_default(),
            )),
            Decision::SoldOut => Err(Outcome::SoldOut),
            Decision::Admit { ordinal } => {
                let sequence = self.released.pop_first().unwrap_or_else(|| {
                    self.next_sequence += 1;
                    self.next_sequence - 1
                });
                self.holders
                    .entry(user.to_string())
                    .or_default()
                    .push(sequence);
                Ok((sequence, ordinal))
            }
        }
    }

    fn release(&mut self, user: &str, sequence: u64) {
        if let Some(held) = self.holders.get_mut(user) {
            held.retain(|s| *s != sequence);
            if held.is_empty() {
                self.holders.remove(user);
            }
        }
        self.released.insert(sequence);
    }
}

pub struct EmbeddedAdmission {
    ledgers: HashMap<String, Mutex<Ledger>>,
    store: SqliteStore,
}

impl EmbeddedAdmission {
    /// Rebuilds the ledgers of `campaigns` from what `store` holds.
    pub async fn open(
        store: SqliteStore,
        campaigns: &[CampaignConfig],
    ) -> Result<Self, SqliteStoreError> {
        let mut held: HashMap<String, Vec<(String, u64)>> = HashMap::new();
        for coupon in store.all_held().await? {
            held.entry(coupon.campaign)
                .or_default()
                .push((coupon.user_id, coupon.sequence));
        }
        let ledgers = campaigns
            .iter()
            .map(|c| {
                let ledger = Ledger::rebuilt(held.remove(&c.name).unwrap_or_default());
                (c.name.clone(), Mutex::new(ledger))
            })
            .collect();
        Ok(Self { ledgers, store })
    }

    pub fn store(&self) -> &SqliteStore {
        &self.store
    }

    fn ledger(&self, campaign: &str) -> std::sync::MutexGuard<'_, Ledger> {
        self.ledgers
            .get(campaign)
            .expect("every served campaign has a ledger")
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    pub async fn admit(
        &self,
        campaign: &CampaignConfig,
        user: &str,
    ) -> Result<Outcome, SqliteStoreError> {
        let (sequence, ordinal) = match self.ledger(&campaign.name).reserve(user, campaign) {
            Ok(reserved) => reserved,
            Err(verdict) => return Ok(verdict),
        };
        let admission = Admission {
            sequence,
            ordinal,
            admitted_at: Utc::now(),
        };
        let written = self
            .store
            .record(NewCoupon {
                campaign: campaign.name.clone(),
                user_id: user.to_string(),
                ordinal,
                sequence,
                coupon_id: Uuid::new_v4(),
                admitted_at: admission.admitted_at,
            })
            .await;
        match written {
            Ok(()) => Ok(Outcome::Admitted(admission)),
            Err(error) => {
                self.ledger(&campaign.name).release(user, sequence);
                Err(error)
            }
        }
    }

    pub fn counts(&self, campaign: &CampaignConfig) -> Counts {
        Counts {
            limit: campaign.limit,
            admitted: self.ledger(&campaign.name).admitted(),
        }
    }

    pub fn held_by(&self, campaign: &str, user: &str) -> Vec<u64> {
        self.ledger(campaign)
            .holders
            .get(user)
            .cloned()
            .unwrap_or_default()
    }

    pub fn sold_out_snapshot(&self, campaign: &CampaignConfig) -> SoldOutSnapshot {
        SoldOutSnapshot {
            limit: campaign.limit,
            holders: self.ledger(&campaign.name).holders.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn campaign(limit: u64, per_user_limit: u32) -> CampaignConfig {
        CampaignConfig {
            per_user_limit,
            ..CampaignConfig::new("c", limit)
        }
    }

    #[test]
    fn reserves_until_sold_out_and_never_twice_per_user() {
        let c = campaign(2, 1);
        let mut ledger = Ledger::rebuilt([]);
        assert_eq!(ledger.reserve("a", &c), Ok((1, 1)));
        assert_eq!(
            ledger.reserve("a", &c),
            Err(Outcome::AlreadyApplied(vec![1]))
        );
        assert_eq!(ledger.reserve("b", &c), Ok((2, 1)));
        assert_eq!(ledger.reserve("c", &c), Err(Outcome::SoldOut));
        assert_eq!(ledger.admitted(), 2);
    }

    #[test]
    fn a_released_slot_is_handed_out_again() {
        let c = campaign(2, 1);
        let mut ledger = Ledger::rebuilt([]);
        ledger.reserve("a", &c).unwrap();
        ledger.reserve("b", &c).unwrap();
        ledger.release("a", 1);
        assert_eq!(ledger.admitted(), 1);
        assert_eq!(ledger.reserve("c", &c), Ok((1, 1)));
        assert_eq!(ledger.reserve("a", &c), Err(Outcome::SoldOut));
    }

    #[test]
    fn per_user_limit_counts_ordinals() {
        let c = campaign(10, 2);
        let mut ledger = Ledger::rebuilt([]);
        assert_eq!(ledger.reserve("a", &c), Ok((1, 1)));
        assert_eq!(ledger.reserve("a", &c), Ok((2, 2)));
        assert_eq!(
            ledger.reserve("a", &c),
            Err(Outcome::AlreadyApplied(vec![1, 2]))
        );
    }

    #[test]
    fn rebuilt_ledger_keeps_counter_holders_and_holes() {
        let c = campaign(4, 1);
        let mut ledger = Ledger::rebuilt([("a".into(), 1), ("c".into(), 3)]);
        assert_eq!(ledger.admitted(), 2);
        assert_eq!(
            ledger.reserve("a", &c),
            Err(Outcome::AlreadyApplied(vec![1]))
        );
        assert_eq!(ledger.reserve("b", &c), Ok((2, 1)), "the hole is reused");
        assert_eq!(ledger.reserve("d", &c), Ok((4, 1)));
        assert_eq!(ledger.reserve("e", &c), Err(Outcome::SoldOut));
    }
}
