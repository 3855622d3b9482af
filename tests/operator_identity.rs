//! An issuer the operator provisioned enforces its campaign's identity and rate limits:
//! campaigns with `identity` jwt and `rateLimits` — and the example campaign
//! of examples/, with the default limits — are created on the real kube-apiserver, the
//! operator (a local process) provisions them, and their issuer runs exactly as the
//! operator's Deployment says (its arguments, environment, and the ConfigMap and
//! identity Secret mounted as the kubelet would: tests/support/kubelet.rs), against the
//! test bed's Redis, Kafka and PostgreSQL. A header campaign's gateway secret is tested
//! on the real node, where its Secret is mounted for real (tests/node.rs).

use std::collections::BTreeMap;
use std::net::IpAddr;

use firstcome_e2e::Services;
use firstcome_e2e::cluster::*;
use firstcome_e2e::issuer::{postgres, wait_for_coupons};
use firstcome_e2e::process::Process;
use firstcome_e2e::spike::{Spike, assert_every_coupon_given, users};
use firstcome_e2e::tokens::{
    AUDIENCE, FORGER, ISSUER, KID, SIGNER, fixture, in_five_minutes, signed_for, token,
};
use firstcome_operator::resource::Phase;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use reqwest::StatusCode;
use serde_json::{Value, json};

const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples");

/// The per-client bucket of the jwt campaign: this many applies at once, then 429.
const CLIENT_BURST: usize = 5;

/// An answer: status, `Retry-After`, `WWW-Authenticate` and the JSON body.
struct Answer {
    status: StatusCode,
    retry_after: Option<u64>,
    challenge: Option<String>,
    body: Value,
}

impl Answer {
    fn reason(&self) -> &str {
        self.body["reason"].as_str().unwrap_or("<no reason>")
    }
}

/// A campaign of `spec_yaml` in a fresh namespace holding `secret` (name, keys), its
/// operator, and its issuer once the campaign is Open; returns the issuer and the
/// campaign's id.
async fn provisioned(
    prefix: &str,
    secret: (&str, BTreeMap<String, Vec<u8>>),
    spec_yaml: &str,
) -> (Process, Process, String) {
    let services = Services::from_env();
    let client = client().await;
    install_crd(&client).await;
    let ns = namespace(&client, prefix, &services, &services.redis_url).await;
    create_secret(&client, &ns, secret.0, secret.1).await;
    let operator = start_operator(&ns, "only", &[]).await;
    apply_campaign(&client, &ns, "guarded", spec_yaml)
        .await
        .expect("the API server accepts the campaign");
    let status = wait_status(&client, &ns, "guarded", "phase Open", |s| {
        s.phase == Phase::Open
    })
    .await;
    let issuer = start_issuer_like_the_deployment(&client, &ns, "guarded").await;
    (operator, issuer, status.campaign_id.unwrap())
}

async fn create_secret(
    client: &Client,
    namespace: &str,
    name: &str,
    data: BTreeMap<String, Vec<u8>>,
) {
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..ObjectMeta::default()
        },
        data: Some(data.into_iter().map(|(k, v)| (k, ByteString(v))).collect()),
        ..Secret::default()
    };
    Api::<Secret>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &secret)
        .await
        .expect("creating the identity Secret");
}

/// An HTTP client whose connections come from `address` (a loopback address).
fn client_from(address: [u8; 4]) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(IpAddr::from(address))
        .build()
        .unwrap()
}

/// An apply with `headers` and body `{}` (the user comes from the credentials).
async fn apply(
    client: &reqwest::Client,
    issuer: &Process,
    campaign: &str,
    headers: &[(&str, &str)],
) -> Answer {
    let mut request = client
        .post(format!(
            "{}/v1/campaigns/{campaign}/applications",
            issuer.base
        ))
        .json(&json!({}));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("an answer");
    let header = |name: &str| {
        let value = response.headers().get(name)?;
        Some(value.to_str().unwrap().to_string())
    };
    let retry_after = header("retry-after").map(|s| s.parse().unwrap());
    let challenge = header("www-authenticate");
    Answer {
        status: response.status(),
        retry_after,
        challenge,
        body: response.json().await.unwrap_or_default(),
    }
}

