//! The label set of per-campaign metrics, below every module that registers metric
//! families (the issuer's registry in `metrics`, the waiting room's, the rate limits').

use prometheus_client::encoding::EncodeLabelSet;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CampaignLabel {
    pub campaign: String,
}

impl CampaignLabel {
    pub fn of(campaign: &str) -> Self {
        Self {
            campaign: campaign.to_string(),
        }
    }
}
