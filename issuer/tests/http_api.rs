//! Every answer of the HTTP API, driven in process through the router of a standalone
//! issuer (its SQLite ledger in a temporary directory): one test per status and reason
//! that docs/api.md lists, except the two 503s, which need the distributed backends
//! (tests/issuer_in_process.rs).
//!
//! There is no socket, so the peer address comes from `MockConnectInfo` (127.0.0.1), or
//! from a `ConnectInfo` a request carries itself ([`from`]).

use std::net::SocketAddr;

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::ConnectInfo;
use axum::extract::connect_info::MockConnectInfo;
use axum::http::{Method, Request, StatusCode, header};
use clap::Parser;
use firstcome_issuer::cli::Cli;
use firstcome_issuer::http::OPENAPI_YAML;
use firstcome_issuer::wiring::{self, Wiring};
use serde_json::{Value, json};
use tower::ServiceExt;

/// A standalone issuer serving `open` (3 coupons, 2 per user), `later` (opens in an
/// hour), `over` (closed an hour ago) and `limited` (100 coupons; 1/s, burst 2 per
/// client and per user).
async fn issuer(dir: &tempfile::TempDir) -> Wiring {
    issuer_with(dir, &[]).await
}

async fn issuer_with(dir: &tempfile::TempDir, extra: &[&str]) -> Wiring {
    let now = chrono::Utc::now();
    let hour = chrono::Duration::hours(1);
    let bucket = json!({ "perSecond": 1, "burst": 2 });
    let campaigns = json!({ "campaigns": [
        { "name": "open", "limit": 3, "perUserLimit": 2, "topic": "t-open" },
        { "name": "later", "limit": 1, "opensAt": now + hour, "topic": "t-later" },
        { "name": "over", "limit": 1, "closesAt": now - hour, "topic": "t-over" },
        { "name": "limited", "limit": 100, "topic": "t-limited",
          "rateLimits": { "perClient": bucket, "perUser": bucket } },
    ]});
    let file = dir.path().join("campaigns.json");
    std::fs::write(&file, campaigns.to_string()).unwrap();
    let data = dir.path().join("data");
    let mut argv = vec![
        "firstcome-issuer",
        "--campaigns-file",
        file.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
    ];
    argv.extend_from_slice(extra);
    wiring::build(&Cli::try_parse_from(argv).unwrap().serve)
        .await
        .expect("a standalone issuer builds")
}

/// The API router of `wiring`, every request from 127.0.0.1 unless it says otherwise.
fn app(wiring: &Wiring) -> Router {
    let loopback = SocketAddr::from(([127, 0, 0, 1], 40000));
    wiring.api_router().layer(MockConnectInfo(loopback))
}

/// `request` as if it came from `peer`.
fn from(peer: &str, mut request: Request<Body>) -> Request<Body> {
    let peer: SocketAddr = format!("{peer}:40000").parse().unwrap();
    request.extensions_mut().insert(ConnectInfo(peer));
    request
}

struct Answer {
    status: StatusCode,
    retry_after: Option<String>,
    body: Value,
}

async fn send(app: &Router, request: Request<Body>) -> Answer {
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let retry_after = response
        .headers()
        .get(header::RETRY_AFTER)
        .map(|v| v.to_str().unwrap().to_string());
    let bytes = to_bytes(response.into_body(), 1 << 20).await.unwrap();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Answer {
        status,
        retry_after,
        body,
    }
}

fn post(uri: &str, content_type: &str, body: impl Into<Body>) -> Request<Body> {
    Request::builder()
        .method(Method::POST)
        .uri(uri)
        .header(header::CONTENT_TYPE, content_type)
        .body(body.into())
        .unwrap()
}

fn get(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).unwrap()
}

async fn apply(app: &Router, campaign: &str, user: &str) -> Answer {
    send(app, apply_request(campaign, user)).await
}

fn apply_request(campaign: &str, user: &str) -> Request<Body> {
    let body = json!({ "userId": user }).to_string();
    let uri = format!("/v1/campaigns/{campaign}/applications");
    post(&uri, "application/json", body)
}

/// What the operational router of `wiring` serves on /metrics.
async fn metrics(wiring: &Wiring) -> String {
    let response = wiring.ops_router().oneshot(get("/metrics")).await.unwrap();
    let text = to_bytes(response.into_body(), 1 << 20).await.unwrap();
    String::from_utf8(text.to_vec()).unwrap()
}

/// The answer's `reason`; a client error's must be one the served OpenAPI document lists.
fn reason(answer: &Answer) -> &str {
    let reason = answer.body["reason"].as_str().unwrap_or("<no reason>");
    if answer.status.is_client_error() {
        assert!(
            documented_reasons().contains(&reason.to_string()),
            "{reason} is not in the OpenAPI document's Error.reason"
        );
        assert_documented(&answer.body, "Error");
    }
    reason
}

