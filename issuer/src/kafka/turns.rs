//! Hands events to librdkafka in turns: whatever is waiting goes at once (LMAX-style,
//! never waiting to fill a turn), and the next turn waits until this one is acked.
//!
//! Why: librdkafka's idempotent producer (2.12) creates a new ProduceRequest for a
//! partition only while fewer than 5 of its *messages* are in flight (the limit is meant
//! for requests: `rktp_msgs_inflight` against `RD_KAFKA_IDEMP_MAX_INFLIGHT`), and while a
//! batch past its `linger.ms` waits on that limit the broker thread's next wake-up is
//! "now": it polls its socket with a zero timeout, again and again, until the acks come
//! back. Under load that spin was about half of the issuer's CPU. Handed over in turns, a
//! partition never holds a ready batch while its previous one is in flight, so the broker
//! thread sleeps in `poll(2)` until the broker answers; each turn is still one request per
//! partition, batched by `linger.ms`. A turn that is not acked within [`TURN_WAIT`] (a
//! partition without a leader, a broker restarting) stops holding back the next one, so
//! one slow partition never stalls the others for long; each event's own wait stays
//! bounded by its deadline (one timer per event, from queueing to ack).
//!
//! Acks are answered from librdkafka's delivery callback ([`AckContext`]), straight to
//! the waiting caller, and counted off the turn: no future per event for the turns'
//! worker to poll, no wake-up of the worker per ack, only one when its turn is all acked.
//! Events sent together ([`Turns::send_all`]) are answered into one [`BatchAcks`]: their
//! waiting task wakes once per burst of acks, not once per event.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::ClientContext;
use rdkafka::error::KafkaError;
use rdkafka::message::{DeliveryResult, Message};
use rdkafka::producer::future_producer::Delivery;
use rdkafka::producer::{BaseRecord, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::time::Instant;

/// Most events handed over in one turn: bounds one turn's requests.
const MAX_TURN: usize = 1024;
/// Longest one turn holds back the next while waiting for its acks: well above an ack on
/// a healthy cluster, well below the delivery timeout.
pub const TURN_WAIT: Duration = Duration::from_millis(50);

/// The producer the turns hand events to: its delivery callback answers the callers.
pub type AckingProducer = ThreadedProducer<AckContext>;

/// One event to send.
pub struct Outgoing {
    /// Shared by every event of the campaign, not copied per event.
    pub topic: Arc<str>,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
}

pub type Answer = Result<Delivery, KafkaError>;

struct Job {
    event: Outgoing,
    /// When the caller stops waiting for the ack (it gets a timeout then).
    deadline: Instant,
    answer_to: AnswerTo,
}

/// Where an event's ack goes.
enum AnswerTo {
    /// One caller waiting for one event.
    Caller(oneshot::Sender<Answer>),
    /// The event at this index of a batch sent together.
    Batch(Arc<BatchAcks>, usize),
}

impl AnswerTo {
    /// Whether nobody waits for the answer any more.
    fn is_closed(&self) -> bool {
        match self {
            Self::Caller(to) => to.is_closed(),
            // The batch's task waits until the deadline, whatever comes.
            Self::Batch(..) => false,
        }
    }

    fn send(self, answer: Answer) {
        match self {
            // A caller that went away no longer needs its answer.
            Self::Caller(to) => drop(to.send(answer)),
            Self::Batch(acks, index) => acks.answer(index, answer),
        }
    }
}

/// The acks of a batch of events sent together, collected for the one task that waits
/// for them: each ack is kept with its event's index and wakes that task (wake-ups that
/// come before it waits again are one).
pub struct BatchAcks {
    answered: Mutex<Vec<(usize, Answer)>>,
    wake: Arc<Notify>,
}

impl BatchAcks {
    /// Acks that wake `wake` as they come.
    pub fn new(wake: Arc<Notify>) -> Arc<Self> {
        Arc::new(Self {
            answered: Mutex::default(),
            wake,
        })
    }

    fn answer(&self, index: usize, answer: Answer) {
        self.answered().push((index, answer));
        self.wake.notify_one();
    }

    /// The acks (by index of the event in its batch) that came since the last call.
    pub fn take(&self) -> Vec<(usize, Answer)> {
        std::mem::take(&mut *self.answered())
    }

    fn answered(&self) -> std::sync::MutexGuard<'_, Vec<(usize, Answer)>> {
        self.answered.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The sending side of the turns; cloned by every publisher.
#[derive(Clone)]
pub struct Turns {
    jobs: mpsc::UnboundedSender<Job>,
}

impl Turns {
    /// Starts the worker that hands events to `producer`. It stops once every handle is
    /// dropped.
    pub fn spawn(producer: AckingProducer) -> Self {
        let (jobs, waiting) = mpsc::unbounded_channel();
        tokio::spawn(take_turns(producer, waiting));
        Self { jobs }
    }

    /// Queues `event` for the next turn and waits for its ack (or its failure), at most
    /// until `deadline`.
    pub async fn send(&self, event: Outgoing, deadline: Instant) -> Answer {
        let (answer_to, answer) = oneshot::channel();
        let job = Job {
            event,
            deadline,
            answer_to: AnswerTo::Caller(answer_to),
        };
        self.jobs.send(job).map_err(|_| KafkaError::Canceled)?;
        match tokio::time::timeout_at(deadline, answer).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_dropped)) => Err(KafkaError::Canceled),
            Err(_) => Err(timed_out()),
        }
    }

    /// Queues `events` for the next turn, each one's ack (or failure) going to `acks`
    /// under its index; an ack that has not come by `deadline` is the waiting task's to
    /// give up on (see [`timed_out`]).
    pub fn send_all(&self, events: Vec<Outgoing>, deadline: Instant, acks: &Arc<BatchAcks>) {
        for (index, event) in events.into_iter().enumerate() {
            let job = Job {
                event,
                deadline,
                answer_to: AnswerTo::Batch(Arc::clone(acks), index),
            };
            if let Err(unsent) = self.jobs.send(job) {
                unsent.0.answer_to.send(Err(KafkaError::Canceled));
            }
        }
    }
}

