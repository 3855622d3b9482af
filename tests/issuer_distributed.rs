//! The distributed issuer against the real Redis, Kafka and PostgreSQL of the test bed,
//! driven through HTTP.

use std::collections::HashSet;
use std::time::Duration;

use firstcome_contract::{CampaignConfig, ConsumerLane};
use firstcome_e2e::Services;
use firstcome_e2e::issuer::*;
use firstcome_e2e::process::sample;
use firstcome_e2e::spike::{
    Outcome, Spike, admitted_users, apply, assert_every_coupon_given, tally, users,
};
use firstcome_e2e::{unique_name, wait_for};
use firstcome_issuer::kafka::lag::{group_lag, positions};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use reqwest::StatusCode;

/// Applies of `campaign` the issuer has taken to its admission backend (Redis) so far:
/// its own per-campaign count, which the other tests running beside this one, on the
/// same Redis, do not move.
async fn admissions_in_redis(issuer: &firstcome_e2e::process::Process, campaign: &str) -> u64 {
    let metrics = issuer.metrics().await;
    let count = format!("firstcome_admission_duration_seconds_count{{campaign=\"{campaign}\"}}");
    firstcome_e2e::process::sample(&metrics, &count)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_users_limit_hundred_gives_exactly_hundred_coupons() {
    let services = Services::from_env();
    let campaign = unique_name("spike");
    let issuer = start_distributed(&services, &["--campaign", &format!("{campaign}:100")]).await;

    let answers = Spike::new(&[&issuer.base], &campaign)
        .in_flight(64)
        .run(users("u", 1000))
        .await;

    assert_every_coupon_given(&answers, 100, 900);

    let pool = postgres(&services).await;
    let coupons = wait_for_coupons(&pool, &campaign, 100).await;
    assert_eq!(coupons.len(), 100);
    let holders: HashSet<&str> = coupons.iter().map(|(u, _)| u.as_str()).collect();
    assert_eq!(holders.len(), 100, "100 distinct users");
    let sequences: Vec<i64> = coupons.iter().map(|(_, s)| *s).collect();
    assert_eq!(sequences, (1..=100).collect::<Vec<i64>>());
    let admitted: HashSet<&str> = admitted_users(&answers).collect();
    assert_eq!(
        holders, admitted,
        "the coupon holders are exactly the users told 'admitted'"
    );

    let (status, summary) = issuer.get(&format!("/v1/campaigns/{campaign}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(summary["admitted"], 100);
    assert_eq!(summary["issued"], 100);
    assert_eq!(summary["remaining"], 0);
    assert_eq!(summary["state"], "sold_out");

    // Sold out: the tail of the spike is answered from memory, without Redis.
    let before = admissions_in_redis(&issuer, &campaign).await;
    let tail = Spike::new(&[&issuer.base], &campaign)
        .in_flight(32)
        .run(users("late", 300))
        .await;
    assert_eq!(tally(&tail).get(&Outcome::SoldOut), Some(&300));
    let winner = admitted.iter().next().unwrap();
    let again = Spike::new(&[&issuer.base], &campaign)
        .in_flight(1)
        .run(vec![winner.to_string()])
        .await;
    assert_eq!(
        again[0].body["reason"], "already_applied",
        "a winner is told they hold a coupon"
    );
    assert_eq!(
        admissions_in_redis(&issuer, &campaign).await,
        before,
        "no admission script ran once sold out"
    );

    let (_, lookup) = issuer
        .get(&format!("/v1/campaigns/{campaign}/applications/{winner}"))
        .await;
    assert_eq!(lookup["status"], "issued");
    assert!(lookup["coupons"][0]["couponId"].is_string());
    let (_, loser) = issuer
        .get(&format!("/v1/campaigns/{campaign}/applications/late-1"))
        .await;
    assert_eq!(loser["status"], "not_applied");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_user_applying_thousand_times_gets_one_coupon_and_burns_no_stock() {
    let services = Services::from_env();
    let campaign = unique_name("one-user");
    // The admission rule under concurrency is under test, not the per-user rate limit
    // (which would refuse most of these before Redis): it is set out of the way.
    let issuer = start_distributed(
        &services,
        &[
            "--campaign",
            &format!("{campaign}:100"),
            "--rate-limit-per-user",
            "1000000:1000000",
        ],
    )
    .await;

    let answers = Spike::new(&[&issuer.base], &campaign)
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
    let (_, summary) = issuer.get(&format!("/v1/campaigns/{campaign}")).await;
    assert_eq!(
        summary["admitted"], 1,
        "the counter shows 1: no stock burnt"
    );
    let pool = postgres(&services).await;
    assert_eq!(wait_for_coupons(&pool, &campaign, 1).await.len(), 1);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(coupons(&pool, &campaign).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_issuer_processes_sharing_redis_still_admit_exactly_the_limit() {
    let services = Services::from_env();
    let campaign = unique_name("two-issuers");
    let spec = format!("{campaign}:150");
    let first = start_distributed(&services, &["--campaign", &spec]).await;
    let second = start_distributed(&services, &["--campaign", &spec, "--role", "api"]).await;

    let answers = Spike::new(&[&first.base, &second.base], &campaign)
        .in_flight(64)
        .run(users("u", 2000))
        .await;

    assert_every_coupon_given(&answers, 150, 1850);
    let pool = postgres(&services).await;
    let coupons = wait_for_coupons(&pool, &campaign, 150).await;
    assert_eq!(coupons.len(), 150);
    let holders: HashSet<&str> = coupons.iter().map(|(u, _)| u.as_str()).collect();
    assert_eq!(holders.len(), 150);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_user_limit_admits_up_to_that_many_per_user() {
    let services = Services::from_env();
    let campaign = unique_name("per-user");
    let dir = temp_dir("firstcome-test");
    let file = dir.join("campaigns.json");
    std::fs::write(
        &file,
        serde_json::json!({"campaigns": [{
            "name": campaign, "limit": 5, "perUserLimit": 3,
            "topic": CampaignConfig::default_topic(&campaign),
        }]})
        .to_string(),
    )
    .unwrap();
    let issuer = start_distributed(&services, &["--campaigns-file", file.to_str().unwrap()]).await;
    let client = reqwest::Client::new();

    let mut ordinals = Vec::new();
    for _ in 0..4 {
        let (_, body) = apply(&client, &issuer.base, &campaign, "greedy").await;
        ordinals.push(body["ordinal"].as_u64());
    }
    assert_eq!(ordinals, vec![Some(1), Some(2), Some(3), None]);
    let (status, body) = apply(&client, &issuer.base, &campaign, "greedy").await;
    assert_eq!(
        (status, body["reason"].as_str()),
        (StatusCode::CONFLICT, Some("already_applied"))
    );
    assert_eq!(body["sequences"], serde_json::json!([1, 2, 3]));
    assert_eq!(
        apply(&client, &issuer.base, &campaign, "b").await.0,
        StatusCode::CREATED
    );
    assert_eq!(
        apply(&client, &issuer.base, &campaign, "b").await.0,
        StatusCode::CREATED
    );
    let (status, body) = apply(&client, &issuer.base, &campaign, "b").await;
    assert_eq!(
        (status, body["reason"].as_str()),
        (StatusCode::GONE, Some("sold_out"))
    );
    // Answered from memory once sold out, by the same rule: below the per-user limit is
    // "sold out", at it is "already applied".
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, _) = apply(&client, &issuer.base, &campaign, "b").await;
    assert_eq!(status, StatusCode::GONE);
    let (status, body) = apply(&client, &issuer.base, &campaign, "greedy").await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["sequences"], serde_json::json!([1, 2, 3]));
    let pool = postgres(&services).await;
    assert_eq!(wait_for_coupons(&pool, &campaign, 5).await.len(), 5);
}

/// Rewinds a consumer group to the start of every partition of `topic`.
fn rewind_group(services: &Services, group: &str, topic: &str) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &services.kafka_brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let mut offsets = TopicPartitionList::new();
    for partition in metadata.topics()[0].partitions() {
        offsets
            .add_partition_offset(topic, partition.id(), Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&offsets).unwrap();
    let mut zero = TopicPartitionList::new();
    for partition in metadata.topics()[0].partitions() {
        zero.add_partition_offset(topic, partition.id(), Offset::Offset(0))
            .unwrap();
    }
    consumer.commit(&zero, CommitMode::Sync).unwrap();
}

/// Waits (bounded) until `group` has committed all of `topic`.
async fn wait_until_consumed(services: &Services, group: &str, topic: &str, what: &str) {
    wait_for(what, Duration::from_secs(60), || async {
        let lag = group_lag(&services.kafka_brokers, group, topic)
            .await
            .ok()?;
        (lag == 0).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaying_the_topic_from_the_start_creates_no_duplicate() {
    let services = Services::from_env();
    let campaign = unique_name("replay");
    let spec = format!("{campaign}:100");
    let ConsumerLane { group, topic } = CampaignConfig::new(campaign.as_str(), 100).primary_lane();
    let api = start_distributed(&services, &["--campaign", &spec, "--role", "api"]).await;
    let mut consumer =
        start_distributed(&services, &["--campaign", &spec, "--role", "consumer"]).await;
    let answers = Spike::new(&[&api.base], &campaign)
        .in_flight(32)
        .run(users("u", 300))
        .await;
    assert_eq!(tally(&answers).get(&Outcome::Admitted), Some(&100));
    let pool = postgres(&services).await;
    assert_eq!(wait_for_coupons(&pool, &campaign, 100).await.len(), 100);
    wait_until_consumed(&services, &group, &topic, "the consumer to commit").await;

    consumer.stop().await;
    rewind_group(&services, &group, &topic);
    assert_eq!(
        group_lag(&services.kafka_brokers, &group, &topic)
            .await
            .unwrap(),
        100,
        "the whole topic is to be consumed again"
    );
    let consumer = start_distributed(&services, &["--campaign", &spec, "--role", "consumer"]).await;
    wait_until_consumed(&services, &group, &topic, "the replay to complete").await;

    let coupons = coupons(&pool, &campaign).await;
    assert_eq!(coupons.len(), 100, "the replay added no coupon");
    let metrics = consumer.metrics().await;
    assert!(
        metrics.contains(&format!(
            "firstcome_coupons_persisted_total{{campaign=\"{campaign}\"}} 0"
        )),
        "the replaying consumer inserted nothing new:\n{metrics}"
    );
}

/// Messages on `topic` so far (none is ever deleted here): its high watermarks summed.
async fn events_on(services: &Services, lane: &ConsumerLane) -> i64 {
    let positions = positions(&services.kafka_brokers, &lane.group, &lane.topic)
        .await
        .unwrap();
    positions.iter().map(|p| p.high).sum()
}

/// The drift audit leaves winners the consumers have not reached yet to them (a copy
/// would only add to what they must read: chaos seed 4014 put 11 copies of each winner
/// on the topic while a consumer group rebalanced), and re-publishes, once, a coupon that
/// vanished after the consumers read its event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_republishes_only_what_the_consumers_have_read_past() {
    let services = Services::from_env();
    let campaign = unique_name("audit");
    let spec = format!("{campaign}:20");
    let lane = CampaignConfig::new(campaign.as_str(), 20).primary_lane();
    let every_half_second = ["--audit-interval-ms", "500"];
    let api_role = ["--campaign", &spec, "--role", "api"];
    let api = start_distributed(&services, &[&api_role[..], &every_half_second].concat()).await;
    let answers = Spike::new(&[&api.base], &campaign)
        .run(users("u", 20))
        .await;
    assert_eq!(tally(&answers).get(&Outcome::Admitted), Some(&20));
    let sampled = |name: &str| format!("firstcome_{name}{{campaign=\"{campaign}\"}}");
    let (missing, republished) = (
        sampled("reconcile_missing_coupons"),
        sampled("winners_republished_total"),
    );

    // No consumer runs: pass after pass the audit sees twenty winners without a coupon
    // and re-publishes none of them.
    wait_for(
        "the audit to miss 20 coupons",
        Duration::from_secs(30),
        || async { (sample(&api.metrics().await, &missing) == 20).then_some(()) },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(sample(&api.metrics().await, &republished), 0);
    assert_eq!(events_on(&services, &lane).await, 20);

    let consumer_role = ["--campaign", &spec, "--role", "consumer"];
    let _consumer = start_distributed(&services, &consumer_role).await;
    let pool = postgres(&services).await;
    assert_eq!(wait_for_coupons(&pool, &campaign, 20).await.len(), 20);
    wait_until_consumed(
        &services,
        &lane.group,
        &lane.topic,
        "the consumer to commit",
    )
    .await;

    // Two coupons vanish after the consumers read their events: each is re-published
    // once, and comes back.
    let deleted = sqlx::query("DELETE FROM coupons WHERE campaign = $1 AND sequence > 18")
        .bind(&campaign)
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(deleted.rows_affected(), 2);
    wait_for("the two coupons back", Duration::from_secs(60), || async {
        (coupons(&pool, &campaign).await.len() == 20).then_some(())
    })
    .await;
    wait_for(
        "the audit to miss none",
        Duration::from_secs(30),
        || async { (sample(&api.metrics().await, &missing) == 0).then_some(()) },
    )
    .await;
    assert_eq!(sample(&api.metrics().await, &republished), 2);
    assert_eq!(events_on(&services, &lane).await, 22);
}
