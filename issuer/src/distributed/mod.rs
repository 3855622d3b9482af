//! The distributed backend: admission in Redis, winners handed off to Kafka, coupons in
//! PostgreSQL.
//!
//! - this module: admissions, decided in batches per campaign;
//! - [`hand_off`]: a batch's winners handed off to the broker together;
//! - [`provision`]: a campaign Redis does not hold is restored from PostgreSQL;
//! - [`republish`]: admissions whose hand-off was not confirmed are published again;
//! - [`audit`]: Redis's winners are compared with PostgreSQL's coupons (drift);
//! - [`fence`]: a Redis that lost admissions stops admitting until it is restored.

pub mod audit;
pub mod fence;
pub mod hand_off;
pub mod provision;
pub mod republish;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use firstcome_contract::WinnerEvent;
use tracing::Instrument;

use crate::admission::batch::{BatchQueue, Job, Reply, WorkerGone};
use crate::admission::redis::{Apply, RedisAdmission, RedisAdmissionError, new_attempt};
use crate::admission::{Admission, Outcome};
use crate::campaign::Campaign;
use crate::cli::ReplicaWait;
use crate::error::IssuerError;
use crate::kafka::producer::WinnerPublisher;
use crate::metrics::Metrics;
use crate::store::postgres::CouponStore;
use crate::traces::APPLY_TRACE;

use self::hand_off::Winner;

type Answer = Result<Outcome, IssuerError>;
/// One campaign's applies, decided a batch at a time.
type AdmissionQueue = BatchQueue<Applying, Answer>;

/// An apply waiting for its batch, with the span it is traced in: the admission worker
/// traces the apply's script call and hand-off under it.
pub struct Applying {
    apply: Apply,
    span: tracing::Span,
}

pub struct Distributed {
    pub redis: RedisAdmission,
    pub publisher: WinnerPublisher,
    pub coupons: CouponStore,
    pub kafka_brokers: String,
    pub metrics: Arc<Metrics>,
    /// Replicas an admission waits for before its hand-off (`None`: no wait).
    pub replica_wait: Option<ReplicaWait>,
    /// One admission worker per campaign (by name), started on its first apply.
    pub admissions: Mutex<HashMap<String, AdmissionQueue>>,
}

impl Distributed {
    /// Decides the apply with the others of its campaign waiting at the same time (one
    /// admission script call per batch); a winner is answered once the broker acked its
    /// event and the topic read back names them the holder of their sequence. A campaign
    /// Redis does not hold is restored in the background meanwhile, and the apply gets
    /// [`IssuerError::Unprovisioned`]. The decision and the hand-off run to the end even
    /// if nobody waits for the answer any more.
    pub async fn admit(
        self: &Arc<Self>,
        campaign: &Arc<Campaign>,
        user: &str,
    ) -> Result<Outcome, IssuerError> {
        if !campaign.claims.caught_up() {
            // Admitting before the topic was read could not tell a twice-given sequence.
            return Err(IssuerError::ClaimsNotRead(campaign.name().to_string()));
        }
        let apply = Apply {
            user: user.to_string(),
            per_user_limit: campaign.config.per_user_limit,
            attempt: new_attempt(),
        };
        let span = tracing::Span::current();
        let answer = (self.admission_queue(campaign))
            .submit(Applying { apply, span })
            .await;
        answer.map_err(RedisAdmissionError::from)?
    }

    /// The admission worker of `campaign`. It holds this backend weakly: it stops once
    /// the backend (and with it every queue handle) is dropped.
    fn admission_queue(self: &Arc<Self>, campaign: &Arc<Campaign>) -> AdmissionQueue {
        BatchQueue::keyed(&self.admissions, campaign.name(), || {
            let (backend, campaign) = (Arc::downgrade(self), Arc::clone(campaign));
            BatchQueue::spawn_replying(move |jobs| {
                decide_batch(backend.clone(), Arc::clone(&campaign), jobs)
            })
        })
    }

