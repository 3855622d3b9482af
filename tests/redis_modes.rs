//! Admission on replicated Redis, against the test bed's real Sentinel and Cluster beds
//! (started here when the environment does not name them): exact counts through Sentinel
//! and across a failover to the promoted replica, and on a Redis Cluster with campaigns on
//! different primaries.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use firstcome_contract::RedisConnection;
use firstcome_contract::{CampaignConfig, CampaignKeys, RedisTarget};
use firstcome_e2e::invariants::assert_invariants;
use firstcome_e2e::issuer::start_distributed;
use firstcome_e2e::process::{Process, sample};
use firstcome_e2e::redis_beds::{
    cluster_target, cluster_url, heal_cluster_bed, heal_sentinel_bed, redis_node,
    sentinel_primary_port, sentinel_target, sentinel_url,
};
use firstcome_e2e::spike::{self, Answer, Retry, Spike, tally, wait_progress};
use firstcome_e2e::{Services, cluster, unique_name};
use firstcome_issuer::admission::Outcome;
use firstcome_issuer::admission::redis::RedisAdmission;
use firstcome_operator::resource::Phase;
use firstcome_operator::status;
use tokio::task::JoinHandle;

const TIMEOUT: Duration = Duration::from_secs(1);
/// Longest wait for the Sentinels to promote the replica (down-after 1 s + election).
const FAILOVER_BOUND: Duration = Duration::from_secs(30);

/// Writes what provisioning writes: the limit and a zero counter.
async fn provision(conn: &mut RedisConnection, keys: &CampaignKeys, limit: u64) {
    let _: () = redis::pipe()
        .set(&keys.limit, limit)
        .set(&keys.admitted, 0)
        .query_async(conn)
        .await
        .unwrap();
}

/// Applies every user at once; the outcomes in the users' order.
async fn apply_all(
    admission: &RedisAdmission,
    campaign: &CampaignConfig,
    users: &[String],
) -> Vec<Outcome> {
    let keys = CampaignKeys::new(&campaign.name);
    let applies = users
        .iter()
        .map(|user| admission.run_admission_script(campaign, &keys, user));
    futures::future::try_join_all(applies).await.unwrap()
}

fn users(prefix: &str, range: std::ops::Range<u32>) -> Vec<String> {
    range.map(|i| format!("{prefix}-user-{i}")).collect()
}

/// Exactly `expected` sequences were handed out, the rest sold out.
fn assert_admitted(outcomes: &[Outcome], expected: std::ops::RangeInclusive<u64>) {
    let mut sequences: Vec<u64> = outcomes
        .iter()
        .filter_map(|o| match o {
            Outcome::Admitted(a) => Some(a.sequence),
            _ => None,
        })
        .collect();
    sequences.sort_unstable();
    assert_eq!(sequences, expected.collect::<Vec<_>>(), "{outcomes:?}");
    let sold_out = outcomes.iter().filter(|o| **o == Outcome::SoldOut).count();
    assert_eq!(sold_out + sequences.len(), outcomes.len(), "{outcomes:?}");
}

/// What a campaign's keys say after admissions: counter, holders (read with HSCAN),
/// pending winners.
async fn assert_state(admission: &RedisAdmission, campaign: &CampaignConfig, admitted: u64) {
    let keys = CampaignKeys::new(&campaign.name);
    let counts = admission.counts(&keys).await.unwrap();
    assert_eq!((counts.limit, counts.admitted), (campaign.limit, admitted));
    let holders = admission.holders(&keys).await.unwrap();
    assert_eq!(holders.len() as u64, admitted, "{holders:?}");
    assert_eq!(
        admission.pending(&keys).await.unwrap().len() as u64,
        admitted
    );
}

// ---------------------------------------------------------------- Sentinel

/// The Sentinel tests each take the primary down, and bringing the bed up (which restarts
/// missing nodes) must not run during another's failover: one at a time.
static ONE_FAILOVER_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Resumes and restarts what a test paused or killed, even when the test fails, so the
/// next test finds the bed whole.
struct HealSentinelBed;

