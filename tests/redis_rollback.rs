//! Redis that lost admissions (a promoted replica that lagged, a restart that lost the
//! last second of writes, a counter rolled back by hand, a campaign forgotten whole): the
//! durable record — the Kafka topic and PostgreSQL — decides, and nobody told `admitted`
//! is left without a coupon. A campaign the operator deleted is the one loss that is not
//! restored.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use firstcome_contract::{CampaignConfig, CampaignKeys, WinnerEvent, decode_held};
use firstcome_e2e::invariants::assert_invariants;
use firstcome_e2e::issuer::{coupons, postgres, start_distributed, wait_for_coupons};
use firstcome_e2e::process::{Process, sample};
use firstcome_e2e::spike::{Answer, Outcome, Retry, Spike, tally, users};
use firstcome_e2e::{Services, unique_name, wait_for};
use firstcome_issuer::store::failed_event::{ConsumedWinner, EventSource};
use firstcome_issuer::store::postgres::{CouponStore, PersistReport};
use firstcome_operator::backends::Connections;
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use redis::AsyncCommands;

fn winner(campaign: &str, user: &str, sequence: u64) -> WinnerEvent {
    nth_winner(campaign, user, 1, sequence)
}

/// The winner event of `user`'s `ordinal`-th coupon.
fn nth_winner(campaign: &str, user: &str, ordinal: u32, sequence: u64) -> WinnerEvent {
    WinnerEvent {
        campaign: campaign.to_string(),
        user_id: user.to_string(),
        ordinal,
        sequence,
        admitted_at: chrono::Utc::now(),
    }
}

/// A connection to the test bed's Redis.
async fn redis(services: &Services) -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(services.redis_url.as_str()).unwrap();
    client.get_multiplexed_async_connection().await.unwrap()
}

/// Puts `events` on the campaign's topic, in order, as the issuer's producer would.
async fn produce(services: &Services, campaign: &str, events: &[WinnerEvent]) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &services.kafka_brokers)
        .create()
        .unwrap();
    let topic = CampaignConfig::default_topic(campaign);
    for event in events {
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
    let topic = CampaignConfig::default_topic(&campaign);
    let mut events: Vec<WinnerEvent> = (1..=5)
        .map(|s| winner(&campaign, &format!("u{s}"), s))
        .collect();
    events.push(winner(&campaign, "ghost", 3));
    events.extend((6..=8).map(|s| winner(&campaign, &format!("u{s}"), s)));
    produce(&services, &campaign, &events).await;

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

/// Chaos seed 4103: Redis lost a user's first admission, which never reached PostgreSQL,
/// and numbered their next one 2 again after a restore. The consumer dropped that winner
/// without a word (the key (campaign, user, ordinal) held another sequence), though its
/// user had been told `admitted`. The sequence decides: it is stored once, under the
/// user's lowest free ordinal, however often it is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_4103_a_winner_whose_ordinal_holds_another_sequence_gets_a_free_ordinal() {
    let services = Services::from_env();
    let campaign = unique_name("renumbered");
    let spec = format!("{campaign}:100");
    let _consumer =
        start_distributed(&services, &["--campaign", &spec, "--role", "consumer"]).await;
    let events = [
        nth_winner(&campaign, "u10", 2, 26),
        nth_winner(&campaign, "u10", 2, 27),
        nth_winner(&campaign, "u10", 2, 27),
        winner(&campaign, "u11", 28),
    ];
    produce(&services, &campaign, &events).await;

    let pool = postgres(&services).await;
    wait_for("the 3 coupons", Duration::from_secs(15), || async {
        (coupons(&pool, &campaign).await.len() == 3).then_some(())
    })
    .await;
    // Keyed by sequence, 26 and 27 may sit on two partitions: whichever the consumer
    // stores first keeps ordinal 2, the other gets ordinal 1.
    let stored: Vec<(String, Vec<i64>, Vec<i32>)> = sqlx::query_as(
        "SELECT user_id, array_agg(sequence ORDER BY sequence), array_agg(ordinal ORDER BY ordinal) \
         FROM coupons WHERE campaign = $1 GROUP BY user_id ORDER BY user_id",
    )
    .bind(&campaign)
    .fetch_all(&pool)
    .await
    .unwrap();
    let expected = [
        ("u10", vec![26, 27], vec![1, 2]),
        ("u11", vec![28], vec![1]),
    ]
    .map(|(user, sequences, ordinals)| (user.to_string(), sequences, ordinals));
    assert_eq!(stored, expected);
    let failed: i64 = sqlx::query_scalar("SELECT count(*) FROM failed_events WHERE campaign = $1")
        .bind(&campaign)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(failed, 0, "nothing is a conflict");
}

