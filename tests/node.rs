//! End to end on a real node (`scripts/node`): what README.md and docs/install.md tell a
//! user to do — `helm install` the chart, the backends and identity Secrets, a campaign
//! from examples/ — with pods of the image built from the Dockerfile, then a spike of
//! signed-in users through the campaign's ClusterIP Service (kube-proxy).
//!
//! Runs inside the node's namespace, where its apiserver, its ClusterIPs and the test bed
//! on the node's address are reachable: `scripts/node exec cargo test -p firstcome-e2e
//! --test node -- --ignored` (scripts/test's "e2e on node" stage; docs/testing.md).

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use firstcome_e2e::invariants::assert_invariants;
use firstcome_e2e::spike::{Outcome, Spike, tally, users};
use firstcome_e2e::{Services, cluster, required_env, tokens, wait_for};
use firstcome_operator::resource::Phase;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::Api;
use kube::api::ListParams;
use serde_yaml_ng::Value;

const RELEASE: &str = "firstcome";
const SYSTEM: &str = "firstcome-system";
const SHOP: &str = "shop";
const CAMPAIGN: &str = "black-friday";
const LIMIT: usize = 100;
const USERS: usize = 1000;
/// The node's spike addresses (scripts/node routes 10.250.1.0/24 to lo).
const CROWD: [u8; 3] = [10, 250, 1];
const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples");
const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../charts/firstcome");

/// Runs a command a user would run (kubectl, helm), feeding it `stdin`; its stdout.
fn run(program: &str, args: &[&str], stdin: Option<&str>) -> String {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("running {program}: {e}"));
    if let Some(input) = stdin {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn kubectl(args: &[&str]) -> String {
    run("kubectl", args, None)
}

/// `helm install` with the image scripts/image built (FIRSTCOME_IMAGE, e.g.
/// localhost/firstcome:node), imported into the node's containerd: no registry.
fn helm_install() {
    let image = required_env("FIRSTCOME_IMAGE");
    let (repository, tag) = image.rsplit_once(':').expect("FIRSTCOME_IMAGE is repo:tag");
    run(
        "helm",
        &[
            "install",
            RELEASE,
            CHART,
            "--namespace",
            SYSTEM,
            "--create-namespace",
            "--set",
            &format!("image.repository={repository}"),
            "--set",
            &format!("image.tag={tag}"),
            "--set",
            "image.pullPolicy=Never",
            "--wait",
            "--timeout",
            "300s",
        ],
        None,
    );
}

fn ready(pod: &Pod) -> bool {
    let conditions = pod.status.as_ref().and_then(|s| s.conditions.as_ref());
    conditions.is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Two operator pods Ready, one of them holding the leader Lease.
async fn assert_operator_ready_with_one_leader(client: &kube::Client) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), SYSTEM);
    let selector = "app.kubernetes.io/name=firstcome-operator";
    let names: Vec<String> = pods
        .list(&ListParams::default().labels(selector))
        .await
        .unwrap()
        .items
        .iter()
        .filter(|p| ready(p))
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    assert_eq!(names.len(), 2, "two operator pods Ready: {names:?}");
    let leases: Api<Lease> = Api::namespaced(client.clone(), SYSTEM);
    let holder = wait_for(
        "an operator pod to hold the leader Lease",
        Duration::from_secs(60),
        || async {
            let list = leases.list(&ListParams::default()).await.ok()?;
            list.items
                .iter()
                .filter_map(|l| l.spec.as_ref()?.holder_identity.clone())
                .find(|h| names.contains(h))
        },
    )
    .await;
    println!("leader: {holder}");
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

/// examples/campaign.yaml as a user adapts it to this one-node cluster: opening now,
/// one Kafka replica, two issuers with small requests, no autoscaler (no
/// metrics-server here), the test identity provider.
fn campaign() -> String {
    let path = format!("{EXAMPLES}/campaign.yaml");
    let mut campaign: Value = serde_yaml_ng::from_str(&std::fs::read_to_string(path).unwrap())
        .expect("examples/campaign.yaml");
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
    assert_eq!(
        spec["limit"].as_u64(),
        Some(LIMIT as u64),
        "the example's limit"
    );
    serde_yaml_ng::to_string(&campaign).unwrap()
}

/// `http://<ClusterIP>:<port>` of the campaign's Service.
async fn service_base(client: &kube::Client) -> String {
    let services: Api<Service> = Api::namespaced(client.clone(), SHOP);
    let service = services
        .get(&format!("{CAMPAIGN}-issuer"))
        .await
        .expect("the campaign's Service");
    let spec = service.spec.expect("a Service spec");
    let ip = spec.cluster_ip.expect("a ClusterIP");
    let port = spec.ports.expect("ports")[0].port;
    format!("http://{ip}:{port}")
}

#[tokio::test]
#[ignore = "needs the real node: scripts/node exec cargo test -p firstcome-e2e --test node -- --ignored"]
async fn a_user_installs_the_chart_and_sells_out_a_campaign_on_a_real_node() {
    let services = Services::from_env();
    let client = cluster::client().await;

    helm_install();
    assert_operator_ready_with_one_leader(&client).await;

    kubectl(&["create", "namespace", SHOP]);
    cluster::put_backends_secret(&client, SHOP, &services, &services.redis_url).await;
    run(
        "kubectl",
        &["apply", "-n", SHOP, "-f", "-"],
        Some(&identity_secret()),
    );
    run(
        "kubectl",
        &["apply", "-n", SHOP, "-f", "-"],
        Some(&campaign()),
    );

    let status = cluster::wait_status(&client, SHOP, CAMPAIGN, "phase Open", |s| {
        s.phase == Phase::Open
    })
    .await;
    let id = status.campaign_id.expect("a campaign id");
    let deployment = format!("deployment/{CAMPAIGN}-issuer");
    kubectl(&[
        "rollout",
        "status",
        "-n",
        SHOP,
        &deployment,
        "--timeout=300s",
    ]);
    kubectl(&[
        "wait",
        "-n",
        SHOP,
        "pod",
        "-l",
        &format!("app.kubernetes.io/instance={CAMPAIGN}"),
        "--for=condition=Ready",
        "--timeout=120s",
    ]);

    let base = service_base(&client).await;
    let crowd = users("shopper", USERS);
    let exp = tokens::in_five_minutes();
    let signed = crowd
        .iter()
        .map(|u| (u.clone(), tokens::token(tokens::SIGNER, u, exp)))
        .collect();
    let answers = Spike::new(&[&base], &id)
        .crowd(CROWD)
        .tokens(signed)
        .run(crowd)
        .await;
    let counts = tally(&answers);
    assert_eq!(counts.get(&Outcome::Admitted), Some(&LIMIT), "{counts:?}");
    assert_eq!(
        counts.get(&Outcome::SoldOut),
        Some(&(USERS - LIMIT)),
        "{counts:?}"
    );
    assert_invariants(&services, &id, LIMIT, &answers).await;

    cluster::wait_status(&client, SHOP, CAMPAIGN, "issued 100, SoldOut", |s| {
        s.issued == LIMIT as u64 && s.phase == Phase::SoldOut
    })
    .await;
    let table = kubectl(&["get", "cc", "-n", SHOP]);
    println!("{table}");
    let row = table
        .lines()
        .find(|l| l.starts_with(CAMPAIGN))
        .expect("a row");
    assert!(row.contains("SoldOut"), "kubectl get cc: {table}");
    assert!(
        row.split_whitespace().any(|c| c == "100"),
        "kubectl get cc: {table}"
    );
}
