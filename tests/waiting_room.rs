//! The waiting room end to end: distributed issuers (real Redis, Kafka, PostgreSQL)
//! serving a campaign with a waiting room, driven over HTTP. A pre-queue of 5000 users
//! is let in shuffled and at the configured rate across three issuers, one of which is
//! killed while they admit; abandoned tickets
//! and expired passes lapse; forged, expired and other users' passes are refused; with
//! identity on, users join, poll and apply as themselves only.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use firstcome_e2e::invariants::assert_invariants;
use firstcome_e2e::issuer::{start_distributed, temp_dir};
use firstcome_e2e::process::{Process, sample};
use firstcome_e2e::spike::{Answer, Outcome, tally};
use firstcome_e2e::{Services, unique_name, wait_until};
use firstcome_issuer::http::PASS_HEADER;
use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};

/// Requests in flight while joining, polling and applying.
const IN_FLIGHT: usize = 64;

/// A campaigns file serving `campaign` with `room`, rate limits out of the way (the test
/// sends thousands of requests from one address), and a fresh room secret.
fn room_files(campaign: &str, opens_at: Option<DateTime<Utc>>, room: Value) -> [PathBuf; 2] {
    room_files_in(
        &temp_dir("waiting-room"),
        campaign,
        opens_at,
        room,
        json!({}),
    )
}

/// [`room_files`] in `dir`, the campaign also carrying the fields of `extra`.
fn room_files_in(
    dir: &std::path::Path,
    campaign: &str,
    opens_at: Option<DateTime<Utc>>,
    room: Value,
    extra: Value,
) -> [PathBuf; 2] {
    let unlimited = json!({ "perSecond": 1_000_000, "burst": 1_000_000 });
    let mut config = json!({
        "name": campaign,
        "limit": 300,
        "topic": format!("firstcome.{campaign}.winners"),
        "waitingRoom": room,
        "rateLimits": { "perUser": unlimited },
    });
    if let Some(opens_at) = opens_at {
        config["opensAt"] = json!(opens_at);
    }
    for (field, value) in extra.as_object().into_iter().flatten() {
        config[field] = value.clone();
    }
    let campaigns = dir.join("campaigns.json");
    let file = json!({ "campaigns": [config] });
    std::fs::write(&campaigns, file.to_string()).unwrap();
    let secret = dir.join("room-secret");
    std::fs::write(&secret, format!("{}\n", unique_name("secret").repeat(3))).unwrap();
    [campaigns, secret]
}

async fn start_issuer(services: &Services, [campaigns, secret]: &[PathBuf; 2]) -> Process {
    let (campaigns, secret) = (
        campaigns.display().to_string(),
        secret.display().to_string(),
    );
    let flags = [
        "--campaigns-file",
        campaigns.as_str(),
        "--waiting-room-secret-file",
        secret.as_str(),
    ];
    start_distributed(services, &flags).await
}

async fn join(client: &reqwest::Client, base: &str, campaign: &str, user: &str) -> Value {
    let response = (client.post(format!("{base}/v1/campaigns/{campaign}/queue")))
        .json(&json!({ "userId": user }))
        .send()
        .await
        .expect("join request");
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert!(
        status == StatusCode::CREATED || status == StatusCode::OK,
        "join of {user}: {status} {body}"
    );
    body
}

async fn poll(client: &reqwest::Client, base: &str, campaign: &str, ticket: &str) -> Value {
    let response = (client.get(format!("{base}/v1/campaigns/{campaign}/queue/{ticket}")))
        .send()
        .await
        .expect("poll request");
    assert_eq!(response.status(), StatusCode::OK, "poll of {ticket}");
    response.json().await.unwrap()
}

async fn apply_with(
    client: &reqwest::Client,
    base: &str,
    campaign: &str,
    user: &str,
    pass: Option<&str>,
) -> (StatusCode, Value) {
    let mut request = (client.post(format!("{base}/v1/campaigns/{campaign}/applications")))
        .json(&json!({ "userId": user }));
    if let Some(pass) = pass {
        request = request.header(PASS_HEADER, pass);
    }
    let response = request.send().await.expect("apply request");
    (response.status(), response.json().await.unwrap())
}

