//! The issuer: the campaigns it serves, the admission backend, and the apply flow that
//! ties them together (window check, sold-out board, atomic admission, hand-off).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use firstcome_contract::{CampaignConfig, CampaignKeys, Window, WinnerEvent};

use crate::admission::embedded::EmbeddedAdmission;
use crate::admission::redis::{RedisAdmission, RedisAdmissionError};
use crate::admission::sold_out::{SoldOutBoard, SoldOutSnapshot};
use crate::admission::{Admission, Counts, Verdict};
use crate::kafka::producer::WinnerPublisher;
use crate::metrics::{ApplyCounters, ApplyOutcome, Metrics};
use crate::store::IssuedCoupon;
use crate::store::postgres::CouponStore;
use crate::user_id::UserId;

/// A campaign as an issuer serves it.
pub struct Campaign {
    pub config: CampaignConfig,
    pub keys: CampaignKeys,
    pub sold_out: SoldOutBoard,
    counters: ApplyCounters,
    /// Set while this process restores the campaign into Redis (single flight).
    restoring: AtomicBool,
    /// Whether the backend holds the campaign's admission state; readiness needs it.
    provisioned: AtomicBool,
    /// Winners without a coupon at the last reconciliation.
    pub drift: AtomicU64,
}

/// The distributed backend: admission in Redis, winners to Kafka, coupons in PostgreSQL.
pub struct Distributed {
    pub redis: RedisAdmission,
    pub publisher: WinnerPublisher,
    pub coupons: CouponStore,
    pub kafka_brokers: String,
}

pub enum Backend {
    Standalone(EmbeddedAdmission),
    Distributed(Distributed),
}

/// The answer to an apply that reached a decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApplyResult {
    Admitted(Admission),
    AlreadyApplied(Vec<u64>),
    SoldOut,
    NotOpen { opens_at: Option<DateTime<Utc>> },
    Closed { closes_at: Option<DateTime<Utc>> },
}

#[derive(Debug, thiserror::Error)]
pub enum IssuerError {
    #[error("no campaign named {0:?} is served here")]
    UnknownCampaign(String),
    #[error("the admission backend is unavailable: {0}")]
    Unavailable(String),
    /// Redis has no admission state for the campaign (yet).
    #[error("{0}")]
    Unprovisioned(String),
    /// The user was admitted, but the broker did not confirm the winner event in time.
    /// The admission stands and its event is published again until confirmed.
    #[error("admission {} recorded but not yet confirmed by the broker: {reason}", .admission.sequence)]
    Unconfirmed {
        admission: Admission,
        reason: String,
    },
}

/// What a look-up shows of one admission.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeldAdmission {
    pub sequence: u64,
    /// Present once the coupon is persisted.
    pub coupon: Option<IssuedCoupon>,
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

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    pub counts: Counts,
    /// Coupons persisted.
    pub issued: u64,
    pub state: CampaignState,
}

pub struct Issuer {
    campaigns: HashMap<String, Arc<Campaign>>,
    backend: Backend,
    metrics: Arc<Metrics>,
}

impl Issuer {
    pub fn new(campaigns: Vec<CampaignConfig>, backend: Backend, metrics: Arc<Metrics>) -> Self {
        let standalone = matches!(backend, Backend::Standalone(_));
        let campaigns = campaigns
            .into_iter()
            .map(|config| {
                let campaign = Campaign {
                    keys: CampaignKeys::new(&config.name),
                    sold_out: SoldOutBoard::default(),
                    counters: metrics.apply_counters(&config.name),
                    restoring: AtomicBool::new(false),
                    provisioned: AtomicBool::new(standalone),
                    drift: AtomicU64::new(0),
                    config,
                };
                (campaign.config.name.clone(), Arc::new(campaign))
            })
            .collect();
        Self {
            campaigns,
            backend,
            metrics,
        }
    }

    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    pub fn campaigns(&self) -> impl Iterator<Item = &Arc<Campaign>> {
        self.campaigns.values()
    }

    /// Campaigns whose admission state the backend does not hold yet.
    pub fn unprovisioned(&self) -> Vec<String> {
        self.campaigns
            .values()
            .filter(|c| !c.provisioned.load(Ordering::Acquire))
            .map(|c| c.config.name.clone())
            .collect()
    }

    pub fn campaign(&self, name: &str) -> Result<&Arc<Campaign>, IssuerError> {
        self.campaigns
            .get(name)
            .ok_or_else(|| IssuerError::UnknownCampaign(name.to_string()))
    }