/// The OpenAPI document's schema `name` (under `components.schemas`).
fn schema(name: &str) -> serde_yaml_ng::Value {
    let document: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(OPENAPI_YAML).expect("the OpenAPI document is YAML");
    document["components"]["schemas"][name].clone()
}

/// The reasons the OpenAPI document's `Error` schema lists.
fn documented_reasons() -> Vec<String> {
    let reasons = &schema("Error")["properties"]["reason"]["enum"];
    serde_yaml_ng::from_value(reasons.clone()).expect("Error.reason is a list of strings")
}

/// Every field of `body` is a property of the document's schema `name`, which allows no
/// others. (The summary's `drift` once was not.)
fn assert_documented(body: &Value, name: &str) {
    let schema = schema(name);
    assert_eq!(
        schema["additionalProperties"],
        serde_yaml_ng::Value::Bool(false)
    );
    for field in body.as_object().expect("a JSON object").keys() {
        assert!(
            !schema["properties"][field.as_str()].is_null(),
            "{field} is not a property of {name}"
        );
    }
}

#[tokio::test]
async fn admitted_already_applied_and_sold_out() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(&issuer(&dir).await);
    let first = apply(&app, "open", "alice").await;
    assert_eq!(
        (first.status, reason(&first)),
        (StatusCode::CREATED, "admitted")
    );
    assert_eq!(first.body["sequence"], 1);
    assert_eq!(first.body["ordinal"], 1);
    let second = apply(&app, "open", "alice").await;
    assert_eq!(
        (
            second.body["sequence"].as_u64(),
            second.body["ordinal"].as_u64()
        ),
        (Some(2), Some(2))
    );
    let third = apply(&app, "open", "alice").await;
    assert_eq!(
        (third.status, reason(&third)),
        (StatusCode::CONFLICT, "already_applied")
    );
    assert_eq!(third.body["sequences"], json!([1, 2]));
    assert_eq!(apply(&app, "open", "bob").await.status, StatusCode::CREATED);
    let late = apply(&app, "open", "carol").await;
    assert_eq!((late.status, reason(&late)), (StatusCode::GONE, "sold_out"));
    assert_eq!(late.body["campaign"], "open");
}

#[tokio::test]
async fn the_time_window_and_unknown_campaigns() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(&issuer(&dir).await);
    let early = apply(&app, "later", "alice").await;
    assert_eq!(
        (early.status, reason(&early)),
        (StatusCode::TOO_EARLY, "campaign_not_open")
    );
    let wait: u64 = early
        .retry_after
        .expect("Retry-After until opensAt")
        .parse()
        .unwrap();
    assert!((3500..=3600).contains(&wait), "{wait}");
    let closed = apply(&app, "over", "alice").await;
    assert_eq!(
        (closed.status, reason(&closed)),
        (StatusCode::FORBIDDEN, "campaign_closed")
    );
    let unknown = apply(&app, "nope", "alice").await;
    assert_eq!(
        (unknown.status, reason(&unknown)),
        (StatusCode::NOT_FOUND, "unknown_campaign")
    );
}

