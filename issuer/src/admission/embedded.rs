//! Admission inside one process, for the standalone issuer.
//!
//! Each campaign has an in-memory ledger behind a mutex; concurrent applies are decided in
//! batches ([`super::batch`]), each batch under one lock, one apply after the other
//! ([`rule::decide`]), and the winners are written to SQLite before they are answered. A
//! failed write gives the slot back, so stock is never burnt. On start-up the ledger is
//! rebuilt from SQLite: nobody wins twice and the counter does not reset.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use chrono::Utc;
use firstcome_contract::CampaignConfig;
use uuid::Uuid;

use super::batch::BatchQueue;
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

    /// Reserves for each of `users`, in order, exactly as one call each would.
    fn reserve_batch(
        &mut self,
        users: &[String],
        campaign: &CampaignConfig,
    ) -> Vec<Result<(u64, u32), Outcome>> {
        users
            .iter()
            .map(|user| self.reserve(user, campaign))
            .collect()
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

/// Per apply, its reservation (sequence, ordinal) or the verdict that it gets none.
type LedgerQueue = BatchQueue<String, Result<(u64, u32), Outcome>>;

pub struct EmbeddedAdmission {
    ledgers: Arc<Ledgers>,
    /// One batching worker per campaign.
    queues: HashMap<String, LedgerQueue>,
}

/// The ledgers of every campaign, and where their winners are written.
struct Ledgers {
    ledgers: HashMap<String, Mutex<Ledger>>,
    store: SqliteStore,
}

impl Ledgers {
    fn ledger(&self, campaign: &str) -> std::sync::MutexGuard<'_, Ledger> {
        self.ledgers
            .get(campaign)
            .expect("every served campaign has a ledger")
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Writes a reserved winner; a failed write gives the slot back.
    async fn write(
        &self,
        campaign: &CampaignConfig,
        user: &str,
        (sequence, ordinal): (u64, u32),
    ) -> Result<Outcome, SqliteStoreError> {
        let admitted_at = Utc::now();
        let written = self
            .store
            .record(NewCoupon {
                campaign: campaign.name.clone(),
                user_id: user.to_string(),
                ordinal,
                sequence,
                coupon_id: Uuid::new_v4(),
                admitted_at,
            })
            .await;
        match written {
            Ok(()) => Ok(Outcome::Admitted(Admission {
                sequence,
                ordinal,
                admitted_at,
            })),
            Err(error) => {
                self.ledger(&campaign.name).release(user, sequence);
                Err(error)
            }
        }
    }
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
        let ledgers = Arc::new(Ledgers { ledgers, store });
        let queues = campaigns
            .iter()
            .map(|c| (c.name.clone(), Self::spawn_queue(&ledgers, c)))
            .collect();
        Ok(Self { ledgers, queues })
    }

    fn spawn_queue(ledgers: &Arc<Ledgers>, campaign: &CampaignConfig) -> LedgerQueue {
        let (ledgers, campaign) = (Arc::clone(ledgers), campaign.clone());
        BatchQueue::spawn(move |users: Vec<String>| {
            let reserved = ledgers
                .ledger(&campaign.name)
                .reserve_batch(&users, &campaign);
            std::future::ready(reserved)
        })
    }

    pub fn store(&self) -> &SqliteStore {
        &self.ledgers.store
    }

    fn ledger(&self, campaign: &str) -> std::sync::MutexGuard<'_, Ledger> {
        self.ledgers.ledger(campaign)
    }

    /// Decides one apply, together with the applies of the campaign waiting beside it (one
    /// lock for the batch); a winner is answered once written.
    pub async fn admit(
        &self,
        campaign: &CampaignConfig,
        user: &str,
    ) -> Result<Outcome, SqliteStoreError> {
        let queue = (self.queues.get(&campaign.name)).expect("every served campaign has a queue");
        let reserved =
            (queue.submit(user.to_string()).await).map_err(|_| SqliteStoreError::WriterGone)?;
        match reserved {
            Ok(reservation) => self.ledgers.write(campaign, user, reservation).await,
            Err(verdict) => Ok(verdict),
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

    /// The pure rule applied one apply after the other: what a batch must answer.
    fn rule_in_order(users: &[String], c: &CampaignConfig, held: &[(&str, u64)]) -> Vec<Decision> {
        let mut holders: HashMap<&str, usize> = HashMap::new();
        held.iter()
            .for_each(|(user, _)| *holders.entry(user).or_default() += 1);
        let mut admitted = held.len() as u64;
        users
            .iter()
            .map(|user| {
                let count = holders.entry(user).or_default();
                let decision = rule::decide(*count, c.per_user_limit, admitted, c.limit);
                if let Decision::Admit { .. } = decision {
                    *count += 1;
                    admitted += 1;
                }
                decision
            })
            .collect()
    }

    #[test]
    fn a_batch_decides_as_the_rule_does_one_apply_after_the_other() {
        let held = [("u1", 1), ("u4", 2)];
        for (limit, per_user) in [(0, 1), (2, 1), (3, 1), (6, 2), (40, 3)] {
            let c = campaign(limit, per_user);
            // Users from a small pool: repeats meet the per-user limit inside one batch.
            let users: Vec<String> = (0..60u32)
                .map(|i| format!("u{}", (i * 7 + i / 3) % 9))
                .collect();
            let mut ledger = Ledger::rebuilt(held.map(|(u, s)| (u.to_string(), s)));
            let got: Vec<Decision> = ledger
                .reserve_batch(&users, &c)
                .into_iter()
                .map(|reserved| match reserved {
                    Ok((_, ordinal)) => Decision::Admit { ordinal },
                    Err(Outcome::AlreadyApplied(_)) => Decision::AlreadyApplied,
                    Err(Outcome::SoldOut) => Decision::SoldOut,
                    Err(other) => panic!("not a verdict of the rule: {other:?}"),
                })
                .collect();
            assert_eq!(got, rule_in_order(&users, &c, &held), "limit {limit}");
        }
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
