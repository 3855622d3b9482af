//! Every class of invalid request gets its 4xx and a JSON reason, and admits nobody.

use firstcome_e2e::issuer::*;
use reqwest::StatusCode;
use serde_json::Value;

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
            "a number",
            json_post("open", r#"{"userId":42}"#.into()),
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