/// Seed 4103's free ordinal, raced: another transaction (the other lane, a failed event's
/// retry) takes the ordinal the consumer picked and commits while the consumer's insert
/// waits on it. The winner is stored under the next free ordinal, not dropped.
#[tokio::test]
async fn a_free_ordinal_a_concurrent_transaction_takes_first_is_not_the_winners_end() {
    let services = Services::from_env();
    let campaign = unique_name("raced");
    let store = CouponStore::connect(&services.database_url, 2)
        .await
        .unwrap();
    let consumed = |event: WinnerEvent| ConsumedWinner {
        source: EventSource {
            topic: campaign.clone(),
            partition: 0,
            offset: event.sequence as i64,
            payload: None,
        },
        event,
    };
    let first = consumed(nth_winner(&campaign, "u1", 1, 1));
    store.persist(&[first], &[]).await.unwrap();
    let pool = postgres(&services).await;
    let mut other = pool.begin().await.unwrap();
    sqlx::query(
        "INSERT INTO coupons (campaign, user_id, ordinal, sequence, admitted_at) \
         VALUES ($1, 'u1', 2, 2, now())",
    )
    .bind(&campaign)
    .execute(&mut *other)
    .await
    .unwrap();

    let renumbered = consumed(nth_winner(&campaign, "u1", 1, 3));
    let persist = tokio::spawn({
        let store = store.clone();
        async move { store.persist(&[renumbered], &[]).await }
    });
    wait_for(
        "the renumbering to wait on the other transaction",
        Duration::from_secs(10),
        || {
            let pool = pool.clone();
            async move {
                let waiting: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM pg_stat_activity \
                 WHERE wait_event_type = 'Lock' AND query LIKE '%generate_series%'",
                )
                .fetch_one(&pool)
                .await
                .unwrap();
                (waiting > 0).then_some(())
            }
        },
    )
    .await;
    other.commit().await.unwrap();

    let report = persist.await.unwrap().unwrap();
    assert_eq!(
        report,
        PersistReport {
            inserted: 1,
            conflicts: 0
        }
    );
    let stored: Vec<(i32, i64)> = sqlx::query_as(
        "SELECT ordinal, sequence FROM coupons WHERE campaign = $1 ORDER BY ordinal",
    )
    .bind(&campaign)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(stored, [(1, 1), (2, 2), (3, 3)]);
}

