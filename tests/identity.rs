//! Only the real user applies, end to end: a distributed issuer (real Redis, Kafka and
//! PostgreSQL) serving a campaign with identity jwt, its keys directory holding the
//! test-only RSA key of issuer/tests/fixtures/identity; and a standalone issuer taking
//! its keys from an identity provider's JWKS, served by the test on 127.0.0.1.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::extract::State;
use firstcome_e2e::Services;
use firstcome_e2e::issuer::{
    postgres, start_distributed, start_standalone, temp_dir, wait_for_coupons,
};
use firstcome_e2e::process::Process;
use firstcome_e2e::spike::{Outcome, Spike, admitted_users, tally, try_apply_as};
use firstcome_e2e::tokens::{
    AUDIENCE, FORGER, ISSUER, SIGNER, encoding_key, in_five_minutes, jwt_flags, keys_dir, signed,
    token,
};
use firstcome_e2e::unique_name;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use reqwest::StatusCode;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_signed_applies_of_300_users_give_exactly_100_coupons_one_each() {
    let services = Services::from_env();
    let campaign = unique_name("identity");
    let keys = keys_dir();
    let limit = format!("{campaign}:100");
    let keys_dir = keys.display().to_string();
    // Every apply comes from 127.0.0.1: no per-client limit by default.
    let flags = [&["--campaign", &limit][..], &jwt_flags(&keys_dir)].concat();
    let issuer = start_distributed(&services, &flags).await;

    refused_tokens_admit_nobody(&issuer, &campaign).await;

    let users: Vec<String> = (0..300).map(|i| format!("user-{i}")).collect();
    let tokens: HashMap<String, String> = (users.iter())
        .map(|u| (u.clone(), token(SIGNER, u, in_five_minutes())))
        .collect();
    let applies: Vec<String> = (0..1000).map(|i| users[i % 300].clone()).collect();
    let answers = Spike::new(&[&issuer.base], &campaign)
        .in_flight(64)
        .tokens(tokens)
        .run(applies)
        .await;

    let outcomes = tally(&answers);
    assert_eq!(outcomes.get(&Outcome::Admitted), Some(&100), "{outcomes:?}");
    let decided = outcomes[&Outcome::Admitted]
        + outcomes.get(&Outcome::AlreadyApplied).unwrap_or(&0)
        + outcomes.get(&Outcome::SoldOut).unwrap_or(&0);
    assert_eq!(decided, 1000, "every apply answered: {outcomes:?}");
    let admitted: HashSet<&str> = admitted_users(&answers).collect();
    assert_eq!(admitted.len(), 100, "one coupon per user");

    let pool = postgres(&services).await;
    let coupons = wait_for_coupons(&pool, &campaign, 100).await;
    assert_eq!(coupons.len(), 100);
    let holders: HashSet<&str> = coupons.iter().map(|(u, _)| u.as_str()).collect();
    assert_eq!(
        holders, admitted,
        "the holders are the users told 'admitted'"
    );
    assert!(
        holders.iter().all(|u| u.starts_with("user-")),
        "no forged user holds one"
    );
}

/// Forged (another key, same kid) and expired tokens of 50 users each: every one 401
/// invalid_token, and nothing admitted.
async fn refused_tokens_admit_nobody(issuer: &Process, campaign: &str) {
    let base = issuer.base.as_str();
    let client = reqwest::Client::new();
    let expired_at = chrono::Utc::now().timestamp() - 120;
    for i in 0..50 {
        let forger = format!("forger-{i}");
        let forged = token(FORGER, &forger, in_five_minutes());
        let late = format!("late-{i}");
        let expired = token(SIGNER, &late, expired_at);
        for (user, token) in [(forger, forged), (late, expired)] {
            let (status, body) = try_apply_as(&client, base, campaign, &user, Some(&token))
                .await
                .expect("apply request");
            assert_eq!(
                (status, reason(&body)),
                (StatusCode::UNAUTHORIZED, "invalid_token")
            );
        }
    }
    let summary = issuer.summary(campaign).await;
    assert_eq!(
        (summary["admitted"].as_u64(), summary["identity"].as_str()),
        (Some(0), Some("jwt"))
    );
}

fn reason(body: &Value) -> &str {
    body["reason"].as_str().unwrap_or_default()
}

/// An identity provider as far as the issuer sees one: a JWKS document on 127.0.0.1
/// whose keys the test changes, counting how often it is fetched.
struct Provider {
    keys: RwLock<Vec<Jwk>>,
    fetches: AtomicUsize,
}