    /// Applies `user` to campaign `name`. Once sold out, answers from memory: that path
    /// allocates nothing and touches no shared state but the board and one counter.
    pub async fn apply(
        self: &Arc<Self>,
        name: &str,
        user: &UserId,
    ) -> Result<ApplyResult, IssuerError> {
        let campaign = self.campaign(name)?;
        let result = match campaign.config.window(Utc::now()) {
            Window::Scheduled => Ok(ApplyResult::NotOpen {
                opens_at: campaign.config.opens_at,
            }),
            Window::Closed => Ok(ApplyResult::Closed {
                closes_at: campaign.config.closes_at,
            }),
            Window::Open => match campaign
                .sold_out
                .answer(user.as_str(), campaign.config.per_user_limit)
            {
                Some(verdict) => Ok(verdict.into()),
                None => self.admit(campaign, user.clone()).await,
            },
        };
        campaign.counters.count(match &result {
            Ok(ApplyResult::Admitted(_)) => ApplyOutcome::admitted,
            Ok(ApplyResult::AlreadyApplied(_)) => ApplyOutcome::already_applied,
            Ok(ApplyResult::SoldOut) => ApplyOutcome::sold_out,
            Ok(ApplyResult::NotOpen { .. }) => ApplyOutcome::not_open,
            Ok(ApplyResult::Closed { .. }) => ApplyOutcome::closed,
            Err(IssuerError::Unconfirmed { .. }) => ApplyOutcome::unconfirmed,
            Err(_) => ApplyOutcome::unavailable,
        });
        result
    }

    async fn admit(
        self: &Arc<Self>,
        campaign: &Arc<Campaign>,
        user: UserId,
    ) -> Result<ApplyResult, IssuerError> {
        let started = Instant::now();
        // Runs to completion even if the client goes away: once admitted, the winner must
        // reach its durable record whether or not anyone waits for the answer.
        let issuer = Arc::clone(self);
        let task_campaign = Arc::clone(campaign);
        let verdict = tokio::spawn(async move {
            issuer
                .backend
                .admit(&issuer.metrics, &task_campaign, &user)
                .await
        })
        .await
        .map_err(|e| IssuerError::Unavailable(format!("admission task failed: {e}")))?;
        let verdict = match verdict {
            Err(IssuerError::Unprovisioned(reason)) => {
                campaign.provisioned.store(false, Ordering::Release);
                self.restore_in_background(campaign);
                return Err(IssuerError::Unavailable(reason));
            }
            other => other?,
        };
        self.metrics
            .admission_seconds
            .observe(started.elapsed().as_secs_f64());
        if verdict == Verdict::SoldOut {
            self.load_sold_out_board(campaign);
        }
        Ok(verdict.into())
    }