/// Chaos seed 4103, the other half: a fenced campaign keeps its pending marks, and the
/// re-publisher may send their events only after the restore (here another issuer holds
/// its lease). The restore counts them for their users, so a user whose admission is
/// pending is answered `already_applied` with it (and their event handed off then), not
/// admitted a second time past their limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_counts_the_admissions_still_pending_for_their_users() {
    let services = Services::from_env();
    let campaign = unique_name("pending");
    let spec = format!("{campaign}:100");
    let issuer = start_distributed(&services, &["--campaign", &spec]).await;
    let keys = CampaignKeys::new(&campaign);
    let mut conn = redis(&services).await;
    let long_ago = chrono::Utc::now().timestamp_millis() - 60_000;
    let _: () = conn
        .hset(&keys.pending, 5, format!("{long_ago} 1 u1"))
        .await
        .unwrap();
    let _: () = conn
        .set_ex(&keys.republisher, "elsewhere", 120)
        .await
        .unwrap();
    let _: () = conn.del(&keys.admitted).await.unwrap();

    let answers = until_answered(&issuer.base, &campaign, 1)
        .run(vec!["u1".to_string()])
        .await;
    assert_eq!(answers[0].outcome, Outcome::AlreadyApplied, "{answers:?}");
    let pool = postgres(&services).await;
    wait_for("u1's coupon 5", Duration::from_secs(30), || async {
        (coupons(&pool, &campaign).await == [("u1".to_string(), 5)]).then_some(())
    })
    .await;
    assert_eq!(admission_state(&services, &campaign).await, (Some(5), 1));
}

/// Rolls Redis back the way a promoted lagging replica would: the counter to `to`, and
/// the holders of every later sequence gone.
async fn roll_back(services: &Services, campaign: &str, to: u64) -> usize {
    let keys = CampaignKeys::new(campaign);
    let mut conn = redis(services).await;
    let holders: HashMap<String, String> = conn.hgetall(&keys.holders).await.unwrap();
    let lost: Vec<&String> = holders
        .iter()
        .filter(|(_, held)| decode_held(held).iter().any(|s| *s > to))
        .map(|(user, _)| user)
        .collect();
    let mut rollback = redis::pipe();
    rollback.atomic().set(&keys.admitted, to);
    for user in &lost {
        rollback.hdel(&keys.holders, user.as_str());
    }
    let _: () = rollback.query_async(&mut conn).await.unwrap();
    lost.len()
}

/// Applies the way a client does through a failover: 503 `backend_unavailable` is retried.
fn until_answered(base: &str, campaign: &str, in_flight: usize) -> Spike {
    Spike::new(&[base], campaign)
        .in_flight(in_flight)
        .retry(Retry::UNTIL_ANSWERED)
}

fn admitted(answers: &[Answer]) -> usize {
    answers
        .iter()
        .filter(|a| a.outcome == Outcome::Admitted)
        .count()
}

/// `applicants` users apply through `issuer`; returns once `coupons` coupons are
/// persisted.
async fn admit(
    services: &Services,
    issuer: &Process,
    campaign: &str,
    applicants: usize,
    coupons: usize,
) -> Vec<Answer> {
    let answers = until_answered(&issuer.base, campaign, 16)
        .run(users("early", applicants))
        .await;
    wait_for_coupons(&postgres(services).await, campaign, coupons).await;
    answers
}

/// The scenario of issue 9: a campaign of 100, 95 winners persisted, then Redis forgets
/// the admissions after sequence 85 while two API issuers keep running; 30 new users
/// apply through the issuer that admitted none of the lost ones. Nobody is told
/// `admitted` for a sequence someone holds; exactly 100 coupons, one per user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_counter_rolled_back_under_running_issuers_never_gives_a_sequence_twice() {
    let services = Services::from_env();
    let campaign = unique_name("rollback");
    let spec = format!("{campaign}:100");
    let first = start_distributed(&services, &["--campaign", &spec]).await;
    let second = start_distributed(&services, &["--campaign", &spec, "--role", "api"]).await;
    let mut answers = admit(&services, &first, &campaign, 95, 95).await;
    assert_eq!(admitted(&answers), 95, "{:?}", tally(&answers));

    assert_eq!(roll_back(&services, &campaign, 85).await, 10);
    let late = until_answered(&second.base, &campaign, 8)
        .run(users("late", 30))
        .await;
    assert_eq!(admitted(&late), 5, "{:?}", tally(&late));
    answers.extend(late);
    assert_invariants(&services, &campaign, 100, &answers).await;
    let fenced = format!("firstcome_fenced_total{{campaign=\"{campaign}\"}}");
    let metrics = [first.metrics().await, second.metrics().await].concat();
    assert!(metrics.contains(&fenced), "a fence was raised:\n{metrics}");
    println!(
        "refused twice-given admissions: {}",
        sample(
            &metrics,
            &format!("firstcome_refused_twice_given_total{{campaign=\"{campaign}\"}}")
        )
    );
}

