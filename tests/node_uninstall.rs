//! The end of a release on the real node (`scripts/node`), after tests/node.rs: `helm
//! upgrade` with a changed value (the CRD applied first, as docs/install.md says), a
//! campaign deleted (its finalizer removes the Redis keys, coupons stay in PostgreSQL,
//! Kubernetes collects its Deployment and Services), then `helm uninstall`: the CRD and
//! the other campaigns stay. A test file of its own, run by tests/e2e-node/run.sh after
//! tests/node.rs, so that what ends the release runs last by construction; its one test
//! keeps the steps in order.

use std::time::Duration;

use firstcome_contract::{CampaignKeys, RedisConnection, RedisTarget};
use firstcome_e2e::invariants::assert_invariants;
use firstcome_e2e::node::{
    self, CRD, RELEASE, SYSTEM, chart_installed, kubectl, open_campaign, shop, signed_spike,
};
use firstcome_e2e::spike::{Outcome, tally};
use firstcome_e2e::{Services, cluster, issuer, unique_name, wait_for};
use firstcome_operator::resource::CouponCampaign;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::api::ListParams;
use redis::AsyncCommands;

const CAMPAIGN: &str = "clearance";
const LIMIT: usize = 100;
const USERS: usize = 300;

/// The value `helm upgrade` changes, and what the operator pods must show for it.
const LOG_LEVEL: &str = "operator.logLevel=debug";

/// How many of the campaign's Redis keys exist.
async fn redis_keys(services: &Services, id: &str) -> usize {
    let target: RedisTarget = services.redis_url.parse().unwrap();
    let mut conn = RedisConnection::connect(&target, Duration::from_secs(2))
        .await
        .expect("Redis");
    let keys = CampaignKeys::new(id);
    let mut present = 0;
    for key in [&keys.limit, &keys.admitted, &keys.holders] {
        let exists: bool = conn.exists(key).await.expect("EXISTS");
        present += usize::from(exists);
    }
    present
}

/// `helm upgrade` with a changed value: the operator pods roll to it, two Ready, one leader.
async fn upgrade(client: &kube::Client) {
    kubectl(&["apply", "--server-side", "-f", CRD]);
    node::helm("upgrade", &[LOG_LEVEL]);
    let pods: Api<Pod> = Api::namespaced(client.clone(), SYSTEM);
    let ready = wait_for(
        "two operator pods Ready, both with RUST_LOG=debug",
        Duration::from_secs(180),
        || async {
            let list = pods
                .list(&ListParams::default().labels("app.kubernetes.io/name=firstcome-operator"))
                .await
                .ok()?;
            let upgraded: Vec<String> = list
                .items
                .iter()
                .filter(|p| node::is_ready(p))
                .filter(|p| {
                    let env = p.spec.as_ref().and_then(|s| s.containers[0].env.clone());
                    env.unwrap_or_default()
                        .iter()
                        .any(|e| e.name == "RUST_LOG" && e.value.as_deref() == Some("debug"))
                })
                .filter_map(|p| p.metadata.name.clone())
                .collect();
            (upgraded.len() == 2 && list.items.len() == 2).then_some(upgraded)
        },
    )
    .await;
    let leader = node::leader_among(client, &ready).await;
    println!("upgraded; leader {leader}");
}

#[tokio::test]
#[ignore = "needs the real node, after tests/node.rs: tests/e2e-node/run.sh"]
async fn helm_upgrade_then_a_campaign_deleted_then_helm_uninstall_keeps_the_crd_and_campaigns() {
    let services = Services::from_env();
    let client = cluster::client().await;
    let namespace = &unique_name("shop-uninstall");
    chart_installed(&client).await;
    upgrade(&client).await;

    // The upgraded operator runs a campaign to the end.
    shop(&client, &services, namespace).await;
    let yaml = node::campaign(CAMPAIGN, |_| {});
    let id = open_campaign(&client, namespace, CAMPAIGN, &yaml).await;
    let (spike, crowd) = signed_spike(&client, namespace, CAMPAIGN, &id, "buyer", USERS).await;
    let answers = spike.run(crowd).await;
    let counts = tally(&answers);
    println!("answers: {counts:?}");
    assert_eq!(counts.get(&Outcome::Admitted), Some(&LIMIT), "{counts:?}");
    assert_invariants(&services, &id, LIMIT, &answers).await;
    assert_eq!(
        redis_keys(&services, &id).await,
        3,
        "the campaign's Redis keys"
    );

    // kubectl delete: the finalizer cleans up what docs/operator.md says.
    kubectl(&[
        "delete",
        "couponcampaign",
        "-n",
        namespace,
        CAMPAIGN,
        "--timeout=120s",
    ]);
    assert_eq!(
        redis_keys(&services, &id).await,
        0,
        "the finalizer removed the Redis keys"
    );
    let pool = issuer::postgres(&services).await;
    assert_eq!(
        issuer::coupons(&pool, &id).await.len(),
        LIMIT,
        "the coupons stay in PostgreSQL"
    );
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let services_api: Api<Service> = Api::namespaced(client.clone(), namespace);
    wait_for(
        "the issuer Deployment and Services collected",
        Duration::from_secs(120),
        || async {
            let deployments = deployments.list(&ListParams::default()).await.ok()?;
            let services = services_api.list(&ListParams::default()).await.ok()?;
            (deployments.items.is_empty() && services.items.is_empty()).then_some(())
        },
    )
    .await;

    // helm uninstall: the operator goes, the CRD and the other campaigns stay.
    let campaigns: Api<CouponCampaign> = Api::all(client.clone());
    let before: Vec<String> = campaigns
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|c| c.metadata.name)
        .collect();
    assert!(
        !before.is_empty(),
        "campaigns of tests/node.rs left to keep"
    );
    node::run(
        "helm",
        &["uninstall", RELEASE, "--namespace", SYSTEM, "--wait"],
        None,
    );
    wait_for(
        "the operator pods gone",
        Duration::from_secs(120),
        || async {
            let pods: Api<Pod> = Api::namespaced(client.clone(), SYSTEM);
            let list = pods.list(&ListParams::default()).await.ok()?;
            list.items.is_empty().then_some(())
        },
    )
    .await;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.get("couponcampaigns.firstcome.dev")
        .await
        .expect("the CRD stays after helm uninstall");
    let after: Vec<String> = campaigns
        .list(&ListParams::default())
        .await
        .expect("campaigns still served")
        .items
        .into_iter()
        .filter_map(|c| c.metadata.name)
        .collect();
    assert_eq!(after, before, "every campaign stays after helm uninstall");
}
