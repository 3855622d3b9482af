//! What a campaign may leave out, and the operator fills in from its flags (the Helm
//! chart's values): issuer image, replicas and resources, and the backends Secret. The
//! one place those defaults are resolved (replicas with the scaling plan, in
//! [`crate::scaling`]).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::resource::CouponCampaign;

#[derive(Clone, Debug, PartialEq)]
pub struct IssuerDefaults {
    pub image: String,
    pub replicas: i32,
    pub resources: ResourceRequirements,
    pub backends_secret: String,
    /// Where the issuers export their traces (OTLP/HTTP), if anywhere.
    pub otlp_endpoint: Option<String>,
}

impl Default for IssuerDefaults {
    fn default() -> Self {
        Self {
            image: concat!("firstcome:", env!("CARGO_PKG_VERSION")).to_string(),
            replicas: 2,
            resources: ResourceRequirements {
                requests: Some(BTreeMap::from([
                    ("cpu".into(), Quantity("250m".into())),
                    ("memory".into(), Quantity("128Mi".into())),
                ])),
                limits: Some(BTreeMap::from([(
                    "memory".into(),
                    Quantity("512Mi".into()),
                )])),
                ..ResourceRequirements::default()
            },
            backends_secret: "firstcome-backends".to_string(),
            otlp_endpoint: None,
        }
    }
}

impl IssuerDefaults {
    pub fn image<'a>(&'a self, campaign: &'a CouponCampaign) -> &'a str {
        campaign.spec.issuer.image.as_deref().unwrap_or(&self.image)
    }

    pub fn resources(&self, campaign: &CouponCampaign) -> ResourceRequirements {
        campaign
            .spec
            .issuer
            .resources
            .clone()
            .unwrap_or_else(|| self.resources.clone())
    }

    pub fn backends_secret<'a>(&'a self, campaign: &'a CouponCampaign) -> &'a str {
        campaign
            .spec
            .backends
            .secret_name
            .as_deref()
            .unwrap_or(&self.backends_secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::campaign;

    #[test]
    fn the_campaign_wins_over_the_defaults() {
        let defaults = IssuerDefaults::default();
        let bare = campaign("limit: 1\n");
        assert_eq!(defaults.backends_secret(&bare), "firstcome-backends");
        assert_eq!(defaults.image(&bare), defaults.image);
        let set = campaign(
            "limit: 1\nissuer: {replicas: 5, image: mine, resources: {requests: {cpu: 1}}}\nbackends: {secretName: s}\n",
        );
        assert_eq!(defaults.backends_secret(&set), "s");
        assert_eq!(defaults.image(&set), "mine");
        assert!(defaults.resources(&set).limits.is_none());
    }
}