/// Spearman's rank correlation of two rankings of the same n items (no ties).
fn spearman(ranks: &[(f64, f64)]) -> f64 {
    let n = ranks.len() as f64;
    let squared: f64 = ranks.iter().map(|(a, b)| (a - b).powi(2)).sum();
    1.0 - 6.0 * squared / (n * (n * n - 1.0))
}

/// When a pass's admission happened, in ms of Redis time: its expiry less its lifetime.
fn admitted_ms(ticket: &Value, pass_ttl_seconds: i64) -> i64 {
    let expires: DateTime<Utc> = ticket["passExpiresAt"].as_str().unwrap().parse().unwrap();
    expires.timestamp_millis() - pass_ttl_seconds * 1000
}

const USERS: usize = 5000;
const LATE: usize = 50;
const RATE: u64 = 250;
const PASS_TTL: i64 = 600;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prequeue_of_5000_is_let_in_shuffled_at_the_rate_across_issuers_one_of_which_dies() {
    let services = Services::from_env();
    let campaign = unique_name("room");
    // Late enough for three issuers to start and 5000 users to join before it.
    let opens_at = Utc::now() + chrono::Duration::seconds(45);
    let room = json!({
        "admissionRate": RATE,
        "passTtlSeconds": PASS_TTL,
        "ticketTimeoutSeconds": 3600,
    });
    let files = room_files(&campaign, Some(opens_at), room);
    let (a, b, c) = tokio::join!(
        start_issuer(&services, &files),
        start_issuer(&services, &files),
        start_issuer(&services, &files)
    );
    let issuers = [a, b, c];
    let bases: Vec<&str> = issuers.iter().map(|p| p.base.as_str()).collect();
    let client = reqwest::Client::new();

    let users: Vec<String> = (0..USERS).map(|i| format!("early-{i:04}")).collect();
    let tickets = join_all(&client, &bases, &campaign, &users).await;
    assert!(
        Utc::now() < opens_at,
        "the 5000 joined before the opening (else the test bed is too slow for this test)"
    );
    let again = join(&client, bases[1], &campaign, &users[0]).await;
    assert_eq!(
        again["ticket"], tickets[0],
        "joining again gives the same ticket"
    );
    assert_eq!(again["state"], "waiting");
    assert!(
        again.get("position").is_none(),
        "no place before the opening: {again}"
    );

    wait_until("the opening", Duration::from_secs(60), || async {
        if Utc::now() >= opens_at {
            Ok(())
        } else {
            Err("not yet")
        }
    })
    .await;
    let late: Vec<String> = (0..LATE).map(|i| format!("late-{i:02}")).collect();
    let mut late_tickets = Vec::new();
    for user in &late {
        late_tickets.push(join(&client, bases[0], &campaign, user).await["ticket"].clone());
    }
    // Every issuer admits; then one dies mid-sale (SIGKILL). The queue and the pace are
    // in Redis and each admission run is one atomic script: the others carry on, nobody
    // is lost or let in twice, and the rate holds.
    every_issuer_admits(&issuers, &campaign).await;
    let [mut dead, b, c] = issuers;
    dead.kill();
    let survivors = [b, c];
    let bases: Vec<&str> = survivors.iter().map(|p| p.base.as_str()).collect();
    wait_for_empty_queue(&survivors[1], &campaign).await;

    let all_tickets: Vec<Value> = tickets.iter().chain(&late_tickets).cloned().collect();
    let states = poll_all(&client, &bases, &campaign, &all_tickets).await;
    let numbers: Vec<u64> = states
        .iter()
        .map(|s| {
            assert_eq!(s["state"], "admitted", "{s}");
            s["admission"].as_u64().unwrap()
        })
        .collect();
    let distinct: HashSet<u64> = numbers.iter().copied().collect();
    let total = (USERS + LATE) as u64;
    assert_eq!(
        distinct,
        (1..=total).collect(),
        "everyone let in exactly once"
    );

    the_prequeue_is_shuffled_and_late_arrivals_queue_fifo_behind_it(&numbers);
    the_rate_holds_in_every_second(&states);
    passes_admit_up_to_the_limit(&services, &client, &bases, &campaign, &users, &states).await;
    waiting_tickets_read_sold_out(&client, &bases, &campaign).await;
}

