//! End to end on a real node (`scripts/node`): what README.md and docs/install.md tell a
//! user to do — `helm install` the chart, the backends and identity Secrets, a campaign
//! from examples/ — with pods of the image built from the Dockerfile, then spikes of
//! signed-in users through the campaign's ClusterIP Service (kube-proxy), and the faults
//! only a node shows: an issuer pod force-deleted, the leader operator pod deleted, the
//! issuers rolled by a spec change, all mid-spike; a scaled campaign's pods Ready before
//! it opens; a waiting room's and a header identity's Secrets mounted for real. Each scenario has its own campaign and namespace and ends with the
//! invariant checker; each installs the chart if no scenario before did, so any one runs
//! alone. tests/node_uninstall.rs (upgrade, delete, uninstall) runs after this file.
//!
//! Runs inside the node's namespace, where its apiserver, its ClusterIPs and the test bed
//! on the node's address are reachable: `scripts/node exec cargo test -p firstcome-e2e
//! --test node -- --ignored --test-threads=1` (tests/e2e-node/run.sh, scripts/test's
//! "e2e on node" stage; docs/testing.md). One scenario at a time: the leader's deletion
//! and the rolls must not overlap another scenario's spike on two cores. The users' CI
//! runs the same file on a kind cluster (tests/e2e-kind/run.sh), with the host set up as
//! the node's namespace is: the ClusterIPs and FIRSTCOME_E2E_CROWD's addresses routed,
//! the test bed where pods reach it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use firstcome_e2e::invariants::assert_invariants;
use firstcome_e2e::node::{
    self, assert_only_listed_answers, chart_installed, kubectl, open_campaign, shop, signed_spike,
};
use firstcome_e2e::spike::{Answer, Outcome, assert_every_coupon_given, tally, wait_progress};
use firstcome_e2e::{Services, cluster, tokens, unique_name, wait_for};
use firstcome_operator::resource::Phase;
use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;
use reqwest::StatusCode;

const LIMIT: usize = 100;
const USERS: usize = 1000;
/// The fault scenarios' campaigns: large enough that the fault lands while coupons are
/// still being handed out.
const FAULT_LIMIT: usize = 400;
const FAULT_USERS: usize = 1200;
/// The rolled campaign: applied to in waves until the roll is over, then sold out.
const ROLL_LIMIT: usize = 600;
const WAVE: usize = 50;
const MAX_WAVES: usize = 100;
/// Answers seen before a fault is injected.
const BEFORE_FAULT: usize = 150;

/// Counts a spike past a fault must end with: every coupon given (to users told
/// "admitted", or — their first answer lost with the pod — "already applied", or
/// "admission unconfirmed"), the rest told "sold out", nobody without an answer.
fn assert_sold_out_through_fault(answers: &[Answer], limit: usize) {
    let counts = tally(answers);
    println!("answers: {counts:?}");
    assert_only_listed_answers(answers);
    let unconfirmed = Outcome::Unknown("503 Service Unavailable admission_unconfirmed".into());
    let holders: usize = [Outcome::Admitted, Outcome::AlreadyApplied, unconfirmed]
        .iter()
        .filter_map(|o| counts.get(o))
        .sum();
    assert_eq!(holders, limit, "every coupon given: {counts:?}");
    assert_eq!(
        counts.get(&Outcome::SoldOut),
        Some(&(answers.len() - limit)),
        "the rest sold out: {counts:?}"
    );
}

/// Deletes a fault scenario's campaign (its finalizer runs) and namespace, so the pods
/// of the scenarios before do not fill the one node's CPU.
fn delete_namespace(namespace: &str) {
    kubectl(&[
        "delete",
        "couponcampaigns",
        "--all",
        "-n",
        namespace,
        "--timeout=120s",
    ]);
    kubectl(&["delete", "namespace", namespace, "--wait=false"]);
}

fn answered(progress: &AtomicUsize) -> usize {
    progress.load(Ordering::Relaxed)
}

