//! What both loops do with records the same way: poll a batch, and skip a malformed record
//! (count it, log it at a bounded rate, dead-letter it).

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::Result;
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Header, OwnedHeaders};

use crate::engine::log_limit::LogLimit;
use crate::kafka::producer::AckedProducer;
use crate::serve::metrics::Metrics;

/// Why a record without a value is skipped.
pub const NO_VALUE: &str = "record has no value";

/// How the reason a late record is skipped begins (with --window).
pub const LATE: &str = "late record";

/// How long one poll waits for the first record of a batch; bounds how late a shutdown
/// request or a due board is noticed when the input is idle.
pub const POLL_WAIT: Duration = Duration::from_millis(100);

/// Waits up to `wait` for a first record, then takes whatever else is already
/// fetched, up to `max` records. Partitions that reported their end (with `--stop-at-end`)
/// are added to `at_end`; a partition that delivers a record leaves it.
pub fn poll_batch<'c, C: ConsumerContext>(
    consumer: &'c BaseConsumer<C>,
    max: usize,
    wait: Duration,
    errors: &mut LogLimit,
    at_end: &mut BTreeSet<i32>,
) -> Vec<BorrowedMessage<'c>> {
    let mut batch = Vec::new();
    let mut timeout = wait;
    while batch.len() < max {
        match consumer.poll(timeout) {
            None => break,
            Some(Ok(message)) => {
                at_end.remove(&message.partition());
                batch.push(message);
            }
            Some(Err(KafkaError::PartitionEOF(partition))) => {
                at_end.insert(partition);
            }
            Some(Err(e)) => {
                if let Some(suppressed) = errors.allow() {
                    tracing::warn!(error = %e, suppressed, "consumer error (librdkafka retries on its own)");
                }
                break;
            }
        }
        timeout = Duration::ZERO;
    }
    batch
}

/// A malformed record (the caller counts it in its totals): in the metrics by reason,
/// logged at a bounded rate, and copied to the dead-letter topic when one is set.
pub fn skip_record(
    producer: &AckedProducer,
    dead_letter: Option<&str>,
    metrics: &Metrics,
    log: &mut LogLimit,
    message: &BorrowedMessage<'_>,
    reason: &str,
) -> Result<()> {
    metrics.records_skipped.inc();
    let kind = if reason.starts_with("guest trapped") {
        metrics.guest_traps.inc();
        "trapped"
    } else if reason == NO_VALUE {
        "no_value"
    } else if reason.starts_with(LATE) {
        "late"
    } else {
        "refused"
    };
    metrics.skipped_by_reason.get_or_create(&vec![("reason", kind)]).inc();
    if let Some(suppressed) = log.allow() {
        tracing::warn!(
            partition = message.partition(),
            offset = message.offset(),
            reason,
            suppressed,
            "skipping malformed record"
        );
    }
    if let Some(topic) = dead_letter {
        let partition = message.partition().to_string();
        let offset = message.offset().to_string();
        let headers = OwnedHeaders::new()
            .insert(Header { key: "error", value: Some(reason) })
            .insert(Header { key: "source.topic", value: Some(message.topic()) })
            .insert(Header { key: "source.partition", value: Some(&partition) })
            .insert(Header { key: "source.offset", value: Some(&offset) });
        let (key, value) = (message.key().unwrap_or_default(), message.payload().unwrap_or_default());
        // Too large for the dead-letter topic: sent without its value rather than stalling
        // the partition; the source coordinates in the headers still find the original.
        producer.send_trimmable(topic, key, value, headers)?;
        metrics.records_dead_lettered.inc();
    }
    Ok(())
}
