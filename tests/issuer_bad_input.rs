//! Every class of invalid request gets its 4xx and a JSON reason, and admits nobody —
//! also what the HTTP parser refuses, and credentials sent twice.

use firstcome_e2e::issuer::*;
use firstcome_e2e::process::Process;
use firstcome_e2e::tokens::{AUDIENCE, ISSUER, SIGNER, in_five_minutes, keys_dir, token};
use reqwest::StatusCode;
use reqwest::header::AUTHORIZATION;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn send(request: reqwest::RequestBuilder) -> (StatusCode, Value, Option<String>) {
    let response = request.send().await.unwrap();
    let status = response.status();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    (
        status,
        response.json().await.expect("JSON body"),
        retry_after,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_requests_get_4xx_with_a_reason_and_admit_nobody() {
    let dir = temp_dir("firstcome-bad-input");
    let file = dir.join("campaigns.json");
    std::fs::write(
        &file,
        r#"{"campaigns": [
            {"name": "open", "limit": 10, "topic": "t-open"},
            {"name": "later", "limit": 10, "topic": "t-later", "opensAt": "2999-01-01T00:00:00Z"},
            {"name": "over", "limit": 10, "topic": "t-over", "closesAt": "2000-01-01T00:00:00Z"}
        ]}"#,
    )
    .unwrap();
    let issuer = start_standalone(&dir, &["--campaigns-file", file.to_str().unwrap()]).await;
    let client = reqwest::Client::new();
    let url = |campaign: &str| format!("{}/v1/campaigns/{campaign}/applications", issuer.base);
    let json_post = |campaign: &str, body: String| {
        client
            .post(url(campaign))
            .header("content-type", "application/json")
            .body(body)
    };

    let cases: Vec<(&str, reqwest::RequestBuilder, StatusCode, &str)> = vec![
        (
            "empty user id",
            json_post("open", r#"{"userId":""}"#.into()),
            StatusCode::BAD_REQUEST,
            "invalid_user_id",
        ),
        (
            "129 characters",
            json_post("open", format!(r#"{{"userId":"{}"}}"#, "x".repeat(129))),
            StatusCode::BAD_REQUEST,
            "invalid_user_id",
        ),
        (
            "a space",
            json_post("open", r#"{"userId":"a b"}"#.into()),
            StatusCode::BAD_REQUEST,
            "invalid_user_id",
        ),
        (
            "a control character",
            json_post("open", r#"{"userId":"a\u0007"}"#.into()),
            StatusCode::BAD_REQUEST,
            "invalid_user_id",
        ),
        (
            "broken JSON",
            json_post("open", r#"{"userId":"#.into()),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            "a fraction",
            json_post("open", r#"{"userId":1.5}"#.into()),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "an exponent",
            json_post("open", r#"{"userId":1e3}"#.into()),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "a negative number",
            json_post("open", r#"{"userId":-1}"#.into()),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "a boolean",
            json_post("open", r#"{"userId":true}"#.into()),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "missing field",
            json_post("open", "{}".into()),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "unknown field",
            json_post("open", r#"{"userId":"a","x":1}"#.into()),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            "wrong content type",
            client
                .post(url("open"))
                .header("content-type", "text/plain")
                .body(r#"{"userId":"a"}"#),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            "no content type",
            client.post(url("open")).body(r#"{"userId":"a"}"#),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            "oversized body",
            json_post(
                "open",
                format!(r#"{{"userId":"a","pad":"{}"}}"#, "x".repeat(10_000)),
            ),
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
        ),
        (
            "unknown campaign",
            json_post("nope", r#"{"userId":"a"}"#.into()),
            StatusCode::NOT_FOUND,
            "unknown_campaign",
        ),
        (
            "not open yet",
            json_post("later", r#"{"userId":"a"}"#.into()),
            StatusCode::TOO_EARLY,
            "campaign_not_open",
        ),
        (
            "closed",
            json_post("over", r#"{"userId":"a"}"#.into()),
            StatusCode::FORBIDDEN,
            "campaign_closed",
        ),
        (
            "wrong method",
            client
                .put(url("open"))
                .json(&serde_json::json!({"userId": "a"})),
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
        (
            "unknown path",
            client.get(format!("{}/v2/nothing", issuer.base)),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "invalid user in look-up",
            client.get(format!(
                "{}/v1/campaigns/open/applications/a%20b",
                issuer.base
            )),
            StatusCode::BAD_REQUEST,
            "invalid_user_id",
        ),
    ];
    for (what, request, want_status, want_reason) in cases {
        let (status, body, retry_after) = send(request).await;
        assert_eq!(status, want_status, "{what}: {body}");
        assert_eq!(body["reason"], want_reason, "{what}: {body}");
        assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{what}: {body}"
        );
        if want_reason == "campaign_not_open" {
            assert!(retry_after.is_some(), "not open tells when to come back");
        }
    }

    for campaign in ["open", "later", "over"] {
        let (_, summary) = issuer.get(&format!("/v1/campaigns/{campaign}")).await;
        assert_eq!(summary["admitted"], 0, "{campaign}: nothing admitted");
    }
    let (_, later) = issuer.get("/v1/campaigns/later").await;
    assert_eq!(later["state"], "scheduled");
    let (_, over) = issuer.get("/v1/campaigns/over").await;
    assert_eq!(over["state"], "closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_serves_its_openapi_document_covering_every_route() {
    let dir = temp_dir("firstcome-openapi");
    let issuer = start_standalone(&dir, &[]).await;
    let document = reqwest::get(format!("{}/openapi.yaml", issuer.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let parsed: Result<serde_yaml_ng::Value, _> = serde_yaml_ng::from_str(&document);
    assert!(parsed.is_ok(), "the document is YAML: {parsed:?}");
    for path in [
        "/v1/campaigns/{campaign}/applications:",
        "/v1/campaigns/{campaign}/queue:",
        "/v1/campaigns/{campaign}/queue/{ticket}:",
        "/v1/campaigns/{campaign}/applications/{userId}:",
        "/v1/campaigns/{campaign}:",
        "/v1/campaigns:",
        "/healthz:",
        "/readyz:",
        "/metrics:",
    ] {
        assert!(
            document.contains(&format!("  {path}\n")),
            "{path} is documented"
        );
    }
    for reason in [
        "invalid_user_id",
        "sold_out",
        "already_applied",
        "campaign_not_open",
        "admission_unconfirmed",
        "outcome_unknown",
        "pass_missing",
        "pass_invalid",
        "pass_other_user",
        "pass_expired",
        "queue_not_open",
        "unknown_ticket",
        "no_waiting_room",
    ] {
        assert!(document.contains(reason), "{reason} is documented");
    }
}

/// A JSON integer id is the user of its decimal string; anything else that is not a
/// string is refused, saying what is expected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_numeric_user_id_is_the_user_of_its_decimal_string() {
    let dir = temp_dir("firstcome-numeric-id");
    let issuer = start_standalone(&dir, &[]).await;
    let client = reqwest::Client::new();
    let url = format!("{}/v1/campaigns/demo/applications", issuer.base);
    let apply = |body: &str| {
        client
            .post(&url)
            .header("content-type", "application/json")
            .body(body.to_string())
    };
    let (status, body, _) = send(apply(r#"{"userId": 1}"#)).await;
    assert_eq!(
        (status, body["reason"].as_str(), body["userId"].as_str()),
        (StatusCode::CREATED, Some("admitted"), Some("1")),
        "{body}"
    );
    let (status, body, _) = send(apply(r#"{"userId": "1"}"#)).await;
    assert_eq!(
        (status, body["reason"].as_str()),
        (StatusCode::CONFLICT, Some("already_applied")),
        "1 and \"1\" are one user: {body}"
    );
    for bad in ["1.5", "1e3", "-1", "true"] {
        let (status, body, _) = send(apply(&format!(r#"{{"userId": {bad}}}"#))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert_eq!(body["reason"], "invalid_request", "{bad}: {body}");
        let message = body["message"].as_str().unwrap();
        assert!(
            message.contains("a string, or a non-negative integer"),
            "{bad}: {message}"
        );
    }
    let lookup = issuer.get("/v1/campaigns/demo/applications/1").await.1;
    assert_eq!(lookup["status"], "issued", "{lookup}");
    assert_eq!(issuer.summary("demo").await["admitted"], 1);
}

const GATEWAY_SECRET: &str = "gateway-shared-secret-for-tests";

/// A standalone issuer with a jwt campaign and a gateway-header campaign.
async fn identity_issuer() -> Process {
    let dir = temp_dir("firstcome-headers");
    let secret = dir.join("gateway-secret");
    std::fs::write(&secret, GATEWAY_SECRET).unwrap();
    let campaigns = json!({ "campaigns": [
        { "name": "jwt", "limit": 10, "topic": "t-jwt",
          "identity": { "mode": "jwt", "jwt": {
              "issuer": ISSUER, "audience": AUDIENCE, "keysDir": keys_dir() } } },
        { "name": "gateway", "limit": 10, "topic": "t-gateway",
          "identity": { "mode": "header", "header": {
              "userHeader": "x-user", "secretHeader": "x-gateway-secret",
              "secretFile": secret } } },
    ]});
    let file = dir.join("campaigns.json");
    std::fs::write(&file, campaigns.to_string()).unwrap();
    start_standalone(&dir, &["--campaigns-file", file.to_str().unwrap()]).await
}

/// Raw HTTP/1.1 over TCP, with bytes no HTTP client library sends: the status, the
/// content type and the body of the answer.
async fn raw(issuer: &Process, head: &[u8]) -> (u16, Option<String>, Value) {
    let address = issuer.base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream.write_all(head).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8(answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").expect("a head and a body");
    let status = head[9..12].parse().unwrap();
    let content_type = (head.lines()).find_map(|line| {
        line.to_ascii_lowercase()
            .strip_prefix("content-type: ")
            .map(String::from)
    });
    (
        status,
        content_type,
        serde_json::from_str(body).unwrap_or_default(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_and_repeated_credentials_get_json_reasons_and_admit_nobody() {
    let issuer = identity_issuer().await;
    let url = |campaign: &str| format!("{}/v1/campaigns/{campaign}/applications", issuer.base);

    // A control character in Authorization: the HTTP parser refuses the request; the
    // answer is still the API's JSON.
    let apply = "POST /v1/campaigns/jwt/applications HTTP/1.1\r\nhost: issuer\r\n\
        content-type: application/json\r\ncontent-length: 2\r\n";
    let control = format!("{apply}authorization: Bearer abc\x01def\r\n\r\n{{}}");
    let (status, content_type, body) = raw(&issuer, control.as_bytes()).await;
    assert_eq!(
        (status, content_type.as_deref(), body["reason"].as_str()),
        (400, Some("application/json"), Some("invalid_request")),
        "{body}"
    );
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("control character"))
    );

    let client = reqwest::Client::new();
    let alice = format!("Bearer {}", token(SIGNER, "alice", in_five_minutes()));
    let mallory = format!("Bearer {}", token(SIGNER, "mallory", in_five_minutes()));
    let non_ascii =
        reqwest::header::HeaderValue::from_bytes("Bearer abc\u{e9}def".as_bytes()).unwrap();
    let cases = [
        (
            "a bearer token that is not ASCII",
            client.post(url("jwt")).header(AUTHORIZATION, non_ascii),
            StatusCode::UNAUTHORIZED,
            "invalid_token",
        ),
        (
            "Authorization twice",
            (client.post(url("jwt")))
                .header(AUTHORIZATION, &alice)
                .header(AUTHORIZATION, &mallory),
            StatusCode::BAD_REQUEST,
            "duplicate_header",
        ),
        (
            "the user header twice",
            (client.post(url("gateway")))
                .header("x-gateway-secret", GATEWAY_SECRET)
                .header("x-user", "alice")
                .header("x-user", "mallory"),
            StatusCode::BAD_REQUEST,
            "duplicate_header",
        ),
        (
            "the secret header twice",
            (client.post(url("gateway")))
                .header("x-gateway-secret", GATEWAY_SECRET)
                .header("x-gateway-secret", GATEWAY_SECRET)
                .header("x-user", "alice"),
            StatusCode::BAD_REQUEST,
            "duplicate_header",
        ),
    ];
    for (what, request, want_status, want_reason) in cases {
        let (status, body, _) = send(request.json(&json!({}))).await;
        assert_eq!(
            (status, body["reason"].as_str()),
            (want_status, Some(want_reason)),
            "{what}: {body}"
        );
        assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{what}"
        );
    }
    for campaign in ["jwt", "gateway"] {
        assert_eq!(issuer.summary(campaign).await["admitted"], 0, "{campaign}");
    }

    // Each credential once: admitted.
    let once = client.post(url("jwt")).header(AUTHORIZATION, &alice);
    let (status, body, _) = send(once.json(&json!({}))).await;
    assert_eq!(
        (status, body["userId"].as_str()),
        (StatusCode::CREATED, Some("alice"))
    );
    let gateway = (client.post(url("gateway")))
        .header("x-gateway-secret", GATEWAY_SECRET)
        .header("x-user", "bob");
    let (status, body, _) = send(gateway.json(&json!({}))).await;
    assert_eq!(
        (status, body["userId"].as_str()),
        (StatusCode::CREATED, Some("bob"))
    );
}
