//! Prometheus metrics of the issuer, served on `/metrics` in the text format.
//!
//! Counters the apply path touches are resolved once per campaign ([`ApplyCounters`]), so
//! counting an apply is one atomic add, not a label lookup.
//!
//! Per campaign, besides what happened to applies, the gauges say where it stands as this
//! process last looked: provisioned in Redis, winners awaiting their coupon, first
//! publishes not yet confirmed, drift.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Metric, Registry};

use crate::labels::CampaignLabel;
use crate::limits::counters::{RateLimitFamily, RateLimitedCounters};
use crate::store::postgres::PersistReport;
use crate::waiting_room::metrics::RoomFamilies;

/// How an apply ended, as counted.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum ApplyOutcome {
    admitted,
    already_applied,
    sold_out,
    not_open,
    closed,
    unavailable,
    unconfirmed,
    /// The admission script was sent but its answer was lost: it may have admitted.
    unknown,
}

impl ApplyOutcome {
    /// The outcome's name, as its label spells it (recorded on spans without formatting).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::admitted => "admitted",
            Self::already_applied => "already_applied",
            Self::sold_out => "sold_out",
            Self::not_open => "not_open",
            Self::closed => "closed",
            Self::unavailable => "unavailable",
            Self::unconfirmed => "unconfirmed",
            Self::unknown => "unknown",
        }
    }
}

const OUTCOMES: [ApplyOutcome; 8] = [
    ApplyOutcome::admitted,
    ApplyOutcome::already_applied,
    ApplyOutcome::sold_out,
    ApplyOutcome::not_open,
    ApplyOutcome::closed,
    ApplyOutcome::unavailable,
    ApplyOutcome::unconfirmed,
    ApplyOutcome::unknown,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ApplyLabels {
    campaign: String,
    outcome: ApplyOutcome,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PublishLabels {
    campaign: String,
    result: &'static str,
}

/// The apply counters of one campaign, one per outcome, its admission durations, and its
/// winner events published (ok, error).
#[derive(Clone, Debug)]
pub struct ApplyCounters {
    outcomes: [Counter; OUTCOMES.len()],
    admission_seconds: Histogram,
    published: [Counter; 2],
}

impl ApplyCounters {
    pub fn count(&self, outcome: ApplyOutcome) {
        self.outcomes[outcome as usize].inc();
    }

    /// Time one apply spent in the admission backend.
    pub fn admission_took(&self, seconds: f64) {
        self.admission_seconds.observe(seconds);
    }

    /// One winner event's first publish, acked by the broker or not.
    pub fn published(&self, ok: bool) {
        self.published[usize::from(!ok)].inc();
    }
}

fn admission_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_1, 2.0, 16))
}

