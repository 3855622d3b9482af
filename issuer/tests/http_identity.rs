//! Who may apply, driven in process through the router of a standalone issuer: a
//! campaign per identity mode, tokens really signed with the test-only keys of
//! tests/fixtures/identity. One test per refused class, each checking nothing was
//! admitted.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use clap::Parser;
use firstcome_issuer::cli::Cli;
use firstcome_issuer::wiring;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};
use tower::ServiceExt;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/identity");
const ISSUER: &str = "https://login.test";
const AUDIENCE: &str = "coupons";
const GATEWAY_SECRET: &str = "gateway-s3cret";

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(Path::new(FIXTURES).join(name)).unwrap()
}

/// The keys directory of campaign `jwt`: RSA `rsa-1`, EC `ec-1`, Ed25519 `ed-1`.
fn keys_dir(dir: &Path) -> PathBuf {
    let keys = dir.join("keys");
    std::fs::create_dir(&keys).unwrap();
    for (kid, file) in [
        ("rsa-1", "test-only-rsa.pub.pem"),
        ("ec-1", "test-only-ec.pub.pem"),
        ("ed-1", "test-only-ed25519.pub.pem"),
    ] {
        std::fs::write(keys.join(kid), fixture(file)).unwrap();
    }
    keys
}

/// A standalone issuer with campaigns `jwt`, `gateway` (header) and `open` (none).
async fn issuer(dir: &tempfile::TempDir) -> Router {
    let keys = keys_dir(dir.path());
    let secret = dir.path().join("gateway-secret");
    std::fs::write(&secret, format!("{GATEWAY_SECRET}\n")).unwrap();
    let campaigns = json!({ "campaigns": [
        { "name": "jwt", "limit": 10, "topic": "t-jwt", "identity": { "mode": "jwt", "jwt": {
            "issuer": ISSUER, "audience": AUDIENCE, "keysDir": keys } } },
        { "name": "gateway", "limit": 10, "topic": "t-gateway", "identity": { "mode": "header",
            "header": { "userHeader": "x-user", "secretHeader": "x-gateway-secret",
                        "secretFile": secret } } },
        { "name": "open", "limit": 10, "topic": "t-open" },
    ]});
    let file = dir.path().join("campaigns.json");
    std::fs::write(&file, campaigns.to_string()).unwrap();
    let data = dir.path().join("data");
    let argv = [
        "firstcome-issuer",
        "--campaigns-file",
        file.to_str().unwrap(),
    ];
    let argv = [&argv[..], &["--data-dir", data.to_str().unwrap()]].concat();
    let wiring = wiring::build(&Cli::try_parse_from(argv).unwrap().serve).await;
    let loopback = std::net::SocketAddr::from(([127, 0, 0, 1], 40000));
    (wiring.expect("a standalone issuer builds").api_router())
        .layer(axum::extract::connect_info::MockConnectInfo(loopback))
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Valid claims for `user`: this issuer and audience, valid for the next 5 minutes.
fn claims(user: &str) -> Value {
    json!({ "sub": user, "iss": ISSUER, "aud": AUDIENCE, "iat": now(), "exp": now() + 300 })
}

fn sign(alg: Algorithm, kid: &str, private: &str, claims: &Value) -> String {
    let key = match alg {
        Algorithm::RS256 => EncodingKey::from_rsa_pem(&fixture(private)),
        Algorithm::ES256 => EncodingKey::from_ec_pem(&fixture(private)),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(&fixture(private)),
        _ => EncodingKey::from_secret(&fixture(private)),
    }
    .unwrap();
    let header = Header {
        kid: Some(kid.into()),
        ..Header::new(alg)
    };
    encode(&header, claims, &key).unwrap()
}

fn rsa_token(claims: &Value) -> String {
    sign(Algorithm::RS256, "rsa-1", "test-only-rsa.key", claims)
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

impl Answer {
    fn reason(&self) -> &str {
        self.body["reason"].as_str().unwrap_or("<no reason>")
    }

    fn challenge(&self) -> Option<&str> {
        let value = self.headers.get(header::WWW_AUTHENTICATE)?;
        Some(value.to_str().unwrap())
    }
}

async fn send(app: &Router, request: Request<Body>) -> Answer {
    let response = app.clone().oneshot(request).await.unwrap();
    let (status, headers) = (response.status(), response.headers().clone());
    let bytes = to_bytes(response.into_body(), 1 << 20).await.unwrap();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Answer {
        status,
        headers,
        body,
    }
}

/// An apply to `campaign` with `headers` and a JSON `body`.
async fn apply_with(app: &Router, campaign: &str, headers: &[(&str, &str)], body: Value) -> Answer {
    let mut request = Request::builder()
        .method(Method::POST)
        .uri(format!("/v1/campaigns/{campaign}/applications"))
        .header(header::CONTENT_TYPE, "application/json");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    send(app, request.body(Body::from(body.to_string())).unwrap()).await
}

async fn apply_bearer(app: &Router, token: &str) -> Answer {
    let bearer = format!("Bearer {token}");
    apply_with(app, "jwt", &[("authorization", &bearer)], json!({})).await
}

async fn get(app: &Router, uri: &str, token: Option<&str>) -> Answer {
    let mut request = Request::get(uri);
    if let Some(token) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    send(app, request.body(Body::empty()).unwrap()).await
}

async fn admitted(app: &Router, campaign: &str) -> u64 {
    let summary = get(app, &format!("/v1/campaigns/{campaign}"), None).await;
    summary.body["admitted"].as_u64().unwrap()
}

#[tokio::test]
async fn a_valid_token_applies_as_its_subject_with_any_key_type() {
    let dir = tempfile::tempdir().unwrap();
    let app = issuer(&dir).await;
    let rsa = apply_bearer(&app, &rsa_token(&claims("alice"))).await;
    assert_eq!(
        (rsa.status, rsa.reason()),
        (StatusCode::CREATED, "admitted")
    );
    assert_eq!(rsa.body["userId"], "alice");
    let ec = sign(Algorithm::ES256, "ec-1", "test-only-ec.key", &claims("bob"));
    assert_eq!(apply_bearer(&app, &ec).await.status, StatusCode::CREATED);
    let ed = sign(
        Algorithm::EdDSA,
        "ed-1",
        "test-only-ed25519.key",
        &claims("carol"),
    );
    let ed_answer = apply_bearer(&app, &ed).await;
    assert_eq!(ed_answer.body["userId"], "carol");
    let again = apply_bearer(&app, &rsa_token(&claims("alice"))).await;
    assert_eq!(again.reason(), "already_applied");
    let summary = get(&app, "/v1/campaigns/jwt", None).await;
    assert_eq!(
        (
            summary.body["admitted"].as_u64(),
            summary.body["identity"].as_str()
        ),
        (Some(3), Some("jwt"))
    );
}

#[tokio::test]
async fn a_body_naming_another_user_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let app = issuer(&dir).await;
    let bearer = format!("Bearer {}", rsa_token(&claims("alice")));
    let auth = [("authorization", bearer.as_str())];
    let other = apply_with(&app, "jwt", &auth, json!({ "userId": "mallory" })).await;
    assert_eq!(
        (other.status, other.reason()),
        (StatusCode::FORBIDDEN, "user_mismatch")
    );
    assert_eq!(admitted(&app, "jwt").await, 0);
    let same = apply_with(&app, "jwt", &auth, json!({ "userId": "alice" })).await;
    assert_eq!(same.status, StatusCode::CREATED);
}

#[tokio::test]
async fn look_ups_answer_the_caller_only() {
    let dir = tempfile::tempdir().unwrap();
    let app = issuer(&dir).await;
    let token = rsa_token(&claims("alice"));
    apply_bearer(&app, &token).await;
    let me = get(&app, "/v1/campaigns/jwt/applications/me", Some(&token)).await;
    assert_eq!(
        (me.status, me.body["userId"].as_str()),
        (StatusCode::OK, Some("alice"))
    );
    assert_ne!(me.body["status"], "not_applied");
    let own = get(&app, "/v1/campaigns/jwt/applications/alice", Some(&token)).await;
    assert_eq!(own.body["coupons"], me.body["coupons"]);
    let other = get(&app, "/v1/campaigns/jwt/applications/bob", Some(&token)).await;
    assert_eq!(
        (other.status, other.reason()),
        (StatusCode::FORBIDDEN, "user_mismatch")
    );
    let anonymous = get(&app, "/v1/campaigns/jwt/applications/alice", None).await;
    assert_eq!(
        (anonymous.status, anonymous.reason()),
        (StatusCode::UNAUTHORIZED, "missing_credentials")
    );
}

#[tokio::test]
async fn no_credentials_is_missing_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let app = issuer(&dir).await;
    for headers in [
        &[][..],
        &[("authorization", "")],
        &[("authorization", "Bearer ")],
        &[("authorization", "Basic YWxpY2U6cHc=")],
    ] {
        let answer = apply_with(&app, "jwt", headers, json!({ "userId": "alice" })).await;
        assert_eq!(
            (answer.status, answer.reason(), answer.challenge()),
            (
                StatusCode::UNAUTHORIZED,
                "missing_credentials",
                Some("Bearer")
            ),
            "{headers:?}"
        );
        assert!(answer.body["message"].is_string());
    }
    assert_eq!(admitted(&app, "jwt").await, 0);
}

