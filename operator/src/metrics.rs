//! Prometheus metrics of the operator: its reconciles and lease, and per campaign what the
//! last reconcile saw (Ready, when it opens), so an alert can fire before the opening.

use std::sync::atomic::AtomicU64;

use chrono::{DateTime, Utc};
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Outcome {
    ok,
    error,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: Outcome,
}

/// The kind of a failed reconcile: `controller::Error::metric_label`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabel {
    error: &'static str,
}

/// A campaign by its id, `<namespace>.<name>`: the label the issuers' metrics use too.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CampaignLabel {
    campaign: String,
}

pub struct Metrics {
    registry: Registry,
    reconciles: Family<OutcomeLabel, Counter>,
    failures: Family<ErrorLabel, Counter>,
    pub reconcile_seconds: Histogram,
    pub leader: Gauge,
    campaign_ready: Family<CampaignLabel, Gauge>,
    campaign_opens_at: Family<CampaignLabel, Gauge<f64, AtomicU64>>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("firstcome_operator");
        let reconciles = Family::<OutcomeLabel, Counter>::default();
        registry.register("reconciles", "Reconciles by outcome", reconciles.clone());
        let failures = Family::<ErrorLabel, Counter>::default();
        registry.register(
            "reconcile_failures",
            "Failed reconciles by kind of error",
            failures.clone(),
        );
        let reconcile_seconds = Histogram::new(exponential_buckets(0.005, 2.0, 12));
        registry.register(
            "reconcile_duration_seconds",
            "Duration of one reconcile",
            reconcile_seconds.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica holds the leader lease",
            leader.clone(),
        );
        let campaign_ready = Family::<CampaignLabel, Gauge>::default();
        registry.register(
            "campaign_ready",
            "1 while the campaign's Ready condition is True, 0 otherwise, as the last reconcile saw it",
            campaign_ready.clone(),
        );
        let campaign_opens_at = Family::<CampaignLabel, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "campaign_opens_at_timestamp_seconds",
            "When the campaign opens (spec.opensAt, Unix seconds); absent for a campaign open from its creation",
            campaign_opens_at.clone(),
        );
        Self {
            registry,
            reconciles,
            failures,
            reconcile_seconds,
            leader,
            campaign_ready,
            campaign_opens_at,
        }
    }
}

impl Metrics {
    pub fn reconciled(&self, outcome: Outcome) {
        self.reconciles
            .get_or_create(&OutcomeLabel { outcome })
            .inc();
    }

    pub fn failed(&self, error: &'static str) {
        self.failures.get_or_create(&ErrorLabel { error }).inc();
    }

    /// What a reconcile saw of `campaign`: whether it is Ready, and when it opens.
    pub fn campaign_observed(&self, campaign: &str, ready: bool, opens_at: Option<DateTime<Utc>>) {
        let label = CampaignLabel {
            campaign: campaign.to_string(),
        };
        self.campaign_ready
            .get_or_create(&label)
            .set(i64::from(ready));
        match opens_at {
            Some(at) => {
                let seconds = at.timestamp_millis() as f64 / 1000.0;
                self.campaign_opens_at.get_or_create(&label).set(seconds);
            }
            None => {
                self.campaign_opens_at.remove(&label);
            }
        }
    }

    /// A deleted campaign leaves no series behind.
    pub fn campaign_removed(&self, campaign: &str) {
        let label = CampaignLabel {
            campaign: campaign.to_string(),
        };
        self.campaign_ready.remove(&label);
        self.campaign_opens_at.remove(&label);
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(metrics: &Metrics, name: &str) -> Vec<String> {
        metrics
            .render()
            .lines()
            .filter(|line| line.starts_with(name))
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn a_campaign_shows_its_readiness_and_opening_until_removed() {
        let metrics = Metrics::default();
        let opens_at = "2026-12-03T09:00:00.5Z".parse().unwrap();
        metrics.campaign_observed("shop.sale", false, Some(opens_at));
        assert_eq!(
            samples(&metrics, "firstcome_operator_campaign_"),
            [
                r#"firstcome_operator_campaign_ready{campaign="shop.sale"} 0"#,
                r#"firstcome_operator_campaign_opens_at_timestamp_seconds{campaign="shop.sale"} 1796288400.5"#,
            ]
        );

        metrics.campaign_observed("shop.sale", true, None);
        assert_eq!(
            samples(&metrics, "firstcome_operator_campaign_"),
            [r#"firstcome_operator_campaign_ready{campaign="shop.sale"} 1"#]
        );

        metrics.campaign_removed("shop.sale");
        assert_eq!(
            samples(&metrics, "firstcome_operator_campaign_"),
            Vec::<String>::new()
        );
    }
}
