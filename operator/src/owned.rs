//! The objects a campaign owns, server-side applied: the issuers' ConfigMap, Deployment,
//! Service and metrics Service, built by [`crate::desired`].

use std::fmt::Debug;

use firstcome_contract::CampaignConfig;
use k8s_openapi::NamespaceResourceScope;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::campaign::issuer_name;
use crate::controller::{Error, MANAGER};
use crate::defaults::IssuerDefaults;
use crate::desired;
use crate::resource::CouponCampaign;

/// Applies the issuers' objects; returns how many issuer pods are ready.
pub async fn apply(
    client: &Client,
    campaign: &CouponCampaign,
    config: &CampaignConfig,
    defaults: &IssuerDefaults,
) -> Result<i32, Error> {
    let name = issuer_name(campaign);
    let namespace = campaign.namespace().unwrap_or_default();
    let config_map = desired::config_map(campaign, config);
    apply_one(client, &namespace, &name, config_map).await?;
    let deployment = apply_one(
        client,
        &namespace,
        &name,
        desired::deployment(campaign, config, defaults),
    )
    .await?;
    apply_one(client, &namespace, &name, desired::service(campaign)).await?;
    let metrics_name = desired::metrics_service_name(campaign);
    let metrics = desired::metrics_service(campaign);
    apply_one(client, &namespace, &metrics_name, metrics).await?;
    Ok(deployment
        .status
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0))
}

async fn apply_one<K>(client: &Client, namespace: &str, name: &str, object: K) -> Result<K, Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Debug
        + DeserializeOwned
        + Serialize,
{
    Api::<K>::namespaced(client.clone(), namespace)
        .patch(
            name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(object),
        )
        .await
        .map_err(|source| Error::Apply {
            kind: K::kind(&()).into_owned(),
            source,
        })
}
