//! firstcome operator: reconciles `CouponCampaign` resources into running campaigns.

pub mod backends;
pub mod campaign;
pub mod controller;
pub mod defaults;
pub mod desired;
pub mod leader;
pub mod metrics;
pub mod resource;
pub mod status;

#[cfg(test)]
mod fixtures;

use kube::CustomResourceExt;

/// The CRD of `CouponCampaign`, as written to `crds/couponcampaigns.yaml`.
pub fn crd_yaml() -> String {
    serde_yaml_ng::to_string(&resource::CouponCampaign::crd())
        .expect("a CRD always serializes to YAML")
}
