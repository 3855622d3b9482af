//! firstcome operator: reconciles `CouponCampaign` resources into running campaigns.
//!
//! The reconcile ([`controller`]) reads as a pipeline: [`campaign`] derives the issuers'
//! configuration, [`observe`] asks the backends ([`backends`]), [`owned`] applies the
//! objects built by [`desired`], [`status`] computes the status (pure), [`transitions`]
//! picks the Events a change publishes (pure), [`scaling`] plans the issuers' replicas
//! around the opening (pure). [`leader`] elects the one replica that reconciles.

// The reconcile future holds a Redis connection of any deployment (one primary, Sentinel
// or Cluster); proving it `Send` takes the compiler past its default depth of 128.
#![recursion_limit = "256"]

pub mod backends;
pub mod campaign;
pub mod controller;
pub mod defaults;
pub mod desired;
pub mod leader;
pub mod metrics;
pub mod observe;
pub mod owned;
pub mod reason;
pub mod resource;
pub mod scaling;
pub mod status;
pub mod transitions;

#[cfg(test)]
mod fixtures;

use kube::CustomResourceExt;

/// The CRD of `CouponCampaign`, as written to `crds/couponcampaigns.yaml`.
pub fn crd_yaml() -> String {
    serde_yaml_ng::to_string(&resource::CouponCampaign::crd())
        .expect("a CRD always serializes to YAML")
}

/// An error and its sources, `: `-separated (a source already spelled out by the one
/// before it is not repeated): the message of a condition or a log line.
pub fn describe(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message = format!("{message}: {text}");
        }
        source = cause.source();
    }
    message
}