/// Waits until the campaign reports `issued` coupons and phase SoldOut.
async fn wait_sold_out(client: &kube::Client, namespace: &str, name: &str, issued: usize) {
    let what = format!("status.issued {issued} and phase SoldOut");
    cluster::wait_status(client, namespace, name, &what, |s| {
        s.issued == issued as u64 && s.phase == Phase::SoldOut
    })
    .await;
}

/// A fault scenario's open campaign of `limit` coupons, in a namespace of its own.
struct Scenario {
    namespace: String,
    name: &'static str,
    services: Services,
    client: kube::Client,
    /// The operator pod holding the Lease when the campaign was opened.
    leader: String,
    id: String,
}

impl Scenario {
    async fn open(prefix: &str, name: &'static str, limit: usize) -> Self {
        let namespace = unique_name(prefix);
        let services = Services::from_env();
        let client = cluster::client().await;
        let leader = chart_installed(&client).await;
        shop(&client, &services, &namespace).await;
        let yaml = node::campaign(name, |spec| spec["limit"] = limit.into());
        let id = open_campaign(&client, &namespace, name, &yaml).await;
        Self {
            namespace,
            name,
            services,
            client,
            leader,
            id,
        }
    }

    async fn issuer_pods(&self) -> Vec<String> {
        node::ready_pods(
            &self.client,
            &self.namespace,
            &node::issuer_selector(self.name),
        )
        .await
    }

    /// A spike of `users` signed-in users, once `BEFORE_FAULT` of them are answered.
    async fn spike_until_fault(
        &self,
        users: usize,
    ) -> (Arc<AtomicUsize>, tokio::task::JoinHandle<Vec<Answer>>) {
        let (spike, crowd) = signed_spike(
            &self.client,
            &self.namespace,
            self.name,
            &self.id,
            "user",
            users,
        )
        .await;
        let (progress, answers) = node::start(spike, crowd);
        wait_progress(&progress, BEFORE_FAULT).await;
        (progress, answers)
    }

    /// What a spike through a fault must end with: every coupon given, the invariants,
    /// and the campaign's status reporting them.
    async fn assert_sold_out_through_fault(&self, answers: &[Answer], limit: usize) {
        assert_sold_out_through_fault(answers, limit);
        assert_invariants(&self.services, &self.id, limit, answers).await;
        wait_sold_out(&self.client, &self.namespace, self.name, limit).await;
    }
}

#[tokio::test]
#[ignore = "needs the real node: scripts/node exec cargo test -p firstcome-e2e --test node -- --ignored"]
async fn a_user_installs_the_chart_and_sells_out_a_campaign_on_a_real_node() {
    let namespace = &unique_name("shop");
    let name = "black-friday";
    let services = Services::from_env();
    let client = cluster::client().await;
    let leader = chart_installed(&client).await;
    println!("leader: {leader}");
    shop(&client, &services, namespace).await;
    let yaml = node::campaign(name, |spec| {
        assert_eq!(
            spec["limit"].as_u64(),
            Some(LIMIT as u64),
            "the example's limit"
        );
    });
    let id = open_campaign(&client, namespace, name, &yaml).await;

    let (spike, crowd) = signed_spike(&client, namespace, name, &id, "shopper", USERS).await;
    let answers = spike.run(crowd).await;
    println!("answers: {:?}", tally(&answers));
    assert_every_coupon_given(&answers, LIMIT as u64, USERS - LIMIT);
    assert_invariants(&services, &id, LIMIT, &answers).await;

    wait_sold_out(&client, namespace, name, LIMIT).await;
    let table = kubectl(&["get", "cc", "-n", namespace]);
    println!("{table}");
    let row = table.lines().find(|l| l.starts_with(name)).expect("a row");
    assert!(row.contains("SoldOut"), "kubectl get cc: {table}");
    assert!(
        row.split_whitespace().any(|c| c == "100"),
        "kubectl get cc: {table}"
    );
}

