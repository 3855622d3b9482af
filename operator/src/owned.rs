//! The objects a campaign owns, server-side applied: the issuers' ConfigMap, Deployment,
//! Service, metrics Service and, when the spec asks for one, HorizontalPodAutoscaler
//! (deleted when it no longer does), built by [`crate::desired`].

use std::fmt::Debug;

use firstcome_contract::CampaignConfig;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::campaign::issuer_name;
use crate::defaults::IssuerDefaults;
use crate::desired;
use crate::resource::CouponCampaign;
use crate::scaling::Plan;

/// The field manager of everything the operator applies.
pub const MANAGER: &str = "firstcome-operator";

/// Why the issuers' objects could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum OwnedError {
    #[error("cannot apply the issuers' {kind}")]
    Apply {
        kind: String,
        #[source]
        source: kube::Error,
    },
    #[error("cannot delete the issuers' {kind}")]
    Delete {
        kind: String,
        #[source]
        source: kube::Error,
    },
}

impl OwnedError {
    /// The `error` label of the failure metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Apply { .. } => "apply",
            Self::Delete { .. } => "delete",
        }
    }
}

/// The field manager that keeps a Deployment's replicas while they pass from the
/// operator to an autoscaler (see [`deployment_replicas`]).
pub const HANDOVER_MANAGER: &str = "firstcome-operator-handover";

/// Applies the issuers' objects; returns how many issuer pods are ready.
pub async fn apply(
    client: &Client,
    campaign: &CouponCampaign,
    config: &CampaignConfig,
    defaults: &IssuerDefaults,
    plan: Plan,
) -> Result<i32, OwnedError> {
    let name = issuer_name(campaign);
    let namespace = campaign.namespace().unwrap_or_default();
    let config_map = desired::config_map(campaign, config);
    apply_one(client, &namespace, &name, config_map).await?;
    let autoscaler = desired::autoscaler(campaign, plan.replicas);
    let autoscaled = autoscaler.is_some();
    let replicas = deployment_replicas(client, &namespace, &name, autoscaled, plan).await?;
    let deployment = desired::deployment(campaign, config, defaults, replicas);
    let deployment = apply_one(client, &namespace, &name, deployment).await?;
    match autoscaler {
        Some(hpa) => {
            apply_one(client, &namespace, &name, hpa).await?;
        }
        None => delete_one::<HorizontalPodAutoscaler>(client, &namespace, &name).await?,
    }
    apply_one(client, &namespace, &name, desired::service(campaign)).await?;
    let metrics_name = desired::metrics_service_name(campaign);
    let metrics = desired::metrics_service(campaign);
    apply_one(client, &namespace, &metrics_name, metrics).await?;
    Ok(deployment
        .status
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0))
}

/// The replicas the operator applies to the Deployment: the plan's, unless an autoscaler
/// runs the issuers. Then the operator leaves the field out, never fighting the
/// autoscaler; the first time, it hands the field to [`HANDOVER_MANAGER`] at its current
/// value, because a field its only manager drops is removed, and the Deployment would
/// fall back to 1 replica until the autoscaler notices.
async fn deployment_replicas(
    client: &Client,
    namespace: &str,
    name: &str,
    autoscaled: bool,
    plan: Plan,
) -> Result<Option<i32>, OwnedError> {
    if !autoscaled {
        return Ok(Some(plan.replicas));
    }
    let api = Api::<Deployment>::namespaced(client.clone(), namespace);
    let current = api
        .get_opt(name)
        .await
        .map_err(|source| OwnedError::Apply {
            kind: "Deployment".into(),
            source,
        })?;
    let Some(current) = current else {
        // A new Deployment starts at the plan; the next reconcile hands it over.
        return Ok(Some(plan.replicas));
    };
    if applies_replicas(&current) {
        let replicas = current.spec.replicas;
        let keep = json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": { "name": name },
            "spec": { "replicas": replicas.unwrap_or(plan.replicas) },
        });
        api.patch(
            name,
            &PatchParams::apply(HANDOVER_MANAGER).force(),
            &Patch::Apply(keep),
        )
        .await
        .map_err(|source| OwnedError::Apply {
            kind: "Deployment".into(),
            source,
        })?;
    }
    Ok(None)
}

/// Whether the operator's own apply owns the Deployment's `spec.replicas`.
fn applies_replicas(deployment: &Deployment) -> bool {
    deployment.managed_fields().iter().any(|entry| {
        entry.manager.as_deref() == Some(MANAGER)
            && entry.operation.as_deref() == Some("Apply")
            && entry
                .fields_v1
                .as_ref()
                .is_some_and(|fields| fields.0.pointer("/f:spec/f:replicas").is_some())
    })
}

async fn apply_one<K>(
    client: &Client,
    namespace: &str,
    name: &str,
    object: K,
) -> Result<K, OwnedError>
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
        .map_err(|source| OwnedError::Apply {
            kind: K::kind(&()).into_owned(),
            source,
        })
}

/// Deletes an object the campaign no longer asks for; one already gone is fine.
async fn delete_one<K>(client: &Client, namespace: &str, name: &str) -> Result<(), OwnedError>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Debug
        + DeserializeOwned,
{
    let api = Api::<K>::namespaced(client.clone(), namespace);
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.is_not_found() => Ok(()),
        Err(source) => Err(OwnedError::Delete {
            kind: K::kind(&()).into_owned(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry};

    use super::*;

    fn managed(manager: &str, operation: &str, fields: serde_json::Value) -> ManagedFieldsEntry {
        ManagedFieldsEntry {
            manager: Some(manager.into()),
            operation: Some(operation.into()),
            fields_v1: Some(FieldsV1(fields)),
            ..ManagedFieldsEntry::default()
        }
    }

    #[test]
    fn only_the_operators_own_apply_of_replicas_counts() {
        let replicas = json!({"f:spec": {"f:replicas": {}, "f:template": {}}});
        let template = json!({"f:spec": {"f:template": {}}});
        let cases = [
            (vec![managed(MANAGER, "Apply", replicas.clone())], true),
            (vec![managed(MANAGER, "Apply", template.clone())], false),
            (
                vec![
                    managed(MANAGER, "Apply", template),
                    managed("kube-controller-manager", "Update", replicas.clone()),
                ],
                false,
            ),
            (vec![managed(HANDOVER_MANAGER, "Apply", replicas)], false),
            (vec![], false),
        ];
        for (i, (entries, expected)) in cases.into_iter().enumerate() {
            let mut deployment = Deployment::default();
            deployment.metadata.managed_fields = Some(entries);
            assert_eq!(applies_replicas(&deployment), expected, "case {i}");
        }
    }
}
