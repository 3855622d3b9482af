//! Publishes winner events: idempotent producer, `acks=all`, a bounded delivery timeout,
//! so an apply that waits for the broker's ack never hangs and is never answered twice.
//! Events are handed to librdkafka in turns ([`super::turns`]).

use std::sync::Arc;
use std::time::Duration;

use firstcome_contract::WinnerEvent;
use rdkafka::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::producer::Producer;
use rdkafka::producer::future_producer::Delivery;
use rdkafka::util::Timeout;

use super::turns::{AckContext, AckingProducer, BatchAcks, Outgoing, Turns};

/// Added to the delivery timeout to bound every wait for an ack.
const ACK_WAIT_MARGIN: Duration = Duration::from_secs(1);

#[derive(Clone)]
pub struct WinnerPublisher {
    producer: AckingProducer,
    turns: Turns,
    /// Longest wait for one ack. librdkafka's `message.timeout.ms` does not bound every
    /// state of the idempotent producer (e.g. while it re-acquires its producer id after
    /// a broker crash), so every wait is capped here as well.
    ack_wait: Duration,
}

impl WinnerPublisher {
    /// `delivery_timeout` bounds the time from send to the broker's ack, retries included.
    /// Starts the turns' worker: call it within a Tokio runtime.
    pub fn new(brokers: &str, delivery_timeout: Duration) -> Result<Self, KafkaError> {
        let producer: AckingProducer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set(
                "message.timeout.ms",
                delivery_timeout.as_millis().to_string(),
            )
            // Winner events are ~150 bytes: compression costs more CPU than it saves.
            // A linger of 1 ms gathers each turn's events (handed over within
            // microseconds) into one request per partition; with `linger.ms=0` the first
            // event of a turn would go alone.
            .set("linger.ms", "1")
            .set("socket.nagle.disable", "true")
            .create_with_context(AckContext)?;
        let ack_wait = delivery_timeout + ACK_WAIT_MARGIN;
        Ok(Self {
            turns: Turns::spawn(producer.clone()),
            producer,
            ack_wait,
        })
    }

    /// The longest any publish waits: the delivery timeout plus a margin.
    pub fn ack_wait(&self) -> Duration {
        self.ack_wait
    }

    /// Sends `event` in the next turn and waits for its ack, never longer than
    /// `ack_wait` in all. A message given up on may still be delivered later; every
    /// consumer of these topics is idempotent.
    async fn send(&self, event: Outgoing) -> Result<Delivery, KafkaError> {
        let deadline = tokio::time::Instant::now() + self.ack_wait;
        self.turns.send(event, deadline).await
    }

    /// Resolves once the broker acknowledged the event, or delivery failed or took
    /// longer than `ack_wait`.
    /// The delivery says where the event landed.
    pub async fn publish(
        &self,
        topic: &Arc<str>,
        event: &WinnerEvent,
    ) -> Result<Delivery, KafkaError> {
        self.send(Outgoing {
            topic: Arc::clone(topic),
            key: Some(event.key().into_bytes()),
            payload: Some(event.to_payload()),
        })
        .await
    }

    /// Sends `events` together in the next turn, each one's ack going to `acks` under its
    /// index; returns the deadline after which an ack not come is given up on (`ack_wait`
    /// from now).
    pub fn publish_all(
        &self,
        topic: &Arc<str>,
        events: &[WinnerEvent],
        acks: &Arc<BatchAcks>,
    ) -> tokio::time::Instant {
        let deadline = tokio::time::Instant::now() + self.ack_wait;
        let outgoing = (events.iter())
            .map(|event| Outgoing {
                topic: Arc::clone(topic),
                key: Some(event.key().into_bytes()),
                payload: Some(event.to_payload()),
            })
            .collect();
        self.turns.send_all(outgoing, deadline, acks);
        deadline
    }

    /// Publishes a message as it is (e.g. parking one on a dead-letter topic), with the
    /// same guarantees; resolves once the broker acknowledged it.
    pub async fn publish_raw(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        payload: Option<&[u8]>,
    ) -> Result<(), KafkaError> {
        self.send(Outgoing {
            topic: Arc::from(topic),
            key: key.map(<[u8]>::to_vec),
            payload: payload.map(<[u8]>::to_vec),
        })
        .await
        .map(|_| ())
    }

    /// Waits for every queued event to be delivered, e.g. on shutdown.
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.producer.flush(Timeout::After(timeout))
    }

    /// Asks the cluster for metadata: the readiness check.
    pub async fn ping(&self, timeout: Duration) -> Result<(), KafkaError> {
        let producer = self.producer.clone();
        tokio::task::spawn_blocking(move || {
            producer
                .client()
                .fetch_metadata(None, Timeout::After(timeout))
                .map(|_| ())
        })
        .await
        .unwrap_or(Err(KafkaError::Canceled))
    }
}