    /// Runs the admission script once over the batch and answers each apply that needs no
    /// hand-off; the winners are handed off together, in a task of their own, while the
    /// worker decides the next batch.
    async fn decide(self: Arc<Self>, campaign: Arc<Campaign>, jobs: Vec<Job<Applying, Answer>>) {
        let (applying, replies): (Vec<_>, Vec<_>) = jobs.into_iter().unzip();
        let (applies, spans): (Vec<_>, Vec<_>) =
            (applying.into_iter()).map(|a| (a.apply, a.span)).unzip();
        let scripts: Vec<_> = (spans.iter())
            .map(
                |apply| tracing::info_span!(target: APPLY_TRACE, parent: apply, "admission_script"),
            )
            .collect();
        let outcomes = (self.redis)
            .run_admission_batch(campaign.name(), &campaign.keys, &applies)
            .await;
        drop(scripts);
        let mut winners = Vec::new();
        let decided = applies.into_iter().zip(spans).zip(replies).zip(outcomes);
        for (((apply, span), reply), outcome) in decided {
            match outcome {
                Ok(Outcome::Admitted(admission)) => {
                    winners.push(Winner::new(apply.user, admission, &span, reply));
                }
                Ok(Outcome::AlreadyApplied(held)) => {
                    self.answer_holding(&campaign, apply.user, held, span, reply);
                }
                Ok(outcome) => reply.send(Ok(outcome)),
                Err(error) => reply.send(Err(self.refused(&campaign, error))),
            }
        }
        if !winners.is_empty() {
            let span = tracing::info_span!("hand_off_batch", campaign = campaign.name());
            let hand_off = async move {
                self.wait_for_replicas().await;
                self.hand_off_winners(&campaign, winners).await;
            };
            tokio::spawn(hand_off.instrument(span));
        }
    }

    /// What an apply the script could not decide is answered.
    fn refused(
        self: &Arc<Self>,
        campaign: &Arc<Campaign>,
        error: RedisAdmissionError,
    ) -> IssuerError {
        match error {
            RedisAdmissionError::Unprovisioned(name) => {
                campaign.set_provisioned(false);
                self.restore_in_background(campaign);
                IssuerError::Unprovisioned(name)
            }
            error if error.outcome_unknown() => IssuerError::OutcomeUnknown(error),
            error => error.into(),
        }
    }

    /// Answers `already_applied` with the sequences `user` holds, at once when the topic
    /// names them the holder of each; otherwise after [`Self::confirm_holding`], in a task
    /// of its own.
    fn answer_holding(
        self: &Arc<Self>,
        campaign: &Arc<Campaign>,
        user: String,
        held: Vec<u64>,
        span: tracing::Span,
        reply: Reply<Answer>,
    ) {
        let unread: Vec<u64> = (held.iter().copied())
            .filter(|sequence| !campaign.claims.names_holder(*sequence, &user))
            .collect();
        if unread.is_empty() {
            return reply.send(Ok(Outcome::AlreadyApplied(held)));
        }
        let (backend, campaign) = (Arc::clone(self), Arc::clone(campaign));
        let confirming = async move {
            let confirmed = backend.confirm_holding(&campaign, &user, &unread).await;
            reply.send(confirmed.map(|()| Outcome::AlreadyApplied(held)));
        };
        tokio::spawn(confirming.instrument(span));
    }

    /// Before a user is told which sequences they hold, each one the topic does not name
    /// them the holder of yet (`unread`) and whose event the broker never acked (its
    /// hand-off failed, or its answer was lost) is handed off now: until then a Redis
    /// that loses writes could take it back (chaos seed 4000). If the broker does not
    /// ack, the apply is answered as the first one was, `admission_unconfirmed`.
    async fn confirm_holding(
        self: &Arc<Self>,
        campaign: &Arc<Campaign>,
        user: &str,
        unread: &[u64],
    ) -> Result<(), IssuerError> {
        let pending = self.redis.pending_of(&campaign.keys, unread).await?;
        if pending.is_empty() {
            return Ok(());
        }
        let mut answers = Vec::with_capacity(pending.len());
        let winners = (pending.into_iter())
            .map(|winner| {
                let (reply, answer) = Reply::channel();
                answers.push(answer);
                let span = tracing::Span::current();
                Winner::new(user.to_string(), winner.admission, &span, reply)
            })
            .collect();
        self.hand_off_winners(campaign, winners).await;
        for answer in answers {
            answer
                .await
                .map_err(|_| RedisAdmissionError::from(WorkerGone))??;
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

/// Runs the batch with the backend, if it is still there (else every apply is answered
/// that the worker is gone).
async fn decide_batch(
    backend: Weak<Distributed>,
    campaign: Arc<Campaign>,
    jobs: Vec<Job<Applying, Answer>>,
) {
    match backend.upgrade() {
        Some(backend) => backend.decide(campaign, jobs).await,
        None => {
            for (_, reply) in jobs {
                reply.send(Err(RedisAdmissionError::from(WorkerGone).into()));
            }
        }
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
