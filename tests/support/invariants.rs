//! The invariants of a campaign after any fault, checked in one place against the real
//! Redis and PostgreSQL:
//! - coupons in PostgreSQL == winners in Redis == min(limit, distinct applicants);
//! - no user holds more than one coupon (per ordinal), no sequence is used twice, every
//!   sequence is within 1..=limit;
//! - every user answered "admitted" or "already applied" holds a coupon;
//! - nobody answered "sold out" holds one.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Duration;

use firstcome_contract::{CampaignKeys, RedisConnection, RedisTarget};
use redis::AsyncCommands;

use crate::Services;
use crate::spike::{Answer, Outcome};

/// (user, sequence) pairs of the campaign's winners in Redis.
async fn winners(conn: &mut RedisConnection, campaign: &str) -> Vec<(String, i64)> {
    let holders: HashMap<String, String> = conn
        .hgetall(CampaignKeys::new(campaign).holders)
        .await
        .unwrap_or_default();
    holders
        .into_iter()
        .flat_map(|(user, held)| {
            held.split(',')
                .map(|s| (user.clone(), s.parse::<i64>().unwrap()))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Waits (bounded) for persistence to catch up, then asserts every invariant.
pub async fn assert_invariants(
    services: &Services,
    campaign: &str,
    limit: usize,
    answers: &[Answer],
) {
    let applicants: HashSet<&str> = answers.iter().map(|a| a.user.as_str()).collect();
    let expected = limit.min(applicants.len());
    let pool = crate::issuer::postgres(services).await;
    // Any deployment the issuers use: one primary, Sentinel or Cluster (maybe still
    // failing over: the connection is retried with the rest).
    let target: RedisTarget = services.redis_url.parse().unwrap();
    let persisted = crate::wait_until(
        &format!("coupons == winners == min(limit, applicants) = {expected}"),
        Duration::from_secs(90),
        || async {
            let coupons = crate::issuer::coupons(&pool, campaign).await;
            let mut conn = RedisConnection::connect(&target, Duration::from_secs(2))
                .await
                .map_err(|e| format!("Redis: {e}"))?;
            let winners = winners(&mut conn, campaign).await;
            if coupons.len() == expected && winners.len() == expected {
                Ok((coupons, winners))
            } else {
                Err(format!(
                    "{} coupons and {} winners",
                    coupons.len(),
                    winners.len()
                ))
            }
        },
    )
    .await;
    let (coupons, winners) = persisted;
    let as_set = |pairs: &[(String, i64)]| pairs.iter().cloned().collect::<BTreeSet<_>>();
    assert_eq!(
        as_set(&coupons),
        as_set(&winners),
        "PostgreSQL holds exactly Redis's winners"
    );

    let sequences: HashSet<i64> = coupons.iter().map(|(_, s)| *s).collect();
    assert_eq!(sequences.len(), coupons.len(), "no sequence used twice");
    assert!(
        sequences.iter().all(|s| (1..=limit as i64).contains(s)),
        "sequences within 1..=limit"
    );
    let holders: HashSet<&str> = coupons.iter().map(|(u, _)| u.as_str()).collect();
    assert_eq!(holders.len(), coupons.len(), "one coupon per user");

    for answer in answers {
        let holds = holders.contains(answer.user.as_str());
        match &answer.outcome {
            Outcome::Admitted | Outcome::AlreadyApplied => {
                assert!(
                    holds,
                    "{} was told {:?} but holds no coupon",
                    answer.user, answer.outcome
                )
            }
            Outcome::SoldOut => assert!(
                !holds,
                "{} was told sold out but holds a coupon",
                answer.user
            ),
            Outcome::Unknown(_) => {}
        }
    }
}