/// The same loss found by an issuer that starts after it: provisioning compares Redis with
/// PostgreSQL before the first admission.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_issuer_started_on_a_rolled_back_redis_restores_before_admitting() {
    let services = Services::from_env();
    let campaign = unique_name("restart");
    let spec = format!("{campaign}:100");
    let mut issuer = start_distributed(&services, &["--campaign", &spec]).await;
    let mut answers = admit(&services, &issuer, &campaign, 95, 95).await;
    issuer.stop().await;

    roll_back(&services, &campaign, 85).await;
    let restarted = start_distributed(&services, &["--campaign", &spec]).await;
    let late = until_answered(&restarted.base, &campaign, 8)
        .run(users("late", 30))
        .await;
    assert_eq!(admitted(&late), 5, "{:?}", tally(&late));
    answers.extend(late);
    assert_invariants(&services, &campaign, 100, &answers).await;
    let metrics = restarted.metrics().await;
    assert!(
        metrics.contains(&format!(
            "firstcome_fenced_total{{campaign=\"{campaign}\"}} 1"
        )),
        "{metrics}"
    );
}

/// Reads the campaign's counter and how many holders Redis records.
async fn admission_state(services: &Services, campaign: &str) -> (Option<u64>, usize) {
    let keys = CampaignKeys::new(campaign);
    let mut conn = redis(services).await;
    let admitted: Option<u64> = conn.get(&keys.admitted).await.unwrap();
    let holders: usize = conn.hlen(&keys.holders).await.unwrap();
    (admitted, holders)
}

/// Chaos seed 4019 (docs/soak.md): Redis forgot a sold-out campaign whole (a Cluster
/// slot's primary killed twice, nothing on disk) while the issuers answered 410 from
/// memory, so no apply reached Redis to notice, and the summary said 0 admitted. The
/// fence watch restores a campaign whose counter is gone while its topic names winners.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_4019_a_sold_out_campaign_redis_forgot_is_restored_without_an_apply() {
    let services = Services::from_env();
    let campaign = unique_name("forgot");
    let spec = format!("{campaign}:20");
    let issuer = start_distributed(&services, &["--campaign", &spec]).await;
    let mut answers = admit(&services, &issuer, &campaign, 30, 20).await;
    assert_eq!(admitted(&answers), 20, "{:?}", tally(&answers));

    let keys = CampaignKeys::new(&campaign);
    let mut conn = redis(&services).await;
    let _: () = conn.del(&keys.all()[..]).await.unwrap();
    wait_for("the campaign restored", Duration::from_secs(30), || async {
        let state = admission_state(&services, &campaign).await;
        (state == (Some(20), 20)).then_some(())
    })
    .await;
    assert_eq!(issuer.summary(&campaign).await["admitted"], 20);
    let late = until_answered(&issuer.base, &campaign, 4)
        .run(users("late", 5))
        .await;
    assert!(
        late.iter().all(|a| a.outcome == Outcome::SoldOut),
        "{late:?}"
    );
    answers.extend(late);
    assert_invariants(&services, &campaign, 20, &answers).await;
}

