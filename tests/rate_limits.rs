//! Abuse limits against a real distributed issuer process: one client address over its
//! rate is answered 429 while another address is served, nothing is admitted for what
//! was refused, and the issuer's metrics (on its operational listener) count it.
//! Two client addresses on one machine: 127.0.0.1 and 127.0.0.2 are both loopback.

use std::net::IpAddr;

use firstcome_e2e::issuer::start_distributed;
use firstcome_e2e::tokens::{FORGER, SIGNER, in_five_minutes, jwt_flags, keys_dir, token};
use firstcome_e2e::{Services, unique_name};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// An HTTP client whose connections come from `address`.
fn client_from(address: [u8; 4]) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(IpAddr::from(address))
        .build()
        .unwrap()
}

async fn apply(
    client: &reqwest::Client,
    url: &str,
    user: &str,
) -> (StatusCode, Option<u64>, Value) {
    answer(client.post(url).json(&json!({ "userId": user }))).await
}

/// An apply as the bearer of `token` (the user is the token's).
async fn apply_with_token(
    client: &reqwest::Client,
    url: &str,
    token: &str,
) -> (StatusCode, Option<u64>, Value) {
    answer(client.post(url).bearer_auth(token).json(&json!({}))).await
}

async fn answer(request: reqwest::RequestBuilder) -> (StatusCode, Option<u64>, Value) {
    let response = request.send().await.unwrap();
    let status = response.status();
    let retry_after =
        (response.headers().get("retry-after")).map(|v| v.to_str().unwrap().parse().unwrap());
    (status, retry_after, response.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_over_its_rate_gets_429_while_another_is_served() {
    let services = Services::from_env();
    let campaign = unique_name("limits");
    let issuer = start_distributed(
        &services,
        &[
            "--campaign",
            &format!("{campaign}:1000"),
            "--rate-limit-per-client",
            "1:3",
        ],
    )
    .await;
    let url = format!("{}/v1/campaigns/{campaign}/applications", issuer.base);

    let crowded = client_from([127, 0, 0, 1]);
    let mut statuses = Vec::new();
    let mut refused = 0;
    for n in 0..6 {
        let (status, retry_after, body) = apply(&crowded, &url, &format!("a{n}")).await;
        statuses.push(status);
        if status == StatusCode::TOO_MANY_REQUESTS {
            refused += 1;
            assert_eq!(
                (body["reason"].as_str(), body["scope"].as_str()),
                (Some("rate_limited"), Some("client"))
            );
            assert!(
                retry_after.is_some_and(|s| s >= 1),
                "Retry-After in seconds"
            );
        }
    }
    assert_eq!(
        &statuses[..3],
        [StatusCode::CREATED; 3],
        "the burst is served"
    );
    assert!(refused >= 2, "over the burst, 1/s: {statuses:?}");

    let other = client_from([127, 0, 0, 2]);
    let (status, _, _) = apply(&other, &url, "b0").await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "another address has its own bucket"
    );

    let (_, summary) = issuer.get(&format!("/v1/campaigns/{campaign}")).await;
    let served = statuses
        .iter()
        .filter(|s| **s == StatusCode::CREATED)
        .count()
        + 1;
    assert_eq!(
        summary["admitted"], served,
        "nothing admitted for the refused applies"
    );
    let metrics = issuer.metrics().await;
    let line = format!(
        r#"firstcome_rate_limited_total{{campaign="{campaign}",scope="client"}} {refused}"#
    );
    assert!(metrics.lines().any(|l| l == line), "{line}\n{metrics}");
    let public = reqwest::get(format!("{}/metrics", issuer.base))
        .await
        .unwrap();
    assert_eq!(
        public.status(),
        StatusCode::NOT_FOUND,
        "metrics are not on the public API"
    );
}

/// The client's bucket is taken before its credentials are checked: forged tokens from
/// one address are answered 401 for its burst, then 429 without a signature verified,
/// while a valid token from another address is admitted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_tokens_from_one_address_are_cut_off_at_its_rate() {
    let services = Services::from_env();
    let campaign = unique_name("limits-jwt");
    let keys = keys_dir().display().to_string();
    let limit = format!("{campaign}:1000");
    let limits = ["--campaign", &limit, "--rate-limit-per-client", "1:3"];
    let flags = [&limits[..], &jwt_flags(&keys)].concat();
    let issuer = start_distributed(&services, &flags).await;
    let url = format!("{}/v1/campaigns/{campaign}/applications", issuer.base);
    // Signed up front: the applies below follow each other well within a refill (1 s).
    let forged = token(FORGER, "mallory", in_five_minutes());
    let valid = token(SIGNER, "alice", in_five_minutes());

    let flooding = client_from([127, 0, 0, 1]);
    let mut answers = Vec::new();
    for _ in 0..6 {
        let (status, retry_after, body) = apply_with_token(&flooding, &url, &forged).await;
        let reason = body["reason"].as_str().unwrap_or_default().to_string();
        answers.push((status, reason, retry_after.is_some()));
    }
    let unauthorized = (StatusCode::UNAUTHORIZED, "invalid_token".to_string(), false);
    let limited = (
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited".to_string(),
        true,
    );
    let expected: Vec<_> = (std::iter::repeat_n(unauthorized, 3))
        .chain(std::iter::repeat_n(limited, 3))
        .collect();
    assert_eq!(
        answers, expected,
        "the burst's 3 verified and refused, then cut off"
    );

    let other = client_from([127, 0, 0, 2]);
    let (status, _, body) = apply_with_token(&other, &url, &valid).await;
    assert_eq!(
        (status, body["userId"].as_str()),
        (StatusCode::CREATED, Some("alice"))
    );
    let (_, summary) = issuer.get(&format!("/v1/campaigns/{campaign}")).await;
    assert_eq!(summary["admitted"], 1);
}
