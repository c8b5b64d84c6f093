//! The changelog: the format of its records, and restoring local state from it.
//!
//! Format (one compacted topic):
//! - a counter: key = the key's UTF-8 bytes, value = the count as 8-byte big-endian u64;
//! - metadata (records counted/skipped, input offsets the state reflects): key = 0xFF
//!   followed by the metadata name, value = 8-byte big-endian, and a record header `meta`
//!   whose value is the name. 0xFF never occurs in UTF-8, so a metadata key can never
//!   collide with (and be compacted away by) a counter key; the header lets a plain reader
//!   skip these records without knowing the key rule.
//! - a processor guest's value (`wit/processor`): key = 0xFD followed by the guest's key,
//!   value = the byte 0x01 followed by the guest's value (so an empty value is not a
//!   tombstone). 0xFD never occurs in UTF-8 either, and windowed counters start with 0xFE.
//! - an empty value is a tombstone: the key is deleted.
//!
//! Restore reads every partition from the beginning to the end offset it had when restore
//! started, without a consumer group, and writes what it reads into the state store. A tail
//! replay (exactly-once start-up) reads the same way from the positions state already holds.
//! Both read with read_committed: records of aborted transactions never reach state.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Header, Headers, OwnedHeaders};
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::kafka::Connection;
use crate::kafka::clients::HostConsumer;
use crate::kafka::producer::AckedProducer;
use crate::process::shutdown::Shutdown;
use crate::state::{Change, Store, decode_u64, meta};

/// The header that marks a changelog record as metadata rather than a counter.
pub const META_HEADER: &str = "meta";
pub const META_KEY_PREFIX: u8 = 0xFF;

pub fn meta_key(name: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + name.len());
    key.push(META_KEY_PREFIX);
    key.extend_from_slice(name.as_bytes());
    key
}

/// The first key byte of a processor guest's value, and the first byte of its record value.
pub const VALUE_KEY_PREFIX: u8 = 0xFD;
const VALUE_FORMAT: u8 = 0x01;

/// The changelog key of a processor guest's `key`.
pub fn value_key(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + key.len());
    out.push(VALUE_KEY_PREFIX);
    out.extend_from_slice(key);
    out
}

/// The changelog value of a processor guest's `value`.
pub fn value_record(value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + value.len());
    out.push(VALUE_FORMAT);
    out.extend_from_slice(value);
    out
}

pub fn meta_headers(name: &str) -> OwnedHeaders {
    OwnedHeaders::new().insert(Header { key: META_HEADER, value: Some(name) })
}

/// Decodes one changelog record into a state change; `None` for a record that is neither
/// a counter nor metadata (logged by the caller).
pub fn decode(key: Option<&[u8]>, value: Option<&[u8]>, is_meta: bool) -> Option<Change> {
    let key = key?;
    let value = value.filter(|v| !v.is_empty());
    if is_meta {
        let name = std::str::from_utf8(key.strip_prefix(&[META_KEY_PREFIX])?).ok()?.to_owned();
        return Some(Change::Meta { name, value: value.map(<[u8]>::to_vec) });
    }
    if let Some(key) = key.strip_prefix(&[VALUE_KEY_PREFIX]) {
        let value = match value {
            None => None,
            Some(v) => Some(v.strip_prefix(&[VALUE_FORMAT])?.to_vec()),
        };
        return Some(Change::Value { key: key.to_vec(), value });
    }
    match value {
        None => Some(Change::Count { key: key.to_vec(), value: None }),
        Some(v) if v.len() == 8 => Some(Change::Count { key: key.to_vec(), value: Some(decode_u64(v)) }),
        Some(_) => None,
    }
}

/// Sends `changes` to changelog `topic` as records (a local-only change is not sent).
pub fn send(producer: &AckedProducer, topic: &str, changes: &[Change]) -> Result<()> {
    for change in changes {
        match change {
            Change::Count { key, value: Some(v) } => producer.send(topic, key, &v.to_be_bytes(), None)?,
            Change::Value { key, value: Some(v) } => producer.send(topic, &value_key(key), &value_record(v), None)?,
            Change::Meta { name, value: Some(v) } => {
                producer.send(topic, &meta_key(name), v, Some(meta_headers(name)))?
            }
            // Expired windows' counters and deleted values: a tombstone, so compaction removes them.
            Change::Count { key, value: None } => producer.send_tombstone(topic, key)?,
            Change::Value { key, value: None } => producer.send_tombstone(topic, &value_key(key))?,
            Change::Meta { value: None, .. } => {}
        }
    }
    Ok(())
}

