//! Campaigns for unit tests, written the way users write them: as YAML.

use crate::resource::{CouponCampaign, CouponCampaignSpec};

/// `black-friday` in namespace `shop`, with the given spec. A spec that does not say its
/// identity gets `none`, so tests of other fields need no keys.
pub fn campaign(yaml_spec: &str) -> CouponCampaign {
    let mut spec: serde_yaml_ng::Value = serde_yaml_ng::from_str(yaml_spec).expect("YAML");
    if let serde_yaml_ng::Value::Mapping(fields) = &mut spec
        && !fields.contains_key("identity")
    {
        let none = serde_yaml_ng::from_str("{mode: none}").expect("YAML");
        fields.insert("identity".into(), none);
    }
    let spec: CouponCampaignSpec = serde_yaml_ng::from_value(spec).expect("a valid spec");
    let mut campaign = CouponCampaign::new("black-friday", spec);
    campaign.metadata.namespace = Some("shop".into());
    campaign.metadata.uid = Some("0b8a3c1e-0000-4000-8000-000000000001".into());
    campaign.metadata.generation = Some(1);
    campaign
}
