//! The served OpenAPI document against a live issuer: schemathesis (from PyPI, pinned in
//! scripts/schemathesis) generates requests from `/openapi.yaml` of a distributed issuer
//! (real Redis, Kafka and PostgreSQL) whose campaign has identity jwt, and every answer
//! must conform to the document: no 5xx, and documented status codes, content types and
//! bodies. Signed with a valid token, without credentials, and with a forged token; the
//! probes and metrics against the operational listener the document puts them on.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use firstcome_e2e::issuer::{start_distributed, temp_dir};
use firstcome_e2e::process::Process;
use firstcome_e2e::tokens::{FORGER, SIGNER, in_five_minutes, jwt_flags, keys_dir, token};
use firstcome_e2e::{Services, unique_name};
use serde_json::Value;

/// No 5xx; status codes, content types, bodies and headers (`Retry-After`,
/// `WWW-Authenticate`) as documented; and a request the document rules out is refused
/// (this found `{"userId": null}` admitted under identity jwt).
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,\
                      response_schema_conformance,response_headers_conformance,negative_data_rejection";
/// The operations the document serves on the operational listener (`--ops-listen`).
const OPS_PATHS: &str = "^/(healthz|readyz|metrics)$";
/// Test cases per operation and phase.
const MAX_EXAMPLES: &str = "50";
/// Seconds one request may take before schemathesis reports it.
const REQUEST_TIMEOUT: &str = "5";
/// One whole run, start to end: past it the run is killed and the test fails.
const RUN_TIMEOUT: Duration = Duration::from_secs(300);

/// One request schemathesis sent and the answer it got, from its HAR report.
#[derive(Debug)]
struct Exchange {
    method: String,
    path: String,
    status: u16,
    reason: Option<String>,
}