pub fn has_meta_header(message: &impl Message) -> bool {
    message.headers().is_some_and(|h| h.iter().any(|header| header.key == META_HEADER))
}

/// What a restore did.
#[derive(Debug, Default)]
pub struct RestoreReport {
    pub records_read: u64,
    pub records_unreadable: u64,
    /// Keys in state afterwards: counted when few, else RocksDB's estimate (which counts a
    /// key more than once when the changelog held several values of it not yet compacted).
    pub keys: u64,
    pub keys_exact: bool,
    pub elapsed: Duration,
}

/// Reads `topic` from the beginning to the end offsets it has now, into `store`, which is
/// cleared first. Until the restore completes, the store carries a marker that makes the
/// next start restore again (an interrupted restore must not pass for complete state).
pub fn restore(kafka: &Connection, topic: &str, store: &mut Store, shutdown: &Shutdown) -> Result<RestoreReport> {
    restore_partitions(kafka, topic, None, store, shutdown)
}

/// Reads `topic` (or only its partition `only`) from the beginning into `store`, cleared
/// first, marked incomplete until it is done (see `restore`).
pub fn restore_partitions(
    kafka: &Connection,
    topic: &str,
    only: Option<i32>,
    store: &mut Store,
    shutdown: &Shutdown,
) -> Result<RestoreReport> {
    let started = Instant::now();
    store.clear()?;
    let marker = |value: Option<Vec<u8>>| Change::Meta { name: meta::RESTORE_INCOMPLETE.into(), value };
    store.apply([marker(Some(b"1".to_vec()))], true)?;
    tracing::info!(topic, partition = only, "restoring state from the changelog");
    // Written to the WAL without syncing; the final write (which removes the marker) syncs
    // the WAL, and with it every write before it. Until then a crash means starting over.
    let (mut report, positions) =
        read_into(kafka, topic, only, &BTreeMap::new(), shutdown, decode_changelog, |changes| {
            store.apply(changes, false)
        })?;
    store.apply(position_changes(topic, &positions).chain([marker(None)]), true)?;
    (report.keys, report.keys_exact) = store.key_count()?;
    report.elapsed = started.elapsed();
    tracing::info!(
        keys = report.keys,
        records_read = report.records_read,
        records_unreadable = report.records_unreadable,
        partition = only,
        seconds = report.elapsed.as_secs_f64(),
        "restore finished"
    );
    Ok(report)
}

/// Brings `store` up to the end of `topic` (or only of its partition `only`) by reading
/// only what lies past the positions it already holds (all of it where it holds none).
pub fn replay_partitions(
    kafka: &Connection,
    topic: &str,
    only: Option<i32>,
    store: &Store,
    shutdown: &Shutdown,
) -> Result<RestoreReport> {
    let report = replay(kafka, topic, only, store, shutdown, decode_changelog)?;
    tracing::info!(
        records_read = report.records_read,
        seconds = report.elapsed.as_secs_f64(),
        "replayed the changelog's tail into state"
    );
    Ok(report)
}

/// Brings a processor's table copy (`store`) up to the end of its compacted `topic`, from the
/// positions it holds: every record's key and value as the table's row (a null value
/// deletes it).
pub fn replay_table(kafka: &Connection, topic: &str, store: &Store, shutdown: &Shutdown) -> Result<RestoreReport> {
    replay(kafka, topic, None, store, shutdown, decode_table_row)
}

/// A table topic's record as a row of its copy (laid out as a processor's values are, so
/// `host dump` reads a copy too); `None` for one without a key.
pub fn decode_table_row(message: &BorrowedMessage<'_>) -> Option<Change> {
    let key = crate::guest::processor::view::value_key(message.key()?);
    Some(Change::Value { key, value: message.payload().map(<[u8]>::to_vec) })
}

/// A changelog record as the state change it records (`None`: unreadable).
pub fn decode_changelog(message: &BorrowedMessage<'_>) -> Option<Change> {
    decode(message.key(), message.payload(), has_meta_header(message))
}

