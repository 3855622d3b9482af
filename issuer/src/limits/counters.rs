//! The rate limits' metric, `firstcome_rate_limited_total{campaign, scope}`: applies
//! refused, per campaign and bucket scope. Registered with the issuer's other metrics;
//! each campaign's counters are resolved once, so counting a refusal is one atomic add.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use super::Scope;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RateLimitLabels {
    campaign: String,
    scope: Scope,
}

/// The family, registered once per process.
pub struct RateLimitFamily(Family<RateLimitLabels, Counter>);

/// The rate-limit counters of one campaign, one per scope.
#[derive(Clone, Debug)]
pub struct RateLimitedCounters {
    client: Counter,
    user: Counter,
}

impl RateLimitFamily {
    pub fn register(registry: &mut Registry) -> Self {
        let family = Family::<RateLimitLabels, Counter>::default();
        registry.register(
            "rate_limited",
            "Applies refused by a rate limit before any admission work, by the scope of the bucket",
            family.clone(),
        );
        Self(family)
    }

    pub fn of(&self, campaign: &str) -> RateLimitedCounters {
        let counter = |scope| {
            let labels = RateLimitLabels {
                campaign: campaign.to_string(),
                scope,
            };
            self.0.get_or_create(&labels).clone()
        };
        RateLimitedCounters {
            client: counter(Scope::client),
            user: counter(Scope::user),
        }
    }
}

impl RateLimitedCounters {
    pub fn count(&self, scope: Scope) {
        match scope {
            Scope::client => self.client.inc(),
            Scope::user => self.user.inc(),
        };
    }
}