#[tokio::test]
#[ignore = "needs the real node: scripts/node exec cargo test -p firstcome-e2e --test node -- --ignored"]
async fn an_issuer_pod_force_deleted_mid_spike_loses_no_coupon() {
    let scenario = Scenario::open("shop-force-delete", "flash", FAULT_LIMIT).await;
    let namespace = &scenario.namespace;
    let victim = scenario.issuer_pods().await[0].clone();

    let (progress, answers) = scenario.spike_until_fault(FAULT_USERS).await;
    kubectl(&[
        "delete",
        "pod",
        "-n",
        namespace,
        &victim,
        "--grace-period=0",
        "--force",
    ]);
    println!(
        "force-deleted {victim} after {} answers",
        answered(&progress)
    );
    let answers = answers.await.expect("the spike");

    scenario
        .assert_sold_out_through_fault(&answers, FAULT_LIMIT)
        .await;
    // The Deployment replaced the pod.
    wait_for(
        "two issuer pods Ready again, none of them the deleted one",
        Duration::from_secs(120),
        || async {
            let ready = scenario.issuer_pods().await;
            (ready.len() == 2 && !ready.contains(&victim)).then_some(())
        },
    )
    .await;
    delete_namespace(namespace);
}

#[tokio::test]
#[ignore = "needs the real node: scripts/node exec cargo test -p firstcome-e2e --test node -- --ignored"]
async fn the_leader_operator_pod_deleted_mid_spike_hands_over_and_status_keeps_moving() {
    let scenario = Scenario::open("shop-leader", "doorbuster", FAULT_LIMIT).await;
    let (client, leader) = (&scenario.client, &scenario.leader);

    let (progress, answers) = scenario.spike_until_fault(FAULT_USERS).await;
    kubectl(&["delete", "pod", "-n", node::SYSTEM, leader, "--wait=false"]);
    println!(
        "deleted the leader {leader} after {} answers",
        answered(&progress)
    );
    // The standby or the Deployment's replacement pod, whichever asks first: both wait
    // for a released Lease.
    let successor = wait_for(
        "another operator pod to hold the Lease",
        Duration::from_secs(60),
        || async {
            let others: Vec<String> = (node::ready_operator_pods(client).await.into_iter())
                .filter(|p| p != leader)
                .collect();
            let holder = node::lease_holder(client).await?;
            others.contains(&holder).then_some(holder)
        },
    )
    .await;
    println!("{successor} took the Lease");
    let answers = answers.await.expect("the spike");

    // Only the new leader reconciles: the status moving to SoldOut is its work.
    scenario
        .assert_sold_out_through_fault(&answers, FAULT_LIMIT)
        .await;
    wait_for(
        "two operator pods Ready again",
        Duration::from_secs(120),
        || async { (node::ready_operator_pods(client).await.len() == 2).then_some(()) },
    )
    .await;
    delete_namespace(&scenario.namespace);
}

