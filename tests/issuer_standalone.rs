//! The standalone issuer (no Redis, Kafka or PostgreSQL): the same rules, durable across
//! restarts, driven through HTTP.

use std::collections::HashSet;

use firstcome_e2e::issuer::*;
use firstcome_e2e::process::sample;
use firstcome_e2e::spike::{
    Outcome, Spike, admitted_sequences, admitted_users, assert_every_coupon_given, tally, users,
};
use reqwest::StatusCode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_users_limit_hundred_and_nothing_lost_across_restarts() {
    let dir = temp_dir("firstcome-standalone");
    let campaign = "launch";
    let spec = format!("{campaign}:100");
    let mut issuer = start_standalone(&dir, &["--campaign", &spec]).await;

    let answers = Spike::new(&[&issuer.base], campaign)
        .in_flight(64)
        .run(users("u", 1000))
        .await;
    assert_every_coupon_given(&answers, 100, 900);
    let winners: Vec<String> = admitted_users(&answers).map(String::from).collect();

    // kill -9: whatever was answered "admitted" was already fsynced.
    issuer.kill();
    let mut issuer = start_standalone(&dir, &["--campaign", &spec]).await;
    let (_, summary) = issuer.get(&format!("/v1/campaigns/{campaign}")).await;
    assert_eq!(summary["admitted"], 100, "the counter did not reset");
    assert_eq!(summary["issued"], 100);
    assert_eq!(summary["state"], "sold_out");
    let again = Spike::new(&[&issuer.base], campaign)
        .in_flight(16)
        .run(winners.clone())
        .await;
    assert_eq!(
        tally(&again).get(&Outcome::AlreadyApplied),
        Some(&100),
        "nobody wins twice"
    );
    let fresh = Spike::new(&[&issuer.base], campaign)
        .in_flight(16)
        .run(users("after-restart", 200))
        .await;
    assert_eq!(tally(&fresh).get(&Outcome::SoldOut), Some(&200));

    // A raised limit (new configuration) admits more, continuing the sequence.
    issuer.stop().await;
    let issuer = start_standalone(&dir, &["--campaign", &format!("{campaign}:110")]).await;
    let more = Spike::new(&[&issuer.base], campaign)
        .in_flight(16)
        .run(users("second-wave", 50))
        .await;
    assert_eq!(admitted_sequences(&more), (101..=110).collect::<Vec<u64>>());
    for winner in &winners[..3] {
        let (_, lookup) = issuer
            .get(&format!("/v1/campaigns/{campaign}/applications/{winner}"))
            .await;
        assert_eq!(lookup["status"], "issued");
        assert!(lookup["coupons"][0]["couponId"].is_string());
    }
    let holders: HashSet<String> = winners.into_iter().collect();
    assert_eq!(holders.len(), 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_user_applying_thousand_times_gets_one_coupon() {
    let dir = temp_dir("firstcome-standalone");
    // The admission rule under concurrency is under test, not the per-user rate limit
    // (which would refuse most of these): it is set out of the way.
    let unlimited = ["--rate-limit-per-user", "1000000:1000000"];
    let issuer = start_standalone(
        &dir,
        &[&["--campaign", "solo:100"][..], &unlimited].concat(),
    )
    .await;
    let answers = Spike::new(&[&issuer.base], "solo")
        .in_flight(64)
        .run(vec!["same-user".to_string(); 1000])
        .await;
    let outcomes = tally(&answers);
    assert_eq!(outcomes.get(&Outcome::Admitted), Some(&1), "{outcomes:?}");
    assert_eq!(
        outcomes.get(&Outcome::AlreadyApplied),
        Some(&999),
        "{outcomes:?}"
    );
    let (_, summary) = issuer.get("/v1/campaigns/solo").await;
    assert_eq!(summary["admitted"], 1, "no stock burnt");
    assert_eq!(summary["remaining"], 99);
}

/// README command 1 as a new user tries it: no flag but where to listen and keep the
/// ledger. 1,000 users behind one address (a carrier NAT, a proxy) apply at once, 32 at
/// a time, and get exactly the demo's 100 coupons: no default limit is per address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_gives_every_coupon_to_a_crowd_behind_one_address() {
    let dir = temp_dir("firstcome-standalone");
    let issuer = start_standalone(&dir, &[]).await;
    let answers = Spike::new(&[&issuer.base], "demo")
        .from_one_address()
        .in_flight(32)
        .run(users("crowd", 1000))
        .await;
    assert_every_coupon_given(&answers, 100, 900);
    let metrics = issuer.metrics().await;
    for scope in ["client", "user"] {
        let refused = format!(r#"firstcome_rate_limited_total{{campaign="demo",scope="{scope}"}}"#);
        assert_eq!(sample(&metrics, &refused), 0, "{refused}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_a_demo_campaign_when_given_none() {
    let dir = temp_dir("firstcome-standalone");
    let issuer = start_standalone(&dir, &[]).await;
    let (status, summary) = issuer.get("/v1/campaigns/demo").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(summary["limit"], 100);
    assert_eq!(summary["state"], "open");
}
