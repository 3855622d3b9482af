//! What the backends say about a campaign: its backends Secret read, then Redis (the
//! limit written, the counts read), Kafka (the topic ensured) and PostgreSQL (the coupons
//! counted) asked concurrently.

use firstcome_contract::{CampaignConfig, ConfigError};
use kube::{Client, ResourceExt};

use crate::backends::{self, Connections};
use crate::describe;
use crate::resource::CouponCampaign;
use crate::status::{self, Answers, Backends};

/// Asks the backends whose settings the Secret `secret` holds; an invalid spec or an
/// unusable Secret asks none.
pub async fn backends(
    client: &Client,
    connections: &Connections,
    secret: &str,
    campaign: &CouponCampaign,
    config: &Result<CampaignConfig, ConfigError>,
) -> Backends {
    let Ok(config) = config else {
        return Backends::NotTried;
    };
    let namespace = campaign.namespace().unwrap_or_default();
    let settings = match backends::settings(client, &namespace, secret).await {
        Ok(settings) => settings,
        Err(error) => return Backends::NoSettings(error),
    };
    let topic = &campaign.spec.topic;
    let (redis, topic, persistence) = tokio::join!(
        connections.provision_redis(&settings.redis_url, config, never_provisioned(campaign)),
        connections.ensure_topic(
            &settings.kafka_brokers,
            &config.topic,
            topic.partitions,
            topic.replication_factor
        ),
        connections.persistence(&settings.database_url, &config.name),
    );
    if let Err(error) = &persistence {
        tracing::warn!(
            reason = %error.reason(),
            error = %describe(error),
            "cannot count the campaign's coupons; keeping the last counts"
        );
    }
    Backends::Asked(Answers {
        redis,
        topic,
        persistence,
    })
}

/// Provisioned before if Redis was ever ready for it: then a missing admission counter
/// is data loss, not a new campaign.
fn never_provisioned(campaign: &CouponCampaign) -> bool {
    campaign.status.as_ref().is_none_or(|s| {
        s.admitted == 0
            && status::condition(s, status::REDIS_READY).is_none_or(|c| c.status != "True")
    })
}