#[tokio::test]
#[ignore = "needs the real node: scripts/node exec cargo test -p firstcome-e2e --test node -- --ignored"]
async fn a_spec_change_rolls_the_issuers_mid_spike_with_only_listed_answers() {
    let scenario = Scenario::open("shop-roll", "midnight", ROLL_LIMIT).await;
    let Scenario {
        namespace,
        name,
        client,
        id,
        ..
    } = &scenario;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let deployment = format!("{name}-issuer");
    let before_pods = scenario.issuer_pods().await;
    let generation = |d: &Deployment| d.metadata.generation.unwrap_or_default();
    let before = generation(&deployments.get(&deployment).await.unwrap());

    // A change of the pod template (the issuers' memory request), then waves of users
    // until the Deployment has rolled out: every wave's answers come from issuers that
    // are starting, serving or draining.
    let changed = node::campaign(name, |spec| {
        spec["limit"] = ROLL_LIMIT.into();
        spec["issuer"]["resources"]["requests"]["memory"] = "96Mi".into();
    });
    node::kubectl_apply(namespace, &changed);
    let changed_at = std::time::Instant::now();
    let mut answers = Vec::new();
    let mut waves = 0;
    let mut rolled = false;
    while !rolled {
        assert!(waves < MAX_WAVES, "not rolled out after {waves} waves");
        let now = deployments.get(&deployment).await.unwrap();
        rolled = generation(&now) > before && rolled_out(&now);
        let prefix = format!("wave{waves}");
        let (spike, crowd) = signed_spike(client, namespace, name, id, &prefix, WAVE).await;
        answers.extend(spike.run(crowd).await);
        waves += 1;
    }
    // Then enough users to sell out.
    let rest = (ROLL_LIMIT + WAVE).saturating_sub(answers.len()).max(WAVE);
    let (spike, crowd) = signed_spike(client, namespace, name, id, "last", rest).await;
    answers.extend(spike.run(crowd).await);
    println!(
        "{waves} waves of {WAVE} users while the issuers rolled ({:?}), then {rest}",
        changed_at.elapsed()
    );

    scenario
        .assert_sold_out_through_fault(&answers, ROLL_LIMIT)
        .await;
    let after_pods = scenario.issuer_pods().await;
    assert!(
        after_pods.iter().all(|p| !before_pods.contains(p)),
        "every issuer pod replaced: {before_pods:?} → {after_pods:?}"
    );
    delete_namespace(namespace);
}

/// Whether the Deployment's latest spec runs on all its replicas and no old pod is left.
fn rolled_out(deployment: &Deployment) -> bool {
    let Some(status) = &deployment.status else {
        return false;
    };
    let wanted = deployment.spec.replicas.unwrap_or(1);
    status.observed_generation >= deployment.metadata.generation
        && status.updated_replicas == Some(wanted)
        && status.available_replicas == Some(wanted)
        && status.replicas == Some(wanted)
}

#[tokio::test]
#[ignore = "needs the real node: scripts/node exec cargo test -p firstcome-e2e --test node -- --ignored"]
async fn a_scaled_campaigns_pods_are_ready_before_it_opens() {
    let namespace = &unique_name("shop-scaled");
    let name = "opening";
    let (base, peak) = (1, 3);
    let services = Services::from_env();
    let client = cluster::client().await;
    chart_installed(&client).await;
    shop(&client, &services, namespace).await;
    let (opens_at, opens) = cluster::instant_in(90);
    let yaml = node::campaign(name, |spec| {
        spec["opensAt"] = opens_at.as_str().into();
        spec["issuer"]["scaling"] = serde_yaml_ng::from_str(&format!(
            "{{ baseReplicas: {base}, peakReplicas: {peak}, leadSeconds: 600 }}"
        ))
        .expect("scaling");
    });
    node::kubectl_apply(namespace, &yaml);

    let ready = wait_for(
        "the peak's issuer pods Ready",
        Duration::from_secs(120),
        || async {
            let ready = node::ready_pods(&client, namespace, &node::issuer_selector(name)).await;
            (ready.len() == peak).then_some(ready)
        },
    )
    .await;
    let early = opens
        .duration_since(std::time::SystemTime::now())
        .unwrap_or_else(|_| panic!("{peak} pods Ready only after opensAt {opens_at}: {ready:?}"));
    println!("{peak} issuer pods Ready {early:?} before opensAt");
    let status = cluster::wait_status(&client, namespace, name, "phase Scheduled", |s| {
        s.phase == Phase::Scheduled
    })
    .await;
    let id = status.campaign_id.expect("a campaign id");
    // Served, but not open: a user too early is told when to come back.
    let (spike, crowd) = signed_spike(&client, namespace, name, &id, "too-early", 1).await;
    let too_early = spike.run(crowd).await;
    assert_eq!(
        (
            too_early[0].status.map(|s| s.as_u16()),
            &too_early[0].body["reason"]
        ),
        (Some(425), &serde_json::json!("campaign_not_open")),
        "{too_early:?}"
    );

    let (spike, crowd) = signed_spike(&client, namespace, name, &id, "early", USERS).await;
    let wait = opens
        .duration_since(std::time::SystemTime::now())
        .unwrap_or_default();
    tokio::time::sleep(wait + Duration::from_secs(1)).await;
    let answers = spike.run(crowd).await;
    println!("answers: {:?}", tally(&answers));
    assert_every_coupon_given(&answers, LIMIT as u64, USERS - LIMIT);
    assert_invariants(&services, &id, LIMIT, &answers).await;
    wait_sold_out(&client, namespace, name, LIMIT).await;
    // Sold out: back to the base.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    wait_for(
        "the issuers back to baseReplicas once sold out",
        Duration::from_secs(120),
        || async {
            let deployment = deployments.get(&format!("{name}-issuer")).await.ok()?;
            let ready = node::ready_pods(&client, namespace, &node::issuer_selector(name)).await;
            (deployment.spec.replicas == Some(base as i32) && ready.len() == base).then_some(())
        },
    )
    .await;
    delete_namespace(namespace);
}