async fn take_turns(producer: AckingProducer, mut waiting: mpsc::UnboundedReceiver<Job>) {
    let mut turn = Vec::with_capacity(MAX_TURN);
    while waiting.recv_many(&mut turn, MAX_TURN).await > 0 {
        let now = Instant::now();
        let acks = Arc::new(TurnAcks::default());
        for job in turn.drain(..) {
            // A caller that gave up is not sent for: its admission stays pending and the
            // re-publisher sends it.
            if job.answer_to.is_closed() {
                continue;
            }
            if job.deadline <= now {
                job.answer_to.send(Err(timed_out()));
                continue;
            }
            enqueue(&producer, job, &acks);
        }
        // A turn whose acks do not all come within the wait stops holding back the next;
        // its acks still reach their callers, from the callback.
        let _ = tokio::time::timeout(TURN_WAIT, acks.all_acked()).await;
    }
}

/// Hands the job's event to librdkafka, its caller's answer going with it. A full queue
/// is not waited on: the event is answered unconfirmed at once (turns keep the queue
/// short, so only an unreachable cluster fills it).
fn enqueue(producer: &AckingProducer, job: Job, acks: &Arc<TurnAcks>) {
    let Job {
        event, answer_to, ..
    } = job;
    acks.sent();
    let acked = Box::new(Acked {
        answer_to,
        turn: Arc::clone(acks),
    });
    let mut record: BaseRecord<'_, [u8], [u8], _> = BaseRecord::with_opaque_to(&event.topic, acked);
    if let Some(key) = &event.key {
        record = record.key(key);
    }
    if let Some(payload) = &event.payload {
        record = record.payload(payload);
    }
    if let Err((error, record)) = producer.send(record) {
        record.delivery_opaque.answer(Err(error));
    }
}

/// What a caller gets whose ack did not come before its deadline.
pub fn timed_out() -> KafkaError {
    KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut)
}

