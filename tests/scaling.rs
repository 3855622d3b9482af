//! `issuer.scaling` against a real kube-apiserver: the operator (a local process) scales
//! the issuer Deployment to peak at the lead instant before `opensAt` and back to base
//! at `closesAt` or once sold out; the autoscaler it owns comes and goes with the spec
//! and never has the Deployment's replicas pulled from under it; the API server refuses
//! plans that contradict themselves.

use std::time::{Duration, SystemTime};

use firstcome_e2e::cluster::*;
use firstcome_e2e::spike::apply;
use firstcome_e2e::{Services, wait_for};
use firstcome_operator::owned::{HANDOVER_MANAGER, MANAGER};
use firstcome_operator::reason::Reason;
use firstcome_operator::resource::{CouponCampaign, Phase};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use kube::{Api, Client};

const TIMEOUT: Duration = Duration::from_secs(60);

async fn replicas(client: &Client, ns: &str) -> Option<i32> {
    let api = Api::<Deployment>::namespaced(client.clone(), ns);
    api.get_opt("sale-issuer").await.unwrap()?.spec.replicas
}

/// The managers that own the Deployment's `spec.replicas`.
async fn replicas_managers(client: &Client, ns: &str) -> Vec<String> {
    let api = Api::<Deployment>::namespaced(client.clone(), ns);
    let deployment = api.get("sale-issuer").await.unwrap();
    (deployment
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter())
    .filter(|e| {
        let fields = e.fields_v1.as_ref().map(|f| &f.0);
        fields.is_some_and(|f| f.pointer("/f:spec/f:replicas").is_some())
    })
    .filter_map(|e| e.manager)
    .collect()
}

