//! The distributed backend: admission in Redis, winners handed off to Kafka, coupons in
//! PostgreSQL.
//!
//! - this module: one admission and its hand-off to the broker;
//! - [`provision`]: a campaign Redis does not hold is restored from PostgreSQL;
//! - [`republish`]: admissions whose hand-off was not confirmed are published again;
//! - [`audit`]: Redis's winners are compared with PostgreSQL's coupons (drift).

pub mod audit;
pub mod provision;
pub mod republish;

use std::sync::Arc;

use firstcome_contract::WinnerEvent;

use crate::admission::redis::{RedisAdmission, RedisAdmissionError};
use crate::admission::{Admission, Outcome};
use crate::campaign::Campaign;
use crate::error::IssuerError;
use crate::kafka::producer::WinnerPublisher;
use crate::metrics::Metrics;
use crate::store::postgres::CouponStore;

pub struct Distributed {
    pub redis: RedisAdmission,
    pub publisher: WinnerPublisher,
    pub coupons: CouponStore,
    pub kafka_brokers: String,
    pub metrics: Arc<Metrics>,
}

impl Distributed {
    /// Runs the admission script and hands a winner off to the broker. A campaign Redis
    /// does not hold is restored in the background meanwhile, and the apply gets
    /// [`IssuerError::Unprovisioned`].
    pub async fn admit(
        self: &Arc<Self>,
        campaign: &Arc<Campaign>,
        user: &str,
    ) -> Result<Outcome, IssuerError> {
        let outcome = self
            .redis
            .run_admission_script(&campaign.config, &campaign.keys, user)
            .await;
        let outcome = match outcome {
            Err(RedisAdmissionError::Unprovisioned(name)) => {
                campaign.set_provisioned(false);
                self.restore_in_background(campaign);
                return Err(IssuerError::Unprovisioned(name));
            }
            other => other?,
        };
        if let Outcome::Admitted(admission) = &outcome {
            self.hand_off(campaign, user, admission).await?;
        }
        Ok(outcome)
    }

    /// Publishes the winner's event and waits for the broker's ack (bounded by the
    /// publisher). On success the admission is no longer pending; on failure or time-out
    /// it stays pending in Redis and the re-publisher delivers it later.
    async fn hand_off(
        &self,
        campaign: &Campaign,
        user: &str,
        admission: &Admission,
    ) -> Result<(), IssuerError> {
        let event = winner_event(campaign.name(), user, admission);
        let published = self.publisher.publish(&campaign.config.topic, &event).await;
        self.metrics.published(campaign.name(), published.is_ok());
        if let Err(source) = published {
            tracing::error!(error = %source, "winner event not confirmed; it stays pending");
            return Err(IssuerError::Unconfirmed {
                admission: admission.clone(),
                source,
            });
        }
        let confirmed = self
            .redis
            .confirm_published(&campaign.keys, admission.sequence)
            .await;
        if let Err(error) = confirmed {
            // Only costs a duplicate publish later, which persistence ignores.
            tracing::warn!(%error, "cannot clear the pending mark of a published winner");
        }
        Ok(())
    }
}

/// The one place a winner event is built from an admission.
pub(crate) fn winner_event(campaign: &str, user: &str, admission: &Admission) -> WinnerEvent {
    WinnerEvent {
        campaign: campaign.to_string(),
        user_id: user.to_string(),
        ordinal: admission.ordinal,
        sequence: admission.sequence,
        admitted_at: admission.admitted_at,
    }
}
