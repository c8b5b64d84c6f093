//! What both loops do with records the same way: poll a batch, drop a record delivered again,
//! and skip a malformed record (count it, log it at a bounded rate, dead-letter it).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::Result;
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Header, OwnedHeaders};

use crate::engine::fault::{self, Step};
use crate::engine::log_limit::LogLimit;
use crate::guest::Records;
use crate::guest::thread::GuestThread;
use crate::kafka::producer::AckedProducer;
use crate::serve::metrics::Metrics;
use crate::window::{self, Millis, WindowSpec};

/// Why a record without a value is skipped.
pub const NO_VALUE: &str = "record has no value";

/// How the reason a late record is skipped begins (with --window).
pub const LATE: &str = "late record";

/// How long one poll waits for the first record of a batch; bounds how late a shutdown
/// request or a due board is noticed when the input is idle.
pub const POLL_WAIT: Duration = Duration::from_millis(100);

/// Waits up to `wait` for a first record, then takes whatever else is already
/// fetched, up to `max` records. Partitions that reported their end (with `--stop-at-end`)
/// are added to `at_end`; a partition that delivers a record leaves it. An error when the
/// consumer can no longer work (a fatal error: librdkafka fences a static member whose
/// group.instance.id another join took over, seen after a group coordinator was killed):
/// it delivers nothing more, and the host must not linger as a member that counts nothing.
pub fn poll_batch<'c, C: ConsumerContext>(
    consumer: &'c BaseConsumer<C>,
    max: usize,
    wait: Duration,
    errors: &mut LogLimit,
    at_end: &mut BTreeSet<i32>,
) -> Result<Vec<BorrowedMessage<'c>>> {
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
                if let Some((code, reason)) = consumer.client().fatal_error() {
                    return Err(ConsumerFailed(format!("{code:?}: {reason}")).into());
                }
                if let Some(suppressed) = errors.allow() {
                    tracing::warn!(error = %e, suppressed, "consumer error (librdkafka retries on its own)");
                }
                break;
            }
        }
        timeout = Duration::ZERO;
    }
    if !batch.is_empty() && fault::due(Step::FailConsumer) {
        return Err(ConsumerFailed("fault injection (fail-consumer)".into()).into());
    }
    Ok(batch)
}

/// The consumer failed for good (see `poll_batch`): a scale-out host makes a new one; a
/// single host stops (state is intact: a restart resumes exactly).
#[derive(Debug)]
pub struct ConsumerFailed(pub String);

impl std::fmt::Display for ConsumerFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the Kafka consumer failed for good ({}); a restart resumes exactly", self.0)
    }
}

impl std::error::Error for ConsumerFailed {}

