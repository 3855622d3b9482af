//! The issuer: the campaigns this process serves and the apply flow over them — time
//! window, sold-out board, then the admission backend.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use firstcome_contract::Window;
use tracing::Instrument;

use crate::admission::Outcome;
use crate::backend::{Backend, HeldAdmission};
use crate::campaign::{Campaign, CampaignState};
use crate::error::IssuerError;
use crate::metrics::ApplyOutcome;
use crate::traces::APPLY_TRACE;
use crate::user_id::UserId;
use crate::waiting_room::queue::RoomQueue;

/// What `GET /v1/campaigns/{campaign}` shows of the counts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    pub counts: crate::admission::Counts,
    /// Coupons persisted.
    pub issued: u64,
    pub state: CampaignState,
}

pub struct Issuer {
    campaigns: HashMap<String, Arc<Campaign>>,
    backend: Backend,
    /// The waiting rooms' queues, in the distributed backend's Redis.
    rooms: Option<RoomQueue>,
}

impl Issuer {
    pub fn new(campaigns: &[Arc<Campaign>], backend: Backend) -> Self {
        let campaigns = campaigns
            .iter()
            .map(|c| (c.config.name.clone(), Arc::clone(c)))
            .collect();
        let rooms = match &backend {
            Backend::Distributed(d) => Some(RoomQueue::new(d.redis.connection())),
            Backend::Standalone(_) => None,
        };
        Self {
            campaigns,
            backend,
            rooms,
        }
    }

    /// The queues of the waiting rooms; `None` for the standalone backend, which serves
    /// no campaign with a waiting room.
    pub fn rooms(&self) -> Option<&RoomQueue> {
        self.rooms.as_ref()
    }

    pub fn campaigns(&self) -> impl Iterator<Item = &Arc<Campaign>> {
        self.campaigns.values()
    }

    pub fn campaign(&self, name: &str) -> Result<&Arc<Campaign>, IssuerError> {
        self.campaigns
            .get(name)
            .ok_or_else(|| IssuerError::UnknownCampaign(name.to_string()))
    }

    /// Applies `user` to `campaign` (one of [`Self::campaign`]'s). Once sold out, answers
    /// from memory: that path allocates nothing and touches no shared state but the board
    /// and one counter.
    pub async fn apply(
        self: &Arc<Self>,
        campaign: &Arc<Campaign>,
        user: &UserId,
    ) -> Result<Outcome, IssuerError> {
        let result = match campaign.config.window(Utc::now()) {
            Window::Scheduled => Ok(Outcome::NotOpen {
                opens_at: campaign.config.opens_at,
            }),
            Window::Closed => Ok(Outcome::Closed {
                closes_at: campaign.config.closes_at,
            }),
            Window::Open => match campaign
                .sold_out
                .answer(user.as_str(), campaign.config.per_user_limit)
            {
                Some(outcome) => Ok(outcome),
                None => {
                    // For traces: without an exporter its target is off and it is not
                    // even built (`traces::APPLY_TRACE`); the warning below names the
                    // campaign.
                    let span = tracing::info_span!(
                        target: APPLY_TRACE,
                        "apply",
                        campaign = campaign.name(),
                        outcome = tracing::field::Empty,
                        sequence = tracing::field::Empty,
                    );
                    self.admit(campaign, user).instrument(span).await
                }
            },
        };
        campaign.counters.count(counted_as(&result));
        result
    }

    /// Asks the backend, inside the apply's span.
    async fn admit(
        self: &Arc<Self>,
        campaign: &Arc<Campaign>,
        user: &UserId,
    ) -> Result<Outcome, IssuerError> {
        let started = Instant::now();
        let result = self.backend.admit(campaign, user).await;
        let span = tracing::Span::current();
        span.record("outcome", counted_as(&result).as_str());
        match &result {
            Ok(Outcome::Admitted(admission)) => {
                span.record("sequence", admission.sequence);
            }
            Ok(Outcome::SoldOut) => self.load_sold_out_board(campaign),
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(campaign = campaign.name(), %error, "apply not decided");
            }
        }
        campaign
            .counters
            .admission_took(started.elapsed().as_secs_f64());
        result
    }

    /// Loads the holders of a sold-out campaign once, in the background.
    fn load_sold_out_board(self: &Arc<Self>, campaign: &Arc<Campaign>) {
        if !campaign.sold_out.begin_loading() {
            return;
        }
        let issuer = Arc::clone(self);
        let campaign = Arc::clone(campaign);
        let load = async move {
            let snapshot = issuer
                .backend
                .sold_out_snapshot(&campaign)
                .await
                .inspect_err(|error| tracing::warn!(%error, "cannot load the sold-out board"))
                .ok()
                .flatten();
            if let Some(snapshot) = &snapshot {
                tracing::info!(
                    limit = snapshot.limit,
                    holders = snapshot.holders.len(),
                    "sold out: answering from memory"
                );
            }
            campaign.sold_out.finish_loading(snapshot);
        };
        tokio::spawn(load.in_current_span());
    }

    /// Re-reads the counts of sold-out campaigns; room again (a raised limit, sequences
    /// freed by a restore) reopens them. A campaign being restored keeps answering from
    /// memory until Redis holds it again (its counts mean nothing meanwhile).
    pub async fn refresh_sold_out_boards(&self) {
        for campaign in self.campaigns.values() {
            if campaign.sold_out.sold_out_at().is_none() || !campaign.is_provisioned() {
                continue;
            }
            match self.backend.counts(campaign).await {
                Ok(counts) => campaign.sold_out.refresh(counts),
                Err(error) => {
                    tracing::debug!(%error, campaign = %campaign.name(), "cannot re-read the counts")
                }
            }
        }
    }

    pub async fn lookup(
        &self,
        name: &str,
        user: &UserId,
    ) -> Result<Vec<HeldAdmission>, IssuerError> {
        let campaign = self.campaign(name)?;
        (self.backend.lookup(campaign, user.as_str()).await)
            .inspect_err(|error| tracing::warn!(%error, campaign = name, "look-up failed"))
    }

    pub async fn summary(&self, name: &str) -> Result<Summary, IssuerError> {
        let campaign = self.campaign(name)?;
        let counted = async {
            let counts = self.backend.counts(campaign).await?;
            Ok((counts, self.backend.issued(campaign, counts).await?))
        };
        let (counts, issued) = counted.await.inspect_err(
            |error: &IssuerError| tracing::warn!(%error, campaign = name, "summary failed"),
        )?;
        Ok(Summary {
            counts,
            issued,
            state: campaign.state(counts, Utc::now()),
        })
    }
}
/// The label an apply's result is counted under.
fn counted_as(result: &Result<Outcome, IssuerError>) -> ApplyOutcome {
    match result {
        Ok(Outcome::Admitted(_)) => ApplyOutcome::admitted,
        Ok(Outcome::AlreadyApplied(_)) => ApplyOutcome::already_applied,
        Ok(Outcome::SoldOut) => ApplyOutcome::sold_out,
        Ok(Outcome::NotOpen { .. }) => ApplyOutcome::not_open,
        Ok(Outcome::Closed { .. }) => ApplyOutcome::closed,
        Err(IssuerError::Unconfirmed { .. }) => ApplyOutcome::unconfirmed,
        Err(IssuerError::OutcomeUnknown(_)) => ApplyOutcome::unknown,
        Err(_) => ApplyOutcome::unavailable,
    }
}
