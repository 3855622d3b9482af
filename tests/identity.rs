//! Only the real user applies, end to end: a distributed issuer (real Redis, Kafka and
//! PostgreSQL) serving a campaign with identity jwt, its keys directory holding the
//! test-only RSA key of issuer/tests/fixtures/identity.

use std::collections::{HashMap, HashSet};

use firstcome_e2e::Services;
use firstcome_e2e::issuer::{postgres, start_distributed, wait_for_coupons};
use firstcome_e2e::spike::{Outcome, Spike, admitted_users, tally, try_apply_as};
use firstcome_e2e::tokens::{AUDIENCE, FORGER, ISSUER, SIGNER, in_five_minutes, keys_dir, token};
use firstcome_e2e::unique_name;
use reqwest::StatusCode;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_signed_applies_of_300_users_give_exactly_100_coupons_one_each() {
    let services = Services::from_env();
    let campaign = unique_name("identity");
    let keys = keys_dir();
    let limit = format!("{campaign}:100");
    let keys_dir = keys.display().to_string();
    let flags = [
        "--campaign",
        &limit,
        "--identity",
        "jwt",
        "--jwt-keys-dir",
        &keys_dir,
    ];
    // Every apply comes from 127.0.0.1, and the client's bucket is taken before the
    // token is checked: out of the way here (tests/rate_limits.rs covers it).
    let unlimited = ["--rate-limit-per-client", "1000000:1000000"];
    let flags = [
        &flags[..],
        &["--jwt-issuer", ISSUER, "--jwt-audience", AUDIENCE],
        &unlimited,
    ]
    .concat();
    let issuer = start_distributed(&services, &flags).await;

    refused_tokens_admit_nobody(&issuer.base, &campaign).await;

    let users: Vec<String> = (0..300).map(|i| format!("user-{i}")).collect();
    let tokens: HashMap<String, String> = (users.iter())
        .map(|u| (u.clone(), token(SIGNER, u, in_five_minutes())))
        .collect();
    let applies: Vec<String> = (0..1000).map(|i| users[i % 300].clone()).collect();
    let answers = Spike::new(&[&issuer.base], &campaign)
        .in_flight(64)
        .tokens(tokens)
        .run(applies)
        .await;

    let outcomes = tally(&answers);
    assert_eq!(outcomes.get(&Outcome::Admitted), Some(&100), "{outcomes:?}");
    let decided = outcomes[&Outcome::Admitted]
        + outcomes.get(&Outcome::AlreadyApplied).unwrap_or(&0)
        + outcomes.get(&Outcome::SoldOut).unwrap_or(&0);
    assert_eq!(decided, 1000, "every apply answered: {outcomes:?}");
    let admitted: HashSet<&str> = admitted_users(&answers).collect();
    assert_eq!(admitted.len(), 100, "one coupon per user");

    let pool = postgres(&services).await;
    let coupons = wait_for_coupons(&pool, &campaign, 100).await;
    assert_eq!(coupons.len(), 100);
    let holders: HashSet<&str> = coupons.iter().map(|(u, _)| u.as_str()).collect();
    assert_eq!(
        holders, admitted,
        "the holders are the users told 'admitted'"
    );
    assert!(
        holders.iter().all(|u| u.starts_with("user-")),
        "no forged user holds one"
    );
}

/// Forged (another key, same kid) and expired tokens of 50 users each: every one 401
/// invalid_token, and nothing admitted.
async fn refused_tokens_admit_nobody(base: &str, campaign: &str) {
    let client = reqwest::Client::new();
    let expired_at = chrono::Utc::now().timestamp() - 120;
    for i in 0..50 {
        let forger = format!("forger-{i}");
        let forged = token(FORGER, &forger, in_five_minutes());
        let late = format!("late-{i}");
        let expired = token(SIGNER, &late, expired_at);
        for (user, token) in [(forger, forged), (late, expired)] {
            let (status, body) = try_apply_as(&client, base, campaign, &user, Some(&token))
                .await
                .expect("apply request");
            assert_eq!(
                (status, reason(&body)),
                (StatusCode::UNAUTHORIZED, "invalid_token")
            );
        }
    }
    let summary: Value = (client
        .get(format!("{base}/v1/campaigns/{campaign}"))
        .send()
        .await)
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (summary["admitted"].as_u64(), summary["identity"].as_str()),
        (Some(0), Some("jwt"))
    );
}

fn reason(body: &Value) -> &str {
    body["reason"].as_str().unwrap_or_default()
}