/// A campaign of one issuer pod, `edit`ed, in a namespace of its own that also holds the
/// Secret `name` with key `secret`, made as a user makes it (`kubectl create secret
/// generic`): Open, its pod Ready and answering through the Service. Returns the namespace, the campaign's id and its
/// Service's base URL.
async fn open_with_secret(
    prefix: &str,
    name: &str,
    (secret, value): (&str, &str),
    edit: impl FnOnce(&mut serde_yaml_ng::Value),
) -> (String, String, String) {
    let namespace = unique_name(prefix);
    let services = Services::from_env();
    let client = cluster::client().await;
    chart_installed(&client).await;
    shop(&client, &services, &namespace).await;
    let literal = format!("--from-literal=secret={value}");
    kubectl(&[
        "create", "secret", "generic", secret, "-n", &namespace, &literal,
    ]);
    let yaml = node::campaign(name, |spec| {
        spec["issuer"]["scaling"] =
            serde_yaml_ng::from_str("{ baseReplicas: 1, peakReplicas: 1 }").expect("scaling");
        edit(spec);
    });
    let id = open_campaign(&client, &namespace, name, &yaml).await;
    let base = node::service_base(&client, &namespace, name).await;
    // Ready pods are in the Service's endpoints a moment before kube-proxy routes to them.
    wait_for("the Service answering", Duration::from_secs(60), || async {
        let summary = reqwest::get(format!("{base}/v1/campaigns/{id}")).await;
        summary.ok().map(drop)
    })
    .await;
    (namespace, id, base)
}

