//! The real kube-apiserver of `scripts/controlplane`: the CRD, a namespace per test with
//! its backends Secret, the operator and issuers as local processes.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use firstcome_operator::resource::{CouponCampaign, CouponCampaignStatus};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    ApiResource, DynamicObject, ListParams, ObjectMeta, Patch, PatchParams, PostParams,
};
use kube::{Api, Client};
use serde_json::json;

use crate::process::{Ports, Process, free_port};
use crate::{Services, wait_for};

/// A client for the test control plane (KUBECONFIG from `scripts/controlplane env`).
pub async fn client() -> Client {
    crate::required_env("KUBECONFIG");
    Client::try_default()
        .await
        .expect("a client for the test control plane")
}

/// Applies `crds/couponcampaigns.yaml` and waits until the API serves it.
pub async fn install_crd(client: &Client) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../crds/couponcampaigns.yaml");
    let crd: CustomResourceDefinition =
        serde_yaml_ng::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    api.patch(
        "couponcampaigns.firstcome.dev",
        &PatchParams::apply("firstcome-e2e").force(),
        &Patch::Apply(&crd),
    )
    .await
    .expect("applying the CRD");
    wait_for(
        "the CRD to be established",
        Duration::from_secs(30),
        || async {
            let crd = api.get("couponcampaigns.firstcome.dev").await.ok()?;
            let established = crd
                .status?
                .conditions?
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True");
            established.then_some(())
        },
    )
    .await;
}

/// A fresh namespace holding a `firstcome-backends` Secret with `redis_url` for Redis
/// and the test bed's Kafka and PostgreSQL.
pub async fn namespace(
    client: &Client,
    prefix: &str,
    services: &Services,
    redis_url: &str,
) -> String {
    let name = crate::unique_name(prefix);
    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &Namespace {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    ..ObjectMeta::default()
                },
                ..Namespace::default()
            },
        )
        .await
        .expect("creating a namespace");
    put_backends_secret(client, &name, services, redis_url).await;
    name
}

pub async fn put_backends_secret(
    client: &Client,
    namespace: &str,
    services: &Services,
    redis_url: &str,
) {
    let data = BTreeMap::from([
        (
            "redis-url".to_string(),
            ByteString(redis_url.as_bytes().to_vec()),
        ),
        (
            "kafka-brokers".to_string(),
            ByteString(services.kafka_brokers.as_bytes().to_vec()),
        ),
        (
            "database-url".to_string(),
            ByteString(services.database_url.as_bytes().to_vec()),
        ),
    ]);
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some("firstcome-backends".into()),
            ..ObjectMeta::default()
        },
        data: Some(data),
        ..Secret::default()
    };
    Api::<Secret>::namespaced(client.clone(), namespace)
        .patch(
            "firstcome-backends",
            &PatchParams::apply("firstcome-e2e").force(),
            &Patch::Apply(&secret),
        )
        .await
        .expect("writing the backends Secret");
}

