//! Hands a batch's winners off to the broker together: their events go in one turn, and
//! one task follows them, woken when acks come and when the tail reads the events back
//! (once per burst, not once per winner). Each winner is answered once, as soon as the
//! broker acked their own event and the topic read back names them the holder of their
//! sequence, or their wait ran out: the apply's own task wakes once, for its answer.

use std::sync::Arc;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::{Answer, Distributed, winner_event};
use crate::admission::batch::Reply;
use crate::admission::{Admission, Outcome};
use crate::campaign::Campaign;
use crate::error::{HandOffError, IssuerError};
use crate::kafka::claims::ClaimsBehind;
use crate::kafka::turns::{self, BatchAcks};
use crate::traces::APPLY_TRACE;

/// A winner to hand off, and where their answer goes.
pub struct Winner {
    user: String,
    admission: Admission,
    reply: Reply<Answer>,
    /// The hand-off's span, under the apply's; it ends with the answer.
    _span: tracing::Span,
}

impl Winner {
    pub fn new(
        user: String,
        admission: Admission,
        apply: &tracing::Span,
        reply: Reply<Answer>,
    ) -> Self {
        let span = tracing::info_span!(target: APPLY_TRACE, parent: apply, "hand_off", sequence = admission.sequence);
        Self {
            user,
            admission,
            reply,
            _span: span,
        }
    }
}

/// Where one winner's hand-off stands.
enum Stage {
    /// Sent; waiting for the broker's ack, until the batch's deadline.
    Publishing,
    /// Acked at (partition, offset); waiting for the tail to read it, until `until`.
    ReadingBack { at: (i32, i64), until: Instant },
}

/// The winners of one batch not answered yet, by their index in the batch.
struct HandOff<'a> {
    backend: &'a Arc<Distributed>,
    campaign: &'a Arc<Campaign>,
    wake: Arc<Notify>,
    /// When an ack not come yet is given up on (`ack_wait` after the send).
    acked_by: Instant,
    open: Vec<Option<(Winner, Stage)>>,
    left: usize,
}

impl Distributed {
    /// Publishes the winners' events, waits for each one's ack (bounded by the
    /// publisher's `ack_wait`), then until the tail read it back (at most `ack_wait`
    /// more): a winner is answered "admitted" only if the topic names them the holder of
    /// their sequence. Without an ack the admission stays pending in Redis and the
    /// re-publisher delivers it later.
    pub(super) async fn hand_off_winners(
        self: &Arc<Self>,
        campaign: &Arc<Campaign>,
        winners: Vec<Winner>,
    ) {
        let wake = Arc::new(Notify::new());
        let acks = BatchAcks::new(Arc::clone(&wake));
        let events: Vec<_> = (winners.iter())
            .map(|w| winner_event(campaign.name(), &w.user, &w.admission))
            .collect();
        let acked_by = self.publisher.publish_all(&campaign.topic, &events, &acks);
        let mut hand_off = HandOff {
            backend: self,
            campaign,
            wake,
            acked_by,
            left: winners.len(),
            open: (winners.into_iter())
                .map(|w| Some((w, Stage::Publishing)))
                .collect(),
        };
        loop {
            for (index, ack) in acks.take() {
                hand_off.acked(index, ack).await;
            }
            hand_off.read_back().await;
            hand_off.expire(Instant::now());
            if hand_off.left == 0 {
                return;
            }
            let next = hand_off.next_deadline();
            let _ = tokio::time::timeout_at(next, hand_off.wake.notified()).await;
        }
    }
}