impl Drop for HealSentinelBed {
    fn drop(&mut self) {
        heal_sentinel_bed();
    }
}

/// The port of the primary the Sentinels of `target` name.
async fn primary_port(target: &RedisTarget) -> u16 {
    (sentinel_primary_port(target).await)
        .unwrap_or_else(|| panic!("no Sentinel of {target} names a primary"))
}

/// A campaign of `limit` provisioned through Sentinel with `admitted` admissions made,
/// all of it acknowledged by the replica. Replication is asynchronous and WAIT covers this
/// connection's writes, so it writes once more (the same limit) after the admissions.
async fn sentinel_campaign(
    admission: &RedisAdmission,
    conn: &mut RedisConnection,
    limit: u64,
    admitted: u32,
) -> CampaignConfig {
    let campaign = CampaignConfig::new(unique_name("sentinel"), limit);
    let keys = CampaignKeys::new(&campaign.name);
    provision(conn, &keys, limit).await;
    let outcomes = apply_all(admission, &campaign, &users("before", 0..admitted)).await;
    assert_admitted(&outcomes, 1..=u64::from(admitted));
    let _: () = redis::cmd("SET")
        .arg(&keys.limit)
        .arg(limit)
        .query_async(conn)
        .await
        .unwrap();
    let replicas: u64 = redis::cmd("WAIT")
        .arg(1)
        .arg(5000)
        .query_async(conn)
        .await
        .unwrap();
    assert_eq!(replicas, 1, "the replica acknowledged the writes");
    campaign
}

