//! What a user does on a real node — `scripts/node`'s, or a kind cluster's
//! (tests/e2e-kind/run.sh) — shared by tests/node.rs and tests/node_uninstall.rs:
//! kubectl and helm as commands, the chart installed as docs/install.md says, a shop
//! namespace with its Secrets, campaigns adapted from examples/, their pods, and spikes
//! of signed-in users through a campaign's Service.

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::ListParams;
use kube::{Api, Client};
use serde_yaml_ng::Value;

use crate::spike::{Answer, Retry, Spike, users};
use crate::{Services, cluster, tokens, wait_for};
use firstcome_operator::resource::Phase;

pub const RELEASE: &str = "firstcome";
pub const SYSTEM: &str = "firstcome-system";
const OPERATOR_SELECTOR: &str = "app.kubernetes.io/name=firstcome-operator";
/// The spike's client addresses, `a.b.c.0/24` local on the machine the tests run on and
/// able to reach ClusterIPs: FIRSTCOME_E2E_CROWD (`a.b.c`), by default scripts/node's
/// 10.250.1.0/24 (routed to lo in its namespace; tests/e2e-kind/run.sh routes it so on
/// the host).
fn crowd_addresses() -> [u8; 3] {
    let Ok(prefix) = std::env::var("FIRSTCOME_E2E_CROWD") else {
        return [10, 250, 1];
    };
    let octets: Vec<u8> = (prefix.split('.').map(str::parse))
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("FIRSTCOME_E2E_CROWD {prefix:?}: {e}"));
    octets
        .try_into()
        .unwrap_or_else(|_| panic!("FIRSTCOME_E2E_CROWD {prefix:?} is not a.b.c"))
}
const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples");
pub const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../charts/firstcome");
pub const CRD: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../charts/firstcome/crds/couponcampaigns.yaml"
);

/// Runs a command a user would run (kubectl, helm), feeding it `stdin`: its stdout, or
/// what it printed when it failed.
pub fn try_run(program: &str, args: &[&str], stdin: Option<&str>) -> Result<String, String> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("running {program}: {e}"));
    let mut input = child.stdin.take().expect("a piped stdin");
    if let Some(text) = stdin {
        use std::io::Write;
        input.write_all(text.as_bytes()).expect("writing stdin");
    }
    drop(input);
    let output = child.wait_with_output().expect("waiting for a command");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if output.status.success() {
        Ok(stdout)
    } else {
        let stderr = String::from_utf8_lossy(&output.stderr);
        Err(format!("{program} {args:?} failed: {stdout}{stderr}"))
    }
}

/// Like [`try_run`], failing the test when the command fails.
pub fn run(program: &str, args: &[&str], stdin: Option<&str>) -> String {
    try_run(program, args, stdin).unwrap_or_else(|e| panic!("{e}"))
}

pub fn kubectl(args: &[&str]) -> String {
    run("kubectl", args, None)
}

/// `kubectl apply -n <namespace> -f -` of `yaml`.
pub fn kubectl_apply(namespace: &str, yaml: &str) {
    run(
        "kubectl",
        &["apply", "-n", namespace, "-f", "-"],
        Some(yaml),
    );
}

/// The `--set` arguments naming the image scripts/image built (FIRSTCOME_IMAGE, e.g.
/// localhost/firstcome:node), imported into the node's containerd: no registry.
pub fn image_values() -> Vec<String> {
    let image = crate::required_env("FIRSTCOME_IMAGE");
    let (repository, tag) = image.rsplit_once(':').expect("FIRSTCOME_IMAGE is repo:tag");
    [
        format!("image.repository={repository}"),
        format!("image.tag={tag}"),
        "image.pullPolicy=Never".to_string(),
    ]
    .into_iter()
    .flat_map(|v| ["--set".to_string(), v])
    .collect()
}

/// `helm install` (or, once installed, `helm upgrade`) of the chart with `--wait`, as
/// docs/install.md says, with `values` (`key=value`) set.
pub fn helm(verb: &str, values: &[&str]) {
    let mut args: Vec<String> = [verb, RELEASE, CHART, "--namespace", SYSTEM]
        .map(String::from)
        .to_vec();
    if verb == "install" {
        args.push("--create-namespace".into());
    }
    args.extend(image_values());
    for value in values {
        args.extend(["--set".to_string(), value.to_string()]);
    }
    args.extend(["--wait", "--timeout", "300s"].map(String::from));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run("helm", &args, None);
}