/// The waiting room's Secret reaches the issuer pod through its real mount (a wrong
/// path and the pod would not be Ready, or its passes not verify): through the
/// Service, a signed-in user without a pass is refused, joins the line, is let in
/// with a pass and applies with it; the room's page shows the spec's text, escaped.
#[tokio::test]
#[ignore = "needs the real node: scripts/node exec cargo test -p firstcome-e2e --test node -- --ignored"]
async fn a_waiting_room_campaigns_pod_hands_out_passes_on_a_real_node() {
    let room = "{ admissionRate: 20, secretRef: { name: room-secret }, \
                page: { title: '<Queue>', accentColor: '#aa0000' } }";
    let (namespace, id, base) = open_with_secret(
        "shop-room",
        "queued",
        ("room-secret", "a room secret of more than 32 bytes"),
        |spec| spec["waitingRoom"] = serde_yaml_ng::from_str(room).expect("waitingRoom"),
    )
    .await;
    let bearer = format!(
        "Bearer {}",
        tokens::token(tokens::SIGNER, "alice", tokens::in_five_minutes())
    );
    let http = reqwest::Client::new();
    let post = |path: &str| {
        (http.post(format!("{base}/v1/campaigns/{id}/{path}")))
            .header("authorization", &bearer)
            .json(&serde_json::json!({}))
    };

    let refused = post("applications").send().await.expect("an answer");
    assert_eq!(refused.status(), StatusCode::FORBIDDEN, "no pass, no apply");
    let joined = post("queue").send().await.expect("joined");
    let joined: serde_json::Value = joined.json().await.expect("a ticket's JSON");
    let ticket = joined["ticket"].as_str().expect("a ticket").to_string();
    let pass = wait_for("alice let in", Duration::from_secs(60), || async {
        let polled = (http.get(format!("{base}/v1/campaigns/{id}/queue/{ticket}")))
            .header("authorization", &bearer)
            .send()
            .await
            .ok()?;
        let polled: serde_json::Value = polled.json().await.ok()?;
        polled["pass"].as_str().map(str::to_string)
    })
    .await;
    let admitted = post("applications").header(firstcome_issuer::http::PASS_HEADER, pass);
    let admitted = admitted.send().await.expect("an answer");
    assert_eq!(admitted.status(), StatusCode::CREATED);

    let page = reqwest::get(format!("{base}/v1/campaigns/{id}/room"))
        .await
        .expect("the room's page");
    assert_eq!(page.status(), StatusCode::OK);
    let page = page.text().await.expect("an HTML page");
    assert!(page.contains("<h1>&lt;Queue&gt;</h1>"), "{page}");
    assert!(page.contains("--accent: #aa0000;"), "{page}");
    delete_namespace(&namespace);
}

/// A header campaign's gateway secret reaches the issuer pod through its real mount:
/// through the Service, a wrong gateway secret is 401 `invalid_credentials`, none 401
/// `missing_credentials`, and the right one admits the user (who was not admitted
/// before: 201, not 409), whose coupon the status then counts.
#[tokio::test]
#[ignore = "needs the real node: scripts/node exec cargo test -p firstcome-e2e --test node -- --ignored"]
async fn a_header_campaign_refuses_a_wrong_gateway_secret_on_a_real_node() {
    const GATEWAY_SECRET: &str = "gateway-shared-secret-for-tests";
    let identity = "{ mode: header, header: { userHeader: X-User, \
                    secretHeader: X-Gateway-Secret, secretRef: { name: gateway } } }";
    let name = "guarded";
    let (namespace, id, base) =
        open_with_secret("shop-header", name, ("gateway", GATEWAY_SECRET), |spec| {
            spec["identity"] = serde_yaml_ng::from_str(identity).expect("identity")
        })
        .await;
    let http = reqwest::Client::new();
    let apply = |headers: &[(&str, &str)]| {
        let mut request = (http.post(format!("{base}/v1/campaigns/{id}/applications")))
            .json(&serde_json::json!({}));
        for (header, value) in headers {
            request = request.header(*header, *value);
        }
        async move {
            let answer = request.send().await.expect("an answer");
            let status = answer.status();
            let body: serde_json::Value = answer.json().await.unwrap_or_default();
            (status, body)
        }
    };
    let reason = |(status, body): &(StatusCode, serde_json::Value)| {
        (
            *status,
            body["reason"].as_str().unwrap_or_default().to_string(),
        )
    };

    let wrong = apply(&[("x-user", "alice"), ("x-gateway-secret", "not-the-secret")]).await;
    assert_eq!(
        reason(&wrong),
        (StatusCode::UNAUTHORIZED, "invalid_credentials".into())
    );
    let bare = apply(&[("x-user", "alice")]).await;
    assert_eq!(
        reason(&bare),
        (StatusCode::UNAUTHORIZED, "missing_credentials".into())
    );
    let right = apply(&[("x-user", "alice"), ("x-gateway-secret", GATEWAY_SECRET)]).await;
    assert_eq!(reason(&right), (StatusCode::CREATED, "admitted".into()));
    assert_eq!(right.1["userId"], "alice");

    let client = cluster::client().await;
    cluster::wait_status(&client, &namespace, name, "status.issued 1", |s| {
        s.issued == 1
    })
    .await;
    delete_namespace(&namespace);
}