/// Chaos seed 4115 (docs/soak.md): a Cluster slot lost twice took three admissions with
/// it before their events reached the topic (nobody was told `admitted` for them), then
/// the campaign whole. The restore sets the counter to the highest sequence persisted,
/// so the three slots below it were lost for good: the campaign sold out 3 short. They
/// are free now: given again, lowest first, and the sold-out board reopens for them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_4115_slots_redis_lost_below_the_highest_persisted_are_given_again() {
    let services = Services::from_env();
    let campaign = unique_name("holes");
    let spec = format!("{campaign}:20");
    let issuer = start_distributed(&services, &["--campaign", &spec]).await;
    let mut answers = admit(&services, &issuer, &campaign, 10, 10).await;
    let keys = CampaignKeys::new(&campaign);
    let mut conn = redis(&services).await;
    let lost: u64 = conn.incr(&keys.admitted, 3).await.unwrap(); // 11, 12 and 13, lost
    assert_eq!(lost, 13);
    let middle = until_answered(&issuer.base, &campaign, 8)
        .run(users("middle", 12))
        .await;
    assert_eq!(admitted(&middle), 7, "{:?}", tally(&middle));
    answers.extend(middle);
    wait_for_coupons(&postgres(&services).await, &campaign, 17).await;

    let _: () = conn.del(&keys.all()[..]).await.unwrap();
    wait_for("the campaign restored", Duration::from_secs(30), || async {
        let state = admission_state(&services, &campaign).await;
        (state == (Some(20), 17)).then_some(())
    })
    .await;
    assert_eq!(issuer.summary(&campaign).await["admitted"], 17);
    let config = CampaignConfig::new(campaign.as_str(), 20);
    let operator = Connections::default();
    let status = operator.provision_redis(&services.redis_url, &config, false);
    assert_eq!(
        status.await.unwrap().admitted,
        17,
        "the status counts the free too"
    );
    // The sold-out board re-reads the counts every second.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let late = until_answered(&issuer.base, &campaign, 4)
        .run(users("late", 5))
        .await;
    assert_eq!(admitted(&late), 3, "{:?}", tally(&late));
    let given: BTreeSet<u64> = (late.iter())
        .filter_map(|a| a.body["sequence"].as_u64())
        .collect();
    assert_eq!(given, BTreeSet::from([11, 12, 13]));
    answers.extend(late);
    assert_invariants(&services, &campaign, 20, &answers).await;
    assert_eq!(issuer.summary(&campaign).await["admitted"], 20);
}

/// The operator deletes an open campaign while its issuers still run (until their
/// Deployment is gone): its tombstone keeps them from restoring the keys it removed, from
/// the watch or from an apply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_campaigns_keys_stay_deleted_under_its_running_issuers() {
    let services = Services::from_env();
    let campaign = unique_name("deleted");
    let spec = format!("{campaign}:20");
    let issuer = start_distributed(&services, &["--campaign", &spec]).await;
    let answers = until_answered(&issuer.base, &campaign, 8)
        .run(users("early", 10))
        .await;
    assert_eq!(admitted(&answers), 10, "{:?}", tally(&answers));

    let operator = Connections::default();
    operator
        .delete_redis_keys(&services.redis_url, &campaign)
        .await
        .unwrap();
    let unprovisioned = format!("firstcome_campaign_provisioned{{campaign=\"{campaign}\"}} 0");
    wait_for("the watch to notice", Duration::from_secs(10), || async {
        issuer
            .metrics()
            .await
            .contains(&unprovisioned)
            .then_some(())
    })
    .await;
    let late = Spike::new(&[&issuer.base], &campaign)
        .run(users("late", 3))
        .await;
    let refused = Outcome::Unknown("503 Service Unavailable backend_unavailable".into());
    assert!(late.iter().all(|a| a.outcome == refused), "{late:?}");
    // Longer than a restore takes (tests above: within seconds of the ack wait).
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(admission_state(&services, &campaign).await, (None, 0));

    // A campaign of that name created again: its first provisioning lifts the tombstone.
    let config = CampaignConfig::new(campaign.as_str(), 20);
    operator
        .provision_redis(&services.redis_url, &config, true)
        .await
        .unwrap();
    let mut conn = redis(&services).await;
    let tombstone: bool = conn
        .exists(CampaignKeys::new(&campaign).deleted)
        .await
        .unwrap();
    assert!(!tombstone, "the tombstone is lifted");
}