    /// Provisions the campaign in Redis from PostgreSQL if Redis does not have it (a new
    /// campaign, or Redis lost its data), in the background, once at a time. Until it is
    /// done the admission script answers "unprovisioned" and applies get 503.
    pub fn restore_in_background(self: &Arc<Self>, campaign: &Arc<Campaign>) {
        let Backend::Distributed(_) = &self.backend else {
            return;
        };
        if campaign.restoring.swap(true, Ordering::AcqRel) {
            return;
        }
        let issuer = Arc::clone(self);
        let campaign = Arc::clone(campaign);
        tokio::spawn(async move {
            let Backend::Distributed(distributed) = &issuer.backend else {
                return;
            };
            loop {
                match distributed.provision(&campaign).await {
                    Ok(()) => {
                        campaign.provisioned.store(true, Ordering::Release);
                        break;
                    }
                    Err(error) => {
                        tracing::warn!(%error, campaign = %campaign.config.name, "provisioning from PostgreSQL failed; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
            campaign.restoring.store(false, Ordering::Release);
        });
    }

    /// Loads the holders of a sold-out campaign once, in the background.
    fn load_sold_out_board(self: &Arc<Self>, campaign: &Arc<Campaign>) {
        if !campaign.sold_out.begin_loading() {
            return;
        }
        let issuer = Arc::clone(self);
        let campaign = Arc::clone(campaign);
        tokio::spawn(async move {
            let snapshot = match issuer.backend.sold_out_snapshot(&campaign).await {
                Ok(snapshot) => snapshot,
                Err(error) => {
                    tracing::warn!(%error, campaign = %campaign.config.name, "cannot load the sold-out board");
                    None
                }
            };
            if let Some(snapshot) = &snapshot {
                tracing::info!(campaign = %campaign.config.name, limit = snapshot.limit, holders = snapshot.holders.len(), "sold out: answering from memory");
            }
            campaign.sold_out.finish_loading(snapshot);
        });
    }

    /// Re-reads the limit of sold-out campaigns; a raised limit reopens them.
    pub async fn refresh_sold_out_boards(&self) {
        for campaign in self.campaigns.values() {
            if campaign.sold_out.sold_out_at().is_none() {
                continue;
            }
            match self.backend.counts(campaign).await {
                Ok(counts) => campaign.sold_out.limit_changed(counts.limit),
                Err(error) => {
                    tracing::debug!(%error, campaign = %campaign.config.name, "cannot re-read the limit")
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
        self.backend.lookup(campaign, user.as_str()).await
    }

    pub async fn summary(&self, name: &str) -> Result<Summary, IssuerError> {
        let campaign = self.campaign(name)?;
        let counts = self.backend.counts(campaign).await?;
        let issued = self.backend.issued(campaign, counts).await?;
        let state = match campaign.config.window(Utc::now()) {
            Window::Scheduled => CampaignState::Scheduled,
            Window::Closed => CampaignState::Closed,
            Window::Open if counts.admitted >= counts.limit => CampaignState::SoldOut,
            Window::Open => CampaignState::Open,
        };
        Ok(Summary {
            counts,
            issued,
            state,
        })
    }
}

impl From<Verdict> for ApplyResult {
    fn from(verdict: Verdict) -> Self {
        match verdict {
            Verdict::Admitted(admission) => Self::Admitted(admission),
            Verdict::AlreadyApplied(held) => Self::AlreadyApplied(held),
            Verdict::SoldOut => Self::SoldOut,
        }
    }
}

fn unavailable(error: impl std::fmt::Display) -> IssuerError {
    IssuerError::Unavailable(error.to_string())
}

impl Backend {
    async fn admit(
        &self,
        metrics: &Metrics,
        campaign: &Campaign,
        user: &UserId,
    ) -> Result<Verdict, IssuerError> {
        match self {
            Backend::Standalone(embedded) => embedded
                .admit(&campaign.config, user.as_str())
                .await
                .map_err(unavailable),
            Backend::Distributed(d) => {
                let verdict = d
                    .redis
                    .admit(&campaign.config, &campaign.keys, user.as_str())
                    .await
                    .map_err(|e| match e {
                        RedisAdmissionError::Unprovisioned(_) => {
                            IssuerError::Unprovisioned(e.to_string())
                        }
                        other => unavailable(other),
                    })?;
                if let Verdict::Admitted(admission) = &verdict {
                    d.hand_off(metrics, campaign, user.as_str(), admission)
                        .await?;
                }
                Ok(verdict)
            }
        }
    }

    async fn counts(&self, campaign: &Campaign) -> Result<Counts, IssuerError> {
        match self {
            Backend::Standalone(embedded) => Ok(embedded.counts(&campaign.config)),
            Backend::Distributed(d) => d.redis.counts(&campaign.keys).await.map_err(unavailable),
        }
    }

    async fn issued(&self, campaign: &Campaign, counts: Counts) -> Result<u64, IssuerError> {
        match self {
            // The standalone issuer answers "admitted" only once the coupon is written.
            Backend::Standalone(_) => Ok(counts.admitted),
            Backend::Distributed(d) => d
                .coupons
                .issued_count(&campaign.config.name)
                .await
                .map_err(unavailable),
        }
    }

    async fn lookup(
        &self,
        campaign: &Campaign,
        user: &str,
    ) -> Result<Vec<HeldAdmission>, IssuerError> {
        let (held, issued) = match self {
            Backend::Standalone(embedded) => {
                let issued = embedded
                    .store()
                    .coupons_of(&campaign.config.name, user)
                    .await
                    .map_err(unavailable)?;
                (embedded.held_by(&campaign.config.name, user), issued)
            }
            Backend::Distributed(d) => {
                let held = d
                    .redis
                    .held_by(&campaign.keys, user)
                    .await
                    .map_err(unavailable)?;
                let issued = if held.is_empty() {
                    Vec::new()
                } else {
                    d.coupons
                        .coupons_of(&campaign.config.name, user)
                        .await
                        .map_err(unavailable)?
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

    async fn sold_out_snapshot(
        &self,
        campaign: &Campaign,
    ) -> Result<Option<SoldOutSnapshot>, IssuerError> {
        let counts = self.counts(campaign).await?;
        if counts.admitted < counts.limit {
            return Ok(None);
        }
        match self {
            Backend::Standalone(embedded) => Ok(Some(embedded.sold_out_snapshot(&campaign.config))),
            Backend::Distributed(d) => {
                let holders = d.redis.holders(&campaign.keys).await.map_err(unavailable)?;
                Ok(Some(SoldOutSnapshot {
                    limit: counts.limit,
                    holders,
                }))
            }
        }
    }
}

impl Distributed {
    /// Makes sure Redis holds the campaign's admission state. When it does not, waits
    /// until no hand-off can still be in flight and the consumer has persisted everything
    /// on the topic, then rebuilds the counter and the holders from PostgreSQL.
    pub async fn provision(&self, campaign: &Campaign) -> Result<(), IssuerError> {
        if self
            .redis
            .is_provisioned(&campaign.keys)
            .await
            .map_err(unavailable)?
        {
            return Ok(());
        }
        let name = &campaign.config.name;
        tracing::warn!(campaign = %name, "no admission state in Redis: restoring from PostgreSQL");
        tokio::time::sleep(self.publisher.ack_wait()).await;
        let topic = &campaign.config.topic;
        let dead_letters = campaign.config.dead_letter_topic();
        let lanes = [
            (crate::kafka::consumer::group_id(name), topic.clone()),
            (
                crate::kafka::consumer::dead_letter_group_id(name),
                dead_letters,
            ),
        ];
        loop {
            let mut lag = 0;
            for (group, topic) in &lanes {
                lag += crate::kafka::lag::group_lag(&self.kafka_brokers, group, topic)
                    .await
                    .map_err(unavailable)?;
            }
            if lag == 0 {
                break;
            }
            tracing::info!(campaign = %name, lag, "waiting for the consumer to persist the topic before restoring");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let holders = self.coupons.holders_of(name).await.map_err(unavailable)?;
        let restored = self
            .redis
            .restore(&campaign.config, &campaign.keys, &holders)
            .await
            .map_err(unavailable)?;
        if restored {
            let admitted: usize = holders.iter().map(|(_, held)| held.len()).sum();
            tracing::info!(campaign = %name, admitted, holders = holders.len(), "campaign restored into Redis");
        }
        Ok(())
    }

    /// Publishes the winner's event and waits for the broker's ack (bounded by the
    /// publisher). On success the admission is no longer pending; on failure or time-out
    /// it stays pending in Redis and the re-publisher delivers it later.
    async fn hand_off(
        &self,
        metrics: &Metrics,
        campaign: &Campaign,
        user: &str,
        admission: &Admission,
    ) -> Result<(), IssuerError> {
        let event = winner_event(&campaign.config.name, user, admission);
        let published = self.publisher.publish(&campaign.config.topic, &event).await;
        match published {
            Ok(()) => {
                metrics.published(&campaign.config.name, true);
                if let Err(error) = self
                    .redis
                    .confirm_published(&campaign.keys, admission.sequence)
                    .await
                {
                    // Only costs a duplicate publish later, which persistence ignores.
                    tracing::warn!(%error, "cannot clear the pending mark of a published winner");
                }
                Ok(())
            }
            Err(error) => {
                metrics.published(&campaign.config.name, false);
                tracing::error!(%error, campaign = %campaign.config.name, sequence = admission.sequence, "winner event not confirmed; it stays pending");
                Err(IssuerError::Unconfirmed {
                    admission: admission.clone(),
                    reason: error.to_string(),
                })
            }
        }
    }

    /// Publishes winners whose first publish is older than `grace` and still unconfirmed.
    pub async fn republish_pending(
        &self,
        metrics: &Metrics,
        campaign: &Campaign,
        grace: Duration,
    ) -> Result<usize, IssuerError> {
        let pending = self
            .redis
            .pending(&campaign.keys)
            .await
            .map_err(unavailable)?;
        let cutoff = Utc::now() - grace;
        let mut republished = 0;
        for winner in pending
            .into_iter()
            .filter(|w| w.admission.admitted_at < cutoff)
        {
            let event = winner_event(&campaign.config.name, &winner.user_id, &winner.admission);
            self.publisher
                .publish(&campaign.config.topic, &event)
                .await
                .map_err(unavailable)?;
            self.redis
                .confirm_published(&campaign.keys, winner.admission.sequence)
                .await
                .map_err(unavailable)?;
            metrics.republished(&campaign.config.name);
            republished += 1;
        }
        Ok(republished)
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