/// The operator as a local process, watching `namespace` and electing its leader there.
pub async fn start_operator(namespace: &str, identity: &str, extra: &[&str]) -> Process {
    let port = free_port();
    let mut args: Vec<String> = [
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--watch-namespace",
        namespace,
        "--lease-namespace",
        namespace,
        "--identity",
        identity,
        "--issuer-image",
        "firstcome:e2e",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    Process::start(
        "firstcome-operator",
        &args,
        &[],
        Ports::one(port),
        "/healthz",
    )
    .await
}

/// Waits until `operator` reports that it holds the leader lease. The sample's own line,
/// not a substring: the metric's HELP text reads "firstcome_operator_leader 1 while …".
pub async fn wait_leader(operator: &Process, what: &str) {
    wait_for(what, Duration::from_secs(60), || async {
        let metrics = operator.metrics().await;
        metrics
            .lines()
            .any(|line| line == "firstcome_operator_leader 1")
            .then_some(())
    })
    .await;
}

/// Starts an issuer the way the operator's Deployment runs it: its arguments and
/// environment, its ConfigMap and Secret volumes ([`crate::kubelet`]).
pub async fn start_issuer_like_the_deployment(
    client: &Client,
    namespace: &str,
    campaign: &str,
) -> Process {
    crate::kubelet::run_pod_of(client, namespace, &format!("{campaign}-issuer")).await
}

/// Creates or updates a campaign from its YAML spec.
pub async fn apply_campaign(
    client: &Client,
    namespace: &str,
    name: &str,
    spec_yaml: &str,
) -> Result<(), kube::Error> {
    let spec = serde_yaml_ng::from_str(spec_yaml).unwrap();
    apply_raw_campaign(client, namespace, name, spec).await
}

/// Stores a campaign as raw JSON, without the typed client: the API server's schema is the
/// only check, so the object may be one `CouponCampaign` cannot read back. A spec that
/// does not say its identity (which the CRD requires) gets `none`, so these tests apply
/// with a body `userId`.
pub async fn apply_raw_campaign(
    client: &Client,
    namespace: &str,
    name: &str,
    mut spec: serde_json::Value,
) -> Result<(), kube::Error> {
    if let Some(fields) = spec.as_object_mut() {
        fields
            .entry("identity")
            .or_insert_with(|| json!({ "mode": "none" }));
    }
    let resource = ApiResource::erase::<CouponCampaign>(&());
    let campaign = json!({
        "apiVersion": resource.api_version,
        "kind": resource.kind,
        "metadata": { "name": name },
        "spec": spec,
    });
    Api::<DynamicObject>::namespaced_with(client.clone(), namespace, &resource)
        .patch(
            name,
            &PatchParams::apply("firstcome-e2e").force(),
            &Patch::Apply(campaign),
        )
        .await
        .map(|_| ())
}

/// Waits until the campaign's status satisfies `check`, and returns it.
pub async fn wait_status(
    client: &Client,
    namespace: &str,
    name: &str,
    what: &str,
    check: impl Fn(&CouponCampaignStatus) -> bool,
) -> CouponCampaignStatus {
    let api: Api<CouponCampaign> = Api::namespaced(client.clone(), namespace);
    wait_for(what, Duration::from_secs(60), || async {
        let status = api.get(name).await.ok()?.status?;
        check(&status).then_some(status)
    })
    .await
}

/// Plays the kubelet: marks `ready` of the campaign's issuer pods Running and Ready, so
/// the ReplicaSet and Deployment controllers report them, as on a real cluster.
pub async fn report_ready_issuers(client: &Client, namespace: &str, campaign: &str, ready: i32) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let campaigns: Api<CouponCampaign> = Api::namespaced(client.clone(), namespace);
    let selector = format!("app.kubernetes.io/instance={campaign}");
    let names: Vec<String> = wait_for(
        "the issuer pods to be created",
        Duration::from_secs(60),
        || async {
            let list = pods
                .list(&ListParams::default().labels(&selector))
                .await
                .ok()?;
            let names: Vec<String> = list
                .items
                .iter()
                .filter_map(|p| p.metadata.name.clone())
                .collect();
            (names.len() >= ready as usize).then_some(names)
        },
    )
    .await;
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    for name in names.iter().take(ready as usize) {
        let patch = json!({ "status": {
            "phase": "Running",
            "conditions": [
                { "type": "PodScheduled", "status": "True", "lastTransitionTime": now },
                { "type": "Ready", "status": "True", "lastTransitionTime": now },
                { "type": "ContainersReady", "status": "True", "lastTransitionTime": now },
            ],
        }});
        pods.patch_status(name, &PatchParams::default(), &Patch::Strategic(patch))
            .await
            .expect("marking an issuer pod ready");
    }
    wait_for(
        "the campaign to see its ready issuers",
        Duration::from_secs(60),
        || async {
            let status = campaigns.get(campaign).await.ok()?.status?;
            (status.ready_issuers == ready).then_some(())
        },
    )
    .await;
}

/// Reasons of the events published about a campaign.
pub async fn event_reasons(client: &Client, namespace: &str, campaign: &str) -> Vec<String> {
    Api::<Event>::namespaced(client.clone(), namespace)
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(campaign))
        .filter_map(|e| e.reason)
        .collect()
}

/// `kubectl get couponcampaigns` as a user sees it.
pub fn kubectl_get(namespace: &str) -> String {
    let bin = crate::required_env("FIRSTCOME_CONTROLPLANE_BIN");
    let output = std::process::Command::new(format!("{bin}/kubectl"))
        .args(["get", "couponcampaigns", "-n", namespace])
        .output()
        .expect("running kubectl");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// RFC 3339 `seconds` from now, in whole seconds, and the same instant.
pub fn instant_in(seconds: u64) -> (String, SystemTime) {
    let secs = (SystemTime::now() + Duration::from_secs(seconds))
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let text = k8s_openapi::jiff::Timestamp::from_second(secs as i64)
        .unwrap()
        .to_string();
    (text, SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
}