/// Each token `refused` is answered 401 invalid_token with its challenge, and admits
/// nobody.
async fn assert_invalid(app: &Router, refused: &[(&str, String)]) {
    for (what, token) in refused {
        let answer = apply_bearer(app, token).await;
        assert_eq!(
            (answer.status, answer.reason()),
            (StatusCode::UNAUTHORIZED, "invalid_token"),
            "{what}: {}",
            answer.body
        );
        assert_eq!(
            answer.challenge(),
            Some(r#"Bearer error="invalid_token""#),
            "{what}"
        );
        assert!(
            !answer.body["message"]
                .as_str()
                .unwrap()
                .contains(token.as_str())
        );
    }
    assert_eq!(admitted(app, "jwt").await, 0);
}

#[tokio::test]
async fn expired_and_not_yet_valid_tokens_are_invalid() {
    let dir = tempfile::tempdir().unwrap();
    let app = issuer(&dir).await;
    // Beyond the default leeway of 30 s either way.
    let mut expired = claims("alice");
    expired["exp"] = json!(now() - 60);
    let mut early = claims("alice");
    early["nbf"] = json!(now() + 60);
    let mut no_exp = claims("alice");
    no_exp.as_object_mut().unwrap().remove("exp");
    let refused = [
        ("expired", rsa_token(&expired)),
        ("not yet valid", rsa_token(&early)),
        ("without exp", rsa_token(&no_exp)),
    ];
    assert_invalid(&app, &refused).await;
}

#[tokio::test]
async fn forged_tokens_and_foreign_claims_are_invalid() {
    let dir = tempfile::tempdir().unwrap();
    let app = issuer(&dir).await;
    let alice = claims("alice");
    let mut foreign_issuer = alice.clone();
    foreign_issuer["iss"] = json!("https://evil.test");
    let mut foreign_audience = alice.clone();
    foreign_audience["aud"] = json!("other-app");
    let mut no_user = alice.clone();
    no_user.as_object_mut().unwrap().remove("sub");
    let refused = [
        (
            "wrong signature",
            sign(
                Algorithm::RS256,
                "rsa-1",
                "test-only-rsa-forger.key",
                &alice,
            ),
        ),
        ("wrong issuer", rsa_token(&foreign_issuer)),
        ("wrong audience", rsa_token(&foreign_audience)),
        ("no user claim", rsa_token(&no_user)),
        ("invalid user claim", rsa_token(&claims("a b"))),
        (
            "unknown kid",
            sign(Algorithm::RS256, "rsa-9", "test-only-rsa.key", &alice),
        ),
    ];
    assert_invalid(&app, &refused).await;
}

#[tokio::test]
async fn alg_none_algorithm_confusion_malformed_and_oversized_tokens_are_invalid() {
    let dir = tempfile::tempdir().unwrap();
    let app = issuer(&dir).await;
    let valid = rsa_token(&claims("alice"));
    let payload = valid.split('.').nth(1).unwrap();
    // {"alg":"none","typ":"JWT","kid":"rsa-1"}
    let none_header = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIiwia2lkIjoicnNhLTEifQ";
    // HS256 with the RSA public key's PEM as the HMAC secret: the classic confusion.
    let confused = sign(
        Algorithm::HS256,
        "rsa-1",
        "test-only-rsa.pub.pem",
        &claims("alice"),
    );
    let refused = [
        ("alg none", format!("{none_header}.{payload}.")),
        ("HS256 against an RSA key", confused),
        ("malformed", "not.a.jwt".to_string()),
        ("one segment", "abc".to_string()),
        ("oversized", format!("{valid}{}", "A".repeat(9 * 1024))),
    ];
    assert_invalid(&app, &refused).await;
}

#[tokio::test]
async fn a_key_added_to_the_directory_is_used_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let app = issuer(&dir).await;
    let token = sign(
        Algorithm::ES256,
        "ec-2",
        "test-only-ec.key",
        &claims("dave"),
    );
    assert_eq!(apply_bearer(&app, &token).await.reason(), "invalid_token");
    std::fs::write(
        dir.path().join("keys/ec-2"),
        fixture("test-only-ec.pub.pem"),
    )
    .unwrap();
    // An unknown kid re-reads the directory at most once a second.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let answer = apply_bearer(&app, &token).await;
    assert_eq!(
        (answer.status, answer.body["userId"].as_str()),
        (StatusCode::CREATED, Some("dave"))
    );
}