impl HandOff<'_> {
    /// The broker answered the event at `index`: the pending mark goes in the campaign's
    /// next batch of clears (the read-back does not wait for it), and the read-back starts.
    async fn acked(&mut self, index: usize, ack: turns::Answer) {
        let Some((winner, stage)) = self.open.get_mut(index).and_then(Option::as_mut) else {
            // Already answered: its deadline passed before the ack came.
            return;
        };
        self.campaign.counters.published(ack.is_ok());
        let delivery = match ack {
            Ok(delivery) => delivery,
            Err(error) => return self.answer(index, Err(HandOffError::from(error).into())),
        };
        let sequence = winner.admission.sequence;
        (self.backend.redis).clear_pending(&self.campaign.keys, sequence);
        let at = (delivery.partition, delivery.offset);
        let until = Instant::now() + self.backend.publisher.ack_wait();
        *stage = Stage::ReadingBack { at, until };
        if let Some(holder) = self.campaign.claims.read_back(at, sequence, &self.wake) {
            self.settle(index, holder).await;
        }
    }

    /// Settles every winner whose event the tail has read by now.
    async fn read_back(&mut self) {
        for index in 0..self.open.len() {
            let Some((winner, Stage::ReadingBack { at, .. })) = &self.open[index] else {
                continue;
            };
            let sequence = winner.admission.sequence;
            if let Some(holder) = self.campaign.claims.holder_once_read(*at, sequence) {
                self.settle(index, holder).await;
            }
        }
    }

    /// The topic was read past the winner's event: "admitted" if it names them the holder.
    async fn settle(&mut self, index: usize, holder: Option<String>) {
        let Some((winner, _)) = &self.open[index] else {
            return;
        };
        if holder.as_deref() == Some(winner.user.as_str()) {
            return self.answer(index, Ok(()));
        }
        let admission = winner.admission.clone();
        let refused = (self.backend)
            .refuse_twice_given(self.campaign, &admission, holder)
            .await;
        self.answer(index, refused.map_err(Failure::Refused));
    }

    /// Answers the winners whose wait ran out by `now`.
    fn expire(&mut self, now: Instant) {
        let ack_wait = self.backend.publisher.ack_wait();
        for index in 0..self.open.len() {
            let late = match &self.open[index] {
                Some((_, Stage::Publishing)) if self.acked_by <= now => {
                    self.campaign.counters.published(false);
                    HandOffError::from(turns::timed_out())
                }
                Some((_, Stage::ReadingBack { at, until })) if *until <= now => {
                    HandOffError::from(ClaimsBehind {
                        partition: at.0,
                        offset: at.1,
                        waited: ack_wait,
                    })
                }
                _ => continue,
            };
            self.answer(index, Err(late.into()));
        }
    }

    /// The earliest wait of the winners not answered yet.
    fn next_deadline(&self) -> Instant {
        (self.open.iter().flatten())
            .map(|(_, stage)| match stage {
                Stage::Publishing => self.acked_by,
                Stage::ReadingBack { until, .. } => *until,
            })
            .min()
            .unwrap_or(self.acked_by)
    }

    /// Answers the winner at `index` (once): a failed hand-off leaves the admission
    /// `admission_unconfirmed`.
    fn answer(&mut self, index: usize, handed_off: Result<(), Failure>) {
        let Some((winner, _)) = self.open[index].take() else {
            return;
        };
        self.left -= 1;
        let answer = match handed_off {
            Ok(()) => Ok(Outcome::Admitted(winner.admission)),
            Err(Failure::Unconfirmed(source)) => Err(IssuerError::Unconfirmed {
                admission: winner.admission,
                source,
            }),
            Err(Failure::Refused(error)) => Err(error),
        };
        winner.reply.send(answer);
    }
}

/// Why a winner is not answered "admitted".
enum Failure {
    /// The broker did not ack, or the event was not read back in time.
    Unconfirmed(HandOffError),
    /// The topic names another holder (the campaign is fenced), or fencing failed.
    Refused(IssuerError),
}

impl From<HandOffError> for Failure {
    fn from(error: HandOffError) -> Self {
        Self::Unconfirmed(error)
    }
}

impl From<IssuerError> for Failure {
    fn from(error: IssuerError) -> Self {
        Self::Refused(error)
    }
}