/// True the first time a record at `offset` of a partition (`key`) is taken, given `next`,
/// per partition the offset after the last record taken, which it raises: false for a record
/// delivered again. A rebalance or a rewind can bring back records of a batch under way, and
/// librdkafka can hand out a record twice in a row: a rebalance pauses every fetcher and
/// resumes it from the position after the last record the loop took, read while that record
/// was still on its way out of `poll` (seen here: a record counted twice under exactly-once,
/// as the last record of one batch and the first of the next). A rewind forgets `next` of the
/// partitions it seeks.
pub fn take_once<K: Ord + Clone>(next: &mut BTreeMap<K, i64>, key: &K, offset: i64) -> bool {
    match next.get_mut(key) {
        Some(at) if offset < *at => false,
        Some(at) => {
            *at = offset + 1;
            true
        }
        None => {
            next.insert(key.clone(), offset + 1);
            true
        }
    }
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

/// Records counted by one `process-batch` call, and where their deltas go: plain counters,
/// or (with --window) the counters of these windows.
pub struct Group {
    pub windows: Option<Vec<Millis>>,
    /// Index in the batch's messages of each record, in the order given to the guest.
    pub positions: Vec<usize>,
}

/// The group of a batch counting into `windows`, added if the batch has none yet.
pub fn group_for(groups: &mut Vec<(Group, Records)>, windows: Vec<Millis>) -> usize {
    match groups.iter().position(|(g, _)| g.windows.as_ref() == Some(&windows)) {
        Some(group) => group,
        None => {
            groups.push((Group { windows: Some(windows), positions: Vec::new() }, Records::default()));
            groups.len() - 1
        }
    }
}

/// With `--event-time guest`: the event time the guest gives each record of `messages` that
/// `wanted` keeps and that has a value (by index into `messages`; `None` for the others).
/// A call whose answer breaks `event-time`'s contract (one time per record given) is
/// counted and logged at a bounded rate, and its records keep their Kafka timestamps.
pub fn guest_event_times(
    (guest, metrics, log): (&mut GuestThread, &Metrics, &mut LogLimit),
    messages: &[BorrowedMessage<'_>],
    wanted: impl Fn(&BorrowedMessage<'_>) -> bool,
) -> Result<Vec<Option<Millis>>> {
    let mut records = Records::default();
    let mut at = Vec::new();
    for (index, message) in messages.iter().enumerate() {
        if let Some(value) = message.payload().filter(|_| wanted(message)) {
            records.push(value);
            at.push(index);
        }
    }
    let mut times = vec![None; messages.len()];
    // A guest swapped in without `event-time` was refused, so there are times here.
    let answer = guest.event_times(records)?.unwrap_or_default();
    for &(given, answered) in &answer.wrong_lengths {
        metrics.contract_violations.get_or_create(&vec![("kind", "event_time_count")]).inc();
        if let Some(suppressed) = log.allow() {
            tracing::warn!(
                given,
                answered,
                suppressed,
                "the guest's event-time broke its contract (one time per record given): these records keep their \
                 Kafka timestamps"
            );
        }
    }
    for (index, time) in at.into_iter().zip(answer.times) {
        times[index] = time;
    }
    Ok(times)
}

/// With --window: the windows still open for a record of `partition` at event time `t` (the
/// guest's if it gave one, else the record's timestamp) while the partition is at
/// `stream_time`, except those starting before `kept_from` (dropped already: a partition's
/// first records may be older than what the others have moved past); why it is skipped if
/// none is. The caller advances the partition's stream time to `t`.
pub fn open_windows(
    spec: &WindowSpec,
    t: Option<Millis>,
    partition: i32,
    stream_time: Option<Millis>,
    kept_from: Option<Millis>,
) -> Result<(Millis, Vec<Millis>), String> {
    let Some(t) = t else {
        return Err("record has no timestamp (windows count by event time)".into());
    };
    let mut open = spec.open_starts(t, stream_time);
    open.retain(|start| kept_from.is_none_or(|kept| *start >= kept));
    if open.is_empty() {
        let stream_time = stream_time.unwrap_or(t);
        return Err(format!(
            "{LATE}: event time {} is past the end of its windows plus the grace period (partition {partition} is \
             at {})",
            window::rfc3339(t),
            window::rfc3339(stream_time)
        ));
    }
    Ok((t, open))
}

/// The guest's `top-n`, held to its contract (`board::check_top_n`) before any board uses
/// it: an answer that breaks it is counted by kind and refused, so that board is skipped
/// (the loop logs why, once per flush interval) and no invented count reaches an output.
pub fn checked_top_n(
    guest: &mut GuestThread,
    metrics: &Metrics,
    given: &[crate::guest::Entry],
    n: u32,
) -> Result<Vec<crate::guest::Entry>> {
    let answer = guest.top_n(given, n)?;
    if let Err((violation, detail)) = crate::board::check_top_n(given, &answer, n) {
        metrics.contract_violations.get_or_create(&vec![("kind", violation.kind())]).inc();
        anyhow::bail!("the guest's top-n broke its contract ({}): {detail}; this board is skipped", violation.rule());
    }
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The redelivery seen under a rebalance: the last record of one poll handed out again as
    /// the first of the next, and again within one poll; other partitions are not affected.
    #[test]
    fn a_record_delivered_again_is_taken_once() {
        let mut next = BTreeMap::new();
        let taken: Vec<bool> = [(0, 4855), (0, 4856), (1, 7), (0, 4856), (0, 4857), (0, 4857), (1, 7), (1, 8)]
            .iter()
            .map(|(partition, offset)| take_once(&mut next, partition, *offset))
            .collect();
        assert_eq!(taken, [true, true, true, false, true, false, false, true]);
        assert_eq!(next, BTreeMap::from([(0, 4858), (1, 9)]));
        // A rewind forgets a partition's position: its records are taken again from there.
        next.remove(&0);
        assert!(take_once(&mut next, &0, 4000));
    }
}
