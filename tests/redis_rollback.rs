//! Redis that lost admissions (a promoted replica that lagged, a restart that lost the
//! last second of writes, a counter rolled back by hand): the durable record — the Kafka
//! topic and PostgreSQL — decides, and nobody told `admitted` is left without a coupon.

use std::time::Duration;

use firstcome_contract::{CampaignConfig, WinnerEvent};
use firstcome_e2e::issuer::{coupons, postgres, start_distributed};
use firstcome_e2e::{Services, unique_name, wait_for};
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};

fn winner(campaign: &str, user: &str, sequence: u64) -> WinnerEvent {
    WinnerEvent {
        campaign: campaign.to_string(),
        user_id: user.to_string(),
        ordinal: 1,
        sequence,
        admitted_at: chrono::Utc::now(),
    }
}

/// A winner event whose sequence another user holds is a conflict, not an outage: it is
/// stored as a failed event with its own reason and counted, and the rest of its batch is
/// persisted at once (well inside the 60 s retry budget an outage would get).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sequence_conflict_is_a_failed_event_and_the_batch_goes_on() {
    let services = Services::from_env();
    let campaign = unique_name("conflict");
    let spec = format!("{campaign}:100");
    let consumer = start_distributed(&services, &["--campaign", &spec, "--role", "consumer"]).await;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &services.kafka_brokers)
        .create()
        .unwrap();
    let topic = CampaignConfig::default_topic(&campaign);
    let mut events: Vec<WinnerEvent> = (1..=5)
        .map(|s| winner(&campaign, &format!("u{s}"), s))
        .collect();
    events.push(winner(&campaign, "ghost", 3));
    events.extend((6..=8).map(|s| winner(&campaign, &format!("u{s}"), s)));
    for event in &events {
        let payload = event.to_payload();
        let key = event.key();
        let record = FutureRecord::to(&topic)
            .key(key.as_bytes())
            .payload(&payload);
        producer
            .send(record, Duration::from_secs(10))
            .await
            .expect("producing a winner event");
    }

    let pool = postgres(&services).await;
    let persisted = wait_for("the 8 coupons", Duration::from_secs(15), || async {
        let found = coupons(&pool, &campaign).await;
        (found.len() == 8).then_some(found)
    })
    .await;
    let expected: Vec<(String, i64)> = (1..=8).map(|s| (format!("u{s}"), s)).collect();
    assert_eq!(
        persisted, expected,
        "sequence 3 stays with its first holder"
    );
    let failed: Vec<(String, String)> = sqlx::query_as(
        "SELECT reason, error FROM failed_events WHERE topic = $1 AND resolved_at IS NULL",
    )
    .bind(&topic)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0].0, "sequence_conflict");
    assert!(failed[0].1.contains("ghost"), "{}", failed[0].1);
    let metrics = consumer.metrics().await;
    let counted = format!("firstcome_sequence_conflicts_total{{campaign=\"{campaign}\"}} 1");
    assert!(metrics.contains(&counted), "{metrics}");
}