pub struct Metrics {
    registry: Registry,
    applies: Family<ApplyLabels, Counter>,
    rate_limited: RateLimitFamily,
    admission_seconds: Family<CampaignLabel, Histogram, fn() -> Histogram>,
    provisioned: Family<CampaignLabel, Gauge>,
    pending_persistence: Family<CampaignLabel, Gauge>,
    unconfirmed_winners: Family<CampaignLabel, Gauge>,
    published: Family<PublishLabels, Counter>,
    republished: Family<CampaignLabel, Counter>,
    persisted: Family<CampaignLabel, Counter>,
    failed_events: Family<CampaignLabel, Counter>,
    consumer_lag: Family<CampaignLabel, Gauge>,
    missing_coupons: Family<CampaignLabel, Gauge>,
    dead_lettered: Family<CampaignLabel, Counter>,
    sequence_conflicts: Family<CampaignLabel, Counter>,
    fenced: Family<CampaignLabel, Counter>,
    refused_twice_given: Family<CampaignLabel, Counter>,
    replica_wait_missed: Counter,
    pub waiting_room: RoomFamilies,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("firstcome");
        Self {
            applies: register(
                &mut registry,
                "applies",
                "Applies by campaign and outcome",
                Family::<ApplyLabels, Counter>::default(),
            ),
            rate_limited: RateLimitFamily::register(&mut registry),
            admission_seconds: register(
                &mut registry,
                "admission_duration_seconds",
                "Time an apply spends in the admission backend (and, when admitted, until the broker acked)",
                Family::new_with_constructor(admission_histogram as fn() -> Histogram),
            ),
            provisioned: register(
                &mut registry,
                "campaign_provisioned",
                "1 while the admission backend holds the campaign's state (Redis: provisioned), 0 while applies are refused as unprovisioned",
                Family::<CampaignLabel, Gauge>::default(),
            ),
            pending_persistence: register(
                &mut registry,
                "pending_persistence",
                "Winners admitted in Redis without their coupon in PostgreSQL yet, at the last drift audit",
                Family::<CampaignLabel, Gauge>::default(),
            ),
            unconfirmed_winners: register(
                &mut registry,
                "unconfirmed_winners",
                "Winners whose first publish the broker has not confirmed (the hand-off), at the last re-publish pass",
                Family::<CampaignLabel, Gauge>::default(),
            ),
            published: register(
                &mut registry,
                "winners_published",
                "Winner events published, by result",
                Family::<PublishLabels, Counter>::default(),
            ),
            republished: register(
                &mut registry,
                "winners_republished",
                "Winner events published again because their first publish was not confirmed",
                Family::<CampaignLabel, Counter>::default(),
            ),
            persisted: register(
                &mut registry,
                "coupons_persisted",
                "Coupons newly written to PostgreSQL by the consumer",
                Family::<CampaignLabel, Counter>::default(),
            ),
            failed_events: register(
                &mut registry,
                "failed_events",
                "Consumed messages stored as failed events instead of coupons",
                Family::<CampaignLabel, Counter>::default(),
            ),
            consumer_lag: register(
                &mut registry,
                "consumer_lag_messages",
                "Messages on the campaign topic not yet consumed by its consumer group",
                Family::<CampaignLabel, Gauge>::default(),
            ),
            missing_coupons: register(
                &mut registry,
                "reconcile_missing_coupons",
                "Winners recorded in Redis without a coupon in PostgreSQL at the last drift audit",
                Family::<CampaignLabel, Gauge>::default(),
            ),
            dead_lettered: register(
                &mut registry,
                "dead_lettered",
                "Messages parked on the dead-letter topic because PostgreSQL stayed unavailable",
                Family::<CampaignLabel, Counter>::default(),
            ),
            sequence_conflicts: register(
                &mut registry,
                "sequence_conflicts",
                "Winner events whose sequence another user holds (Redis had lost admissions); stored as failed events",
                Family::<CampaignLabel, Counter>::default(),
            ),
            fenced: register(
                &mut registry,
                "fenced",
                "Times a campaign was fenced because Redis had lost admissions",
                Family::<CampaignLabel, Counter>::default(),
            ),
            refused_twice_given: register(
                &mut registry,
                "refused_twice_given",
                "Admissions refused because the topic names another holder of their sequence",
                Family::<CampaignLabel, Counter>::default(),
            ),
            replica_wait_missed: register(
                &mut registry,
                "replica_wait_missed",
                "Admissions handed off before enough replicas acknowledged them (--redis-wait-replicas)",
                Counter::default(),
            ),
            waiting_room: RoomFamilies::register(&mut registry),
            registry,
        }
    }
}

/// Registers `metric` under `name` and returns it, to be kept as a field.
fn register<M: Metric + Clone>(registry: &mut Registry, name: &str, help: &str, metric: M) -> M {
    registry.register(name, help, metric.clone());
    metric
}

fn campaign(name: &str) -> CampaignLabel {
    CampaignLabel::of(name)
}

impl Metrics {
    pub fn apply_counters(&self, name: &str) -> ApplyCounters {
        ApplyCounters {
            outcomes: OUTCOMES.map(|outcome| {
                self.applies
                    .get_or_create(&ApplyLabels {
                        campaign: name.to_string(),
                        outcome,
                    })
                    .clone()
            }),
            admission_seconds: self
                .admission_seconds
                .get_or_create(&campaign(name))
                .clone(),
            published: ["ok", "error"].map(|result| {
                self.published
                    .get_or_create(&PublishLabels {
                        campaign: name.to_string(),
                        result,
                    })
                    .clone()
            }),
        }
    }

    /// The campaign's provisioned gauge (a campaign sets it as the backend's state goes).
    pub fn provisioned(&self, name: &str) -> Gauge {
        self.provisioned.get_or_create(&campaign(name)).clone()
    }

    pub fn pending_persistence(&self, name: &str, winners: u64) {
        self.pending_persistence
            .get_or_create(&campaign(name))
            .set(i64::try_from(winners).unwrap_or(i64::MAX));
    }

