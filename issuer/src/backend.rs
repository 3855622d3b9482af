//! The admission backend an issuer runs on: the standalone ledger in this process, or
//! the distributed one (Redis, Kafka, PostgreSQL). Both answer the same questions.

use std::sync::Arc;

use tracing::Instrument;

use crate::admission::embedded::EmbeddedAdmission;
use crate::admission::sold_out::SoldOutSnapshot;
use crate::admission::{Counts, Outcome};
use crate::campaign::Campaign;
use crate::distributed::Distributed;
use crate::error::IssuerError;
use crate::store::IssuedCoupon;
use crate::user_id::UserId;

pub enum Backend {
    Standalone(Arc<EmbeddedAdmission>),
    Distributed(Arc<Distributed>),
}

/// What a look-up shows of one admission.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeldAdmission {
    pub sequence: u64,
    /// Present once the coupon is persisted.
    pub coupon: Option<IssuedCoupon>,
}

impl Backend {
    /// Decides one apply; a distributed winner is answered only once the broker acked.
    /// Runs to completion even if the caller goes away: once admitted, the winner must
    /// reach its durable record whether or not anyone waits for the answer (the
    /// distributed backend's admission worker runs apart from its callers; the standalone
    /// ledger's write is spawned).
    pub async fn admit(
        &self,
        campaign: &Arc<Campaign>,
        user: &UserId,
    ) -> Result<Outcome, IssuerError> {
        match self {
            Backend::Standalone(embedded) => {
                let (embedded, campaign) = (Arc::clone(embedded), Arc::clone(campaign));
                let user = user.clone();
                let admission =
                    async move { embedded.admit(&campaign.config, user.as_str()).await };
                let admitted = tokio::spawn(admission.in_current_span()).await?;
                Ok(admitted?)
            }
            Backend::Distributed(d) => d.admit(campaign, user.as_str()).await,
        }
    }

    pub async fn counts(&self, campaign: &Campaign) -> Result<Counts, IssuerError> {
        match self {
            Backend::Standalone(embedded) => Ok(embedded.counts(&campaign.config)),
            Backend::Distributed(d) => Ok(d.redis.counts(&campaign.keys).await?),
        }
    }

    /// Coupons persisted, given the counts just read.
    pub async fn issued(&self, campaign: &Campaign, counts: Counts) -> Result<u64, IssuerError> {
        match self {
            // The standalone issuer answers "admitted" only once the coupon is written.
            Backend::Standalone(_) => Ok(counts.admitted),
            Backend::Distributed(d) => Ok(d.coupons.issued_count(campaign.name()).await?),
        }
    }

    pub async fn lookup(
        &self,
        campaign: &Campaign,
        user: &str,
    ) -> Result<Vec<HeldAdmission>, IssuerError> {
        let (held, issued) = match self {
            Backend::Standalone(embedded) => {
                let issued = embedded.store().coupons_of(campaign.name(), user).await?;
                (embedded.held_by(campaign.name(), user), issued)
            }
            Backend::Distributed(d) => {
                let held = d.redis.held_by(&campaign.keys, user).await?;
                let issued = if held.is_empty() {
                    Vec::new()
                } else {
                    d.coupons.coupons_of(campaign.name(), user).await?
                };
                (held, issued)
            }
        };
        Ok(held
            .into_iter()
            .map(|sequence| HeldAdmission {
                sequence,
                coupon: issued.iter().find(|c| c.sequence == sequence).cloned(),
            })
            .collect())
    }

    /// Every holder, once the campaign is sold out and every holding is confirmed by the
    /// broker (`None` until then).
    pub async fn sold_out_snapshot(
        &self,
        campaign: &Campaign,
    ) -> Result<Option<SoldOutSnapshot>, IssuerError> {
        let counts = self.counts(campaign).await?;
        if counts.admitted < counts.limit {
            return Ok(None);
        }
        match self {
            Backend::Standalone(embedded) => Ok(Some(embedded.sold_out_snapshot(&campaign.config))),
            // A holding whose event the broker has not acked is answered by the script
            // (`admission_unconfirmed`) until it is: the board waits for an empty backlog.
            Backend::Distributed(d) if d.redis.pending_count(&campaign.keys).await? > 0 => Ok(None),
            Backend::Distributed(d) => Ok(Some(SoldOutSnapshot {
                limit: counts.limit,
                holders: d.redis.holders(&campaign.keys).await?,
            })),
        }
    }
}