async fn join_all(
    client: &reqwest::Client,
    bases: &[&str],
    campaign: &str,
    users: &[String],
) -> Vec<Value> {
    futures::stream::iter(users.iter().enumerate())
        .map(|(i, user)| async move {
            join(client, bases[i % bases.len()], campaign, user).await["ticket"].clone()
        })
        .buffered(IN_FLIGHT)
        .collect()
        .await
}

async fn poll_all(
    client: &reqwest::Client,
    bases: &[&str],
    campaign: &str,
    tickets: &[Value],
) -> Vec<Value> {
    futures::stream::iter(tickets.iter().enumerate())
        .map(|(i, ticket)| {
            let base = bases[i % bases.len()];
            async move { poll(client, base, campaign, ticket.as_str().unwrap()).await }
        })
        .buffered(IN_FLIGHT)
        .collect()
        .await
}

/// Waits (at most 90 s: 5050 users at 250/s take 21 s) until nobody waits.
async fn wait_for_empty_queue(issuer: &Process, campaign: &str) {
    wait_until("an empty waiting room", Duration::from_secs(90), || async {
        let (_, summary) = issuer.get(&format!("/v1/campaigns/{campaign}")).await;
        match summary["waitingRoom"]["queueLength"].as_u64() {
            Some(0) => Ok(()),
            other => Err(format!("queue length {other:?}")),
        }
    })
    .await;
}

/// The pre-queue's admission order against its join order: Spearman's rho of a uniformly
/// random permutation of n = 5000 has mean 0 and standard deviation 1/sqrt(n-1) ≈ 0.0141,
/// so |rho| < 0.05 (3.5 standard deviations) fails a truly random order about once in
/// 2000 runs, while any order that keeps a trace of arrival (even 5 % of it) fails.
fn the_prequeue_is_shuffled_and_late_arrivals_queue_fifo_behind_it(numbers: &[u64]) {
    let (early, late) = numbers.split_at(USERS);
    let ranks: Vec<(f64, f64)> = (early.iter().enumerate())
        .map(|(joined, admitted)| (joined as f64 + 1.0, *admitted as f64))
        .collect();
    let rho = spearman(&ranks);
    println!("pre-queue: Spearman rho of join order vs admission order = {rho:.4}");
    assert!(rho.abs() < 0.05, "admission follows join order: rho {rho}");
    let expected: Vec<u64> = (USERS as u64 + 1..=(USERS + LATE) as u64).collect();
    assert_eq!(
        late, expected,
        "after the opening, arrivals queue FIFO behind the pre-queue"
    );
}

/// Admissions per second of Redis time (a pass's expiry less its lifetime): never above
/// the rate in any second, and within ±10 % of it over the first 10 whole seconds.
fn the_rate_holds_in_every_second(states: &[Value]) {
    let mut per_second: BTreeMap<i64, u64> = BTreeMap::new();
    for state in states {
        *per_second
            .entry(admitted_ms(state, PASS_TTL).div_euclid(1000))
            .or_default() += 1;
    }
    println!("admissions per second: {per_second:?}");
    assert!(
        per_second.values().all(|count| *count <= RATE),
        "no second admits more than {RATE}: {per_second:?}"
    );
    let first = *per_second.keys().next().unwrap();
    // The first second may be partial (the opening falls inside it): start after it.
    let ten: u64 = (first + 1..first + 11)
        .map(|s| per_second.get(&s).copied().unwrap_or(0))
        .sum();
    let (low, high) = (RATE * 10 * 9 / 10, RATE * 10 * 11 / 10);
    println!("admitted over 10 s: {ten} (rate {RATE}/s)");
    assert!(
        (low..=high).contains(&ten),
        "{ten} admitted in 10 s, not {low}..={high}"
    );
}

