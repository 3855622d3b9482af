//! A campaign as one issuer process serves it: its configuration and Redis keys, who may
//! apply (its identity) and how often (its rate limits), the sold-out board, its apply
//! counters, its waiting room, and whether the backend holds its state.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use chrono::{DateTime, Utc};
use firstcome_contract::{CampaignConfig, CampaignKeys, Window};
use prometheus_client::metrics::gauge::Gauge;

use crate::admission::Counts;
use crate::admission::sold_out::SoldOutBoard;
use crate::identity::Identity;
use crate::kafka::claims::Claims;
use crate::limits::ApplyLimits;
use crate::metrics::{ApplyCounters, Metrics};
use crate::waiting_room::Room;

pub struct Campaign {
    pub config: CampaignConfig,
    pub keys: CampaignKeys,
    /// `config.topic`, shared by every winner event queued for it.
    pub topic: Arc<str>,
    /// How callers are authenticated, loaded from `config.identity`.
    pub identity: Identity,
    pub limits: ApplyLimits,
    pub sold_out: SoldOutBoard,
    pub counters: ApplyCounters,
    /// Set while this process restores the campaign into Redis (single flight).
    restoring: AtomicBool,
    /// Whether the backend holds the campaign's admission state; readiness needs it.
    provisioned: AtomicBool,
    /// Whether the last provisioning found the campaign deleted by the operator.
    deleted: AtomicBool,
    /// `provisioned` as a metric, for the alert on a campaign Redis does not hold.
    provisioned_gauge: Gauge,
    /// Winners without a coupon at the last drift audit.
    pub drift: AtomicU64,
    /// Who holds each sequence, as the campaign topic says (distributed issuers).
    pub claims: Arc<Claims>,
    /// The waiting room applies must pass first, if the campaign has one.
    pub room: Option<Room>,
}

/// Where a campaign stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CampaignState {
    Scheduled,
    Open,
    SoldOut,
    Closed,
}

impl Campaign {
    /// `provisioned`: whether the backend is known to hold the campaign's state from the
    /// start (the standalone ledger always does; Redis is checked first).
    pub fn new(
        config: CampaignConfig,
        identity: Identity,
        metrics: &Metrics,
        provisioned: bool,
    ) -> Self {
        Self {
            keys: CampaignKeys::new(&config.name),
            topic: Arc::from(config.topic.as_str()),
            identity,
            limits: ApplyLimits::new(
                &config.rate_limits,
                metrics.rate_limited_counters(&config.name),
            ),
            sold_out: SoldOutBoard::default(),
            counters: metrics.apply_counters(&config.name),
            restoring: AtomicBool::new(false),
            provisioned: AtomicBool::new(provisioned),
            deleted: AtomicBool::new(false),
            provisioned_gauge: {
                let gauge = metrics.provisioned(&config.name);
                gauge.set(i64::from(provisioned));
                gauge
            },
            drift: AtomicU64::new(0),
            claims: Arc::default(),
            room: None,
            config,
        }
    }

    /// The campaign behind `room`.
    pub fn with_room(self, room: Option<Room>) -> Self {
        Self { room, ..self }
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    pub fn is_provisioned(&self) -> bool {
        self.provisioned.load(Ordering::Acquire)
    }

    pub fn set_provisioned(&self, provisioned: bool) {
        self.provisioned.store(provisioned, Ordering::Release);
        self.provisioned_gauge.set(i64::from(provisioned));
    }

    /// Records whether the operator deleted the campaign; `true` when that is news (its
    /// issuers look again at every apply and every fence watch until their Deployment is
    /// gone, and say so once).
    pub fn set_deleted(&self, deleted: bool) -> bool {
        self.deleted.swap(deleted, Ordering::AcqRel) != deleted
    }

    /// Claims the restore of this campaign; only one caller at a time gets `true`.
    pub fn begin_restoring(&self) -> bool {
        !self.restoring.swap(true, Ordering::AcqRel)
    }

    pub fn finish_restoring(&self) {
        self.restoring.store(false, Ordering::Release);
    }

    pub fn state(&self, counts: Counts, now: DateTime<Utc>) -> CampaignState {
        match self.config.window(now) {
            Window::Scheduled => CampaignState::Scheduled,
            Window::Closed => CampaignState::Closed,
            Window::Open if counts.admitted >= counts.limit => CampaignState::SoldOut,
            Window::Open => CampaignState::Open,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deletion_is_news_once_and_again_after_a_provisioning() {
        let config = CampaignConfig::new("spring", 10);
        let campaign = Campaign::new(config, Identity::None, &Metrics::default(), false);
        assert!(campaign.set_deleted(true), "found deleted");
        assert!(!campaign.set_deleted(true), "looked again: not news");
        assert!(
            campaign.set_deleted(false),
            "provisioned again (created anew)"
        );
        assert!(!campaign.set_deleted(false));
        assert!(campaign.set_deleted(true));
    }
}
