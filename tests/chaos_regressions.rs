//! Regression tests of the defects seeded chaos (tests/chaos.rs) found, each named after
//! the seed that found it and replaying its fault deterministically on the shared test
//! bed, with real processes and services.

use std::time::Duration;

use firstcome_contract::{CampaignKeys, RedisConnection, RedisTarget};
use firstcome_e2e::invariants::assert_invariants;
use firstcome_e2e::issuer::start_distributed;
use firstcome_e2e::spike::{Answer, apply};
use firstcome_e2e::toxiproxy::{Stream, Toxic, Toxiproxy};
use firstcome_e2e::{Services, unique_name};
use redis::AsyncCommands;
use reqwest::StatusCode;

const LIMIT: usize = 10;

/// Seed 1005: an issuer paused right after sending the admission script got no answer
/// within its Redis timeout and told the user 503 `backend_unavailable` ("nothing
/// admitted") while Redis had admitted them: a coupon after a no. A reply held past the
/// timeout by a slow link is the same fault, without timing luck. The answer must say
/// the outcome is unknown, and applying again must tell the real one.
#[tokio::test]
async fn seed_1005_an_admission_whose_answer_is_lost_is_answered_outcome_unknown() {
    let services = Services::from_env();
    let toxiproxy = tokio::task::spawn_blocking(Toxiproxy::up).await.unwrap();
    let redis = services.redis_url.trim_start_matches("redis://");
    let proxy = (toxiproxy.proxy(&unique_name("seed1005"), "127.0.0.1:0", redis)).await;
    let through_proxy = Services {
        redis_url: format!("redis://{}", proxy.listen()),
        database_url: services.database_url.clone(),
        kafka_brokers: services.kafka_brokers.clone(),
    };
    let campaign = unique_name("seed1005");
    let spec = format!("{campaign}:{LIMIT}");
    let issuer = start_distributed(
        &through_proxy,
        &["--campaign", &spec, "--redis-timeout-ms", "1000"],
    )
    .await;
    let client = reqwest::Client::new();

    // The script is loaded in Redis and the link is sound: an apply is answered.
    let (status, body) = apply(&client, &issuer.base, &campaign, "first").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let first = Answer::new("first".into(), status, body);

    let slow = Toxic::latency(Stream::Downstream, Duration::from_secs(3));
    proxy.add(&slow).await;
    let (status, body) = apply(&client, &issuer.base, &campaign, "lost").await;
    proxy.remove(&slow).await; // the held reply passes on at once
    assert_eq!(
        (status, body["reason"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("outcome_unknown")),
        "{body}"
    );

    // The script did run: Redis admitted the user whose answer was lost.
    let target: RedisTarget = services.redis_url.parse().unwrap();
    let mut redis = RedisConnection::connect(&target, Duration::from_secs(2))
        .await
        .unwrap();
    let held: Option<String> = redis
        .hget(CampaignKeys::new(&campaign).holders, "lost")
        .await
        .unwrap();
    let sequence: u64 = held
        .expect("Redis admitted the user whose answer was lost")
        .parse()
        .unwrap();

    // Applying again, as the answer says, tells the real outcome: admitted, with that
    // sequence (perUserLimit 1).
    let (status, body) = apply(&client, &issuer.base, &campaign, "lost").await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["reason"], "already_applied");
    assert_eq!(body["sequences"], serde_json::json!([sequence]));
    let again = Answer::new("lost".into(), status, body);

    // The admission is handed off by the re-publisher and issued like any other.
    assert_invariants(&services, &campaign, LIMIT, &[first, again]).await;
    let (status, held) = issuer
        .get(&format!("/v1/campaigns/{campaign}/applications/lost"))
        .await;
    assert_eq!(status, StatusCode::OK, "{held}");
    assert_eq!(held["status"], "issued", "{held}");
    assert_eq!(held["coupons"][0]["sequence"], sequence, "{held}");
    proxy.delete().await;
}