#[tokio::test]
async fn header_mode_believes_the_gateway_only_with_its_secret() {
    let dir = tempfile::tempdir().unwrap();
    let app = issuer(&dir).await;
    let wrong = [("x-user", "alice"), ("x-gateway-secret", "guess")];
    let refused = apply_with(&app, "gateway", &wrong, json!({})).await;
    assert_eq!(
        (refused.status, refused.reason(), refused.challenge()),
        (StatusCode::UNAUTHORIZED, "invalid_credentials", None)
    );
    let missing = apply_with(&app, "gateway", &[("x-user", "alice")], json!({})).await;
    assert_eq!(missing.reason(), "missing_credentials");
    assert_eq!(admitted(&app, "gateway").await, 0);
    let right = [("x-user", "alice"), ("x-gateway-secret", GATEWAY_SECRET)];
    let admitted = apply_with(&app, "gateway", &right, json!({})).await;
    assert_eq!(
        (admitted.status, admitted.body["userId"].as_str()),
        (StatusCode::CREATED, Some("alice"))
    );
}

#[tokio::test]
async fn none_mode_still_believes_the_body() {
    let dir = tempfile::tempdir().unwrap();
    let app = issuer(&dir).await;
    let answer = apply_with(&app, "open", &[], json!({ "userId": "alice" })).await;
    assert_eq!(answer.status, StatusCode::CREATED);
    let lookup = get(&app, "/v1/campaigns/open/applications/alice", None).await;
    assert_eq!(lookup.body["status"], "issued");
    let me = get(&app, "/v1/campaigns/open/applications/me", None).await;
    assert_eq!(
        (me.status, me.reason()),
        (StatusCode::BAD_REQUEST, "identity_not_configured")
    );
    let list = get(&app, "/v1/campaigns", None).await;
    let modes: Vec<&str> = list.body["campaigns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["identity"].as_str().unwrap())
        .collect();
    assert_eq!(
        modes,
        ["header", "jwt", "none"],
        "gateway, jwt, open by name"
    );
}

/// A writer collecting every log line of the test.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn no_token_is_ever_logged() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let dir = tempfile::tempdir().unwrap();
    let app = issuer(&dir).await;
    let mut expired = claims("alice");
    expired["exp"] = json!(now() - 60);
    let tokens = [
        rsa_token(&claims("alice")),
        rsa_token(&expired),
        sign(
            Algorithm::RS256,
            "rsa-1",
            "test-only-rsa-forger.key",
            &claims("bob"),
        ),
        sign(
            Algorithm::RS256,
            "rsa-9",
            "test-only-rsa.key",
            &claims("bob"),
        ),
    ];
    for token in &tokens {
        apply_bearer(&app, token).await;
    }
    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("identity none"),
        "the capture sees the issuer's logs"
    );
    for token in &tokens {
        let signature = token.rsplit('.').next().unwrap();
        assert!(
            !logs.contains(signature),
            "a token's signature is in the logs"
        );
    }
}
