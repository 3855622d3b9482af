//! The two 503 answers, driven in process through the issuer's router against the test
//! bed's real Redis, PostgreSQL and Kafka, with the broker unreachable for the producer
//! and the restore (nothing listens on the address they are given; the claims tail reads
//! the real topic): a campaign Redis does not hold cannot be restored
//! (`backend_unavailable`), and a winner whose event the broker never acks is told
//! `admission_unconfirmed` while the admission stands, pending, in Redis (and so is an
//! apply again, whose hand-off the broker does not ack either: chaos seed 4000); and the
//! re-publishing lease passes from an issuer cut off from the broker to one reaching it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::connect_info::MockConnectInfo;
use axum::http::{Request, StatusCode, header};
use firstcome_contract::{CampaignConfig, CampaignKeys};
use firstcome_e2e::process::free_port;
use firstcome_e2e::{Services, unique_name, wait_for};
use firstcome_issuer::admission::Outcome;
use firstcome_issuer::admission::redis::RedisAdmission;
use firstcome_issuer::backend::Backend;
use firstcome_issuer::campaign::Campaign;
use firstcome_issuer::client_addr::TrustedProxies;
use firstcome_issuer::distributed::Distributed;
use firstcome_issuer::distributed::republish::Lease;
use firstcome_issuer::http;
use firstcome_issuer::identity::Identity;
use firstcome_issuer::issuer::Issuer;
use firstcome_issuer::kafka::claims::tail;
use firstcome_issuer::kafka::producer::WinnerPublisher;
use firstcome_issuer::kafka::topics::ensure_topics;
use firstcome_issuer::metrics::Metrics;
use firstcome_issuer::store::postgres::CouponStore;
use redis::AsyncCommands;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// A distributed backend on the test bed's Redis and PostgreSQL, publishing to `brokers`.
async fn distributed(services: &Services, brokers: &str, metrics: &Arc<Metrics>) -> Distributed {
    Distributed {
        redis: RedisAdmission::connect(
            &services.redis_url.parse().unwrap(),
            Duration::from_secs(1),
        )
        .await
        .unwrap(),
        publisher: WinnerPublisher::new(brokers, Duration::from_millis(300)).unwrap(),
        coupons: CouponStore::connect(&services.database_url, 2)
            .await
            .unwrap(),
        kafka_brokers: brokers.to_string(),
        metrics: metrics.clone(),
        replica_wait: None,
        admissions: Default::default(),
    }
}

/// An address where no broker listens.
fn dead_broker() -> String {
    format!("127.0.0.1:{}", free_port())
}

/// A distributed issuer of `campaign` (limit 5) whose broker is unreachable.
async fn issuer_without_broker(services: &Services, campaign: &str) -> Router {
    let metrics = Arc::new(Metrics::default());
    let distributed = distributed(services, &dead_broker(), &metrics).await;
    let config = CampaignConfig::new(campaign, 5);
    let campaigns = [Arc::new(Campaign::new(
        config.clone(),
        Identity::None,
        &metrics,
        false,
    ))];
    read_claims(services, config, &campaigns[0]).await;
    let backend = Backend::Distributed(Arc::new(distributed));
    let issuer = Issuer::new(&campaigns, backend);
    let peer = SocketAddr::from(([127, 0, 0, 1], 40000));
    http::api_router(Some(Arc::new(issuer)), TrustedProxies::default()).layer(MockConnectInfo(peer))
}

/// Tails the campaign's real topic into its claims until they are caught up.
async fn read_claims(services: &Services, config: CampaignConfig, campaign: &Campaign) {
    ensure_topics(&services.kafka_brokers, &[&config.topic], 1, 1)
        .await
        .unwrap();
    let brokers = services.kafka_brokers.clone();
    let claims = campaign.claims.clone();
    tokio::spawn(tail(
        brokers,
        config,
        claims.clone(),
        CancellationToken::new(),
    ));
    wait_for("the claims tail", Duration::from_secs(20), || async {
        claims.caught_up().then_some(())
    })
    .await;
}

