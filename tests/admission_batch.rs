//! The batched admission script against the test bed's real Redis: a batch answers each
//! apply exactly as the pure rule (`admission::rule::decide`) does one apply after the
//! other, over many generated batches (repeated users, per-user limits, sell-outs,
//! replayed attempts).

use std::collections::HashMap;
use std::time::Duration;

use firstcome_contract::{CampaignConfig, CampaignKeys, RedisConnection, RedisTarget};
use firstcome_e2e::{Services, unique_name};
use firstcome_issuer::admission::Outcome;
use firstcome_issuer::admission::redis::{Apply, RedisAdmission};
use firstcome_issuer::admission::rule::{Decision, decide};

const TIMEOUT: Duration = Duration::from_secs(5);

/// What the rule says, applied one apply after the other: the batch's expected answers.
/// Attempts already answered answer as their first run did.
struct Model {
    limit: u64,
    admitted: u64,
    held: HashMap<String, Vec<u64>>,
    answered: HashMap<String, Outcome>,
}

impl Model {
    fn answer(&mut self, apply: &Apply) -> Outcome {
        if let Some(first) = self.answered.get(&apply.attempt) {
            return first.clone();
        }
        let held = self.held.entry(apply.user.clone()).or_default();
        match decide(held.len(), apply.per_user_limit, self.admitted, self.limit) {
            Decision::AlreadyApplied => Outcome::AlreadyApplied(held.clone()),
            Decision::SoldOut => Outcome::SoldOut,
            Decision::Admit { ordinal } => {
                self.admitted += 1;
                held.push(self.admitted);
                // The admitted-at time is Redis's: only sequence and ordinal are modelled.
                let outcome = Outcome::Admitted(firstcome_issuer::admission::Admission {
                    sequence: self.admitted,
                    ordinal,
                    admitted_at: chrono::DateTime::UNIX_EPOCH,
                });
                self.answered.insert(apply.attempt.clone(), outcome.clone());
                outcome
            }
        }
    }
}

/// Admitted-at times come from Redis's clock: compared apart from the rest.
fn without_time(outcome: Outcome) -> Outcome {
    match outcome {
        Outcome::Admitted(mut admission) => {
            admission.admitted_at = chrono::DateTime::UNIX_EPOCH;
            Outcome::Admitted(admission)
        }
        other => other,
    }
}

/// A small deterministic generator (xorshift), so a failing case is reproducible.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[tokio::test]
async fn a_batch_answers_each_apply_as_the_rule_does_one_after_the_other() {
    let services = Services::from_env();
    let target = RedisTarget::Single {
        url: services.redis_url.clone(),
    };
    let admission = RedisAdmission::connect(&target, TIMEOUT).await.unwrap();
    let mut conn = RedisConnection::connect(&target, TIMEOUT).await.unwrap();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for case in 0..40 {
        let limit = rng.below(30);
        let campaign = CampaignConfig::new(unique_name("batch"), limit);
        let keys = CampaignKeys::new(&campaign.name);
        let _: () = redis::pipe()
            .set(&keys.limit, limit)
            .set(&keys.admitted, 0)
            .query_async(&mut conn)
            .await
            .unwrap();
        let mut model = Model {
            limit,
            admitted: 0,
            held: HashMap::new(),
            answered: HashMap::new(),
        };
        let mut attempts = 0;
        for _ in 0..4 {
            let size = 1 + rng.below(40) as usize;
            let batch: Vec<Apply> = (0..size)
                .map(|_| {
                    // One in eight re-sends an earlier attempt (a replayed script).
                    let attempt = if attempts > 0 && rng.below(8) == 0 {
                        rng.below(attempts)
                    } else {
                        attempts += 1;
                        attempts - 1
                    };
                    Apply {
                        user: format!("u{}", rng.below(12)),
                        per_user_limit: 1 + rng.below(3) as u32,
                        attempt: format!("a{attempt}"),
                    }
                })
                .collect();
            let answers = admission
                .run_admission_batch(&campaign.name, &keys, &batch)
                .await;
            let expected: Vec<Outcome> = batch.iter().map(|apply| model.answer(apply)).collect();
            let answers: Vec<Outcome> = answers
                .into_iter()
                .map(|answer| without_time(answer.unwrap()))
                .collect();
            assert_eq!(answers, expected, "case {case}, limit {limit}: {batch:?}");
        }
        let admitted: u64 = redis::cmd("GET")
            .arg(&keys.admitted)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(admitted, model.admitted, "case {case}: the counter");
        assert!(admitted <= limit, "case {case}: never past the limit");
    }
}

#[tokio::test]
async fn a_campaign_redis_does_not_hold_answers_unprovisioned_to_every_apply() {
    let services = Services::from_env();
    let target = RedisTarget::Single {
        url: services.redis_url.clone(),
    };
    let admission = RedisAdmission::connect(&target, TIMEOUT).await.unwrap();
    let campaign = CampaignConfig::new(unique_name("unprovisioned"), 10);
    let keys = CampaignKeys::new(&campaign.name);
    let batch: Vec<Apply> = (0..3)
        .map(|i| Apply {
            user: format!("u{i}"),
            per_user_limit: 1,
            attempt: format!("a{i}"),
        })
        .collect();
    let answers = admission
        .run_admission_batch(&campaign.name, &keys, &batch)
        .await;
    assert_eq!(answers.len(), 3);
    for answer in answers {
        assert!(
            matches!(
                answer,
                Err(firstcome_issuer::admission::redis::RedisAdmissionError::Unprovisioned(_))
            ),
            "{answer:?}"
        );
    }
}

#[tokio::test]
async fn concurrent_confirmations_clear_exactly_their_pending_marks() {
    let services = Services::from_env();
    let target = RedisTarget::Single {
        url: services.redis_url.clone(),
    };
    let admission = RedisAdmission::connect(&target, TIMEOUT).await.unwrap();
    let mut conn = RedisConnection::connect(&target, TIMEOUT).await.unwrap();
    let campaign = CampaignConfig::new(unique_name("confirm"), 1000);
    let keys = CampaignKeys::new(&campaign.name);
    let _: () = redis::pipe()
        .set(&keys.limit, 1000)
        .set(&keys.admitted, 0)
        .query_async(&mut conn)
        .await
        .unwrap();
    let batch: Vec<Apply> = (0..320)
        .map(|i| Apply {
            user: format!("u{i}"),
            per_user_limit: 1,
            attempt: format!("a{i}"),
        })
        .collect();
    for answer in admission
        .run_admission_batch(&campaign.name, &keys, &batch)
        .await
    {
        assert!(matches!(answer, Ok(Outcome::Admitted(_))), "{answer:?}");
    }
    // Sequences 1..=320 are pending; 280 of them (more than one batch of HDEL) are
    // confirmed at once, and exactly the other 40 stay pending.
    let confirmed = (1..=280).map(|sequence| admission.confirm_published(&keys, sequence));
    for result in futures::future::join_all(confirmed).await {
        result.unwrap();
    }
    let mut pending: Vec<u64> = admission
        .pending(&keys)
        .await
        .unwrap()
        .into_iter()
        .map(|winner| winner.admission.sequence)
        .collect();
    pending.sort_unstable();
    assert_eq!(pending, (281..=320).collect::<Vec<u64>>());
}
