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

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use rdkafka::error::KafkaError;
use rdkafka::producer::future_producer::{Delivery, DeliveryFuture};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// Most events handed over in one turn: bounds one turn's requests.
const MAX_TURN: usize = 1024;
/// Longest one turn holds back the next while waiting for its acks: well above an ack on
/// a healthy cluster, well below the delivery timeout.
pub const TURN_WAIT: Duration = Duration::from_millis(50);

/// One event to send.
pub struct Outgoing {
    /// Shared by every event of the campaign, not copied per event.
    pub topic: Arc<str>,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
}

type Answer = Result<Delivery, KafkaError>;

struct Job {
    event: Outgoing,
    /// When the caller stops waiting for the ack (it gets a timeout then).
    deadline: Instant,
    answer_to: oneshot::Sender<Answer>,
}

/// The sending side of the turns; cloned by every publisher.
#[derive(Clone)]
pub struct Turns {
    jobs: mpsc::UnboundedSender<Job>,
}

impl Turns {
    /// Starts the worker that hands events to `producer`. It stops once every handle is
    /// dropped.
    pub fn spawn(producer: FutureProducer) -> Self {
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
            answer_to,
        };
        self.jobs.send(job).map_err(|_| KafkaError::Canceled)?;
        answer.await.unwrap_or(Err(KafkaError::Canceled))
    }
}

async fn take_turns(producer: FutureProducer, mut waiting: mpsc::UnboundedReceiver<Job>) {
    let mut turn = Vec::with_capacity(MAX_TURN);
    while waiting.recv_many(&mut turn, MAX_TURN).await > 0 {
        let now = Instant::now();
        let mut acks: FuturesUnordered<_> = turn
            .drain(..)
            // A caller that gave up is not sent for: its admission stays pending and the
            // re-publisher sends it.
            .filter(|job| !job.answer_to.is_closed())
            .map(|job| {
                let delivery = if job.deadline <= now {
                    Err(timed_out())
                } else {
                    enqueue(&producer, &job.event)
                };
                async move {
                    let answer = match delivery {
                        Ok(delivery) => ack(delivery, job.deadline).await,
                        Err(error) => Err(error),
                    };
                    // A caller that went away no longer needs its answer.
                    let _ = job.answer_to.send(answer);
                }
            })
            .collect();
        if tokio::time::timeout(TURN_WAIT, answer_all(&mut acks))
            .await
            .is_err()
        {
            tokio::spawn(async move { answer_all(&mut acks).await });
        }
    }
}

/// Hands `event` to librdkafka. A full queue is not waited on: the event is answered
/// unconfirmed at once (turns keep the queue short, so only an unreachable cluster fills it).
fn enqueue(producer: &FutureProducer, event: &Outgoing) -> Result<DeliveryFuture, KafkaError> {
    let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&event.topic);
    if let Some(key) = &event.key {
        record = record.key(key);
    }
    if let Some(payload) = &event.payload {
        record = record.payload(payload);
    }
    producer
        .send_result(record)
        .map_err(|(error, _record)| error)
}

async fn ack(delivery: DeliveryFuture, deadline: Instant) -> Answer {
    match tokio::time::timeout_at(deadline, delivery).await {
        Ok(Ok(Ok(delivery))) => Ok(delivery),
        Ok(Ok(Err((error, _message)))) => Err(error),
        Ok(Err(_canceled)) => Err(KafkaError::Canceled),
        Err(_) => Err(timed_out()),
    }
}

/// What a caller gets whose ack did not come before its deadline.
fn timed_out() -> KafkaError {
    KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut)
}

async fn answer_all<F: Future<Output = ()>>(acks: &mut FuturesUnordered<F>) {
    while acks.next().await.is_some() {}
}