    pub fn unconfirmed_winners(&self, name: &str, winners: usize) {
        self.unconfirmed_winners
            .get_or_create(&campaign(name))
            .set(i64::try_from(winners).unwrap_or(i64::MAX));
    }

    pub fn rate_limited_counters(&self, name: &str) -> RateLimitedCounters {
        self.rate_limited.of(name)
    }

    pub fn republished(&self, name: &str) {
        self.republished.get_or_create(&campaign(name)).inc();
    }

    /// One persisted batch: its new coupons, its invalid events, its sequence conflicts
    /// (which are failed events too).
    pub fn persisted(&self, name: &str, report: PersistReport, invalid: u64) {
        let label = campaign(name);
        self.persisted.get_or_create(&label).inc_by(report.inserted);
        self.failed_events
            .get_or_create(&label)
            .inc_by(invalid + report.conflicts);
        self.sequence_conflicts
            .get_or_create(&label)
            .inc_by(report.conflicts);
    }

    pub fn replica_wait_missed(&self) {
        self.replica_wait_missed.inc();
    }

    pub fn fenced(&self, name: &str) {
        self.fenced.get_or_create(&campaign(name)).inc();
    }

    pub fn refused_twice_given(&self, name: &str) {
        self.refused_twice_given
            .get_or_create(&campaign(name))
            .inc();
    }

    pub fn dead_lettered(&self, name: &str, messages: u64) {
        self.dead_lettered
            .get_or_create(&campaign(name))
            .inc_by(messages);
    }

    pub fn missing_coupons(&self, name: &str, missing: usize) {
        self.missing_coupons
            .get_or_create(&campaign(name))
            .set(missing as i64);
    }

    pub fn consumer_lag(&self, name: &str) -> Gauge {
        self.consumer_lag.get_or_create(&campaign(name)).clone()
    }

    /// The Prometheus text exposition of every metric.
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

    fn lines_of(metrics: &Metrics, name: &str) -> Vec<String> {
        metrics
            .render()
            .lines()
            .filter(|line| line.starts_with(name))
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn campaign_gauges_carry_the_campaign_label() {
        let metrics = Metrics::default();
        metrics.provisioned("sale").set(1);
        metrics.pending_persistence("sale", 7);
        metrics.unconfirmed_winners("sale", 2);
        assert_eq!(
            lines_of(&metrics, "firstcome_campaign_provisioned"),
            [r#"firstcome_campaign_provisioned{campaign="sale"} 1"#]
        );
        assert_eq!(
            lines_of(&metrics, "firstcome_pending_persistence"),
            [r#"firstcome_pending_persistence{campaign="sale"} 7"#]
        );
        assert_eq!(
            lines_of(&metrics, "firstcome_unconfirmed_winners"),
            [r#"firstcome_unconfirmed_winners{campaign="sale"} 2"#]
        );
    }

    #[test]
    fn admission_durations_are_per_campaign() {
        let metrics = Metrics::default();
        metrics.apply_counters("a").admission_took(0.000_05);
        metrics.apply_counters("a").admission_took(0.5);
        metrics.apply_counters("b").admission_took(0.002);
        let mut counts = lines_of(&metrics, "firstcome_admission_duration_seconds_count");
        counts.sort();
        assert_eq!(
            counts,
            [
                r#"firstcome_admission_duration_seconds_count{campaign="a"} 2"#,
                r#"firstcome_admission_duration_seconds_count{campaign="b"} 1"#,
            ]
        );
        assert!(
            lines_of(&metrics, "firstcome_admission_duration_seconds_bucket").contains(
                &r#"firstcome_admission_duration_seconds_bucket{le="0.0001",campaign="a"} 1"#
                    .to_string()
            ),
            "{}",
            metrics.render()
        );
    }

    #[test]
    fn publishes_are_counted_per_campaign_and_result() {
        let metrics = Metrics::default();
        let counters = metrics.apply_counters("sale");
        counters.published(true);
        counters.published(true);
        counters.published(false);
        let mut lines = lines_of(&metrics, "firstcome_winners_published_total");
        lines.sort();
        assert_eq!(
            lines,
            [
                r#"firstcome_winners_published_total{campaign="sale",result="error"} 1"#,
                r#"firstcome_winners_published_total{campaign="sale",result="ok"} 2"#,
            ]
        );
    }
}
