//! The operator against a real kube-apiserver (+ etcd, kube-controller-manager), with
//! issuers started as local processes from what the operator put into their Deployment,
//! and the real Redis, Kafka and PostgreSQL of the test bed.

use std::time::Duration;

use firstcome_contract::{CampaignConfig, CampaignKeys};
use firstcome_e2e::cluster::*;
use firstcome_e2e::process::Process;
use firstcome_e2e::{Services, wait_for};
use firstcome_operator::reason::Reason;
use firstcome_operator::resource::{CouponCampaign, Phase};
use firstcome_operator::status::{self, READY, REDIS_READY, TOPIC_READY};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::Api;
use kube::api::DeleteParams;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use redis::AsyncCommands;
use reqwest::StatusCode;

const TIMEOUT: Duration = Duration::from_secs(60);

async fn redis_get(services: &Services, key: &str) -> Option<u64> {
    let client = redis::Client::open(services.redis_url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    conn.get(key).await.unwrap()
}

fn topic_exists(services: &Services, topic: &str) -> bool {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &services.kafka_brokers)
        .create()
        .unwrap();
    let metadata = consumer
        .fetch_metadata(None, Duration::from_secs(10))
        .unwrap();
    metadata.topics().iter().any(|t| t.name() == topic)
}

/// One apply per user, 64 in flight; returns the count of each status code.
async fn spike(
    issuer: &Process,
    campaign_id: &str,
    users: impl Iterator<Item = String>,
) -> Vec<(StatusCode, usize)> {
    let replies =
        firstcome_e2e::issuer::spike(&[&issuer.base], campaign_id, users.collect(), 64).await;
    let mut counts: Vec<(StatusCode, usize)> = Vec::new();
    for reply in replies {
        match counts.iter_mut().find(|(s, _)| *s == reply.status) {
            Some((_, n)) => *n += 1,
            None => counts.push((reply.status, 1)),
        }
    }
    counts.sort();
    counts
}