/// Reads the Deployment's replicas until `until`, noting when each answer came back.
async fn watch_replicas(client: &Client, ns: &str, until: SystemTime) -> Vec<(SystemTime, i32)> {
    let mut seen = Vec::new();
    while SystemTime::now() < until {
        if let Some(n) = replicas(client, ns).await {
            seen.push((SystemTime::now(), n));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_issuers_go_to_peak_at_the_lead_instant_and_back_to_base_at_closing() {
    let services = Services::from_env();
    let client = client().await;
    install_crd(&client).await;
    let ns = namespace(&client, "scaled", &services, &services.redis_url).await;
    let _operator = start_operator(&ns, "only", &[]).await;
    // Peak from opensAt - 10 s; closed 10 s after opening.
    let (opens_at, opens) = instant_in(25);
    let (closes_at, closes) = instant_in(35);
    let peak_from = opens - Duration::from_secs(10);
    let spec = format!(
        "limit: 10\nopensAt: \"{opens_at}\"\nclosesAt: \"{closes_at}\"\n\
         issuer: {{scaling: {{baseReplicas: 1, peakReplicas: 3, leadSeconds: 10}}}}\n"
    );
    apply_campaign(&client, &ns, "sale", &spec).await.unwrap();

    let seen = watch_replicas(&client, &ns, closes + Duration::from_secs(8)).await;
    let before: Vec<i32> = (seen.iter().filter(|(at, _)| *at < peak_from))
        .map(|(_, n)| *n)
        .collect();
    assert!(
        !before.is_empty(),
        "the Deployment existed before the lead instant"
    );
    assert!(
        before.iter().all(|n| *n == 1),
        "base before the lead: {before:?}"
    );
    // Peak from the lead instant (an answer is timed when it came back, so never early),
    // then base from closesAt to the end: one change up, one down, nothing else.
    let changes: Vec<(SystemTime, i32)> = (seen.windows(2))
        .filter(|pair| pair[0].1 != pair[1].1)
        .map(|pair| pair[1])
        .collect();
    assert_eq!(
        changes.iter().map(|(_, n)| *n).collect::<Vec<_>>(),
        [3, 1],
        "{seen:?}"
    );
    assert!(changes[0].0 >= peak_from, "peak from the lead instant");
    assert!(changes[1].0 >= closes, "base again from closesAt");
    let status = wait_status(&client, &ns, "sale", "the plan in the status", |s| {
        s.issuer_replicas == 1
    })
    .await;
    assert_eq!(status.phase, Phase::Closed);
    let events = event_reasons(&client, &ns, "sale").await;
    for reason in [Reason::IssuersScaledUp, Reason::IssuersScaledDown] {
        assert!(events.contains(&reason.to_string()), "{reason}: {events:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sold_out_campaign_goes_back_to_base() {
    let services = Services::from_env();
    let client = client().await;
    install_crd(&client).await;
    let ns = namespace(&client, "soldout", &services, &services.redis_url).await;
    let _operator = start_operator(&ns, "only", &[]).await;
    // No opensAt: open, so at peak from the start.
    let spec = "limit: 2\nissuer: {scaling: {baseReplicas: 1, peakReplicas: 3}}\n";
    apply_campaign(&client, &ns, "sale", spec).await.unwrap();
    let status = wait_status(&client, &ns, "sale", "open at peak", |s| {
        s.phase == Phase::Open && s.issuer_replicas == 3
    })
    .await;
    assert_eq!(replicas(&client, &ns).await, Some(3));

    let issuer = start_issuer_like_the_deployment(&client, &ns, "sale").await;
    let id = status.campaign_id.unwrap();
    let http = reqwest::Client::new();
    for user in ["alice", "bob"] {
        let (code, body) = apply(&http, &issuer.base, &id, user).await;
        assert_eq!(code, reqwest::StatusCode::CREATED, "{body}");
    }
    wait_status(&client, &ns, "sale", "sold out at base", |s| {
        s.phase == Phase::SoldOut && s.issuer_replicas == 1
    })
    .await;
    wait_for("the Deployment back at base", TIMEOUT, || async {
        (replicas(&client, &ns).await == Some(1)).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_autoscaler_comes_and_goes_with_the_spec() {
    let services = Services::from_env();
    let client = client().await;
    install_crd(&client).await;
    let ns = namespace(&client, "autoscaled", &services, &services.redis_url).await;
    let _operator = start_operator(&ns, "only", &[]).await;
    let hpas = Api::<HorizontalPodAutoscaler>::namespaced(client.clone(), &ns);

    // No opensAt: open from the start, so at peak.
    let scaled = "limit: 10\nissuer: {scaling: {baseReplicas: 2, peakReplicas: 3, \
                  autoscaler: {maxReplicas: 6, targetCpuUtilizationPercent: 60}}}\n";
    apply_campaign(&client, &ns, "sale", scaled).await.unwrap();
    let hpa = wait_for("the autoscaler", TIMEOUT, || async {
        hpas.get_opt("sale-issuer").await.unwrap()
    })
    .await;
    let spec = &hpa.spec;
    assert_eq!((spec.min_replicas, spec.max_replicas), (Some(3), 6));
    assert_eq!(spec.scale_target_ref.name, "sale-issuer");
    let campaign = Api::<CouponCampaign>::namespaced(client.clone(), &ns)
        .get("sale")
        .await
        .unwrap();
    let owner = &hpa.metadata.owner_references.unwrap()[0];
    assert_eq!(Some(&owner.uid), campaign.metadata.uid.as_ref());

    // The operator hands the replicas over instead of dropping them (which would reset
    // the Deployment to 1), and then leaves them alone.
    let managers = wait_for("the replicas handed over", TIMEOUT, || async {
        let managers = replicas_managers(&client, &ns).await;
        (!managers.iter().any(|m| m == MANAGER)).then_some(managers)
    })
    .await;
    assert!(
        managers.iter().any(|m| m == HANDOVER_MANAGER),
        "{managers:?}"
    );
    assert_eq!(replicas(&client, &ns).await, Some(3));

    // Without the autoscaler the operator deletes it and owns the replicas again.
    let fixed = "limit: 10\nissuer: {scaling: {baseReplicas: 2, peakReplicas: 4}}\n";
    apply_campaign(&client, &ns, "sale", fixed).await.unwrap();
    wait_for("the autoscaler deleted", TIMEOUT, || async {
        hpas.get_opt("sale-issuer")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    wait_for("peak 4 applied by the operator", TIMEOUT, || async {
        let managers = replicas_managers(&client, &ns).await;
        let owned = managers.iter().any(|m| m == MANAGER);
        (owned && replicas(&client, &ns).await == Some(4)).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plans_that_contradict_themselves_are_refused() {
    let services = Services::from_env();
    let client = client().await;
    install_crd(&client).await;
    let ns = namespace(&client, "badplan", &services, &services.redis_url).await;
    for (spec, expect) in [
        (
            "limit: 10\nissuer: {replicas: 2, scaling: {peakReplicas: 4}}\n",
            "issuer.replicas and issuer.scaling are mutually exclusive",
        ),
        (
            "limit: 10\nissuer: {scaling: {baseReplicas: 5, peakReplicas: 4}}\n",
            "peakReplicas must be at least baseReplicas",
        ),
        (
            "limit: 10\nissuer: {scaling: {peakReplicas: 4, autoscaler: {maxReplicas: 3}}}\n",
            "autoscaler.maxReplicas at least peakReplicas",
        ),
        (
            "limit: 10\nissuer: {scaling: {baseReplicas: 0, peakReplicas: 4, autoscaler: {maxReplicas: 8}}}\n",
            "baseReplicas must be at least 1",
        ),
        (
            "limit: 10\nissuer: {scaling: {peakReplicas: 0}}\n",
            "peakReplicas",
        ),
    ] {
        let error = apply_campaign(&client, &ns, "bad", spec)
            .await
            .expect_err(spec);
        assert!(error.to_string().contains(expect), "{spec}: {error}");
    }
    apply_campaign(
        &client,
        &ns,
        "good",
        "limit: 10\nissuer: {scaling: {peakReplicas: 4}}\n",
    )
    .await
    .expect("base and lead have defaults");
}
