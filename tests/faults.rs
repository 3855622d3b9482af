//! Fault tests: a spike of 2000 users on a campaign of limit 500, with the apply API and
//! the consumer as separate processes, and one fault injected mid-way into a real
//! process or service. After a bounded recovery every invariant must hold
//! (`support/invariants.rs`). The tests stop shared services, so they run one at a time.

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use firstcome_contract::CampaignConfig;
use firstcome_e2e::invariants::assert_invariants;
use firstcome_e2e::issuer::{coupons, listen_args, postgres};
use firstcome_e2e::process::{Ports, Process};
use firstcome_e2e::spike::{
    Answer, Outcome, Retry, Spike, admitted_users, tally, users, wait_progress,
};
use firstcome_e2e::{Services, unique_name, wait_for};
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio::sync::Mutex;

const USERS: usize = 2000;
const LIMIT: usize = 500;
const IN_FLIGHT: usize = 48;

/// One fault at a time: they stop services every test shares.
static ONE_AT_A_TIME: Mutex<()> = Mutex::const_new(());

/// A campaign with its API issuer and its consumer, each restartable on its port.
struct Bed {
    services: Services,
    campaign: String,
    api_ports: Ports,
    consumer_ports: Ports,
}

impl Bed {
    fn new(prefix: &str) -> Self {
        Self {
            services: Services::from_env(),
            campaign: unique_name(prefix),
            api_ports: Ports::free(),
            consumer_ports: Ports::free(),
        }
    }

    fn topic(&self) -> String {
        CampaignConfig::default_topic(&self.campaign)
    }

    fn args(&self, role: &str, ports: Ports) -> Vec<String> {
        let mut args = listen_args(ports).to_vec();
        let rest = [
            "--role",
            role,
            "--redis-url",
            &self.services.redis_url,
            "--kafka-brokers",
            &self.services.kafka_brokers,
            "--database-url",
            &self.services.database_url,
            "--campaign",
            &format!("{}:{LIMIT}", self.campaign),
            "--delivery-timeout-ms",
            "2000",
        ];
        args.extend(rest.iter().map(|s| s.to_string()));
        args
    }

    async fn start(&self, role: &str, ports: Ports, extra: &[&str]) -> Process {
        let mut args = self.args(role, ports);
        args.extend(extra.iter().map(|s| s.to_string()));
        Process::start("firstcome-issuer", &args, &[], ports, "/healthz").await
    }

    async fn api(&self) -> Process {
        self.start("api", self.api_ports, &[]).await
    }

    async fn consumer(&self) -> Process {
        self.start("consumer", self.consumer_ports, &[]).await
    }

    /// Applies as real clients send them, to the API issuer: retried while it is down.
    fn clients(&self) -> Spike {
        let base = format!("http://127.0.0.1:{}", self.api_ports.api);
        Spike::new(&[&base], &self.campaign)
            .in_flight(IN_FLIGHT)
            .retry(Retry::UNTIL_ANSWERED)
    }

    /// The spike of `USERS` users, running in the background.
    fn spike(&self, progress: Arc<AtomicUsize>) -> tokio::task::JoinHandle<Vec<Answer>> {
        tokio::spawn(self.clients().progress(progress).run(users("user", USERS)))
    }
}

impl Bed {
    /// Waits for the spike, then checks every invariant; returns the answers.
    async fn finish(&self, spike: tokio::task::JoinHandle<Vec<Answer>>) -> Vec<Answer> {
        let answers = spike.await.unwrap();
        println!("{:?}", tally(&answers));
        assert_invariants(&self.services, &self.campaign, LIMIT, &answers).await;
        answers
    }
}

fn testbed(action: &str, service: &str) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/testbed");
    let status = std::process::Command::new(script)
        .args([action, service])
        .stdout(std::process::Stdio::null())
        .status()
        .expect("running scripts/testbed");
    assert!(status.success(), "scripts/testbed {action} {service}");
}

