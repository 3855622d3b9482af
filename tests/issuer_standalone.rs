//! The standalone issuer (no Redis, Kafka or PostgreSQL): the same rules, durable across
//! restarts, driven through HTTP.

use std::collections::HashSet;

use firstcome_e2e::issuer::*;
use reqwest::StatusCode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_users_limit_hundred_and_nothing_lost_across_restarts() {
    let dir = temp_dir("firstcome-standalone");
    let campaign = "launch";
    let spec = format!("{campaign}:100");
    let mut issuer = start_standalone(&dir, &["--campaign", &spec]).await;

    let answers = spike(&[&issuer.base], campaign, users("u", 1000), 64).await;
    let reasons = count_reasons(&answers);
    assert_eq!(reasons.get("admitted"), Some(&100), "{reasons:?}");
    assert_eq!(reasons.get("sold_out"), Some(&900), "{reasons:?}");
    assert_eq!(
        admitted_sequences(&answers),
        (1..=100).collect::<Vec<u64>>()
    );
    let winners: Vec<String> = answers
        .iter()
        .filter(|a| a.status == StatusCode::CREATED)
        .map(|a| a.user.clone())
        .collect();

    // kill -9: whatever was answered "admitted" was already fsynced.
    issuer.kill();
    let mut issuer = start_standalone(&dir, &["--campaign", &spec]).await;
    let (_, summary) = issuer.get(&format!("/v1/campaigns/{campaign}")).await;
    assert_eq!(summary["admitted"], 100, "the counter did not reset");
    assert_eq!(summary["issued"], 100);
    assert_eq!(summary["state"], "sold_out");
    let again = spike(&[&issuer.base], campaign, winners.clone(), 16).await;
    assert_eq!(
        count_reasons(&again).get("already_applied"),
        Some(&100),
        "nobody wins twice"
    );
    let fresh = spike(&[&issuer.base], campaign, users("after-restart", 200), 16).await;
    assert_eq!(count_reasons(&fresh).get("sold_out"), Some(&200));

    // A raised limit (new configuration) admits more, continuing the sequence.
    issuer.stop().await;
    let issuer = start_standalone(&dir, &["--campaign", &format!("{campaign}:110")]).await;
    let more = spike(&[&issuer.base], campaign, users("second-wave", 50), 16).await;
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
    let issuer = start_standalone(&dir, &["--campaign", "solo:100"]).await;
    let answers = spike(
        &[&issuer.base],
        "solo",
        vec!["same-user".to_string(); 1000],
        64,
    )
    .await;
    let reasons = count_reasons(&answers);
    assert_eq!(reasons.get("admitted"), Some(&1), "{reasons:?}");
    assert_eq!(reasons.get("already_applied"), Some(&999), "{reasons:?}");
    let (_, summary) = issuer.get("/v1/campaigns/solo").await;
    assert_eq!(summary["admitted"], 1, "no stock burnt");
    assert_eq!(summary["remaining"], 99);
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