/// Waits (at most 10 s) until every issuer has let users in: they share the work.
async fn every_issuer_admits(issuers: &[Process; 3], campaign: &str) {
    let name = format!("firstcome_waiting_room_admissions_total{{campaign=\"{campaign}\"}}");
    for issuer in issuers {
        wait_until(
            "admissions by every issuer",
            Duration::from_secs(10),
            || async {
                match sample(&issuer.metrics().await, &name) {
                    0 => Err(format!("{} let nobody in", issuer.base)),
                    admitted => {
                        println!("{} admitted {admitted} so far", issuer.base);
                        Ok(())
                    }
                }
            },
        )
        .await;
    }
}

/// 400 admitted users apply with their passes over the issuers: exactly 300
/// coupons (the limit), and the end-to-end invariants hold.
async fn passes_admit_up_to_the_limit(
    services: &Services,
    client: &reqwest::Client,
    bases: &[&str],
    campaign: &str,
    users: &[String],
    states: &[Value],
) {
    let answers: Vec<Answer> =
        futures::stream::iter(users.iter().zip(states).take(400).enumerate())
            .map(|(i, (user, state))| async move {
                let pass = state["pass"].as_str();
                let (status, body) =
                    apply_with(client, bases[i % bases.len()], campaign, user, pass).await;
                Answer::new(user.clone(), status, body)
            })
            .buffer_unordered(IN_FLIGHT)
            .collect()
            .await;
    let outcomes = tally(&answers);
    assert_eq!(outcomes.get(&Outcome::Admitted), Some(&300), "{outcomes:?}");
    assert_eq!(outcomes.get(&Outcome::SoldOut), Some(&100), "{outcomes:?}");
    assert_invariants(services, campaign, 300, &answers).await;
}