#[tokio::test]
async fn bad_input_gets_its_4xx_and_admits_nobody() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(&issuer(&dir).await);
    let uri = "/v1/campaigns/open/applications";
    let oversized = format!(r#"{{"userId":"{}"}}"#, "a".repeat(5000));
    let cases: Vec<(Request<Body>, StatusCode, &str)> = vec![
        (
            post(uri, "application/json", r#"{"userId":""}"#),
            StatusCode::BAD_REQUEST,
            "invalid_user_id",
        ),
        (
            post(uri, "application/json", r#"{"userId":"a b"}"#),
            StatusCode::BAD_REQUEST,
            "invalid_user_id",
        ),
        (
            post(uri, "application/json", "{not json"),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            post(uri, "application/json", r#"{"user":"x"}"#),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            post(uri, "application/json", r#"["x"]"#),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            post(uri, "application/json", oversized),
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
        ),
        (
            post(uri, "text/plain", r#"{"userId":"x"}"#),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (get("/v1/nothing-here"), StatusCode::NOT_FOUND, "not_found"),
        (
            get(uri),
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
    ];
    for (request, status, want) in cases {
        let answer = send(&app, request).await;
        assert_eq!((answer.status, reason(&answer)), (status, want));
        assert!(answer.body["message"].is_string(), "{want} has a message");
    }
    let summary = send(&app, get("/v1/campaigns/open")).await;
    assert_eq!(summary.body["admitted"], 0, "bad input admitted nobody");
}

#[tokio::test]
async fn look_up_and_campaign_summaries() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(&issuer(&dir).await);
    apply(&app, "open", "alice").await;
    let alice = send(&app, get("/v1/campaigns/open/applications/alice")).await;
    assert_eq!(
        (alice.status, alice.body["status"].as_str()),
        (StatusCode::OK, Some("issued"))
    );
    assert_eq!(alice.body["coupons"][0]["sequence"], 1);
    assert!(alice.body["coupons"][0]["couponId"].is_string());
    let nobody = send(&app, get("/v1/campaigns/open/applications/bob")).await;
    assert_eq!(nobody.body["status"], "not_applied");
    let one = send(&app, get("/v1/campaigns/open")).await;
    assert_eq!(one.status, StatusCode::OK);
    assert_eq!(
        (
            one.body["admitted"].as_u64(),
            one.body["remaining"].as_u64()
        ),
        (Some(1), Some(2))
    );
    assert_eq!(one.body["state"], "open");
    assert_documented(&one.body, "Summary");
    assert_documented(&alice.body, "Application");
    let all = send(&app, get("/v1/campaigns")).await;
    let states: Vec<&str> = all.body["campaigns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["state"].as_str().unwrap())
        .collect();
    assert_eq!(
        states,
        ["scheduled", "open", "open", "closed"],
        "sorted by name: later, limited, open, over"
    );
}

/// The served document is what clients and schemathesis (tests/openapi_conformance.rs)
/// read: it must parse, and list each reason once. (A merge once left a second, stray
/// line of reasons after the list: the document no longer parsed, and rate_limited was
/// not in it.)
#[tokio::test]
async fn the_served_openapi_document_parses_and_lists_each_reason_once() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(&issuer(&dir).await);
    let response = app.oneshot(get("/openapi.yaml")).await.unwrap();
    let served = to_bytes(response.into_body(), 1 << 20).await.unwrap();
    assert_eq!(served, OPENAPI_YAML.as_bytes());
    let reasons = documented_reasons();
    let mut unique = reasons.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), reasons.len(), "{reasons:?}");
    assert!(reasons.contains(&"rate_limited".to_string()));
}

#[tokio::test]
async fn operational_routes_apart_from_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let wiring = issuer(&dir).await;
    let (app, ops) = (app(&wiring), wiring.ops_router());
    assert_eq!(send(&ops, get("/healthz")).await.body["status"], "ok");
    let ready = send(&ops, get("/readyz")).await;
    assert_eq!(
        (ready.status, ready.body["status"].as_str()),
        (StatusCode::OK, Some("ready"))
    );
    apply(&app, "open", "alice").await;
    let text = metrics(&wiring).await;
    assert!(
        text.contains(r#"firstcome_applies_total{campaign="open",outcome="admitted"} 1"#),
        "{text}"
    );
    let openapi = app.clone().oneshot(get("/openapi.yaml")).await.unwrap();
    assert_eq!(openapi.headers()[header::CONTENT_TYPE], "application/yaml");
    for path in ["/healthz", "/readyz", "/metrics"] {
        let public = send(&app, get(path)).await;
        assert_eq!(
            (public.status, reason(&public)),
            (StatusCode::NOT_FOUND, "not_found")
        );
    }
    assert_eq!(
        send(&ops, get("/openapi.yaml")).await.status,
        StatusCode::NOT_FOUND
    );
    wiring.readiness.start_draining();
    let draining = send(&ops, get("/readyz")).await;
    assert_eq!(
        (draining.status, reason(&draining)),
        (StatusCode::SERVICE_UNAVAILABLE, "not_ready")
    );
}

#[tokio::test]
async fn a_client_over_its_rate_gets_429_while_another_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let wiring = issuer(&dir).await;
    let app = app(&wiring);
    for user in ["u1", "u2"] {
        let answer = send(&app, from("10.0.0.1", apply_request("limited", user))).await;
        assert_eq!(answer.status, StatusCode::CREATED);
    }
    let limited = send(&app, from("10.0.0.1", apply_request("limited", "u3"))).await;
    assert_eq!(
        (limited.status, reason(&limited)),
        (StatusCode::TOO_MANY_REQUESTS, "rate_limited")
    );
    assert_eq!(limited.body["scope"], "client");
    assert!(limited.body["message"].is_string());
    assert_eq!(
        limited.retry_after.as_deref(),
        Some("1"),
        "one token per second"
    );
    let other = send(&app, from("10.0.0.2", apply_request("limited", "u3"))).await;
    assert_eq!(
        other.status,
        StatusCode::CREATED,
        "another address has its own bucket"
    );

    let summary = send(&app, get("/v1/campaigns/limited")).await;
    assert_eq!(
        summary.body["admitted"], 3,
        "the limited apply admitted nobody"
    );
    let text = metrics(&wiring).await;
    for line in [
        r#"firstcome_rate_limited_total{campaign="limited",scope="client"} 1"#,
        r#"firstcome_rate_limited_total{campaign="limited",scope="user"} 0"#,
    ] {
        assert!(text.contains(line), "{line}\n{text}");
    }
}

#[tokio::test]
async fn a_user_over_its_rate_gets_429_from_any_address() {
    let dir = tempfile::tempdir().unwrap();
    let wiring = issuer(&dir).await;
    let app = app(&wiring);
    let first = send(&app, from("10.0.0.1", apply_request("limited", "greedy"))).await;
    assert_eq!(first.status, StatusCode::CREATED);
    let second = send(&app, from("10.0.0.2", apply_request("limited", "greedy"))).await;
    assert_eq!(
        reason(&second),
        "already_applied",
        "within the user's burst"
    );
    let third = send(&app, from("10.0.0.3", apply_request("limited", "greedy"))).await;
    assert_eq!(
        (third.status, reason(&third), third.body["scope"].as_str()),
        (StatusCode::TOO_MANY_REQUESTS, "rate_limited", Some("user"))
    );
    assert!(third.retry_after.is_some());
    let text = metrics(&wiring).await;
    let line = r#"firstcome_rate_limited_total{campaign="limited",scope="user"} 1"#;
    assert!(text.contains(line), "{text}");
}

#[tokio::test]
async fn forwarded_for_counts_only_from_trusted_proxies() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(&issuer_with(&dir, &["--trusted-proxies", "10.0.0.0/8"]).await);
    let behind = |peer: &str, client: &str, user: &str| {
        let mut request = from(peer, apply_request("limited", user));
        let forwarded = format!("{client}, 10.9.9.9").parse().unwrap();
        request.headers_mut().insert("x-forwarded-for", forwarded);
        request
    };
    // Through the proxy, each forwarded client has its own bucket.
    for (client, user) in [
        ("198.51.100.1", "a1"),
        ("198.51.100.1", "a2"),
        ("198.51.100.2", "b1"),
    ] {
        let answer = send(&app, behind("10.0.0.1", client, user)).await;
        assert_eq!(answer.status, StatusCode::CREATED, "{client} {user}");
    }
    let over = send(&app, behind("10.0.0.1", "198.51.100.1", "a3")).await;
    assert_eq!(over.status, StatusCode::TOO_MANY_REQUESTS);
    // From an untrusted peer, a new X-Forwarded-For each time buys nothing.
    let spoofer = |n: u8| behind("203.0.113.7", &format!("192.0.2.{n}"), &format!("s{n}"));
    assert_eq!(send(&app, spoofer(1)).await.status, StatusCode::CREATED);
    assert_eq!(send(&app, spoofer(2)).await.status, StatusCode::CREATED);
    let refused = send(&app, spoofer(3)).await;
    assert_eq!(
        (refused.status, refused.body["scope"].as_str()),
        (StatusCode::TOO_MANY_REQUESTS, Some("client"))
    );
}

#[tokio::test]
async fn a_waiting_room_needs_the_distributed_issuer() {
    let dir = tempfile::tempdir().unwrap();
    let campaigns = json!({ "campaigns": [
        { "name": "room", "limit": 1, "topic": "t-room", "waitingRoom": { "admissionRate": 5 } },
    ]});
    let file = dir.path().join("campaigns.json");
    std::fs::write(&file, campaigns.to_string()).unwrap();
    let data = dir.path().join("data");
    let argv = [
        "firstcome-issuer",
        "--campaigns-file",
        file.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
    ];
    let built = wiring::build(&Cli::try_parse_from(argv).unwrap().serve).await;
    let error = built
        .err()
        .expect("a standalone issuer refuses a waiting room");
    assert!(
        error.to_string().contains("needs the distributed issuer"),
        "{error}"
    );
}

#[tokio::test]
async fn a_campaign_without_a_waiting_room_has_no_queue() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(&issuer(&dir).await);
    let body = json!({ "userId": "alice" }).to_string();
    let joined = send(
        &app,
        post("/v1/campaigns/open/queue", "application/json", body),
    )
    .await;
    let ticket = "A".repeat(22);
    let polled = send(&app, get(&format!("/v1/campaigns/open/queue/{ticket}"))).await;
    for answer in [joined, polled] {
        assert_eq!(
            (answer.status, answer.body["reason"].as_str()),
            (StatusCode::NOT_FOUND, Some("no_waiting_room"))
        );
    }
    let unknown = send(&app, get(&format!("/v1/campaigns/nope/queue/{ticket}"))).await;
    assert_eq!(unknown.body["reason"], "unknown_campaign");
    let plain = apply(&app, "open", "alice").await;
    assert_eq!(plain.status, StatusCode::CREATED, "no room, no pass needed");
}