impl Provider {
    /// Serves the set at `http://127.0.0.1:<port>/jwks` until the task is aborted.
    async fn serve(self: &Arc<Self>) -> (String, tokio::task::JoinHandle<()>) {
        async fn jwks(State(provider): State<Arc<Provider>>) -> axum::Json<JwkSet> {
            provider.fetches.fetch_add(1, Ordering::SeqCst);
            let keys = provider.keys.read().unwrap().clone();
            axum::Json(JwkSet { keys })
        }
        let app = axum::Router::new()
            .route("/jwks", axum::routing::get(jwks))
            .with_state(Arc::clone(self));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/jwks", listener.local_addr().unwrap());
        let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (url, server)
    }

    fn publish(&self, private: &str, kid: &str) {
        let (alg, key) = encoding_key(private);
        let mut jwk = Jwk::from_encoding_key(&key, alg).unwrap();
        jwk.common.key_id = Some(kid.into());
        self.keys.write().unwrap().push(jwk);
    }

    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

/// A key set's keys are fetched when first needed, a key the provider adds is used
/// without a restart, a flood of unknown `kid`s causes no flood of fetches, and a
/// provider gone keeps the keys fetched while answering unknown ones 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_come_from_the_providers_key_set_fetched_at_a_bounded_rate() {
    let provider = Arc::new(Provider {
        keys: RwLock::new(Vec::new()),
        fetches: AtomicUsize::new(0),
    });
    provider.publish(SIGNER, "rsa-1");
    let (url, server) = provider.serve().await;
    let campaign = unique_name("jwks");
    let limit = format!("{campaign}:1000");
    let data = temp_dir("jwks-ledger");
    let flags = [
        "--campaign",
        &limit,
        "--identity",
        "jwt",
        "--jwt-jwks-url",
        &url,
        "--jwt-issuer",
        ISSUER,
        "--jwt-audience",
        AUDIENCE,
    ];
    let issuer = start_standalone(&data, &flags).await;
    let client = reqwest::Client::new();
    let apply = |user: &str, token: String| {
        let (client, base, campaign) = (client.clone(), issuer.base.clone(), campaign.clone());
        let user = user.to_string();
        async move {
            let (status, body) = try_apply_as(&client, &base, &campaign, &user, Some(&token))
                .await
                .expect("apply request");
            (status, reason(&body).to_string())
        }
    };
    let admitted = (StatusCode::CREATED, "admitted".to_string());
    let refused = (StatusCode::UNAUTHORIZED, "invalid_token".to_string());

    assert_eq!(
        provider.fetches(),
        0,
        "nothing is fetched before a token needs it"
    );
    let exp = in_five_minutes();
    // Signed beforehand: RSA signing in a debug build is slow enough to stretch the
    // flood below past the 10 s it must fit in.
    let probes: Vec<(String, String)> = (0..200)
        .map(|i| format!("probe-{i}"))
        .map(|user| (signed(SIGNER, &format!("kid-{user}"), &user, exp), user))
        .map(|(token, user)| (user, token))
        .collect();
    let forged = signed(FORGER, "rsa-1", "eve", exp);
    let first = signed(SIGNER, "rsa-1", "ann", exp);
    let fetched_at = Instant::now();
    assert_eq!(apply("ann", first).await, admitted);
    assert_eq!(provider.fetches(), 1);
    assert_eq!(apply("eve", forged).await, refused);

    // 200 tokens naming keys nobody published, at once: all refused, and no fetch while
    // the last is less than 10 s old (one more per 10 s on a machine too slow for that).
    let unknown = probes.into_iter().map(|(user, token)| apply(&user, token));
    let answers = futures::future::join_all(unknown).await;
    let others: Vec<_> = answers.iter().filter(|a| **a != refused).collect();
    assert!(others.is_empty(), "{others:?}");
    let windows = fetched_at.elapsed().as_secs() / 10;
    assert!(
        provider.fetches() <= 1 + windows as usize,
        "{} fetches for unknown kids over {windows} windows of 10 s",
        provider.fetches()
    );

    // A key the provider rotates in is used once the set may be fetched again.
    provider.publish("test-only-ec.key", "ec-2");
    let (rotated, before) = (
        signed("test-only-ec.key", "ec-2", "bob", exp),
        provider.fetches(),
    );
    tokio::time::sleep(Duration::from_millis(10_500)).await;
    assert_eq!(apply("bob", rotated).await, admitted);
    assert_eq!(provider.fetches(), before + 1);

    // The provider goes away: the keys fetched still verify; a key not fetched cannot be
    // told from a forged one, so it is answered 503, not 401.
    server.abort();
    tokio::time::sleep(Duration::from_millis(10_500)).await;
    let unknown = signed(SIGNER, "rsa-9", "cid", exp);
    assert_eq!(
        apply("cid", unknown).await,
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "identity_unavailable".to_string()
        )
    );
    assert_eq!(
        apply("dee", signed(SIGNER, "rsa-1", "dee", exp)).await,
        admitted
    );
    let summary = issuer.summary(&campaign).await;
    assert_eq!(
        summary["admitted"].as_u64(),
        Some(3),
        "ann, bob and dee only"
    );
}