/// A service taken down by a test, started again when dropped: a test that fails while
/// the service is down must not leave it down for the tests after it.
struct Down(&'static str);

fn take_down(action: &str, service: &'static str) -> Down {
    testbed(action, service);
    Down(service)
}

impl Down {
    /// Starts the service again now (what dropping the guard does).
    fn restart(self) {
        drop(self);
    }
}

impl Drop for Down {
    fn drop(&mut self) {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/testbed");
        let started = std::process::Command::new(script)
            .args(["start", self.0])
            .stdout(std::process::Stdio::null())
            .status();
        if !started.as_ref().is_ok_and(|s| s.success()) {
            eprintln!("scripts/testbed start {} failed: {started:?}", self.0);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_api_issuer_mid_spike_loses_no_winner() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let bed = Bed::new("kill-api");
    let mut api = bed.api().await;
    let _consumer = bed.consumer().await;
    let progress = Arc::new(AtomicUsize::new(0));
    let spike = bed.spike(progress.clone());

    wait_progress(&progress, 250).await;
    api.kill();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _api = bed.api().await;

    bed.finish(spike).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_consumer_mid_batch_creates_no_duplicate_and_loses_nothing() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let bed = Bed::new("kill-consumer");
    let _api = bed.api().await;
    let mut consumer = bed.consumer().await;
    let progress = Arc::new(AtomicUsize::new(0));
    let spike = bed.spike(progress.clone());

    wait_progress(&progress, 300).await;
    consumer.kill();
    wait_progress(&progress, 900).await;
    let _consumer = bed.consumer().await;

    bed.finish(spike).await;
}

/// Chaos seed 4085: a consumer killed without leaving its group keeps its partitions until
/// its session times out, and the consumer started in its place waits for them. With
/// librdkafka's default session (45 s) persisting stalled that long; with 10 s the next
/// winners are persisted well inside 30 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_4085_a_consumer_killed_and_started_again_resumes_within_its_session() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let bed = Bed::new("consumer-rejoin");
    let _api = bed.api().await;
    let mut consumer = bed.consumer().await;
    let mut answers = bed.clients().run(users("first", 50)).await;
    let pool = postgres(&bed.services).await;
    let persisted = |n: usize| {
        let pool = &pool;
        let campaign = &bed.campaign;
        async move { (coupons(pool, campaign).await.len() == n).then_some(()) }
    };
    wait_for("the first 50 coupons", Duration::from_secs(30), || {
        persisted(50)
    })
    .await;

    consumer.kill();
    let _consumer = bed.consumer().await;
    answers.extend(bed.clients().run(users("second", 50)).await);
    wait_for("the next 50 coupons", Duration::from_secs(30), || {
        persisted(100)
    })
    .await;
    assert_invariants(&bed.services, &bed.campaign, LIMIT, &answers).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_down_mid_consumption_delays_coupons_but_loses_none() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let bed = Bed::new("pg-down");
    let _api = bed.api().await;
    let _consumer = bed.consumer().await;
    let progress = Arc::new(AtomicUsize::new(0));
    let spike = bed.spike(progress.clone());

    wait_progress(&progress, 150).await;
    let postgres = take_down("stop", "postgres");
    tokio::time::sleep(Duration::from_secs(4)).await;
    postgres.restart();

    bed.finish(spike).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_down_past_the_retry_budget_parks_batches_and_the_partition_moves_on() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let bed = Bed::new("pg-long");
    let api = bed.api().await;
    let consumer = bed
        .start(
            "consumer",
            bed.consumer_ports,
            &["--persist-retry-budget-ms", "1000"],
        )
        .await;
    // Provisioned (which reads PostgreSQL) before PostgreSQL goes down for the whole spike.
    wait_for("the API issuer ready", Duration::from_secs(30), || async {
        let ready = reqwest::get(format!("{}/readyz", api.ops_base))
            .await
            .ok()?;
        (ready.status() == reqwest::StatusCode::OK).then_some(())
    })
    .await;
    let postgres = take_down("stop", "postgres");
    let answers = bed.spike(Arc::new(AtomicUsize::new(0))).await.unwrap();
    // With PostgreSQL still down, the main lane commits everything: it moved on.
    let lane = CampaignConfig::new(bed.campaign.as_str(), 1).primary_lane();
    wait_for(
        "the main lane to move on",
        Duration::from_secs(30),
        || async {
            let lag = firstcome_issuer::kafka::lag::group_lag(
                &bed.services.kafka_brokers,
                &lane.group,
                &lane.topic,
            )
            .await
            .ok()?;
            (lag == 0).then_some(())
        },
    )
    .await;
    let metrics = consumer.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("firstcome_dead_lettered_total") && !l.ends_with(" 0")),
        "batches were parked on the dead-letter topic:\n{metrics}"
    );
    postgres.restart();

    println!("{:?}", tally(&answers));
    assert_invariants(&bed.services, &bed.campaign, LIMIT, &answers).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_crashing_mid_spike_never_answers_a_false_admitted() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let bed = Bed::new("kafka-down");
    let _api = bed.api().await;
    let _consumer = bed.consumer().await;
    // A first wave is admitted; the broker dies; the rest of the spike meets the outage.
    let mut answers = bed.clients().run(users("early", 100)).await;
    let kafka = take_down("kill", "kafka");
    let rest = tokio::spawn(bed.clients().run(users("user", USERS - 100)));
    tokio::time::sleep(Duration::from_secs(4)).await;
    kafka.restart();

    answers.extend(rest.await.unwrap());
    let tally = tally(&answers);
    println!("{tally:?}");
    // The outage hit admissions: some were answered 503 unconfirmed, or failed and were
    // retried (each user applies once, so "already applied" means an earlier try won).
    assert!(
        tally.keys().any(|k| match k {
            Outcome::Unknown(why) => why.contains("admission_unconfirmed"),
            other => *other == Outcome::AlreadyApplied,
        }),
        "the outage hit admissions: {tally:?}"
    );
    assert_invariants(&bed.services, &bed.campaign, LIMIT, &answers).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_losing_its_data_after_sell_out_does_not_reopen_the_campaign() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let bed = Bed::new("redis-loss");
    let mut api = bed.api().await;
    let _consumer = bed.consumer().await;
    let first = bed.spike(Arc::new(AtomicUsize::new(0))).await.unwrap();
    assert_invariants(&bed.services, &bed.campaign, LIMIT, &first).await;

    let client = redis::Client::open(bed.services.redis_url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    // ASYNC: the keys are gone at once and freed in the background, so a Redis that
    // holds millions of other keys (e.g. scripts/bench's) answers within the timeout.
    redis::cmd("FLUSHALL")
        .arg("ASYNC")
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    api.kill();
    let api = bed.api().await;

    // Fresh users and the earlier winners apply again: nobody wins, nothing resets.
    let late = users("late", 300);
    let winners = admitted_users(&first).take(100).map(String::from);
    let again = bed
        .clients()
        .run(late.into_iter().chain(winners).collect())
        .await;
    let tally = tally(&again);
    assert_eq!(tally.get(&Outcome::SoldOut), Some(&300), "{tally:?}");
    assert_eq!(tally.get(&Outcome::AlreadyApplied), Some(&100), "{tally:?}");
    let answers: Vec<Answer> = first.into_iter().chain(again).collect();
    assert_invariants(&bed.services, &bed.campaign, LIMIT, &answers).await;
    let summary: serde_json::Value =
        reqwest::get(format!("{}/v1/campaigns/{}", api.base, bed.campaign))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    assert_eq!(
        summary["admitted"], LIMIT,
        "counter restored from PostgreSQL: {summary}"
    );
    assert_eq!(summary["state"], "sold_out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_turns_readiness_false_first_and_drains_in_flight_applies() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let bed = Bed::new("sigterm");
    let mut api = bed
        .start("api", bed.api_ports, &["--shutdown-delay-ms", "1500"])
        .await;
    let _consumer = bed.consumer().await;
    let progress = Arc::new(AtomicUsize::new(0));
    let spike = bed.spike(progress.clone());

    wait_progress(&progress, 200).await;
    api.terminate();
    let readyz = format!("{}/readyz", api.ops_base);
    wait_for(
        "readiness to turn false",
        Duration::from_secs(5),
        || async {
            let response = reqwest::get(&readyz).await.ok()?;
            (response.status() == reqwest::StatusCode::SERVICE_UNAVAILABLE).then_some(())
        },
    )
    .await;
    let during_delay = progress.load(std::sync::atomic::Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        progress.load(std::sync::atomic::Ordering::Relaxed) > during_delay,
        "applies are still answered while readiness is false"
    );
    assert!(
        api.wait_exit(Duration::from_secs(30)).await,
        "graceful exit with status 0"
    );
    let _api = bed.api().await;

    let answers = spike.await.unwrap();
    println!("{:?}", tally(&answers));
    assert!(
        !tally(&answers)
            .keys()
            .any(|k| matches!(k, Outcome::Unknown(_))),
        "no apply was cut off by the shutdown: {:?}",
        tally(&answers)
    );
    assert_invariants(&bed.services, &bed.campaign, LIMIT, &answers).await;
}

/// Deletes `count` coupons of the campaign, as if their events were lost after the ack.
async fn lose_coupons(services: &Services, campaign: &str, count: i64) {
    let pool = sqlx::PgPool::connect(&services.database_url).await.unwrap();
    let deleted = sqlx::query(
        "DELETE FROM coupons WHERE (campaign, user_id, ordinal) IN \
         (SELECT campaign, user_id, ordinal FROM coupons WHERE campaign = $1 ORDER BY sequence LIMIT $2)",
    )
    .bind(campaign)
    .bind(count)
    .execute(&pool)
    .await
    .unwrap()
    .rows_affected();
    assert_eq!(deleted, count as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciliation_republishes_winners_missing_from_postgres() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let bed = Bed::new("reconcile");
    let api = bed
        .start("api", bed.api_ports, &["--reconcile-interval-ms", "1000"])
        .await;
    let _consumer = bed.consumer().await;
    let answers = bed.spike(Arc::new(AtomicUsize::new(0))).await.unwrap();
    assert_invariants(&bed.services, &bed.campaign, LIMIT, &answers).await;

    // The periodic pass: drift is reported, then the missing winners come back.
    lose_coupons(&bed.services, &bed.campaign, 20).await;
    let drift_metric = format!(
        "firstcome_reconcile_missing_coupons{{campaign=\"{}\"}} 20",
        bed.campaign
    );
    wait_for(
        "the drift to be reported",
        Duration::from_secs(30),
        || async { api.metrics().await.contains(&drift_metric).then_some(()) },
    )
    .await;
    assert_invariants(&bed.services, &bed.campaign, LIMIT, &answers).await;

    // The command: one pass, everything missing re-published at once.
    lose_coupons(&bed.services, &bed.campaign, 5).await;
    let output =
        std::process::Command::new(firstcome_e2e::process::workspace_binary("firstcome-issuer"))
            .arg("reconcile")
            .args(&bed.args("api", Ports::free())[4..])
            .output()
            .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        (report["missing"].as_u64(), report["republished"].as_u64()),
        (Some(5), Some(5)),
        "{report}"
    );
    assert_invariants(&bed.services, &bed.campaign, LIMIT, &answers).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_message_lands_in_failed_events_and_the_rest_is_persisted() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let bed = Bed::new("poison");
    let _api = bed.api().await;
    let _consumer = bed.consumer().await;
    let progress = Arc::new(AtomicUsize::new(0));
    let spike = bed.spike(progress.clone());

    wait_progress(&progress, 200).await;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &bed.services.kafka_brokers)
        .create()
        .unwrap();
    let topic = bed.topic();
    for payload in [&b"\xffnot json"[..], br#"{"campaign":"someone-else","userId":"x","ordinal":1,"sequence":1,"admittedAt":"2026-01-01T00:00:00Z"}"#] {
        producer
            .send(FutureRecord::to(&topic).key("poison").payload(payload), Duration::from_secs(10))
            .await
            .expect("producing a poison message");
    }

    let answers = spike.await.unwrap();
    assert_invariants(&bed.services, &bed.campaign, LIMIT, &answers).await;

    let pool = sqlx::PgPool::connect(&bed.services.database_url)
        .await
        .unwrap();
    let failed: Vec<(Option<Vec<u8>>, String, i32)> = sqlx::query_as(
        "SELECT payload, error, attempts FROM failed_events WHERE topic = $1 AND resolved_at IS NULL ORDER BY \"offset\"",
    )
    .bind(&topic)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        failed.len(),
        2,
        "both poison messages are stored: {failed:?}"
    );
    assert_eq!(
        failed[0].0.as_deref(),
        Some(&b"\xffnot json"[..]),
        "with their payload"
    );
    assert!(
        failed.iter().all(|(_, error, _)| !error.is_empty()),
        "and their error"
    );

    // The retry batch keeps poison visible: attempted again, still unresolved.
    sqlx::query(
        "UPDATE failed_events SET last_attempt_at = now() - interval '1 hour' WHERE topic = $1",
    )
    .bind(&topic)
    .execute(&pool)
    .await
    .unwrap();
    let output =
        std::process::Command::new(firstcome_e2e::process::workspace_binary("firstcome-issuer"))
            .args(["retry-failed", "--database-url", &bed.services.database_url])
            .output()
            .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let attempts: Vec<(i32,)> = sqlx::query_as(
        "SELECT attempts FROM failed_events WHERE topic = $1 AND resolved_at IS NULL",
    )
    .bind(&topic)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        attempts,
        vec![(2,), (2,)],
        "retried once more, still failing"
    );
}