/// How a record of the topic read becomes a change (`None`: unreadable, counted and skipped).
type Decode = fn(&BorrowedMessage<'_>) -> Option<Change>;

fn replay(
    kafka: &Connection,
    topic: &str,
    only: Option<i32>,
    store: &Store,
    shutdown: &Shutdown,
    decode: Decode,
) -> Result<RestoreReport> {
    let started = Instant::now();
    let from = store.changelog_positions(topic)?;
    let (mut report, positions) =
        read_into(kafka, topic, only, &from, shutdown, decode, |changes| store.apply(changes, false))?;
    store.apply(position_changes(topic, &positions), true)?;
    report.elapsed = started.elapsed();
    tracing::debug!(topic, from = ?from, to = ?positions, "read to the end");
    Ok(report)
}

/// State changes recording changelog `positions` (next offset per partition).
pub fn position_changes<'a>(topic: &'a str, positions: &'a BTreeMap<i32, i64>) -> impl Iterator<Item = Change> + 'a {
    positions.iter().map(move |(partition, next)| Change::Meta {
        name: meta::changelog_position(topic, *partition),
        value: Some((*next as u64).to_be_bytes().to_vec()),
    })
}

/// Reads every partition of `topic` (or `only` one) from `from` (the beginning where absent)
/// to the end offsets it has now, handing decoded changes to `write` in chunks. Returns what
/// it read and, per partition, the offset it read up to.
fn read_into(
    kafka: &Connection,
    topic: &str,
    only: Option<i32>,
    from: &BTreeMap<i32, i64>,
    shutdown: &Shutdown,
    decode: Decode,
    mut write: impl FnMut(Vec<Change>) -> Result<()> + Send,
) -> Result<(RestoreReport, BTreeMap<i32, i64>)> {
    let consumer = topic_reader(kafka)?;
    let mut ends = end_offsets(&consumer, topic)?;
    ends.retain(|p, _| only.is_none_or(|only| *p == only));
    let start = |partition: &i32, low: i64| from.get(partition).copied().unwrap_or(low).max(low);
    let to_read: i64 = ends.iter().map(|(p, (low, high))| (high - start(p, *low)).max(0)).sum();
    // Where each partition's reading ends: its end offset, or where it already is.
    let mut positions: BTreeMap<i32, i64> = ends.iter().map(|(p, (low, _))| (*p, start(p, *low))).collect();
    let mut pending: BTreeMap<i32, i64> =
        ends.iter().filter(|(p, (low, high))| *high > start(p, *low)).map(|(p, (_, h))| (*p, *h)).collect();
    tracing::info!(topic, partitions = ends.len(), records_to_read = to_read, "reading the changelog");

    let mut assignment = TopicPartitionList::new();
    for partition in pending.keys() {
        let offset = match from.get(partition) {
            Some(next) => Offset::Offset(start(partition, *next)),
            None => Offset::Beginning,
        };
        assignment.add_partition_offset(topic, *partition, offset)?;
    }
    consumer.assign(&assignment).context("assigning changelog partitions")?;

    // State writes run on their own thread, so decoding the next records overlaps them.
    std::thread::scope(|scope| {
        let (chunks, inbox) = std::sync::mpsc::sync_channel::<Vec<Change>>(2);
        let writer = scope.spawn(move || -> Result<()> {
            for chunk in inbox {
                write(chunk)?;
            }
            Ok(())
        });
        let read = read_loop(&consumer, topic, shutdown, decode, &mut pending, &mut positions, to_read, &chunks);
        drop(chunks);
        let written = writer.join().map_err(|_| anyhow::anyhow!("the state writer thread panicked"))?;
        // A write error explains a read loop that stopped for want of a writer.
        written.and(read)
    })
    .map(|report| (report, positions))
}

/// A broker away while the changelog is read: logged at most every 5 s.
fn broker_away(warned: &mut Option<std::time::Instant>, topic: &str, error: &KafkaError) {
    if warned.is_none_or(|at| at.elapsed() >= Duration::from_secs(5)) {
        *warned = Some(std::time::Instant::now());
        tracing::warn!(topic, error = %error, "reading the changelog: a broker is away; waiting for it");
    }
}

/// The reading half of `read_into`: polls until every pending partition is read to its end,
/// sending decoded changes to the writer in chunks.
#[allow(clippy::too_many_arguments)]
fn read_loop(
    consumer: &HostConsumer,
    topic: &str,
    shutdown: &Shutdown,
    decode: Decode,
    pending: &mut BTreeMap<i32, i64>,
    positions: &mut BTreeMap<i32, i64>,
    to_read: i64,
    chunks: &std::sync::mpsc::SyncSender<Vec<Change>>,
) -> Result<RestoreReport> {
    let mut report = RestoreReport::default();
    let mut batch = Vec::new();
    let mut progress = crate::process::progress::Progress::new("reading the changelog", to_read.max(0) as u64);
    let mut warned: Option<std::time::Instant> = None;
    while !pending.is_empty() {
        if shutdown.requested() {
            bail!("reading the changelog interrupted; the next start does it again");
        }
        match consumer.poll(Duration::from_millis(200)) {
            None => {}
            Some(Err(KafkaError::PartitionEOF(partition))) => {
                // The end, as read_committed sees it (the last offsets may be transaction markers).
                if let Some(end) = pending.remove(&partition) {
                    positions.insert(partition, end);
                }
            }
            // A broker away (killed, cut off) is retried by librdkafka: wait for it.
            Some(Err(e)) if consumer.client().fatal_error().is_none() && crate::kafka::clients::is_transient(&e) => {
                broker_away(&mut warned, topic, &e)
            }
            Some(Err(e)) => bail!("reading changelog {topic}: {e}"),
            Some(Ok(message)) => {
                report.records_read += 1;
                match decode(&message) {
                    Some(change) => batch.push(change),
                    None => {
                        report.records_unreadable += 1;
                        tracing::warn!(
                            topic,
                            partition = message.partition(),
                            offset = message.offset(),
                            "unreadable record (a changelog record that is no counter, value or metadata; a table \
                             record without a key): ignored"
                        );
                    }
                }
                let partition = message.partition();
                positions.insert(partition, message.offset() + 1);
                if pending.get(&partition).is_some_and(|end| message.offset() + 1 >= *end) {
                    pending.remove(&partition);
                }
            }
        }
        if (batch.len() >= 10_000 || (pending.is_empty() && !batch.is_empty()))
            && chunks.send(std::mem::take(&mut batch)).is_err()
        {
            bail!("the state writer stopped");
        }
        if report.records_read % 1024 == 0 {
            progress.set(report.records_read);
        }
    }
    progress.set(report.records_read);
    progress.finish();
    Ok(report)
}

/// True when `topic` holds no record a read_committed reader would see in any of the given
/// ranges (partition -> (from, to)): only transaction markers, or records of aborted
/// transactions. False as soon as one is seen, or when a range is not yet stable (an open
/// transaction: it may still commit).
pub fn only_markers_after(kafka: &Connection, topic: &str, ranges: &BTreeMap<i32, (i64, i64)>) -> Result<bool> {
    let consumer = topic_reader(kafka)?;
    let stable = end_offsets(&consumer, topic)?;
    if ranges.iter().any(|(p, (_, to))| stable.get(p).is_none_or(|(_, lso)| lso < to)) {
        return Ok(false);
    }
    let mut assignment = TopicPartitionList::new();
    for (partition, (from, _)) in ranges {
        assignment.add_partition_offset(topic, *partition, Offset::Offset(*from))?;
    }
    consumer.assign(&assignment).context("assigning partitions to look past their commits")?;
    let mut pending: BTreeSet<i32> = ranges.keys().copied().collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !pending.is_empty() && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Ok(message)) if message.offset() < ranges[&message.partition()].1 => return Ok(false),
            Some(Ok(message)) => {
                pending.remove(&message.partition());
            }
            Some(Err(KafkaError::PartitionEOF(partition))) => {
                pending.remove(&partition);
            }
            Some(Err(e)) => bail!("reading {topic}: {e}"),
        }
    }
    Ok(pending.is_empty())
}

