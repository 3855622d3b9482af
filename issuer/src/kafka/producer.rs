//! Publishes winner events: idempotent producer, `acks=all`, a bounded delivery timeout,
//! so an apply that waits for the broker's ack never hangs and is never answered twice.

use std::time::Duration;

use firstcome_contract::WinnerEvent;
use rdkafka::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::producer::future_producer::Delivery;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::util::Timeout;

/// Added to the delivery timeout to bound every wait for an ack.
const ACK_WAIT_MARGIN: Duration = Duration::from_secs(1);

#[derive(Clone)]
pub struct WinnerPublisher {
    producer: FutureProducer,
    /// Longest wait for one ack. librdkafka's `message.timeout.ms` does not bound every
    /// state of the idempotent producer (e.g. while it re-acquires its producer id after
    /// a broker crash), so every wait is capped here as well.
    ack_wait: Duration,
}

impl WinnerPublisher {
    /// `delivery_timeout` bounds the time from send to the broker's ack, retries included.
    pub fn new(brokers: &str, delivery_timeout: Duration) -> Result<Self, KafkaError> {
        let producer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set(
                "message.timeout.ms",
                delivery_timeout.as_millis().to_string(),
            )
            // Winner events are ~150 bytes: compression costs more CPU than it saves.
            // A linger of 1 ms: `linger.ms=0` (send each event at once) was measured worse
            // on the bench, about 210 µs of issuer CPU per admitted apply against 110-180
            // (docs/testing.md, the profile of phase A).
            .set("linger.ms", "1")
            .set("socket.nagle.disable", "true")
            .create()?;
        Ok(Self {
            producer,
            ack_wait: delivery_timeout + ACK_WAIT_MARGIN,
        })
    }

    /// The longest any publish waits: the delivery timeout plus a margin.
    pub fn ack_wait(&self) -> Duration {
        self.ack_wait
    }

    /// Sends `record` and waits for its ack, never longer than `ack_wait`. A message
    /// given up on may still be delivered later; every consumer of these topics is
    /// idempotent.
    async fn send(&self, record: FutureRecord<'_, [u8], [u8]>) -> Result<Delivery, KafkaError> {
        match tokio::time::timeout(self.ack_wait, self.producer.send(record, Timeout::Never)).await
        {
            Ok(Ok(delivery)) => Ok(delivery),
            Ok(Err((error, _message))) => Err(error),
            Err(_) => Err(KafkaError::MessageProduction(
                RDKafkaErrorCode::MessageTimedOut,
            )),
        }
    }

    /// Resolves once the broker acknowledged the event, or delivery failed or took
    /// longer than `ack_wait`.
    /// The delivery says where the event landed.
    pub async fn publish(&self, topic: &str, event: &WinnerEvent) -> Result<Delivery, KafkaError> {
        let (key, payload) = (event.key(), event.to_payload());
        let record = FutureRecord::to(topic)
            .key(key.as_bytes())
            .payload(&payload[..]);
        self.send(record).await
    }

    /// Publishes a message as it is (e.g. parking one on a dead-letter topic), with the
    /// same guarantees; resolves once the broker acknowledged it.
    pub async fn publish_raw(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        payload: Option<&[u8]>,
    ) -> Result<(), KafkaError> {
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic);
        if let Some(key) = key {
            record = record.key(key);
        }
        if let Some(payload) = payload {
            record = record.payload(payload);
        }
        self.send(record).await.map(|_| ())
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