async fn apply(app: &Router, campaign: &str, user: &str) -> (StatusCode, Option<String>, Value) {
    let request = Request::post(format!("/v1/campaigns/{campaign}/applications"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(format!(r#"{{"userId":"{user}"}}"#)))
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let retry_after =
        (response.headers().get(header::RETRY_AFTER)).map(|v| v.to_str().unwrap().to_string());
    let body = to_bytes(response.into_body(), 1 << 16).await.unwrap();
    (status, retry_after, serde_json::from_slice(&body).unwrap())
}

/// A connection to the test bed's Redis, with the campaign of `keys` provisioned (limit
/// 5, nothing admitted), as a restore from an empty PostgreSQL leaves it.
async fn provisioned(
    services: &Services,
    keys: &CampaignKeys,
) -> redis::aio::MultiplexedConnection {
    let mut conn = redis(services).await;
    let _: () = conn.set(&keys.limit, 5).await.unwrap();
    let _: () = conn.set(&keys.admitted, 0).await.unwrap();
    conn
}

async fn redis(services: &Services) -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(services.redis_url.as_str()).unwrap();
    client.get_multiplexed_async_connection().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unrestorable_campaign_answers_backend_unavailable_and_admits_nobody() {
    let services = Services::from_env();
    let campaign = unique_name("unrestorable");
    let app = issuer_without_broker(&services, &campaign).await;
    let (status, retry_after, body) = apply(&app, &campaign, "alice").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["reason"], "backend_unavailable");
    assert_eq!(retry_after.as_deref(), Some("1"));
    let keys = CampaignKeys::new(&campaign);
    let counter: Option<u64> = redis(&services).await.get(&keys.admitted).await.unwrap();
    assert_eq!(counter, None, "nothing was admitted or provisioned");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_winner_the_broker_never_acks_is_told_admission_unconfirmed_and_stays_pending() {
    let services = Services::from_env();
    let campaign = unique_name("unacked");
    let keys = CampaignKeys::new(&campaign);
    let mut conn = provisioned(&services, &keys).await;
    let app = issuer_without_broker(&services, &campaign).await;
    let (status, retry_after, body) = apply(&app, &campaign, "alice").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["reason"], "admission_unconfirmed");
    assert_eq!(retry_after.as_deref(), Some("1"));
    let admitted: u64 = conn.get(&keys.admitted).await.unwrap();
    let pending: u64 = conn.hlen(&keys.pending).await.unwrap();
    assert_eq!(
        (admitted, pending),
        (1, 1),
        "the admission stands, pending re-publish"
    );
}

/// Chaos seed 4000: a user whose admission the broker had not acked applied again and was
/// told `already_applied` with its sequence; a lagging replica promoted then lost that
/// admission, and the user got another sequence. An apply again now hands the pending
/// admission to the broker first: with no broker it is answered `admission_unconfirmed`,
/// as the first apply was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_4000_a_holding_the_broker_has_not_acked_is_not_answered_already_applied() {
    let services = Services::from_env();
    let campaign = unique_name("seed-4000");
    let keys = CampaignKeys::new(&campaign);
    let mut conn = provisioned(&services, &keys).await;
    let app = issuer_without_broker(&services, &campaign).await;
    let (status, _, body) = apply(&app, &campaign, "alice").await;
    assert_eq!(body["reason"], "admission_unconfirmed", "{status}");

    let (status, retry_after, body) = apply(&app, &campaign, "alice").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["reason"], "admission_unconfirmed");
    assert_eq!(retry_after.as_deref(), Some("1"));

    // Sold out (the limit lowered to that one admission): the issuer's sold-out board
    // waits for the broker's ack too, and never answers alice `already_applied` meanwhile.
    let _: () = conn.set(&keys.limit, 1).await.unwrap();
    let (_, _, body) = apply(&app, &campaign, "bob").await;
    assert_eq!(body["reason"], "sold_out");
    // Time for the board to load in the background, were it to load.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, _, body) = apply(&app, &campaign, "alice").await;
    assert_eq!(body["reason"], "admission_unconfirmed");

    // The re-publisher's confirmation, as once the broker acks.
    let _: () = conn.hdel(&keys.pending, 1).await.unwrap();
    let (status, _, body) = apply(&app, &campaign, "alice").await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["sequences"], serde_json::json!([1]));
}

/// Of two issuers sharing Redis, the one holding a campaign's re-publishing lease sends
/// the backlog; one that cannot reach the broker gives the lease up to the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_republishing_lease_passes_from_an_issuer_cut_off_from_the_broker() {
    let services = Services::from_env();
    let name = unique_name("lease");
    let keys = CampaignKeys::new(&name);
    provisioned(&services, &keys).await;
    let config = CampaignConfig::new(&name, 5);
    ensure_topics(&services.kafka_brokers, &[&config.topic], 1, 1)
        .await
        .unwrap();
    let metrics = Arc::new(Metrics::default());
    let campaign = Campaign::new(config.clone(), Identity::None, &metrics, false);
    let cut_off = distributed(&services, &dead_broker(), &metrics).await;
    let reaching = distributed(&services, &services.kafka_brokers, &metrics).await;
    let admit = async |user: &str| {
        let outcome = (cut_off.redis.run_admission_script(&config, &keys, user)).await;
        assert!(matches!(outcome, Ok(Outcome::Admitted(_))), "{outcome:?}");
        // Due at once (grace zero) once its admission time is in the past.
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let backlog = async || -> u64 { redis(&services).await.hlen(&keys.pending).await.unwrap() };
    let (lease_a, lease_b) = (
        Lease::new(Duration::from_secs(1)),
        Lease::new(Duration::from_secs(1)),
    );
    admit("alice").await;
    admit("bob").await;

    let failed = cut_off
        .republish_if_leased(&campaign, Duration::ZERO, &lease_a)
        .await;
    assert!(failed.is_err(), "no broker answers: {failed:?}");
    let sent = reaching
        .republish_if_leased(&campaign, Duration::ZERO, &lease_b)
        .await;
    assert_eq!(
        sent.unwrap(),
        Some(2),
        "the lease was given up, and taken over"
    );
    assert_eq!(backlog().await, 0);

    admit("carol").await;
    let left = cut_off
        .republish_if_leased(&campaign, Duration::ZERO, &lease_a)
        .await;
    assert_eq!(left.unwrap(), None, "the other issuer holds the lease");
    assert_eq!(backlog().await, 1);
}