/// Once sold out, nobody is let in any more and a waiting ticket reads `sold_out`.
async fn waiting_tickets_read_sold_out(client: &reqwest::Client, bases: &[&str], campaign: &str) {
    let joined = join(client, bases[0], campaign, "after-the-sale").await;
    assert_eq!(joined["state"], "sold_out", "{joined}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ticket = joined["ticket"].as_str().unwrap();
    assert_eq!(
        poll(client, bases[1], campaign, ticket).await["state"],
        "sold_out"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_tickets_and_expired_passes_lapse_and_bad_passes_are_refused() {
    let services = Services::from_env();
    let campaign = unique_name("room-lapse");
    // One pass at a time, living 10 s; a ticket lives 5 s unpolled.
    let room = json!({
        "admissionRate": 10,
        "maxActive": 1,
        "passTtlSeconds": 10,
        "ticketTimeoutSeconds": 5,
    });
    let files = room_files(&campaign, None, room);
    let issuer = start_issuer(&services, &files).await;
    let (base, client) = (issuer.base.as_str(), reqwest::Client::new());

    let first = join(&client, base, &campaign, "first").await;
    let first_ticket = first["ticket"].as_str().unwrap().to_string();
    let first_state = wait_for_state(&client, base, &campaign, &first_ticket, "admitted").await;
    let first_pass = first_state["pass"].as_str().unwrap().to_string();
    let kept = join(&client, base, &campaign, "kept").await;
    let kept_ticket = kept["ticket"].as_str().unwrap().to_string();
    let abandoned = join(&client, base, &campaign, "abandoned").await;
    assert_eq!(
        (kept["position"].as_u64(), abandoned["position"].as_u64()),
        (Some(1), Some(2)),
        "FIFO behind the one active pass"
    );

    // "kept" is polled every second, "abandoned" never: past the 5 s timeout only
    // "abandoned" lost its place. The active pass holds everyone else back meanwhile.
    for _ in 0..7 {
        assert_eq!(
            poll(&client, base, &campaign, &kept_ticket).await["state"],
            "waiting"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let dropped = poll(
        &client,
        base,
        &campaign,
        abandoned["ticket"].as_str().unwrap(),
    )
    .await;
    assert_eq!(dropped["state"], "expired", "{dropped}");

    bad_passes_are_refused(&client, &issuer, &campaign, &first_pass).await;

    // The first pass expires after 10 s: it no longer admits, and "kept" is let in.
    let kept_state = wait_for_state(&client, base, &campaign, &kept_ticket, "admitted").await;
    let expired = apply_with(&client, base, &campaign, "first", Some(&first_pass)).await;
    assert_eq!(
        (expired.0, expired.1["reason"].as_str()),
        (StatusCode::FORBIDDEN, Some("pass_expired"))
    );
    assert_eq!(
        poll(&client, base, &campaign, &first_ticket).await["state"],
        "expired"
    );
    let pass = kept_state["pass"].as_str();
    let (status, body) = apply_with(&client, base, &campaign, "kept", pass).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    let unknown = (client.get(format!(
        "{base}/v1/campaigns/{campaign}/queue/{}",
        "A".repeat(22)
    )))
    .send()
    .await
    .unwrap();
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    let body: Value = unknown.json().await.unwrap();
    assert_eq!(body["reason"], "unknown_ticket");
}

/// Missing, forged and other users' passes: each 403 with its reason, nothing admitted.
async fn bad_passes_are_refused(
    client: &reqwest::Client,
    issuer: &Process,
    campaign: &str,
    pass: &str,
) {
    let base = issuer.base.as_str();
    let (expires, rest) = pass.split_once('.').unwrap();
    let later = format!("{}.{rest}", expires.parse::<u64>().unwrap() + 60_000);
    // A character inside the mac (the last one also carries padding bits).
    let mut flipped = pass.to_string();
    let at = flipped.len() - 10;
    let other = if &flipped[at..=at] == "A" { "B" } else { "A" };
    flipped.replace_range(at..=at, other);
    let cases = [
        ("first", None, "pass_missing"),
        ("first", Some(later.as_str()), "pass_invalid"),
        ("first", Some(flipped.as_str()), "pass_invalid"),
        ("first", Some("not-a-pass"), "pass_invalid"),
        ("someone-else", Some(pass), "pass_other_user"),
    ];
    for (user, presented, reason) in cases {
        let (status, body) = apply_with(client, base, campaign, user, presented).await;
        assert_eq!(
            (status, body["reason"].as_str()),
            (StatusCode::FORBIDDEN, Some(reason)),
            "{user} with {presented:?}: {body}"
        );
    }
    let summary = issuer.summary(campaign).await;
    assert_eq!(summary["admitted"], 0, "no refused pass admitted anyone");
}

/// Polls `ticket` (which keeps it alive) until it reads `state`, at most 30 s.
async fn wait_for_state(
    client: &reqwest::Client,
    base: &str,
    campaign: &str,
    ticket: &str,
    state: &str,
) -> Value {
    wait_until(
        &format!("ticket {ticket} {state}"),
        Duration::from_secs(30),
        || async {
            let polled = poll(client, base, campaign, ticket).await;
            if polled["state"] == state {
                Ok(polled)
            } else {
                Err(polled.to_string())
            }
        },
    )
    .await
}

const GATEWAY_SECRET: &str = "the gateway's shared secret";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_identity_on_users_join_poll_and_apply_as_themselves_only() {
    let services = Services::from_env();
    let campaign = unique_name("room-identity");
    let dir = temp_dir("waiting-room-identity");
    let gateway_secret = dir.join("gateway-secret");
    std::fs::write(&gateway_secret, GATEWAY_SECRET).unwrap();
    let identity = json!({ "identity": { "mode": "header", "header": {
        "userHeader": "x-user", "secretHeader": "x-gateway-secret", "secretFile": gateway_secret,
    } } });
    let room = json!({ "admissionRate": 50 });
    let files = room_files_in(&dir, &campaign, None, room, identity);
    let issuer = start_issuer(&services, &files).await;
    let (base, client) = (issuer.base.as_str(), reqwest::Client::new());
    let as_user = |request: reqwest::RequestBuilder, user: &str| {
        request
            .header("x-user", user)
            .header("x-gateway-secret", GATEWAY_SECRET)
    };
    let queue = format!("{base}/v1/campaigns/{campaign}/queue");

    let anonymous = client.post(&queue).json(&json!({})).send().await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    let posing = as_user(client.post(&queue), "mallory").json(&json!({ "userId": "alice" }));
    let posing = posing.send().await.unwrap();
    assert_eq!(
        posing.status(),
        StatusCode::FORBIDDEN,
        "nobody joins as someone else"
    );
    let joined = as_user(client.post(&queue), "alice")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(joined.status(), StatusCode::CREATED);
    let joined: Value = joined.json().await.unwrap();
    assert_eq!(joined["userId"], "alice");
    let ticket_url = format!("{queue}/{}", joined["ticket"].as_str().unwrap());

    let peeked = as_user(client.get(&ticket_url), "mallory")
        .send()
        .await
        .unwrap();
    assert_eq!(
        peeked.status(),
        StatusCode::FORBIDDEN,
        "only alice reads her ticket"
    );
    let pass = wait_until("alice admitted", Duration::from_secs(30), || async {
        let polled = as_user(client.get(&ticket_url), "alice")
            .send()
            .await
            .unwrap();
        let polled: Value = polled.json().await.unwrap();
        polled["pass"].as_str().map(str::to_string).ok_or(polled)
    })
    .await;

    let apply = format!("{base}/v1/campaigns/{campaign}/applications");
    let stolen = as_user(client.post(&apply), "mallory").header(PASS_HEADER, &pass);
    let stolen = stolen.json(&json!({})).send().await.unwrap();
    assert_eq!(stolen.status(), StatusCode::FORBIDDEN);
    let stolen: Value = stolen.json().await.unwrap();
    assert_eq!(
        stolen["reason"], "pass_other_user",
        "a pass is worthless to anyone else"
    );
    let own = as_user(client.post(&apply), "alice").header(PASS_HEADER, &pass);
    let own = own.json(&json!({})).send().await.unwrap();
    assert_eq!(own.status(), StatusCode::CREATED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_tickets_outlive_a_gap_in_the_admission_runs() {
    let services = Services::from_env();
    let campaign = unique_name("room-gap");
    // One pass at a time, held for a minute: "kept" waits behind it.
    let room = json!({
        "admissionRate": 10,
        "maxActive": 1,
        "passTtlSeconds": 60,
        "ticketTimeoutSeconds": 5,
    });
    let files = room_files(&campaign, None, room);
    let mut issuer = start_issuer(&services, &files).await;
    let client = reqwest::Client::new();
    let first = join(&client, &issuer.base, &campaign, "first").await;
    let first = first["ticket"].as_str().unwrap().to_string();
    wait_for_state(&client, &issuer.base, &campaign, &first, "admitted").await;
    let kept = join(&client, &issuer.base, &campaign, "kept").await;
    assert_eq!(kept["position"], 1, "{kept}");

    // No issuer runs for longer than the ticket timeout: nobody can poll, so nobody
    // abandoned anything. The next issuer's runs keep "kept" in line.
    issuer.kill();
    tokio::time::sleep(Duration::from_secs(7)).await;
    let issuer = start_issuer(&services, &files).await;
    let ticket = kept["ticket"].as_str().unwrap();
    let after = poll(&client, &issuer.base, &campaign, ticket).await;
    assert_eq!(
        (after["state"].as_str(), after["position"].as_u64()),
        (Some("waiting"), Some(1)),
        "{after}"
    );
}