/// The acks one turn still waits for.
#[derive(Default)]
struct TurnAcks {
    unacked: AtomicUsize,
    all_acked: Notify,
}

impl TurnAcks {
    /// One more event of the turn is in flight.
    fn sent(&self) {
        self.unacked.fetch_add(1, Ordering::AcqRel);
    }

    fn acked(&self) {
        if self.unacked.fetch_sub(1, Ordering::AcqRel) == 1 {
            // Kept as a permit if the worker is not waiting yet: no wake-up is lost.
            self.all_acked.notify_one();
        }
    }

    /// Resolves once every event sent in the turn is answered.
    async fn all_acked(&self) {
        while self.unacked.load(Ordering::Acquire) > 0 {
            self.all_acked.notified().await;
        }
    }
}

/// What goes with an event through librdkafka: whom to answer, which turn to count off.
pub struct Acked {
    answer_to: AnswerTo,
    turn: Arc<TurnAcks>,
}

impl Acked {
    fn answer(self, answer: Answer) {
        self.answer_to.send(answer);
        self.turn.acked();
    }
}

/// The producer's context: its delivery callback (on librdkafka's polling thread) answers
/// each event's caller.
pub struct AckContext;

impl ClientContext for AckContext {}

impl ProducerContext for AckContext {
    type DeliveryOpaque = Box<Acked>;

    fn delivery(&self, result: &DeliveryResult<'_>, acked: Box<Acked>) {
        let answer = match result {
            Ok(message) => Ok(Delivery {
                partition: message.partition(),
                offset: message.offset(),
                timestamp: message.timestamp(),
            }),
            Err((error, _message)) => Err(error.clone()),
        };
        acked.answer(answer);
    }
}

#[cfg(test)]
mod tests {
    use futures::FutureExt;

    use super::*;

    #[tokio::test]
    async fn a_turn_is_all_acked_once_every_sent_event_is_answered() {
        let acks = Arc::new(TurnAcks::default());
        let (mut answers, mut acked_events) = (Vec::new(), Vec::new());
        for _ in 0..3 {
            let (answer_to, answer) = oneshot::channel();
            acks.sent();
            answers.push(answer);
            acked_events.push(Acked {
                answer_to: AnswerTo::Caller(answer_to),
                turn: Arc::clone(&acks),
            });
        }
        let last = acked_events.pop().unwrap();
        for acked in acked_events {
            acked.answer(Err(KafkaError::Canceled));
        }
        assert!(
            acks.all_acked().now_or_never().is_none(),
            "one event is still in flight"
        );
        last.answer(Err(timed_out()));
        // Answered before the worker waits again: the permit is kept.
        acks.all_acked().await;
        for answer in answers {
            assert!(answer.await.unwrap().is_err());
        }
    }

    #[tokio::test]
    async fn a_batch_s_acks_are_kept_by_index_and_wake_its_task_once_per_burst() {
        let wake = Arc::new(Notify::new());
        let acks = BatchAcks::new(Arc::clone(&wake));
        let turn = Arc::new(TurnAcks::default());
        let sent: Vec<Acked> = (0..3)
            .map(|index| {
                turn.sent();
                Acked {
                    answer_to: AnswerTo::Batch(Arc::clone(&acks), index),
                    turn: Arc::clone(&turn),
                }
            })
            .collect();
        let mut sent = sent.into_iter();
        sent.next().unwrap().answer(Err(KafkaError::Canceled));
        let second = sent.next().unwrap();
        sent.next().unwrap().answer(Err(timed_out()));
        // Two acks before the task waits: one wake-up (a kept permit), both acks there.
        wake.notified().await;
        let answered: Vec<usize> = acks.take().into_iter().map(|(index, _)| index).collect();
        assert_eq!(answered, vec![0, 2]);
        assert!(
            wake.notified().now_or_never().is_none(),
            "no wake-up left over"
        );
        second.answer(Err(KafkaError::Canceled));
        wake.notified().await;
        assert_eq!(acks.take().len(), 1);
        turn.all_acked().await;
    }
}