/// What one schemathesis run targets.
enum Target<'a> {
    /// The public API, with this `Authorization` header (or none).
    Api { authorization: Option<&'a str> },
    /// Probes and metrics, on the operational listener.
    Ops,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_of_a_live_issuer_conforms_to_its_openapi_document() {
    let services = Services::from_env();
    let campaign = unique_name("conformance");
    let limit = format!("{campaign}:100");
    let keys = keys_dir().display().to_string();
    let identity = jwt_flags(&keys);
    let issuer = start_distributed(
        &services,
        &[&["--campaign", &limit], &identity[..]].concat(),
    )
    .await;
    let user = "conformance-user";
    let signed = format!("Bearer {}", token(SIGNER, user, in_five_minutes()));
    let forged = format!("Bearer {}", token(FORGER, user, in_five_minutes()));

    let authenticated = schemathesis(
        &issuer,
        &campaign,
        Target::Api {
            authorization: Some(&signed),
        },
    )
    .await;
    let admitted = count(&authenticated, |e| e.status == 201);
    assert_eq!(
        admitted, 1,
        "the token's user is admitted once, by the first valid apply"
    );
    assert_eq!(admitted_in_summary(&issuer, &campaign).await, 1);
    assert_eq!(
        holdings(&issuer, &campaign, &signed).await,
        (user.into(), 1)
    );

    let anonymous = schemathesis(
        &issuer,
        &campaign,
        Target::Api {
            authorization: None,
        },
    )
    .await;
    assert_refused(&anonymous, &["missing_credentials", "invalid_token"]);
    assert!(count(&anonymous, |e| reason_is(e, "missing_credentials")) > 0);
    let forgery = schemathesis(
        &issuer,
        &campaign,
        Target::Api {
            authorization: Some(&forged),
        },
    )
    .await;
    assert_refused(&forgery, &["invalid_token"]);
    assert_eq!(
        admitted_in_summary(&issuer, &campaign).await,
        1,
        "nothing admitted without a valid token"
    );

    let ops = schemathesis(&issuer, &campaign, Target::Ops).await;
    let answered: BTreeSet<&str> = (ops.iter())
        .filter(|e| e.method == "GET" && e.status == 200)
        .map(|e| e.path.as_str())
        .collect();
    assert_eq!(
        answered,
        BTreeSet::from(["/healthz", "/metrics", "/readyz"]),
        "each answered 200"
    );
}

/// Runs schemathesis against `issuer`'s served document, the `campaign` path parameter
/// fixed to the served campaign so requests reach past the campaign look-up; fails the
/// test unless it exits 0 (every check passed). Returns what it sent and got.
async fn schemathesis(issuer: &Process, campaign: &str, target: Target<'_>) -> Vec<Exchange> {
    let dir = temp_dir("schemathesis");
    let config = dir.join("schemathesis.toml");
    std::fs::write(&config, format!("[parameters]\ncampaign = {campaign:?}\n")).unwrap();
    let har = dir.join("exchanges.har");
    let mut args: Vec<String> = ["--config-file", &config.display().to_string(), "run"]
        .map(String::from)
        .to_vec();
    args.push(format!("{}/openapi.yaml", issuer.base));
    let (base, paths, authorization) = match target {
        Target::Api { authorization } => (&issuer.base, "--exclude-path-regex", authorization),
        Target::Ops => (&issuer.ops_base, "--include-path-regex", None),
    };
    args.extend(["--url".into(), base.clone(), paths.into(), OPS_PATHS.into()]);
    if let Some(value) = authorization {
        args.extend(["--header".into(), format!("Authorization: {value}")]);
    }
    args.extend(
        [
            "--checks",
            CHECKS,
            "--max-examples",
            MAX_EXAMPLES,
            "--request-timeout",
            REQUEST_TIMEOUT,
            "--no-color",
            "--report",
            "har",
            "--report-har-path",
        ]
        .map(String::from),
    );
    args.push(har.display().to_string());
    run(&dir, &args).await;
    let exchanges = exchanges(&har);
    eprintln!("schemathesis: {}", tally(&exchanges));
    assert!(
        exchanges.iter().all(|e| e.status < 500),
        "no 5xx: {exchanges:?}"
    );
    exchanges
}

/// scripts/schemathesis with `args` in `dir` (where it keeps its state), bounded by
/// [`RUN_TIMEOUT`]; fails the test with its output unless it exits 0.
async fn run(dir: &Path, args: &[String]) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/schemathesis");
    let output = tokio::process::Command::new(script)
        .args(args)
        .current_dir(dir)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(RUN_TIMEOUT, output)
        .await
        .unwrap_or_else(|_| panic!("schemathesis did not finish within {RUN_TIMEOUT:?}"))
        .expect("running scripts/schemathesis");
    assert!(
        output.status.success(),
        "schemathesis found answers that do not conform ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The exchanges of a HAR report.
fn exchanges(har: &Path) -> Vec<Exchange> {
    let report: Value = serde_json::from_slice(&std::fs::read(har).unwrap()).unwrap();
    let entries = report["log"]["entries"].as_array().unwrap();
    entries.iter().map(exchange).collect()
}

fn exchange(entry: &Value) -> Exchange {
    let url = entry["request"]["url"].as_str().unwrap();
    let path = url.splitn(4, '/').nth(3).unwrap_or_default();
    let body = entry["response"]["content"]["text"]
        .as_str()
        .unwrap_or_default();
    let reason = serde_json::from_str::<Value>(body).ok().and_then(|b| {
        let reason = b.get("reason")?.as_str()?;
        Some(reason.to_string())
    });
    Exchange {
        method: entry["request"]["method"].as_str().unwrap().to_string(),
        path: format!("/{path}"),
        status: entry["response"]["status"].as_u64().unwrap() as u16,
        reason,
    }
}

/// Without valid credentials every apply and look-up is refused: 401 with one of
/// `reasons`, or, for an apply, 429 `rate_limited` (the client's bucket is taken before
/// credentials are checked); and schemathesis did send some.
fn assert_refused(exchanges: &[Exchange], reasons: &[&str]) {
    let mut refused = 0;
    for e in exchanges {
        let apply = e.method == "POST" && e.path.ends_with("/applications");
        let look_up = e.method == "GET" && e.path.contains("/applications/");
        if !(apply || look_up) {
            continue;
        }
        let reason = e.reason.as_deref().unwrap_or_default();
        let unauthorized = e.status == 401 && reasons.contains(&reason);
        let limited = apply && e.status == 429 && reason == "rate_limited";
        assert!(
            unauthorized || limited,
            "refused with one of {reasons:?}: {e:?}"
        );
        refused += usize::from(unauthorized);
    }
    assert!(
        refused > 0,
        "applies and look-ups were sent and refused 401"
    );
}

fn count(exchanges: &[Exchange], matches: impl Fn(&Exchange) -> bool) -> usize {
    exchanges.iter().filter(|e| matches(e)).count()
}

fn reason_is(exchange: &Exchange, reason: &str) -> bool {
    exchange.reason.as_deref() == Some(reason)
}

/// "status reason: count" of each kind of answer, for the test's output.
fn tally(exchanges: &[Exchange]) -> String {
    let mut counts: BTreeMap<(u16, &str), usize> = BTreeMap::new();
    for e in exchanges {
        *counts
            .entry((e.status, e.reason.as_deref().unwrap_or("-")))
            .or_default() += 1;
    }
    let parts: Vec<String> = (counts.iter())
        .map(|((status, reason), n)| format!("{status} {reason}: {n}"))
        .collect();
    format!("{} requests; {}", exchanges.len(), parts.join(", "))
}

/// Who the caller of `authorization` is and how many coupons they hold.
async fn holdings(issuer: &Process, campaign: &str, authorization: &str) -> (String, usize) {
    let url = format!("{}/v1/campaigns/{campaign}/applications/me", issuer.base);
    let response = reqwest::Client::new()
        .get(url)
        .header("authorization", authorization)
        .send()
        .await
        .unwrap();
    let mine: Value = response.json().await.unwrap();
    let coupons = mine["coupons"].as_array().map_or(0, Vec::len);
    (mine["userId"].as_str().unwrap_or_default().into(), coupons)
}

async fn admitted_in_summary(issuer: &Process, campaign: &str) -> u64 {
    let (_, summary) = issuer.get(&format!("/v1/campaigns/{campaign}")).await;
    summary["admitted"].as_u64().unwrap()
}