/// Installs the chart unless a test before did; then two operator pods are Ready and one
/// holds the leader Lease, whose name is returned.
pub async fn chart_installed(client: &Client) -> String {
    if try_run("helm", &["status", RELEASE, "--namespace", SYSTEM], None).is_err() {
        helm("install", &[]);
    }
    let pods = wait_for(
        "two operator pods Ready",
        Duration::from_secs(120),
        || async {
            let ready = ready_operator_pods(client).await;
            (ready.len() == 2).then_some(ready)
        },
    )
    .await;
    leader_among(client, &pods).await
}

pub fn is_ready(pod: &Pod) -> bool {
    let conditions = pod.status.as_ref().and_then(|s| s.conditions.as_ref());
    let deleting = pod.metadata.deletion_timestamp.is_some();
    !deleting
        && conditions.is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Names of the Ready pods in `namespace` matching `selector`.
pub async fn ready_pods(client: &Client, namespace: &str, selector: &str) -> Vec<String> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let Ok(list) = pods.list(&ListParams::default().labels(selector)).await else {
        return Vec::new();
    };
    list.items
        .iter()
        .filter(|p| is_ready(p))
        .filter_map(|p| p.metadata.name.clone())
        .collect()
}

pub async fn ready_operator_pods(client: &Client) -> Vec<String> {
    ready_pods(client, SYSTEM, OPERATOR_SELECTOR).await
}

/// Waits until one of `candidates` holds the operator's leader Lease; its name.
pub async fn leader_among(client: &Client, candidates: &[String]) -> String {
    let leases: Api<Lease> = Api::namespaced(client.clone(), SYSTEM);
    wait_for(
        &format!("one of {candidates:?} to hold the leader Lease"),
        Duration::from_secs(60),
        || async {
            let list = leases.list(&ListParams::default()).await.ok()?;
            list.items
                .iter()
                .filter_map(|l| l.spec.as_ref()?.holder_identity.clone())
                .find(|h| candidates.contains(h))
        },
    )
    .await
}

/// Who holds the operator's leader Lease now.
pub async fn lease_holder(client: &Client) -> Option<String> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), SYSTEM);
    let lease = leases.get_opt(RELEASE).await.ok()??;
    lease.spec?.holder_identity.filter(|h| !h.is_empty())
}

/// A shop namespace as docs/install.md has the user make it: the namespace, the
/// backends Secret naming the test bed (the managed services) and the identity Secret
/// with the test identity provider's public key. Idempotent.
pub async fn shop(client: &Client, services: &Services, namespace: &str) {
    let yaml = format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {namespace}\n");
    run("kubectl", &["apply", "-f", "-"], Some(&yaml));
    cluster::put_backends_secret(client, namespace, services, &services.redis_url).await;
    kubectl_apply(namespace, &identity_secret());
}

/// examples/identity-secret.yaml with the test identity provider's public key.
fn identity_secret() -> String {
    let path = format!("{EXAMPLES}/identity-secret.yaml");
    let mut secret: Value = serde_yaml_ng::from_str(&std::fs::read_to_string(path).unwrap())
        .expect("examples/identity-secret.yaml");
    let key = String::from_utf8(tokens::fixture("test-only-rsa.pub.pem")).unwrap();
    secret["stringData"] = serde_yaml_ng::to_value(HashMap::from([(tokens::KID, key)])).unwrap();
    serde_yaml_ng::to_string(&secret).unwrap()
}

/// examples/campaign.yaml named `name`, as a user adapts it to this one-node cluster:
/// opening now, one Kafka replica, two issuers with small requests, no autoscaler (no
/// metrics-server here), the test identity provider; then `edit` changes its spec.
pub fn campaign(name: &str, edit: impl FnOnce(&mut Value)) -> String {
    let path = format!("{EXAMPLES}/campaign.yaml");
    let mut campaign: Value = serde_yaml_ng::from_str(&std::fs::read_to_string(path).unwrap())
        .expect("examples/campaign.yaml");
    campaign["metadata"]["name"] = name.into();
    let spec = campaign["spec"].as_mapping_mut().unwrap();
    spec.remove("opensAt");
    spec.remove("closesAt");
    let spec = &mut campaign["spec"];
    spec["topic"]["replicationFactor"] = 1.into();
    spec["issuer"]["scaling"] =
        serde_yaml_ng::from_str("{ baseReplicas: 2, peakReplicas: 2 }").expect("scaling");
    spec["issuer"]["resources"]["requests"]["cpu"] = "100m".into();
    spec["identity"]["jwt"]["issuer"] = tokens::ISSUER.into();
    spec["identity"]["jwt"]["audience"] = tokens::AUDIENCE.into();
    edit(spec);
    serde_yaml_ng::to_string(&campaign).unwrap()
}

