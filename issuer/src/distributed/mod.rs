//! The distributed backend: admission in Redis, winners handed off to Kafka, coupons in
//! PostgreSQL.
//!
//! - this module: one admission and its hand-off to the broker;
//! - [`provision`]: a campaign Redis does not hold is restored from PostgreSQL;
//! - [`republish`]: admissions whose hand-off was not confirmed are published again;
//! - [`audit`]: Redis's winners are compared with PostgreSQL's coupons (drift);
//! - [`fence`]: a Redis that lost admissions stops admitting until it is restored.

pub mod audit;
pub mod fence;
pub mod provision;
pub mod republish;

use std::sync::Arc;

use firstcome_contract::WinnerEvent;
use tracing::Instrument;

use crate::admission::redis::{RedisAdmission, RedisAdmissionError};
use crate::admission::{Admission, Outcome};
use crate::campaign::Campaign;
use crate::cli::ReplicaWait;
use crate::error::{HandOffError, IssuerError};
use crate::kafka::producer::WinnerPublisher;
use crate::metrics::Metrics;
use crate::store::postgres::CouponStore;

pub struct Distributed {
    pub redis: RedisAdmission,
    pub publisher: WinnerPublisher,
    pub coupons: CouponStore,
    pub kafka_brokers: String,
    pub metrics: Arc<Metrics>,
    /// Replicas an admission waits for before its hand-off (`None`: no wait).
    pub replica_wait: Option<ReplicaWait>,
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
        if !campaign.claims.caught_up() {
            // Admitting before the topic was read could not tell a twice-given sequence.
            return Err(IssuerError::ClaimsNotRead(campaign.name().to_string()));
        }
        let outcome = self
            .redis
            .run_admission_script(&campaign.config, &campaign.keys, user)
            .instrument(tracing::info_span!("admission_script"))
            .await;
        let outcome = match outcome {
            Err(RedisAdmissionError::Unprovisioned(name)) => {
                campaign.set_provisioned(false);
                self.restore_in_background(campaign);
                return Err(IssuerError::Unprovisioned(name));
            }
            Err(error) if error.outcome_unknown() => {
                return Err(IssuerError::OutcomeUnknown(error));
            }
            other => other?,
        };
        match &outcome {
            Outcome::Admitted(admission) => {
                self.wait_for_replicas().await;
                self.hand_off(campaign, user, admission).await?;
            }
            Outcome::AlreadyApplied(held) => self.confirm_holding(campaign, user, held).await?,
            _ => {}
        }
        Ok(outcome)
    }

    /// Before a user is told which sequences they hold, each one the topic does not name
    /// them the holder of yet and whose event the broker never acked (its hand-off failed,
    /// or its answer was lost) is handed off now: until then a Redis that loses writes
    /// could take it back (chaos seed 4000). If the broker does not ack, the apply is
    /// answered as the first one was, `admission_unconfirmed`.
    async fn confirm_holding(
        self: &Arc<Self>,
        campaign: &Arc<Campaign>,
        user: &str,
        held: &[u64],
    ) -> Result<(), IssuerError> {
        let unread: Vec<u64> = (held.iter().copied())
            .filter(|sequence| !campaign.claims.names_holder(*sequence, user))
            .collect();
        if unread.is_empty() {
            return Ok(());
        }
        for winner in self.redis.pending_of(&campaign.keys, &unread).await? {
            self.hand_off(campaign, user, &winner.admission).await?;
        }
        Ok(())
    }

    /// Best effort: a replica that lags past the wait is logged and counted; fencing
    /// still guards against its promotion.
    async fn wait_for_replicas(&self) {
        let Some(wait) = self.replica_wait else {
            return;
        };
        match self
            .redis
            .wait_for_replicas(wait.replicas, wait.timeout)
            .await
        {
            Ok(acked) if acked >= wait.replicas => {}
            Ok(acked) => {
                self.metrics.replica_wait_missed();
                tracing::warn!(
                    acked,
                    wanted = wait.replicas,
                    "admission not on enough replicas within the wait"
                );
            }
            Err(error) => {
                self.metrics.replica_wait_missed();
                tracing::warn!(%error, "waiting for the replicas failed");
            }
        }
    }

    /// Publishes the winner's event, waits for the broker's ack (bounded by the
    /// publisher), then reads the topic back up to the event: the winner is answered
    /// "admitted" only if the topic names them the holder of their sequence. Without an
    /// ack the admission stays pending in Redis and the re-publisher delivers it later.
    #[tracing::instrument(name = "hand_off", skip_all, fields(sequence = admission.sequence))]
    async fn hand_off(
        self: &Arc<Self>,
        campaign: &Arc<Campaign>,
        user: &str,
        admission: &Admission,
    ) -> Result<(), IssuerError> {
        let unconfirmed = |source: HandOffError| IssuerError::Unconfirmed {
            admission: admission.clone(),
            source,
        };
        let event = winner_event(campaign.name(), user, admission);
        let published = self.publisher.publish(&campaign.topic, &event).await;
        campaign.counters.published(published.is_ok());
        let delivery = published.map_err(|e| unconfirmed(e.into()))?;
        // The pending mark goes in the campaign's next batch of clears; the read-back
        // does not wait for it.
        self.redis.clear_pending(&campaign.keys, admission.sequence);
        let read_back = campaign
            .claims
            .holder_once_read(
                (delivery.partition, delivery.offset),
                admission.sequence,
                self.publisher.ack_wait(),
            )
            .await;
        match read_back.map_err(|e| unconfirmed(e.into()))? {
            Some(holder) if holder == user => Ok(()),
            holder => self.refuse_twice_given(campaign, admission, holder).await,
        }
    }

    /// The topic names another holder of the sequence Redis just handed out: Redis lost
    /// admissions. The winner is not told "admitted" (their event will be stored as a
    /// sequence conflict), and the campaign is fenced.
    async fn refuse_twice_given(
        self: &Arc<Self>,
        campaign: &Arc<Campaign>,
        admission: &Admission,
        holder: Option<String>,
    ) -> Result<(), IssuerError> {
        let sequence = admission.sequence;
        tracing::error!(sequence, holder = ?holder, "sequence already held: Redis handed it out twice");
        self.metrics.refused_twice_given(campaign.name());
        let highest = campaign.claims.highest();
        self.fence(campaign, highest, holder.as_deref().map(|h| (h, sequence)))
            .await?;
        Err(IssuerError::Fenced(sequence))
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