async fn admitted(issuer: &Process, campaign: &str) -> u64 {
    let (status, summary) = issuer.get(&format!("/v1/campaigns/{campaign}")).await;
    assert_eq!(status, StatusCode::OK, "{summary}");
    summary["admitted"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jwt_campaign_admits_only_valid_tokens_within_its_client_rate() {
    let keys = BTreeMap::from([(KID.to_string(), fixture("test-only-rsa.pub.pem"))]);
    let spec = format!(
        "limit: 100
identity: {{mode: jwt, jwt: {{issuer: '{ISSUER}', audience: '{AUDIENCE}', secretRef: {{name: shop-keys}}}}}}
rateLimits: {{perClient: {{perSecond: 1, burst: {CLIENT_BURST}}}}}
"
    );
    let (_operator, issuer, campaign) = provisioned("jwt", ("shop-keys", keys), &spec).await;

    // Refused from another address: refused credentials count against a client's bucket
    // too (tests/rate_limits.rs), and the applies below need theirs whole.
    let elsewhere = client_from([127, 0, 0, 2]);
    let anonymous = apply(&elsewhere, &issuer, &campaign, &[]).await;
    assert_eq!(
        (anonymous.status, anonymous.reason()),
        (StatusCode::UNAUTHORIZED, "missing_credentials")
    );
    assert_eq!(anonymous.challenge.as_deref(), Some("Bearer"));
    let forged = format!("Bearer {}", token(FORGER, "mallory", in_five_minutes()));
    let forgery = apply(
        &elsewhere,
        &issuer,
        &campaign,
        &[("authorization", &forged)],
    )
    .await;
    assert_eq!(
        (forgery.status, forgery.reason()),
        (StatusCode::UNAUTHORIZED, "invalid_token")
    );
    assert_eq!(admitted(&issuer, &campaign).await, 0);

    // Eight users with valid tokens from one address: the first CLIENT_BURST admitted,
    // then the address is over its rate.
    let here = client_from([127, 0, 0, 1]);
    // Signed up front: the applies follow each other well within a refill (1 s).
    let users: Vec<(String, String)> = (0..CLIENT_BURST + 3)
        .map(|i| format!("user-{i}"))
        .map(|user| {
            let bearer = format!("Bearer {}", token(SIGNER, &user, in_five_minutes()));
            (user, bearer)
        })
        .collect();
    let mut answers = Vec::new();
    for (user, bearer) in &users {
        let answer = apply(&here, &issuer, &campaign, &[("authorization", bearer)]).await;
        answers.push((user, answer));
    }
    for (user, answer) in &answers[..CLIENT_BURST] {
        assert_eq!(
            (
                answer.status,
                answer.reason(),
                answer.body["userId"].as_str()
            ),
            (StatusCode::CREATED, "admitted", Some(user.as_str()))
        );
    }
    for (_, answer) in &answers[CLIENT_BURST..] {
        assert_eq!(
            (
                answer.status,
                answer.reason(),
                answer.body["scope"].as_str()
            ),
            (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                Some("client")
            )
        );
        assert!(answer.retry_after.is_some_and(|s| s >= 1), "Retry-After");
    }
    assert_eq!(admitted(&issuer, &campaign).await, CLIENT_BURST as u64);
}

/// A file of examples/ as JSON.
fn example(file: &str) -> Value {
    let text = std::fs::read_to_string(format!("{EXAMPLES}/{file}")).unwrap();
    serde_yaml_ng::from_str(&text).unwrap()
}

/// The example campaign as a shop applies it (no `rateLimits`: the defaults), changed
/// only where the test bed needs it: open now (its dates are past) and its topic on one
/// replica (one broker). Its key Secret holds the test's public key under the example's
/// key name, and the tokens carry the example's issuer and audience. 1,000 users with
/// valid tokens apply at once from one address (a carrier NAT, a proxy), 32 at a time:
/// exactly the campaign's 100 coupons, and 100 coupons in PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_campaign_gives_every_coupon_to_a_crowd_behind_one_address() {
    let campaign = example("campaign.yaml");
    let name = campaign["metadata"]["name"].as_str().unwrap();
    let mut spec = campaign["spec"].clone();
    assert!(
        spec.get("rateLimits").is_none(),
        "the example keeps the defaults"
    );
    let fields = spec.as_object_mut().unwrap();
    fields.remove("opensAt");
    fields.remove("closesAt");
    spec["topic"]["replicationFactor"] = json!(1);
    let jwt = spec["identity"]["jwt"].clone();
    let keys_secret = example("identity-secret.yaml");
    let kid = (keys_secret["stringData"].as_object().unwrap().keys().next()).unwrap();
    assert_eq!(keys_secret["metadata"]["name"], jwt["secretRef"]["name"]);

    let services = Services::from_env();
    let client = client().await;
    install_crd(&client).await;
    let ns = namespace(&client, "example", &services, &services.redis_url).await;
    let keys = BTreeMap::from([(kid.clone(), fixture("test-only-rsa.pub.pem"))]);
    let secret_name = jwt["secretRef"]["name"].as_str().unwrap();
    create_secret(&client, &ns, secret_name, keys).await;
    let _operator = start_operator(&ns, "only", &[]).await;
    apply_raw_campaign(&client, &ns, name, spec)
        .await
        .expect("the API server accepts the example campaign");
    let status = wait_status(&client, &ns, name, "phase Open", |s| s.phase == Phase::Open).await;
    let campaign = status.campaign_id.unwrap();
    let issuer = start_issuer_like_the_deployment(&client, &ns, name).await;

    let issued_by = (
        jwt["issuer"].as_str().unwrap(),
        jwt["audience"].as_str().unwrap(),
    );
    let crowd = users("shopper", 1000);
    let tokens = (crowd.iter())
        .map(|user| {
            let token = signed_for(issued_by, SIGNER, kid, user, in_five_minutes());
            (user.clone(), token)
        })
        .collect();
    let answers = Spike::new(&[&issuer.base], &campaign)
        .from_one_address()
        .in_flight(32)
        .tokens(tokens)
        .run(crowd)
        .await;
    assert_every_coupon_given(&answers, 100, 900);
    let pool = postgres(&services).await;
    assert_eq!(wait_for_coupons(&pool, &campaign, 100).await.len(), 100);
}