/// Deletes the campaign and waits until its finalizer has run and it is gone.
async fn delete_campaign(client: &kube::Client, namespace: &str, name: &str) {
    let campaigns: Api<CouponCampaign> = Api::namespaced(client.clone(), namespace);
    campaigns
        .delete(name, &DeleteParams::default())
        .await
        .unwrap();
    wait_for("the campaign to be gone", TIMEOUT, || async {
        campaigns
            .get_opt(name)
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
}

fn condition(
    campaign_status: &firstcome_operator::resource::CouponCampaignStatus,
    kind: &str,
) -> (String, String) {
    let c = status::condition(campaign_status, kind).unwrap_or_else(|| panic!("condition {kind}"));
    (c.status.clone(), c.reason.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_campaign_is_provisioned_and_opens() {
    let services = Services::from_env();
    let client = client().await;
    install_crd(&client).await;
    let ns = namespace(&client, "provision", &services, &services.redis_url).await;
    let _operator = start_operator(&ns, "only", &[]).await;

    apply_campaign(
        &client,
        &ns,
        "launch",
        "limit: 100\nissuer: {replicas: 2}\ntopic: {partitions: 2}\n",
    )
    .await
    .unwrap();
    let status = wait_status(&client, &ns, "launch", "phase Open", |s| {
        s.phase == Phase::Open
    })
    .await;
    let id = status.campaign_id.clone().unwrap();
    assert_eq!(id, format!("{ns}.launch"));
    assert_eq!(condition(&status, REDIS_READY).0, "True");
    assert_eq!(condition(&status, TOPIC_READY).0, "True");
    assert_eq!(
        redis_get(&services, &CampaignKeys::new(&id).limit).await,
        Some(100)
    );
    assert!(topic_exists(&services, &CampaignConfig::default_topic(&id)));

    let campaign = Api::<CouponCampaign>::namespaced(client.clone(), &ns)
        .get("launch")
        .await
        .unwrap();
    let uid = campaign.metadata.uid.unwrap();
    let owners = [
        Api::<Deployment>::namespaced(client.clone(), &ns)
            .get("launch-issuer")
            .await
            .unwrap()
            .metadata,
        Api::<Service>::namespaced(client.clone(), &ns)
            .get("launch-issuer")
            .await
            .unwrap()
            .metadata,
        // Probes and metrics are on their own port: Prometheus scrapes it through this
        // Service, the customer-facing one above exposes only the API.
        Api::<Service>::namespaced(client.clone(), &ns)
            .get("launch-issuer-metrics")
            .await
            .unwrap()
            .metadata,
        Api::<ConfigMap>::namespaced(client.clone(), &ns)
            .get("launch-issuer")
            .await
            .unwrap()
            .metadata,
    ];
    for meta in owners {
        let owner = &meta.owner_references.unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("CouponCampaign", uid.as_str())
        );
    }

    assert_eq!(
        condition(&status, READY),
        ("False".into(), Reason::NoReadyIssuer.to_string())
    );
    report_ready_issuers(&client, &ns, "launch", 2).await;
    let status = wait_status(&client, &ns, "launch", "Ready", |s| {
        status::condition(s, READY).is_some_and(|c| c.status == "True")
    })
    .await;
    assert_eq!(status.ready_issuers, 2);

    let table = kubectl_get(&ns);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME",
            "LIMIT",
            "ISSUED",
            "REMAINING",
            "PHASE",
            "READY",
            "AGE"
        ],
        "{table}"
    );
    let row: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(
        &row[..6],
        ["launch", "100", "0", "100", "Open", "True"],
        "{table}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spike_sells_out_the_limit_can_grow_not_shrink_and_delete_keeps_coupons() {
    let services = Services::from_env();
    let client = client().await;
    install_crd(&client).await;
    let ns = namespace(&client, "lifecycle", &services, &services.redis_url).await;
    let _operator = start_operator(&ns, "only", &[]).await;
    apply_campaign(&client, &ns, "sale", "limit: 100\n")
        .await
        .unwrap();
    let status = wait_status(&client, &ns, "sale", "phase Open", |s| {
        s.phase == Phase::Open
    })
    .await;
    let id = status.campaign_id.unwrap();
    let issuer = start_issuer_like_the_deployment(&client, &ns, "sale").await;

    let counts = spike(&issuer, &id, (0..1000).map(|i| format!("u{i}"))).await;
    assert_eq!(
        counts,
        vec![(StatusCode::CREATED, 100), (StatusCode::GONE, 900)]
    );
    let status = wait_status(&client, &ns, "sale", "sold out and persisted", |s| {
        s.phase == Phase::SoldOut && s.issued == 100
    })
    .await;
    assert_eq!(
        (
            status.admitted,
            status.issued,
            status.remaining,
            status.pending_persistence
        ),
        (100, 100, 0, 0)
    );
    assert!(
        event_reasons(&client, &ns, "sale")
            .await
            .contains(&Reason::SoldOut.to_string())
    );

    // Raising the limit reaches the running issuer through Redis: more can win.
    apply_campaign(&client, &ns, "sale", "limit: 150\n")
        .await
        .unwrap();
    wait_for("the raised limit in Redis", TIMEOUT, || async {
        (redis_get(&services, &CampaignKeys::new(&id).limit).await == Some(150)).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await; // the issuer re-reads the limit every second
    let counts = spike(&issuer, &id, (1000..1200).map(|i| format!("u{i}"))).await;
    assert_eq!(
        counts,
        vec![(StatusCode::CREATED, 50), (StatusCode::GONE, 150)]
    );
    let status = wait_status(&client, &ns, "sale", "150 issued", |s| {
        s.issued == 150 && s.phase == Phase::SoldOut
    })
    .await;
    assert_eq!(status.admitted, 150);

    // Lowering below what was admitted is refused with a condition and an event.
    apply_campaign(&client, &ns, "sale", "limit: 120\n")
        .await
        .unwrap();
    let status = wait_status(&client, &ns, "sale", "LimitAccepted=False", |s| {
        status::condition(s, status::LIMIT_ACCEPTED).is_some_and(|c| c.status == "False")
    })
    .await;
    assert_eq!(
        condition(&status, status::LIMIT_ACCEPTED).1,
        Reason::LimitBelowAdmitted
    );
    assert_eq!(
        redis_get(&services, &CampaignKeys::new(&id).limit).await,
        Some(150)
    );
    assert!(
        event_reasons(&client, &ns, "sale")
            .await
            .contains(&Reason::LimitBelowAdmitted.to_string())
    );

    // Delete: the finalizer removes the Redis keys, leaving a tombstone that expires;
    // the coupons stay.
    delete_campaign(&client, &ns, "sale").await;
    let keys = CampaignKeys::new(&id);
    let redis = redis::Client::open(services.redis_url.as_str()).unwrap();
    let mut conn = redis.get_multiplexed_async_connection().await.unwrap();
    for key in keys.all() {
        let exists: bool = conn.exists(key).await.unwrap();
        assert!(!exists, "{key} removed");
    }
    let tombstone_ttl: i64 = conn.ttl(&keys.deleted).await.unwrap();
    assert!(tombstone_ttl > 3600, "tombstone expires: {tombstone_ttl}");
    let pool = firstcome_e2e::issuer::postgres(&services).await;
    assert_eq!(
        firstcome_e2e::issuer::coupons(&pool, &id).await.len(),
        150,
        "coupons are kept"
    );
    assert!(
        topic_exists(&services, &CampaignConfig::default_topic(&id)),
        "Retain keeps the topic"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_campaign_whose_policy_is_delete_removes_its_topic() {
    let services = Services::from_env();
    let client = client().await;
    install_crd(&client).await;
    let ns = namespace(&client, "topicdelete", &services, &services.redis_url).await;
    let _operator = start_operator(&ns, "only", &[]).await;
    let spec = "limit: 10\ndeletionPolicy:\n  topic: Delete\n";
    apply_campaign(&client, &ns, "sale", spec).await.unwrap();
    let status = wait_status(&client, &ns, "sale", "phase Open", |s| {
        s.phase == Phase::Open
    })
    .await;
    let topic = CampaignConfig::default_topic(&status.campaign_id.unwrap());
    assert!(
        topic_exists(&services, &topic),
        "the operator made the topic"
    );

    delete_campaign(&client, &ns, "sale").await;
    wait_for("the broker to drop the topic", TIMEOUT, || async {
        (!topic_exists(&services, &topic)).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_campaign_refuses_applies_until_it_opens() {
    let services = Services::from_env();
    let client = client().await;
    install_crd(&client).await;
    let ns = namespace(&client, "scheduled", &services, &services.redis_url).await;
    let _operator = start_operator(&ns, "only", &[]).await;
    // Far enough ahead that the issuer is up (a topic created, the campaign provisioned)
    // before it opens, even on a loaded machine.
    let (opens_at, _) = instant_in(30);
    apply_campaign(
        &client,
        &ns,
        "later",
        &format!("limit: 10\nopensAt: \"{opens_at}\"\n"),
    )
    .await
    .unwrap();
    let status = wait_status(&client, &ns, "later", "phase Scheduled", |s| {
        s.phase == Phase::Scheduled
    })
    .await;
    let id = status.campaign_id.unwrap();
    let issuer = start_issuer_like_the_deployment(&client, &ns, "later").await;
    let early = spike(&issuer, &id, ["early".to_string()].into_iter()).await;
    assert_eq!(early, vec![(StatusCode::TOO_EARLY, 1)]);

    wait_status(&client, &ns, "later", "phase Open", |s| {
        s.phase == Phase::Open
    })
    .await;
    let on_time = spike(&issuer, &id, ["on-time".to_string()].into_iter()).await;
    assert_eq!(on_time, vec![(StatusCode::CREATED, 1)]);
    assert!(
        event_reasons(&client, &ns, "later")
            .await
            .contains(&Reason::Opened.to_string())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_campaigns_are_rejected_and_an_unreachable_redis_recovers() {
    let services = Services::from_env();
    let client = client().await;
    install_crd(&client).await;
    let nowhere = "redis://127.0.0.1:1";
    let ns = namespace(&client, "faults", &services, nowhere).await;

    for (spec, expect) in [
        ("limit: 0\n", "limit"),
        (
            "limit: 10\nopensAt: 2030-01-02T00:00:00Z\ncloses At: x\n",
            "closes At",
        ),
        (
            "limit: 10\nopensAt: 2030-01-02T00:00:00Z\nclosesAt: 2030-01-01T00:00:00Z\n",
            "closesAt must be later than opensAt",
        ),
        ("limit: 10\nperUserLimit: 0\n", "perUserLimit"),
        ("limit: 10\ntopic: {name: \"has space\"}\n", "topic.name"),
        (
            "limit: 10\nidentity: {mode: jwt}\n",
            "identity mode jwt needs identity.jwt",
        ),
        ("limit: 10\nidentity: {mode: basic}\n", "identity.mode"),
        (
            "limit: 10\nidentity: {jwt: {issuer: i, audience: a, secretRef: {name: k}, jwksUrl: 'https://idp/jwks'}}\n",
            "exactly one of secretRef and jwksUrl",
        ),
        (
            "limit: 10\nidentity: {jwt: {issuer: i, audience: a, jwksUrl: 'http://idp.example/jwks'}}\n",
            "jwksUrl must be an https URL",
        ),
        (
            "limit: 10\nrateLimits: {perClient: {perSecond: 0, burst: 1}}\n",
            "rateLimits.perClient.perSecond",
        ),
        (
            "limit: 10\nrateLimits: {perUser: {perSecond: 1, burst: 1000001}}\n",
            "rateLimits.perUser.burst",
        ),
        (
            "limit: 10\nissuer: {trustedProxies: [10.0.0.0/8, ingress]}\n",
            "each entry must be a CIDR",
        ),
    ] {
        let error = apply_campaign(&client, &ns, "bad", spec)
            .await
            .expect_err(spec);
        assert!(error.to_string().contains(expect), "{spec}: {error}");
    }
    let good = "limit: 10\nrateLimits: {perClient: {perSecond: 50, burst: 100}}\n\
        issuer: {replicas: 0, trustedProxies: [10.0.0.0/8, 'fd00::1']}\n";
    apply_campaign(&client, &ns, "limited", good)
        .await
        .expect("rate limits and trusted proxies within bounds are accepted");
    let provider = "limit: 10\nissuer: {replicas: 0}\n\
        identity: {jwt: {issuer: i, audience: a, jwksUrl: 'https://login.example/jwks'}}\n";
    apply_campaign(&client, &ns, "provider-keys", provider)
        .await
        .expect("an https JWKS URL is accepted");

    let _operator = start_operator(&ns, "only", &[]).await;
    apply_campaign(&client, &ns, "fragile", "limit: 10\n")
        .await
        .unwrap();
    let status = wait_status(&client, &ns, "fragile", "RedisReady=False", |s| {
        status::condition(s, REDIS_READY).is_some_and(|c| c.status == "False")
    })
    .await;
    assert_eq!(status.phase, Phase::Provisioning);
    assert_eq!(condition(&status, REDIS_READY).1, Reason::RedisUnavailable);
    assert!(
        event_reasons(&client, &ns, "fragile")
            .await
            .contains(&Reason::RedisUnavailable.to_string())
    );

    put_backends_secret(&client, &ns, &services, &services.redis_url).await;
    let status = wait_status(&client, &ns, "fragile", "RedisReady=True", |s| {
        status::condition(s, REDIS_READY).is_some_and(|c| c.status == "True")
    })
    .await;
    assert_eq!(status.phase, Phase::Open);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_campaign_is_accepted_by_the_api_server() {
    let services = Services::from_env();
    let client = client().await;
    install_crd(&client).await;
    let ns = namespace(&client, "example", &services, &services.redis_url).await;
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/campaign.yaml");
    let example: CouponCampaign =
        serde_yaml_ng::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let accepted = Api::<CouponCampaign>::namespaced(client.clone(), &ns)
        .patch(
            "black-friday",
            &kube::api::PatchParams::apply("firstcome-e2e").dry_run(),
            &kube::api::Patch::Apply(&example),
        )
        .await
        .expect("the example is valid");
    assert_eq!(accepted.spec.limit, 100);
    let scaling = accepted
        .spec
        .issuer
        .scaling
        .expect("the example plans its issuers");
    assert_eq!((scaling.base_replicas, scaling.peak_replicas), (2, 12));
    let jwt = accepted
        .spec
        .identity
        .jwt
        .expect("the example names its keys");
    assert_eq!(jwt.secret_ref.unwrap().name, "black-friday-jwt-keys");

    // the waiting-room example: its Secret, then its campaign
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/waiting-room.yaml");
    let text = std::fs::read_to_string(path).unwrap();
    let campaign = (text.split("\n---\n").nth(1)).expect("the campaign after its Secret");
    let example: CouponCampaign = serde_yaml_ng::from_str(campaign).unwrap();
    let accepted = Api::<CouponCampaign>::namespaced(client.clone(), &ns)
        .patch(
            "winter-sale",
            &kube::api::PatchParams::apply("firstcome-e2e").dry_run(),
            &kube::api::Patch::Apply(&example),
        )
        .await
        .expect("the waiting-room example is valid");
    let page = accepted.spec.waiting_room.unwrap().page.unwrap();
    assert_eq!(page.title, "Winter sale");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_lease_holder_reconciles_and_killing_it_hands_over() {
    let services = Services::from_env();
    let client = client().await;
    install_crd(&client).await;
    let ns = namespace(&client, "leader", &services, &services.redis_url).await;
    let mut first = start_operator(&ns, "first", &["--lease-seconds", "3"]).await;
    wait_leader(&first, "the first operator to lead").await;
    let second = start_operator(&ns, "second", &["--lease-seconds", "3"]).await;

    apply_campaign(&client, &ns, "one", "limit: 5\n")
        .await
        .unwrap();
    wait_status(&client, &ns, "one", "phase Open", |s| {
        s.phase == Phase::Open
    })
    .await;
    let second_metrics = second.metrics().await;
    assert!(
        second_metrics.contains("firstcome_operator_leader 0"),
        "{second_metrics}"
    );
    assert!(
        !second_metrics.contains("firstcome_operator_reconciles_total{outcome=\"ok\"}"),
        "the standby reconciled:\n{second_metrics}"
    );

    first.kill();
    wait_leader(&second, "the second operator to take over").await;
    apply_campaign(&client, &ns, "two", "limit: 5\n")
        .await
        .unwrap();
    wait_status(&client, &ns, "two", "phase Open by the new leader", |s| {
        s.phase == Phase::Open
    })
    .await;
    let lease = Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(client.clone(), &ns)
        .get("firstcome-operator")
        .await
        .unwrap();
    assert_eq!(
        lease.spec.unwrap().holder_identity.as_deref(),
        Some("second")
    );
}

/// SIGTERM on the leader releases the lease: the standby takes over in about its retry
/// period, not after the 15 s the lease would take to expire.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_on_the_leader_hands_the_lease_over_at_once() {
    let services = Services::from_env();
    let client = client().await;
    install_crd(&client).await;
    let ns = namespace(&client, "handover", &services, &services.redis_url).await;
    let lease = ["--lease-seconds", "15"];
    let mut first = start_operator(&ns, "first", &lease).await;
    wait_leader(&first, "the first operator to lead").await;
    let second = start_operator(&ns, "second", &lease).await;
    apply_campaign(&client, &ns, "one", "limit: 5\n")
        .await
        .unwrap();
    wait_status(&client, &ns, "one", "phase Open", |s| {
        s.phase == Phase::Open
    })
    .await;

    let stopping = std::time::Instant::now();
    first.terminate();
    wait_leader(&second, "the second operator to take over").await;
    let handover = stopping.elapsed();
    assert!(
        handover < Duration::from_secs(5),
        "the hand-over took {handover:?} against a 15 s lease"
    );
    assert!(
        first.wait_exit(Duration::from_secs(10)).await,
        "the old leader exits 0 after releasing the lease"
    );
    let lease = Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(client.clone(), &ns)
        .get("firstcome-operator")
        .await
        .unwrap();
    assert_eq!(
        lease.spec.unwrap().holder_identity.as_deref(),
        Some("second")
    );
    apply_campaign(&client, &ns, "two", "limit: 5\n")
        .await
        .unwrap();
    wait_status(&client, &ns, "two", "phase Open by the new leader", |s| {
        s.phase == Phase::Open
    })
    .await;
}

/// A stored campaign the operator cannot read (the CRD says `format: uint32` for
/// perUserLimit, which the API server does not enforce) is reported and skipped; the
/// valid campaign beside it is reconciled as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_campaign_does_not_stall_the_others() {
    let services = Services::from_env();
    let client = client().await;
    install_crd(&client).await;
    let ns = namespace(&client, "malformed", &services, &services.redis_url).await;
    let too_many = u64::from(u32::MAX) + 1;
    apply_raw_campaign(
        &client,
        &ns,
        "malformed",
        serde_json::json!({ "limit": 10, "perUserLimit": too_many }),
    )
    .await
    .expect("the API server stores what its schema allows");
    let campaigns = Api::<CouponCampaign>::namespaced(client.clone(), &ns);
    let read = campaigns.get("malformed").await;
    assert!(
        matches!(read, Err(kube::Error::SerdeError(_))),
        "the typed client cannot read it: {read:?}"
    );

    let operator = start_operator(&ns, "only", &[]).await;
    apply_campaign(&client, &ns, "valid", "limit: 5\n")
        .await
        .unwrap();
    wait_status(&client, &ns, "valid", "phase Open", |s| {
        s.phase == Phase::Open
    })
    .await;
    wait_for(
        "an InvalidObject event on the malformed campaign",
        TIMEOUT,
        || async {
            event_reasons(&client, &ns, "malformed")
                .await
                .contains(&Reason::InvalidObject.to_string())
                .then_some(())
        },
    )
    .await;
    let metrics = operator.metrics().await;
    assert!(
        metrics.contains("firstcome_operator_reconcile_failures_total{error=\"invalid_object\"}"),
        "{metrics}"
    );
}

/// Each backend failure shows on the condition of the step it blocked, with the reason
/// of its kind: an invalid Redis URL is a settings problem, not an unavailable Redis, and
/// leaves the topic alone; a missing Secret blocks both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_failures_show_their_own_reason() {
    let services = Services::from_env();
    let client = client().await;
    install_crd(&client).await;
    let ns = namespace(&client, "reasons", &services, "not-a-redis-url").await;
    let _operator = start_operator(&ns, "only", &[]).await;
    apply_campaign(&client, &ns, "bad-url", "limit: 5\n")
        .await
        .unwrap();
    apply_campaign(
        &client,
        &ns,
        "no-secret",
        "limit: 5\nbackends: {secretName: absent}\n",
    )
    .await
    .unwrap();
    let status = wait_status(&client, &ns, "bad-url", "RedisReady=False", |s| {
        status::condition(s, REDIS_READY).is_some_and(|c| c.status == "False")
    })
    .await;
    assert_eq!(
        condition(&status, REDIS_READY).1,
        Reason::InvalidBackendSettings
    );
    assert_eq!(condition(&status, TOPIC_READY).0, "True");
    let status = wait_status(&client, &ns, "no-secret", "RedisReady=False", |s| {
        status::condition(s, REDIS_READY).is_some_and(|c| c.status == "False")
    })
    .await;
    for kind in [REDIS_READY, TOPIC_READY, READY] {
        assert_eq!(
            condition(&status, kind).1,
            Reason::BackendsSecretMissing,
            "{kind}"
        );
    }
    assert_eq!(status.phase, Phase::Provisioning);
}

/// A waiting room's spec is validated by the API server, and its line shows in the
/// status. That its issuers hand out passes, their Secret mounted for real, is
/// tests/node.rs's `a_waiting_room_campaigns_pod_hands_out_passes_on_a_real_node`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_room_is_validated_and_its_line_shows_in_the_status() {
    let services = Services::from_env();
    let client = client().await;
    install_crd(&client).await;
    let ns = namespace(&client, "room", &services, &services.redis_url).await;
    let room = |fields: &str| format!("limit: 10\nwaitingRoom: {{{fields}}}\n");
    let secret = "secretRef: {name: room-secret}";
    for (spec, expect) in [
        (
            room(&format!("admissionRate: 0, {secret}")),
            "waitingRoom.admissionRate",
        ),
        (
            room(&format!("admissionRate: 100001, {secret}")),
            "waitingRoom.admissionRate",
        ),
        (room("admissionRate: 5"), "waitingRoom.secretRef"),
        (
            room(&format!("admissionRate: 5, maxActive: 0, {secret}")),
            "waitingRoom.maxActive",
        ),
        (
            room(&format!("admissionRate: 5, passTtlSeconds: 9, {secret}")),
            "waitingRoom.passTtlSeconds",
        ),
        (
            room(&format!(
                "admissionRate: 5, ticketTimeoutSeconds: 3601, {secret}"
            )),
            "waitingRoom.ticketTimeoutSeconds",
        ),
        (
            room(&format!(
                "admissionRate: 5, prequeueOpensAt: 2030-01-01T00:00:00Z, {secret}"
            )),
            "prequeueOpensAt needs opensAt",
        ),
        (
            format!(
                "opensAt: 2030-01-01T00:00:00Z\n{}",
                room(&format!(
                    "admissionRate: 5, prequeueOpensAt: 2030-01-02T00:00:00Z, {secret}"
                ))
            ),
            "prequeueOpensAt needs opensAt",
        ),
        (
            room(&format!("admissionRate: 5, page: {{title: ''}}, {secret}")),
            "waitingRoom.page.title",
        ),
        (
            room(&format!(
                "admissionRate: 5, page: {{title: {}}}, {secret}",
                "t".repeat(81)
            )),
            "waitingRoom.page.title",
        ),
        (
            room(&format!(
                "admissionRate: 5, page: {{message: {}}}, {secret}",
                "m".repeat(501)
            )),
            "waitingRoom.page.message",
        ),
        (
            room(&format!(
                "admissionRate: 5, page: {{accentColor: red}}, {secret}"
            )),
            "waitingRoom.page.accentColor",
        ),
        (
            room(&format!(
                "admissionRate: 5, page: {{backgroundColor: '#fff'}}, {secret}"
            )),
            "waitingRoom.page.backgroundColor",
        ),
    ] {
        let error = apply_campaign(&client, &ns, "bad", &spec)
            .await
            .expect_err(&spec);
        assert!(error.to_string().contains(expect), "{spec}: {error}");
    }

    put_room_secret(&client, &ns).await;
    let _operator = start_operator(&ns, "only", &[]).await;
    let spec = format!(
        "issuer: {{replicas: 0}}\n{}",
        room(&format!("admissionRate: 20, {secret}"))
    );
    apply_campaign(&client, &ns, "queued", &spec).await.unwrap();
    let status = wait_status(&client, &ns, "queued", "phase Open", |s| {
        s.phase == Phase::Open
    })
    .await;
    let id = status.campaign_id.unwrap();
    line_shows_in_the_status(&client, &ns, &services, &id).await;
}

/// The status shows the room's rate and its line as Redis holds it: three tickets put
/// in line by hand (no issuer runs yet to let them in), then taken out again.
async fn line_shows_in_the_status(client: &kube::Client, ns: &str, services: &Services, id: &str) {
    let queue = CampaignKeys::new(id).room_queue;
    let mut redis = redis::Client::open(services.redis_url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let line = [(1.0, "t1"), (2.0, "t2"), (3.0, "t3")];
    let _: () = redis.zadd_multiple(&queue, &line).await.unwrap();
    let status = wait_status(client, ns, "queued", "3 waiting", |s| {
        s.waiting_room.is_some_and(|room| room.queue_length == 3)
    })
    .await;
    assert_eq!(status.waiting_room.unwrap().admission_rate, 20);
    let _: () = redis.del(&queue).await.unwrap();
}

/// The waiting room's Secret, as a user creates it: key `secret`, 32 bytes or more.
async fn put_room_secret(client: &kube::Client, namespace: &str) {
    use k8s_openapi::ByteString;
    use k8s_openapi::api::core::v1::Secret;
    let secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some("room-secret".into()),
            ..Default::default()
        },
        data: Some(
            [(
                "secret".to_string(),
                ByteString(b"a room secret of more than 32 bytes".to_vec()),
            )]
            .into(),
        ),
        ..Secret::default()
    };
    Api::<Secret>::namespaced(client.clone(), namespace)
        .create(&Default::default(), &secret)
        .await
        .expect("creating the waiting room's Secret");
}