/// Applies new users every 20 ms from `since` until one apply gets an answer; prints and
/// returns it, with how long applies failed.
async fn first_answer_after_failover(
    admission: &RedisAdmission,
    campaign: &CampaignConfig,
    fault: &str,
    since: Instant,
) -> (Outcome, Duration) {
    let keys = CampaignKeys::new(&campaign.name);
    let mut failed = 0;
    let mut last_error = None;
    loop {
        assert!(
            since.elapsed() < FAILOVER_BOUND,
            "no admission within {FAILOVER_BOUND:?} of {fault} ({failed} failed; last: {last_error:?})"
        );
        let user = format!("failover-user-{failed}");
        match admission.run_admission_script(campaign, &keys, &user).await {
            Ok(outcome) => {
                let window = since.elapsed();
                println!(
                    "sentinel failover after {fault}: applies failed for {window:?} ({failed} \
                     attempts; last error: {last_error:?})"
                );
                return (outcome, window);
            }
            Err(err) => {
                failed += 1;
                last_error = Some(err.to_string());
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_admits_exactly_and_resumes_on_the_promoted_replica() {
    let _serial = ONE_FAILOVER_AT_A_TIME.lock().await;
    let target = sentinel_target();
    let _heal = HealSentinelBed;
    let admission = RedisAdmission::connect(&target, TIMEOUT).await.unwrap();
    let mut conn = RedisConnection::connect(&target, TIMEOUT).await.unwrap();
    let campaign = CampaignConfig::new(unique_name("sentinel"), 5);
    let keys = CampaignKeys::new(&campaign.name);
    provision(&mut conn, &keys, campaign.limit).await;

    let applicants = users("a", 0..8);
    let outcomes = apply_all(&admission, &campaign, &applicants).await;
    assert_admitted(&outcomes, 1..=5);
    let winner = outcomes
        .iter()
        .position(|o| matches!(o, Outcome::Admitted(_)))
        .unwrap();
    let again = apply_all(&admission, &campaign, &applicants[winner..=winner]).await;
    assert!(matches!(again[0], Outcome::AlreadyApplied(_)), "{again:?}");
    assert_state(&admission, &campaign, 5).await;

    let campaign = sentinel_campaign(&admission, &mut conn, 20, 5).await;
    let old_primary = primary_port(&target).await;
    redis_node("kill", old_primary);
    let (resumed, _) = first_answer_after_failover(
        &admission,
        &campaign,
        "SIGKILL of the primary",
        Instant::now(),
    )
    .await;
    assert_ne!(
        primary_port(&target).await,
        old_primary,
        "the Sentinels promoted the replica"
    );
    assert!(
        matches!(resumed, Outcome::Admitted(ref a) if a.sequence == 6),
        "the promoted replica continues the counter: {resumed:?}"
    );
    let outcomes = apply_all(&admission, &campaign, &users("after", 0..20)).await;
    assert_admitted(&outcomes, 7..=20);
    assert_state(&admission, &campaign, 20).await;
}

/// A hung primary (SIGSTOP) answers nothing: commands time out, the connection is
/// dropped, and the Sentinels' promotion is found as with a dead one. When the old
/// primary wakes up it is demoted, and admissions stay on the new primary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_leaves_a_hung_primary_for_the_promoted_replica() {
    let _serial = ONE_FAILOVER_AT_A_TIME.lock().await;
    let target = sentinel_target();
    let _heal = HealSentinelBed;
    let admission = RedisAdmission::connect(&target, TIMEOUT).await.unwrap();
    let mut conn = RedisConnection::connect(&target, TIMEOUT).await.unwrap();
    let campaign = sentinel_campaign(&admission, &mut conn, 10, 3).await;

    let old_primary = primary_port(&target).await;
    redis_node("stop", old_primary);
    let (resumed, _) = first_answer_after_failover(
        &admission,
        &campaign,
        "SIGSTOP of the primary",
        Instant::now(),
    )
    .await;
    assert!(
        matches!(resumed, Outcome::Admitted(ref a) if a.sequence == 4),
        "the promoted replica continues the counter: {resumed:?}"
    );
    assert_ne!(primary_port(&target).await, old_primary);

    redis_node("cont", old_primary);
    let outcomes = apply_all(&admission, &campaign, &users("after", 0..10)).await;
    assert_admitted(&outcomes, 5..=10);
    assert_state(&admission, &campaign, 10).await;
}

// ---------------------------------------------------------------- Cluster

/// The node that owns `key`'s slot, asked of `node` without following redirects.
async fn slot_owner(node: &str, key: &str) -> String {
    ask_owner(node, key).await.expect("a MOVED redirect")
}

/// Like [`slot_owner`], or `None` when `node` answers neither (say `CLUSTERDOWN`).
async fn ask_owner(node: &str, key: &str) -> Option<String> {
    let client = redis::Client::open(format!("redis://{node}")).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    match redis::cmd("EXISTS")
        .arg(key)
        .query_async::<i64>(&mut conn)
        .await
    {
        Ok(_) => Some(node.to_string()),
        Err(err) => err.redirect_node().map(|(owner, _slot)| owner.to_string()),
    }
}

/// Waits until `asked` (a healthy primary) no longer names `old` as the owner of `key`'s
/// slot: a replica of the dead `old` took it over and the cluster knows. Meanwhile `asked`
/// must keep answering (a redirect), not refuse every key as a cluster that requires full
/// coverage does (`CLUSTERDOWN`).
async fn wait_for_new_owner(asked: &str, key: &str, old: &str) {
    for _ in 0..300 {
        let owner = ask_owner(asked, key).await;
        let owner = owner.unwrap_or_else(|| panic!("{asked} refused {key} while {old} was down"));
        if owner != old {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no replica took {key}'s slot over from {old} within 30 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_admits_exactly_for_campaigns_on_different_primaries() {
    let target = cluster_target();
    let RedisTarget::Cluster { nodes, .. } = &target else {
        panic!("not a Cluster target: {target}");
    };
    let seed = nodes[0].to_string();
    let admission = RedisAdmission::connect(&target, TIMEOUT).await.unwrap();
    let mut conn = RedisConnection::connect(&target, TIMEOUT).await.unwrap();

    let first = CampaignConfig::new(unique_name("cluster"), 3);
    let first_owner = slot_owner(&seed, &CampaignKeys::new(&first.name).admitted).await;
    let mut second = None;
    for _ in 0..100 {
        let candidate = CampaignConfig::new(unique_name("cluster"), 3);
        let owner = slot_owner(&seed, &CampaignKeys::new(&candidate.name).admitted).await;
        if owner != first_owner {
            second = Some((candidate, owner));
            break;
        }
    }
    let (second, second_owner) = second.expect("a campaign on another primary");

    for campaign in [&first, &second] {
        provision(
            &mut conn,
            &CampaignKeys::new(&campaign.name),
            campaign.limit,
        )
        .await;
    }
    let (first_users, second_users) = (users("first", 0..5), users("second", 0..5));
    let (first_outcomes, second_outcomes) = tokio::join!(
        apply_all(&admission, &first, &first_users),
        apply_all(&admission, &second, &second_users),
    );
    assert_admitted(&first_outcomes, 1..=3);
    assert_admitted(&second_outcomes, 1..=3);

    for (campaign, owner) in [(&first, &first_owner), (&second, &second_owner)] {
        assert_state(&admission, campaign, 3).await;
        // The counter is on the primary that owns the campaign's slot.
        let keys = CampaignKeys::new(&campaign.name);
        let client = redis::Client::open(format!("redis://{owner}")).unwrap();
        let mut direct = client.get_multiplexed_async_connection().await.unwrap();
        let admitted: u64 = redis::cmd("GET")
            .arg(&keys.admitted)
            .query_async(&mut direct)
            .await
            .unwrap();
        assert_eq!(admitted, 3, "{} on {owner}", campaign.name);
    }
    println!(
        "cluster: {} on {first_owner}, {} on {second_owner}",
        first.name, second.name
    );
}

/// The operator provisions through the same modes: a campaign whose backends Secret names
/// the Sentinel bed, and one whose Secret names the Cluster bed, both reach phase Open
/// with RedisReady=True and their limit written where that Redis keeps it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_provisions_through_sentinel_and_cluster() {
    let _serial = ONE_FAILOVER_AT_A_TIME.lock().await;
    let services = Services::from_env();
    let client = cluster::client().await;
    cluster::install_crd(&client).await;
    for (prefix, url) in [
        ("via-sentinel", sentinel_url()),
        ("via-cluster", cluster_url()),
    ] {
        let ns = cluster::namespace(&client, prefix, &services, &url).await;
        let _operator = cluster::start_operator(&ns, "only", &[]).await;
        cluster::apply_campaign(&client, &ns, "launch", "limit: 42\n")
            .await
            .unwrap();
        let status = cluster::wait_status(&client, &ns, "launch", "phase Open", |s| {
            s.phase == Phase::Open
        })
        .await;
        let redis_ready = status::condition(&status, status::REDIS_READY);
        assert_eq!(
            redis_ready.map(|c| c.status.as_str()),
            Some("True"),
            "{url}"
        );
        let keys = CampaignKeys::new(&status.campaign_id.unwrap());
        let mut conn = RedisConnection::connect(&url.parse().unwrap(), TIMEOUT)
            .await
            .unwrap();
        let limit: u64 = redis::cmd("GET")
            .arg(&keys.limit)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(limit, 42, "{url}");
    }
}

/// The cluster client re-sends a command after a dropped connection; a re-sent admission
/// (the same attempt) answers what its first run did and admits nobody twice, even for a
/// user who may hold more than one coupon.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_re_sent_admission_answers_its_first_run_and_admits_once() {
    let target = cluster_target();
    let admission = RedisAdmission::connect(&target, TIMEOUT).await.unwrap();
    let mut conn = RedisConnection::connect(&target, TIMEOUT).await.unwrap();
    let campaign = CampaignConfig {
        per_user_limit: 3,
        ..CampaignConfig::new(unique_name("resent"), 10)
    };
    let keys = CampaignKeys::new(&campaign.name);
    provision(&mut conn, &keys, campaign.limit).await;
    let first = admission
        .run_admission_attempt(&campaign, &keys, "alice", "attempt-1")
        .await
        .unwrap();
    let resent = admission
        .run_admission_attempt(&campaign, &keys, "alice", "attempt-1")
        .await
        .unwrap();
    assert!(matches!(first, Outcome::Admitted(_)), "{first:?}");
    assert_eq!(resent, first, "the re-sent attempt answers its first run");
    let admitted: u64 = redis::cmd("GET")
        .arg(&keys.admitted)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(admitted, 1, "admitted once");
    let next = admission
        .run_admission_attempt(&campaign, &keys, "alice", "attempt-2")
        .await
        .unwrap();
    assert!(
        matches!(next, Outcome::Admitted(a) if a.ordinal == 2),
        "a new attempt is a new apply"
    );
}

// ---------------------------------------------------------------- Faults under a spike

const SPIKE_USERS: usize = 2000;
const SPIKE_LIMIT: usize = 1000;
/// Users per round of [`applying_until`], and its bound on rounds.
const ROUND_USERS: usize = 50;
const ROUNDS_AT_MOST: usize = 1000;
/// Few enough in flight that the admissions still run when the fault strikes.
const SPIKE_IN_FLIGHT: usize = 4;

/// The test bed's services, with Redis at `url` (a Sentinel or Cluster bed).
fn on_redis(url: String) -> Services {
    Services {
        redis_url: url,
        ..Services::from_env()
    }
}

/// An API issuer and a consumer of a campaign of `SPIKE_LIMIT`.
async fn issuers(services: &Services, campaign: &str) -> (Process, Process) {
    issuers_with_limit(services, campaign, SPIKE_LIMIT).await
}

/// An API issuer and a consumer of a campaign of `limit`.
async fn issuers_with_limit(
    services: &Services,
    campaign: &str,
    limit: usize,
) -> (Process, Process) {
    let spec = format!("{campaign}:{limit}");
    let api = start_distributed(services, &["--campaign", &spec, "--role", "api"]).await;
    let consumer = start_distributed(services, &["--campaign", &spec, "--role", "consumer"]).await;
    (api, consumer)
}

/// Clients applying to `api`, retrying 503s as real clients do through a failover.
fn clients(api: &Process, campaign: &str) -> Spike {
    Spike::new(&[&api.base], campaign)
        .in_flight(SPIKE_IN_FLIGHT)
        .retry(Retry::UNTIL_ANSWERED)
}

/// The spike of `SPIKE_USERS` clients on `api`, running in the background.
fn spike(api: &Process, campaign: &str, progress: Arc<AtomicUsize>) -> JoinHandle<Vec<Answer>> {
    let spike = clients(api, campaign).progress(progress);
    tokio::spawn(spike.run(spike::users("user", SPIKE_USERS)))
}

/// Clients applying to `api` in rounds of new users until `stop` is set (at most
/// `ROUNDS_AT_MOST` rounds), so that their applies span whatever happens meanwhile.
fn applying_until(api: &Process, campaign: &str, stop: Arc<AtomicBool>) -> JoinHandle<Vec<Answer>> {
    let (base, campaign) = (api.base.clone(), campaign.to_string());
    tokio::spawn(async move {
        let mut answers = Vec::new();
        for round in 0..ROUNDS_AT_MOST {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let spike = Spike::new(&[&base], &campaign)
                .in_flight(SPIKE_IN_FLIGHT)
                .retry(Retry::UNTIL_ANSWERED);
            answers.extend(
                spike
                    .run(spike::users(&format!("round{round}-"), ROUND_USERS))
                    .await,
            );
        }
        answers
    })
}

/// The value of one apply-outcome counter of an issuer.
async fn applies(issuer: &Process, campaign: &str, outcome: &str) -> u64 {
    let name = format!("firstcome_applies_total{{campaign=\"{campaign}\",outcome=\"{outcome}\"}}");
    sample(&issuer.metrics().await, &name)
}

/// Applies answered 503 for Redis: `backend_unavailable` or `outcome_unknown`.
async fn answered_503(issuer: &Process, campaign: &str) -> u64 {
    applies(issuer, campaign, "unavailable").await + applies(issuer, campaign, "unknown").await
}

/// The port of a replica the first answering Sentinel names.
async fn sentinel_replica_port(target: &RedisTarget) -> u16 {
    let RedisTarget::Sentinel {
        master, sentinels, ..
    } = target
    else {
        panic!("not a Sentinel target: {target}");
    };
    let client = redis::Client::open(format!("redis://{}", sentinels[0])).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let replicas: Vec<HashMap<String, String>> = redis::cmd("SENTINEL")
        .arg("replicas")
        .arg(master)
        .query_async(&mut conn)
        .await
        .unwrap();
    replicas[0]["port"].parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_sentinel_primary_mid_spike_loses_no_winner() {
    let _serial = ONE_FAILOVER_AT_A_TIME.lock().await;
    let _heal = HealSentinelBed;
    let services = on_redis(sentinel_url());
    let campaign = unique_name("sentinel-spike");
    let progress = Arc::new(AtomicUsize::new(0));
    let (api, _consumer) = issuers(&services, &campaign).await;
    let primary = primary_port(&sentinel_target()).await;
    let running = spike(&api, &campaign, progress.clone());

    wait_progress(&progress, 20).await;
    redis_node("kill", primary);
    let at_kill = progress.load(Ordering::Relaxed);
    assert!(
        at_kill < SPIKE_LIMIT,
        "the primary died mid-spike ({at_kill} answered)"
    );
    let answers = running.await.unwrap();
    println!("{:?}", tally(&answers));
    assert_invariants(&services, &campaign, SPIKE_LIMIT, &answers).await;
    println!(
        "503 answers during the failover: {}",
        answered_503(&api, &campaign).await
    );
}

/// Makes the primary at `port` drop a replica that stops answering after one second, so
/// admissions made after that never reach it (a stopped replica otherwise finds them in
/// its socket buffer when it wakes).
async fn drop_silent_replicas_fast(port: u16) {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("repl-timeout")
        .arg(1)
        .query_async(&mut conn)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promoted_replica_that_lagged_never_gives_a_lost_admission_again() {
    let _serial = ONE_FAILOVER_AT_A_TIME.lock().await;
    let _heal = HealSentinelBed;
    let services = on_redis(sentinel_url());
    let target = sentinel_target();
    let campaign = unique_name("lagging");
    let (api, _consumer) = issuers(&services, &campaign).await;
    let apply =
        |prefix: &str, count: usize| clients(&api, &campaign).run(spike::users(prefix, count));
    let mut answers = apply("before", 300).await;

    let (primary, replica) = (
        primary_port(&target).await,
        sentinel_replica_port(&target).await,
    );
    drop_silent_replicas_fast(primary).await;
    redis_node("stop", replica);
    tokio::time::sleep(Duration::from_secs(3)).await;
    answers.extend(apply("unreplicated", 300).await);
    redis_node("kill", primary);
    redis_node("cont", replica);
    answers.extend(apply("after", 1400).await);

    println!("{:?}", tally(&answers));
    assert_invariants(&services, &campaign, SPIKE_LIMIT, &answers).await;
    let metrics = api.metrics().await;
    let fenced = format!("firstcome_fenced_total{{campaign=\"{campaign}\"}}");
    assert!(
        metrics.contains(&fenced),
        "the lagging replica was fenced:\n{metrics}"
    );
    let refused = format!("firstcome_refused_twice_given_total{{campaign=\"{campaign}\"}}");
    println!(
        "fenced; refused twice-given: {}; 503 answers: {}",
        metrics
            .lines()
            .find(|l| l.starts_with(&refused))
            .unwrap_or("0"),
        answered_503(&api, &campaign).await
    );
}

/// Restarts the Cluster bed's killed node when the test ends, however it ends.
struct HealClusterBed;

impl Drop for HealClusterBed {
    fn drop(&mut self) {
        heal_cluster_bed();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_cluster_primary_mid_spike_loses_no_winner_and_spares_other_slots() {
    let _serial = ONE_FAILOVER_AT_A_TIME.lock().await;
    let _heal = HealClusterBed;
    let services = on_redis(cluster_url());
    let RedisTarget::Cluster { nodes, .. } = cluster_target() else {
        unreachable!("cluster_target is a cluster")
    };
    let seed = nodes[0].to_string();
    let owner_of =
        async |campaign: &str| slot_owner(&seed, &CampaignKeys::new(campaign).admitted).await;
    let hit = unique_name("cluster-hit");
    let hit_owner = owner_of(&hit).await;
    let mut spared = unique_name("cluster-spared");
    for _ in 0..50 {
        if owner_of(&spared).await != hit_owner {
            break;
        }
        spared = unique_name("cluster-spared");
    }
    assert_ne!(
        owner_of(&spared).await,
        hit_owner,
        "a campaign on another primary"
    );
    let hit_progress = Arc::new(AtomicUsize::new(0));
    let spared_stop = Arc::new(AtomicBool::new(false));
    // (a limit the spared campaign cannot reach: a sold-out campaign answers from memory)
    let spared_limit = ROUND_USERS * ROUNDS_AT_MOST;
    let (hit_api, _c1) = issuers(&services, &hit).await;
    let (spared_api, _c2) = issuers_with_limit(&services, &spared, spared_limit).await;
    let hit_spike = spike(&hit_api, &hit, Arc::clone(&hit_progress));
    let spared_applies = applying_until(&spared_api, &spared, Arc::clone(&spared_stop));

    let spared_owner = owner_of(&spared).await;
    wait_progress(&hit_progress, 20).await;
    let port: u16 = hit_owner.rsplit(':').next().unwrap().parse().unwrap();
    redis_node("kill", port);
    let at_kill = hit_progress.load(Ordering::Relaxed);
    assert!(
        at_kill < SPIKE_LIMIT,
        "the primary died mid-spike ({at_kill} answered)"
    );
    // The spared campaign applies until a replica has replaced the dead primary.
    let hit_key = CampaignKeys::new(&hit).admitted;
    wait_for_new_owner(&spared_owner, &hit_key, &hit_owner).await;
    spared_stop.store(true, Ordering::Relaxed);
    for (campaign, spike, limit) in [
        (&hit, hit_spike, SPIKE_LIMIT),
        (&spared, spared_applies, spared_limit),
    ] {
        let answers = spike.await.unwrap();
        println!("{campaign}: {:?}", tally(&answers));
        assert_invariants(&services, campaign, limit, &answers).await;
    }
    println!(
        "503 answers: {} on the killed primary's campaign",
        answered_503(&hit_api, &hit).await
    );
    assert_eq!(
        answered_503(&spared_api, &spared).await,
        0,
        "the campaign on another primary kept admitting throughout"
    );
}

/// `--redis-wait-replicas`' building block on real replicas: WAIT counts the replica that
/// has the admission, and none while the replica is stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_counts_the_replicas_that_have_an_admission() {
    let _serial = ONE_FAILOVER_AT_A_TIME.lock().await;
    let _heal = HealSentinelBed;
    let target = sentinel_target();
    let admission = RedisAdmission::connect(&target, TIMEOUT).await.unwrap();
    let mut conn = RedisConnection::connect(&target, TIMEOUT).await.unwrap();
    let campaign = CampaignConfig::new(unique_name("wait"), 5);
    let keys = CampaignKeys::new(&campaign.name);
    provision(&mut conn, &keys, campaign.limit).await;
    let wait = Duration::from_millis(500);

    let first = admission.run_admission_script(&campaign, &keys, "a").await;
    assert!(matches!(first, Ok(Outcome::Admitted(_))), "{first:?}");
    assert_eq!(admission.wait_for_replicas(1, wait).await.unwrap(), 1);

    let replica = sentinel_replica_port(&target).await;
    redis_node("stop", replica);
    let second = admission.run_admission_script(&campaign, &keys, "b").await;
    assert!(matches!(second, Ok(Outcome::Admitted(_))), "{second:?}");
    let acked = admission.wait_for_replicas(1, wait).await;
    redis_node("cont", replica);
    assert_eq!(acked.unwrap(), 0, "a stopped replica acknowledges nothing");
}