/// A consumer that reads topics by assignment, outside any consumer group's offsets.
pub(crate) fn topic_reader(kafka: &Connection) -> Result<HostConsumer> {
    crate::kafka::clients::reader(kafka, &format!("streamhost-restore-{}", std::process::id()))
        .create_with_context(crate::kafka::clients::HostContext::default())
        .context("creating a topic reader")
}

/// The end offset of every partition of `topic`, as changelog positions.
pub fn end_positions(kafka: &Connection, topic: &str) -> Result<BTreeMap<i32, i64>> {
    let consumer = topic_reader(kafka)?;
    Ok(end_offsets(&consumer, topic)?.into_iter().map(|(p, (_, high))| (p, high)).collect())
}

/// The partitions of `topic` that hold records now.
pub fn non_empty_partitions(kafka: &Connection, topic: &str) -> Result<BTreeSet<i32>> {
    let consumer = topic_reader(kafka)?;
    Ok(end_offsets(&consumer, topic)?.into_iter().filter(|(_, (low, high))| high > low).map(|(p, _)| p).collect())
}

/// How long a look-up answered with a retriable error (a leader moving) is asked again.
const TRANSIENT_WAIT: Duration = Duration::from_secs(60);

/// (low, high) watermarks of every partition of `topic`.
pub fn end_offsets<C: ConsumerContext>(consumer: &BaseConsumer<C>, topic: &str) -> Result<BTreeMap<i32, (i64, i64)>> {
    let timeout = Duration::from_secs(10);
    let metadata =
        consumer.fetch_metadata(Some(topic), timeout).with_context(|| format!("fetching metadata of {topic}"))?;
    let Some(t) = metadata.topics().iter().find(|t| t.name() == topic) else {
        bail!("topic {topic} does not exist");
    };
    if let Some(error) = t.error() {
        bail!("topic {topic}: {:?}", rdkafka::error::RDKafkaErrorCode::from(error));
    }
    let mut out = BTreeMap::new();
    for partition in t.partitions() {
        let id = partition.id();
        // A leader moving (a broker killed) answers for a while with a retriable error.
        let deadline = std::time::Instant::now() + TRANSIENT_WAIT;
        let marks = loop {
            match consumer.fetch_watermarks(topic, id, timeout) {
                Err(e) if crate::kafka::clients::is_transient(&e) && std::time::Instant::now() < deadline => {
                    tracing::warn!(topic, partition = id, error = %e, "fetching end offsets: asking again");
                    std::thread::sleep(Duration::from_millis(500));
                }
                marks => break marks.with_context(|| format!("fetching end offsets of {topic} [{id}]"))?,
            }
        };
        out.insert(id, marks);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_counters_tombstones_and_metadata() {
        match decode(Some(b"latte"), Some(&42u64.to_be_bytes()), false) {
            Some(Change::Count { key, value: Some(42) }) => assert_eq!(key, b"latte"),
            _ => panic!("counter"),
        }
        assert!(matches!(decode(Some(b"latte"), Some(b""), false), Some(Change::Count { value: None, .. })));
        assert!(matches!(decode(Some(b"latte"), None, false), Some(Change::Count { value: None, .. })));
        assert!(decode(Some(b"latte"), Some(b"abc"), false).is_none());
        match decode(Some(&meta_key("records_processed")), Some(&7u64.to_be_bytes()), true) {
            Some(Change::Meta { name, value: Some(v) }) => {
                assert_eq!(name, "records_processed");
                assert_eq!(decode_u64(&v), 7);
            }
            _ => panic!("meta"),
        }
        assert!(decode(Some(b"no-prefix"), Some(b"x"), true).is_none());
        assert!(decode(None, Some(b"x"), false).is_none());
        match decode(Some(&value_key(b"\xffk")), Some(&value_record(b"")), false) {
            Some(Change::Value { key, value: Some(v) }) => assert_eq!((key, v), (b"\xffk".to_vec(), vec![])),
            _ => panic!("an empty processor value is a value, not a tombstone"),
        }
        assert!(matches!(decode(Some(&value_key(b"k")), None, false), Some(Change::Value { value: None, .. })));
        assert!(decode(Some(&value_key(b"k")), Some(b"\x02v"), false).is_none(), "an unknown value format");
    }

    #[test]
    fn meta_keys_are_not_utf8() {
        assert!(std::str::from_utf8(&meta_key("records_processed")).is_err());
    }
}
