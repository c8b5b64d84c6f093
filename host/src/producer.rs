//! A producer whose sends are awaited together: the pipeline sends a batch's changelog
//! (and dead-letter) records, then waits once for every acknowledgement. Any failed
//! delivery fails the whole wait, so the caller never writes state or commits offsets
//! for records Kafka did not acknowledge.

use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use rdkafka::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::util::Timeout;

use crate::cli::KafkaArgs;

/// Counts delivery failures between waits; librdkafka calls it from `poll`/`flush`.
#[derive(Default)]
pub struct AckContext {
    first_failure: Mutex<Option<String>>,
}

impl ClientContext for AckContext {}

impl ProducerContext for AckContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((error, message)) = result {
            use rdkafka::Message;
            let mut first = self.first_failure.lock().unwrap_or_else(|p| p.into_inner());
            if first.is_none() {
                *first = Some(format!("{} [{}]: {error}", message.topic(), message.partition()));
            }
        }
    }
}

pub struct AckedProducer {
    inner: BaseProducer<AckContext>,
}

impl AckedProducer {
    pub fn new(kafka: &KafkaArgs) -> Result<Self> {
        let inner = crate::config::producer(kafka)
            .create_with_context(AckContext::default())
            .context("creating the Kafka producer")?;
        Ok(AckedProducer { inner })
    }

    /// Queues one record; waits for queue space if librdkafka's buffer is full.
    pub fn send(&self, topic: &str, key: &[u8], value: &[u8], headers: Option<OwnedHeaders>) -> Result<()> {
        let mut record = BaseRecord::to(topic).key(key).payload(value);
        if let Some(headers) = headers {
            record = record.headers(headers);
        }
        loop {
            match self.inner.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    self.inner.poll(Duration::from_millis(10));
                }
                Err((e, _)) => return Err(anyhow!("producing to {topic}: {e}")),
            }
        }
    }

    /// Waits until every record sent so far is acknowledged (or has failed after
    /// librdkafka's own retries, bounded by `message.timeout.ms`).
    pub fn wait_acks(&self) -> Result<()> {
        self.inner.flush(Timeout::Never).context("waiting for Kafka acknowledgements")?;
        let failure = self.inner.context().first_failure.lock().unwrap_or_else(|p| p.into_inner()).take();
        match failure {
            None => Ok(()),
            Some(f) => Err(anyhow!("Kafka did not acknowledge a record: {f}")),
        }
    }

    /// Serves delivery callbacks of records nobody waits for (board snapshots).
    pub fn poll(&self) {
        self.inner.poll(Duration::ZERO);
    }
}