/// Applies `yaml` (a campaign opening now) and waits until it is Open, its issuer
/// Deployment rolled out and its pods Ready through their real probes; the campaign id.
pub async fn open_campaign(client: &Client, namespace: &str, name: &str, yaml: &str) -> String {
    kubectl_apply(namespace, yaml);
    let status = cluster::wait_status(client, namespace, name, "phase Open", |s| {
        s.phase == Phase::Open
    })
    .await;
    issuers_rolled_out(namespace, name);
    status.campaign_id.expect("a campaign id")
}

/// `kubectl rollout status` of the campaign's issuer Deployment, then its pods Ready.
pub fn issuers_rolled_out(namespace: &str, name: &str) {
    let deployment = format!("deployment/{name}-issuer");
    kubectl(&[
        "rollout",
        "status",
        "-n",
        namespace,
        &deployment,
        "--timeout=300s",
    ]);
    kubectl(&[
        "wait",
        "-n",
        namespace,
        "pod",
        "-l",
        &issuer_selector(name),
        "--for=condition=Ready",
        "--timeout=120s",
    ]);
}

/// The label selector of a campaign's issuer pods.
pub fn issuer_selector(campaign: &str) -> String {
    format!("app.kubernetes.io/instance={campaign}")
}

/// `http://<ClusterIP>:<port>` of the campaign's Service.
pub async fn service_base(client: &Client, namespace: &str, name: &str) -> String {
    let services: Api<Service> = Api::namespaced(client.clone(), namespace);
    let service = services
        .get(&format!("{name}-issuer"))
        .await
        .expect("the campaign's Service");
    let spec = service.spec.expect("a Service spec");
    let ip = spec.cluster_ip.expect("a ClusterIP");
    let port = spec.ports.expect("ports")[0].port;
    format!("http://{ip}:{port}")
}

/// `count` users named `{prefix}-n` with signed tokens, applying through the campaign's
/// Service from the node's crowd addresses, retrying as docs/api.md tells clients to.
pub async fn signed_spike(
    client: &Client,
    namespace: &str,
    name: &str,
    id: &str,
    prefix: &str,
    count: usize,
) -> (Spike, Vec<String>) {
    let base = service_base(client, namespace, name).await;
    let crowd = users(prefix, count);
    // An hour: signing is slow in a debug build, and a scenario's spikes come in waves.
    let exp = chrono::Utc::now().timestamp() + 3600;
    let signed = tokens::tokens_for(&crowd, exp);
    let spike = Spike::new(&[&base], id)
        .crowd(crowd_addresses())
        .tokens(signed)
        .retry(Retry::UNTIL_ANSWERED);
    (spike, crowd)
}

/// Starts `spike` of `crowd` in the background, counting answers into the returned
/// counter.
pub fn start(
    spike: Spike,
    crowd: Vec<String>,
) -> (Arc<AtomicUsize>, tokio::task::JoinHandle<Vec<Answer>>) {
    let progress = Arc::new(AtomicUsize::new(0));
    let answers = tokio::spawn(spike.progress(progress.clone()).run(crowd));
    (progress, answers)
}

/// Fails unless every answer is one docs/api.md lists for an apply a valid, signed-in
/// user sends to an open campaign: 201 `admitted`, 409 `already_applied`, 410
/// `sold_out`, 503 `admission_unconfirmed` (what a client retrying 503
/// `backend_unavailable` and 429 `rate_limited` ends with).
pub fn assert_only_listed_answers(answers: &[Answer]) {
    let listed = [
        (201, "admitted"),
        (409, "already_applied"),
        (410, "sold_out"),
        (503, "admission_unconfirmed"),
    ];
    let unlisted: Vec<String> = answers
        .iter()
        .filter(|a| {
            let answer = a.status.map(|s| s.as_u16());
            let reason = a.body["reason"].as_str().unwrap_or_default();
            !listed
                .iter()
                .any(|&(s, r)| answer == Some(s) && reason == r)
        })
        .map(|a| format!("{}: {:?} {}", a.user, a.status, a.body))
        .take(10)
        .collect();
    assert!(
        unlisted.is_empty(),
        "answers docs/api.md does not list: {unlisted:?}"
    );
}
