//! A producer whose sends are awaited together: the pipeline sends a batch's changelog
//! (and dead-letter) records, then waits once for every acknowledgement. Any failed
//! delivery fails the whole wait, so the caller never writes state or commits offsets
//! for records Kafka did not acknowledge.
//!
//! With a transactional id, the same sends go into Kafka transactions instead
//! (`begin` / `commit` / `abort`), and failures are classified by what the caller must do.
//!
//! One exception: a record sent with `send_trimmable` (a dead letter) that the broker
//! refuses as too large is re-sent without its value and with a `value.omitted` header,
//! because a dead letter that can never be written must not stall the partition.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use rdkafka::ClientContext;
use rdkafka::TopicPartitionList;
use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};

use crate::kafka::Connection;
use crate::process::shutdown::{Shutdown, Unfinished};

/// What is needed to re-send a record without its value.
pub struct Trimmable {
    topic: String,
    key: Vec<u8>,
    headers: OwnedHeaders,
    value_len: usize,
}

/// Records delivery failures between waits; librdkafka calls it from `poll`/`flush`.
#[derive(Default)]
pub struct AckContext {
    /// The changelog topic, whose delivered positions are tracked.
    changelog: String,
    /// Per changelog partition, the offset after the last record delivered to it.
    changelog_positions: Mutex<BTreeMap<i32, i64>>,
    first_failure: Mutex<Option<String>>,
    /// Records sent with `send_trimmable` since the last wait; a record's delivery opaque
    /// is its index here plus one (0: not trimmable), so plain sends allocate nothing.
    trimmable: Mutex<Vec<Trimmable>>,
    /// Indexes into `trimmable` of records the broker refused as too large.
    too_large: Mutex<Vec<usize>>,
}

impl ClientContext for AckContext {}

impl ProducerContext for AckContext {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, trimmable: usize) {
        use rdkafka::Message;
        if let Ok(message) = result
            && message.topic() == self.changelog
        {
            let mut positions = lock(&self.changelog_positions);
            let next = positions.entry(message.partition()).or_insert(0);
            *next = (*next).max(message.offset() + 1);
        }
        if let Err((error, message)) = result {
            if trimmable > 0 && error.rdkafka_error_code() == Some(RDKafkaErrorCode::MessageSizeTooLarge) {
                lock(&self.too_large).push(trimmable - 1);
                return;
            }
            let mut first = lock(&self.first_failure);
            if first.is_none() {
                *first = Some(format!("{} [{}]: {error}", message.topic(), message.partition()));
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

pub struct AckedProducer {
    /// Shared with a helper thread only while offsets are sent (see `send_offsets`).
    inner: Arc<BaseProducer<AckContext>>,
    /// Longest wait for acknowledgements before giving up (see `wait_acks`).
    ack_timeout: Duration,
    /// Once a stop is requested, waits on Kafka end sooner (see `shutdown::Shutdown::give_up_at`).
    stop: Shutdown,
    /// What made this producer, to make another in its place (see `send_offsets`).
    recipe: Recipe,
    /// exactly-once: the open transaction, and Kafka's transaction.timeout.ms (see `ended`).
    open_txn: Option<OpenTxn>,
    txn_timeout: Duration,
}

/// What tells how an open transaction can have ended (see `AckedProducer::ended`).
#[derive(Clone, Copy)]
struct OpenTxn {
    began: Instant,
    /// Its commit was asked for: from then on it may be committed, whatever the answer said.
    commit_asked: bool,
}

#[derive(Clone)]
struct Recipe {
    kafka: Connection,
    changelog: String,
    transactional_id: Option<String>,
    max_message_bytes: usize,
}

/// A transaction failure, by what the caller must do about it.
#[derive(Debug)]
pub enum TxnError {
    /// Abort the transaction, rewind the input to the last commit, go on.
    Abortable(String),
    /// Stop: another producer with the same transactional id took over.
    Fenced(String),
    /// The transaction is gone: its producer was replaced by a new one with the same
    /// transactional id, which aborted it. Rewind the input to the last commit, go on.
    Replaced(String),
    /// The transaction ended one way or the other, unknown which: its commit was asked for,
    /// then its producer had to be replaced (whose initialisation finished it). Read state
    /// and the input again from what Kafka holds, go on.
    InDoubt(String),
    /// Stop: the producer cannot go on.
    Fatal(String),
    /// A stop is under way and Kafka did not answer in time: the transaction is left open, for
    /// the next start (or the transaction timeout) to abort.
    Unfinished(String),
}

impl TxnError {
    /// The error that ends the host for a failure that is not abortable.
    pub fn stopping(self) -> anyhow::Error {
        match self {
            TxnError::Unfinished(what) => Unfinished(what).into(),
            other => anyhow!("{other}; stopping (state is intact: a restart resumes exactly)"),
        }
    }
}

impl std::fmt::Display for TxnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TxnError::Abortable(e) => write!(f, "transaction must be aborted: {e}"),
            TxnError::Replaced(e) => write!(f, "transaction aborted by a new producer: {e}"),
            TxnError::InDoubt(e) => write!(f, "transaction committed or aborted, unknown which: {e}"),
            TxnError::Fenced(e) => write!(f, "fenced by another host with the same transactional id: {e}"),
            TxnError::Fatal(e) => write!(f, "fatal producer error: {e}"),
            TxnError::Unfinished(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for TxnError {}

/// The longest one blocking transactional call lasts before it is called again (see
/// `AckedProducer::retrying`).
const CALL_SLICE: Duration = Duration::from_millis(500);

/// librdkafka's default transaction.timeout.ms.
const LIBRDKAFKA_TRANSACTION_TIMEOUT: Duration = Duration::from_secs(60);

/// What a failed transactional call means for the caller.
fn classify(what: &str, error: &KafkaError) -> TxnError {
    let detail = format!("{what}: {error}");
    let KafkaError::Transaction(rd) = error else {
        return TxnError::Abortable(detail);
    };
    if matches!(
        rd.code(),
        RDKafkaErrorCode::Fenced | RDKafkaErrorCode::ProducerFenced | RDKafkaErrorCode::InvalidProducerEpoch
    ) {
        TxnError::Fenced(detail)
    } else if rd.is_fatal() {
        TxnError::Fatal(detail)
    } else {
        TxnError::Abortable(detail)
    }
}

/// Runs a transactional call (given how long it may block) until it succeeds, for at most
/// `ack_timeout`, in short slices: a call that times out is retriable (librdkafka resumes
/// it), and between slices a stop requested meanwhile is noticed, so that a stop during a
/// broker outage gives up when its time for Kafka is over instead of waiting the whole
/// timeout out. Other retriable errors are retried a few times; the rest are classified by
/// what the caller must do.
fn retrying(
    ack_timeout: Duration,
    stop: &Shutdown,
    what: &str,
    mut call: impl FnMut(Duration) -> Result<(), KafkaError>,
) -> Result<(), TxnError> {
    let deadline = Instant::now() + ack_timeout;
    let mut attempts = 0;
    loop {
        let slice = CALL_SLICE.min(stop.wait_limit(deadline.saturating_duration_since(Instant::now())));
        let error = match call(slice) {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        // A fencing or a fatal error says more than that the stop's time is up.
        let final_error = matches!(classify(what, &error), TxnError::Fenced(_) | TxnError::Fatal(_));
        if stop.giving_up() && !final_error {
            return Err(TxnError::Unfinished(format!(
                "stopping with the transaction open: {what} did not finish in the stop's time for Kafka \
                 ({error}); the next start aborts it, and counts its records again"
            )));
        }
        let KafkaError::Transaction(rd) = &error else { return Err(classify(what, &error)) };
        let timed_out = rd.code() == RDKafkaErrorCode::OperationTimedOut;
        if !rd.is_retriable() || rd.txn_requires_abort() || Instant::now() >= deadline {
            return Err(classify(what, &error));
        }
        if !timed_out {
            attempts += 1;
            if attempts >= 10 {
                return Err(classify(what, &error));
            }
            tracing::warn!(attempt = attempts, error = %format!("{what}: {error}"), "retrying");
            std::thread::sleep(Duration::from_millis(100 * attempts));
        }
    }
}

impl AckedProducer {
    fn retrying(&self, what: &str, call: impl FnMut(Duration) -> Result<(), KafkaError>) -> Result<(), TxnError> {
        retrying(self.ack_timeout, &self.stop, what, call)
    }

    /// A producer for the pipeline; `transactional_id` makes it transactional (then call
    /// [`AckedProducer::init_transactions`] before anything else).
    /// Batches stay within `max_message_bytes` (the smallest limit of the topics written), so
    /// a record too large for its topic is refused locally at once (see `send_trimmable`).
    pub fn new(
        kafka: &Connection,
        changelog: &str,
        transactional_id: Option<&str>,
        max_message_bytes: usize,
        ack_timeout: Duration,
        stop: Shutdown,
    ) -> Result<Self> {
        let context = AckContext { changelog: changelog.to_owned(), ..AckContext::default() };
        let mut config = crate::kafka::clients::producer(kafka, transactional_id);
        if !kafka.properties.iter().any(|(k, _)| k == "message.max.bytes") {
            // librdkafka's floor is 1000 bytes.
            config.set("message.max.bytes", max_message_bytes.clamp(1000, 1 << 30).to_string());
        }
        let txn_timeout = config
            .get("transaction.timeout.ms")
            .and_then(|ms| ms.parse().ok())
            .map_or(LIBRDKAFKA_TRANSACTION_TIMEOUT, Duration::from_millis);
        let inner = Arc::new(config.create_with_context(context).context("creating the Kafka producer")?);
        let recipe = Recipe {
            kafka: kafka.clone(),
            changelog: changelog.to_owned(),
            transactional_id: transactional_id.map(str::to_owned),
            max_message_bytes,
        };
        Ok(AckedProducer { inner, ack_timeout, stop, recipe, open_txn: None, txn_timeout })
    }

    /// The producer of `host run` (on `kafka`, which may add to the run's own settings):
    /// given a transactional id (exactly-once), transactional, with its transactions
    /// initialised, which fences an older host with the same id and aborts the transaction a
    /// crashed one left open (so read_committed readers see its end).
    pub fn for_run(
        kafka: &Connection,
        changelog: &str,
        transactional_id: Option<&str>,
        max_message_bytes: usize,
        ack_timeout: Duration,
        stop: &Shutdown,
    ) -> Result<Self> {
        let producer = Self::new(kafka, changelog, transactional_id, max_message_bytes, ack_timeout, stop.clone())?;
        if transactional_id.is_some() {
            producer.init_transactions().map_err(|e| anyhow!("{e}"))?;
            tracing::debug!("transactions initialised");
        }
        Ok(producer)
    }

    /// Per changelog partition, the offset after the last record Kafka acknowledged.
    pub fn changelog_positions(&self) -> BTreeMap<i32, i64> {
        lock(&self.inner.context().changelog_positions).clone()
    }

    /// Registers the transactional id with the broker: fences any older producer with the
    /// same id and aborts the transaction it left open (a crashed host's).
    pub fn init_transactions(&self) -> Result<(), TxnError> {
        self.retrying("initialising transactions", |timeout| self.inner.init_transactions(timeout))
    }

    pub fn begin(&mut self) -> Result<(), TxnError> {
        self.retrying("beginning a transaction", |_| self.inner.begin_transaction())?;
        self.open_txn = Some(OpenTxn { began: Instant::now(), commit_asked: false });
        Ok(())
    }

    /// Commits the open transaction with the input offsets of everything in it: waits for
    /// every record's acknowledgement first (see `drain`), then adds the offsets, then commits.
    pub fn commit(&mut self, offsets: &TopicPartitionList, group: ConsumerGroupMetadata) -> Result<(), TxnError> {
        let committed = self
            .wait_acks()
            .map_err(|e| match e.downcast::<Unfinished>() {
                Ok(Unfinished(what)) => TxnError::Unfinished(what),
                Err(e) => TxnError::Abortable(format!("{e:#}")),
            })
            .and_then(|()| if offsets.count() > 0 { self.send_offsets(offsets, group) } else { Ok(()) })
            .and_then(|()| {
                if let Some(open) = &mut self.open_txn {
                    open.commit_asked = true;
                }
                self.retrying("committing the transaction", |timeout| self.inner.commit_transaction(timeout))
            });
        self.ended(committed)
    }

    /// The end of the open transaction's last call. The coordinator aborts a transaction left
    /// open longer than the transaction timeout (a host cut off from the cluster for longer,
    /// say) and bumps the producer's epoch, and every later call of this producer is answered
    /// as fenced (as if another host with its transactional id had taken over) or as a fatal
    /// error (INVALID_TXN_STATE, seen from an abort under Kafka 4.1). So a fenced or fatal
    /// answer for a transaction open at least that long means it timed out: the producer is
    /// given up for a new one (whose initialisation fences nobody but this one, and finishes
    /// the transaction). If its commit was never asked for, the transaction is aborted and
    /// the caller rewinds as after an abort; if it was, the commit may have landed before the
    /// timeout (its answer lost in the cut), and the caller reads back what Kafka holds
    /// (`InDoubt`). A fencing of a younger transaction is another host's: the caller stops.
    fn ended(&mut self, result: Result<(), TxnError>) -> Result<(), TxnError> {
        let timed_out = self.open_txn.filter(|open| open.began.elapsed() >= self.txn_timeout);
        let result = match (result, timed_out) {
            (Err(TxnError::Fenced(why) | TxnError::Fatal(why)), Some(open)) => {
                let why = format!(
                    "{why}: the transaction was open for {:.1?}, longer than transaction.timeout.ms ({:?}), so \
                     its coordinator aborted it{}",
                    open.began.elapsed(),
                    self.txn_timeout,
                    if open.commit_asked { " unless the commit asked for landed first" } else { "" }
                );
                tracing::warn!(reason = %why, "replacing the transactional producer");
                match self.replace() {
                    Ok(()) if open.commit_asked => Err(TxnError::InDoubt(why)),
                    Ok(()) => Err(TxnError::Replaced(why)),
                    Err(e) => Err(TxnError::Fatal(format!("{why}; making a new producer: {e:#}"))),
                }
            }
            (other, _) => other,
        };
        if !matches!(result, Err(TxnError::Abortable(_) | TxnError::Unfinished(_))) {
            self.open_txn = None; // ended, or gone with the producer it belonged to
        }
        result
    }

    /// Adds the input offsets to the transaction, bounded by `--ack-timeout` (plus a little).
    /// librdkafka's call can wait for ever for the group coordinator when that broker has left
    /// the cluster's metadata (a killed broker: confluentinc/librdkafka#5511; the call's own
    /// timeout is not checked there, #5456), so it runs on a helper thread. Past the bound the
    /// producer is given up for a new one with the same transactional id, whose
    /// initialisation fences the old one and aborts its transaction (the helper thread and
    /// the old producer are left to the stuck call: a one-off leak per such event), and the
    /// caller rewinds as after an abort.
    fn send_offsets(&mut self, offsets: &TopicPartitionList, group: ConsumerGroupMetadata) -> Result<(), TxnError> {
        const WHAT: &str = "adding input offsets to the transaction";
        let (done, result) = std::sync::mpsc::channel();
        let (inner, offsets, ack_timeout, stop) =
            (Arc::clone(&self.inner), offsets.clone(), self.ack_timeout, self.stop.clone());
        std::thread::Builder::new()
            .name("txn-offsets".into())
            .spawn(move || {
                let sent = retrying(ack_timeout, &stop, WHAT, |timeout| {
                    inner.send_offsets_to_transaction(&offsets, &group, timeout)
                });
                let _ = done.send(sent);
            })
            .map_err(|e| TxnError::Fatal(format!("{WHAT}: starting its thread: {e}")))?;
        let deadline = Instant::now() + self.ack_timeout + Duration::from_secs(5);
        loop {
            match result.recv_timeout(Duration::from_millis(100)) {
                Ok(sent) => return sent,
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(TxnError::Fatal(format!("{WHAT}: its thread ended without an answer")));
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            }
            if self.stop.giving_up() {
                return Err(TxnError::Unfinished(format!(
                    "stopping with the transaction open: {WHAT} did not finish in the stop's time for Kafka; \
                     the next start aborts it, and counts its records again"
                )));
            }
            if Instant::now() >= deadline {
                break;
            }
        }
        let why = format!(
            "{WHAT} got no answer within {:?} (--ack-timeout; librdkafka can wait for ever for a group \
             coordinator whose broker left the cluster, confluentinc/librdkafka#5511)",
            self.ack_timeout
        );
        tracing::warn!(reason = %why, "replacing the transactional producer");
        self.replace().map_err(|e| TxnError::Fatal(format!("{why}; making a new producer: {e:#}")))?;
        Err(TxnError::Replaced(why))
    }

    /// Fault injection (`lost-commit-answer`): the transaction just committed is taken as in
    /// doubt, the producer replaced, as when a commit's answer is lost and then fenced.
    pub fn lost_commit_answer(&mut self) -> TxnError {
        let why = "fault injection (lost-commit-answer): the commit landed, its answer taken as lost".to_owned();
        match self.replace() {
            Ok(()) => TxnError::InDoubt(why),
            Err(e) => TxnError::Fatal(format!("{why}; making a new producer: {e:#}")),
        }
    }

    /// A new producer in this one's place, its transactions initialised (which fences the old
    /// one and aborts its open transaction), knowing the changelog positions the old one had
    /// reached.
    fn replace(&mut self) -> Result<()> {
        let Recipe { kafka, changelog, transactional_id, max_message_bytes } = self.recipe.clone();
        let positions = self.changelog_positions();
        let fresh = Self::for_run(
            &kafka,
            &changelog,
            transactional_id.as_deref(),
            max_message_bytes,
            self.ack_timeout,
            &self.stop,
        )?;
        lock(&fresh.inner.context().changelog_positions).extend(positions);
        *self = fresh;
        Ok(())
    }

    /// Aborts the open transaction; its records are never seen by read_committed readers.
    /// `Replaced` (or `InDoubt`) when the transaction had timed out (see `ended`).
    pub fn abort(&mut self) -> Result<(), TxnError> {
        let aborted = self.abort_open();
        self.ended(aborted)
    }

    fn abort_open(&self) -> Result<(), TxnError> {
        // Let what is in flight land first (or fail): aborting while records are still on their
        // way can leave the coordinator and librdkafka disagreeing about the transaction
        // (seen here as a fatal INVALID_TXN_STATE under Kafka 4.1).
        if let Err(e) = self.drain() {
            tracing::debug!(error = %format!("{e:#}"), "records still in flight before the abort");
        }
        // librdkafka purges the outstanding records itself, but the abort completes only once
        // their delivery reports are served, and this producer has no background poller:
        // serve them from a helper thread for the duration of the abort.
        let aborting = std::sync::atomic::AtomicBool::new(true);
        let aborted = std::thread::scope(|scope| {
            scope.spawn(|| {
                while aborting.load(std::sync::atomic::Ordering::Relaxed) {
                    self.inner.poll(Duration::from_millis(10));
                }
            });
            let result = self.retrying("aborting the transaction", |timeout| self.inner.abort_transaction(timeout));
            aborting.store(false, std::sync::atomic::Ordering::Relaxed);
            result
        });
        aborted?;
        self.inner.poll(Duration::ZERO);
        // The aborted records' delivery failures are expected: forget them.
        lock(&self.inner.context().first_failure).take();
        lock(&self.inner.context().too_large).clear();
        lock(&self.inner.context().trimmable).clear();
        Ok(())
    }

    /// Queues one record; waits for queue space if librdkafka's buffer is full.
    pub fn send(&self, topic: &str, key: &[u8], value: &[u8], headers: Option<OwnedHeaders>) -> Result<()> {
        self.queue(topic, None, Some(key), Some(value), headers, 0)
    }

    /// Queues a record whose key or value may be absent (a processor guest's emit).
    pub fn send_record(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: Option<OwnedHeaders>,
    ) -> Result<()> {
        self.queue(topic, None, key, value, headers, 0)
    }

    /// Like `send`, to a given partition (a scale-out shard's changelog partition).
    pub fn send_to(
        &self,
        topic: &str,
        partition: i32,
        key: &[u8],
        value: Option<&[u8]>,
        headers: Option<OwnedHeaders>,
    ) -> Result<()> {
        self.queue(topic, Some(partition), Some(key), value, headers, 0)
    }

    /// Queues a tombstone (a null value: compaction then removes `key`).
    pub fn send_tombstone(&self, topic: &str, key: &[u8]) -> Result<()> {
        self.queue(topic, None, Some(key), None, None, 0)
    }

    /// Like `send`, but if the record is too large for the broker it is re-sent without
    /// its value (see the module doc).
    pub fn send_trimmable(&self, topic: &str, key: &[u8], value: &[u8], headers: OwnedHeaders) -> Result<()> {
        let trimmable = Trimmable {
            topic: topic.to_owned(),
            key: key.to_owned(),
            headers: headers.clone(),
            value_len: value.len(),
        };
        let opaque = {
            let mut table = lock(&self.inner.context().trimmable);
            table.push(trimmable);
            table.len()
        };
        self.queue(topic, None, Some(key), Some(value), Some(headers), opaque)
    }

    fn queue(
        &self,
        topic: &str,
        partition: Option<i32>,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: Option<OwnedHeaders>,
        trimmable: usize,
    ) -> Result<()> {
        let mut record = BaseRecord::<[u8], [u8], usize>::with_opaque_to(topic, trimmable);
        if let Some(key) = key {
            record = record.key(key);
        }
        if let Some(partition) = partition {
            record = record.partition(partition);
        }
        if let Some(value) = value {
            record = record.payload(value);
        }
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
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge), back))
                    if back.delivery_opaque > 0 =>
                {
                    return self.send_trimmed(back.delivery_opaque - 1);
                }
                // A transaction that failed (abortable, or fatally: fenced, say) refuses every
                // send until it ends. That is the commit's to deal with, as for a record whose
                // delivery failed: it aborts, or stops the host when the producer cannot go on.
                Err((e @ KafkaError::MessageProduction(RDKafkaErrorCode::State | RDKafkaErrorCode::Fatal), _))
                    if self.open_txn.is_some() =>
                {
                    let refused = format!("{topic}: refused in a failed transaction ({})", self.explain(&e));
                    lock(&self.inner.context().first_failure).get_or_insert(refused);
                    return Ok(());
                }
                Err((e, _)) => return Err(anyhow!("producing to {topic}: {}", self.explain(&e))),
            }
        }
    }

    /// A produce error, with the producer's fatal error when there is one: a fenced
    /// transactional producer fails its next send with a bare "Fatal", and the reason is
    /// only there (another host with the same transactional id took over).
    fn explain(&self, error: &KafkaError) -> String {
        match (self.fenced(), self.inner.client().fatal_error()) {
            (Some(fenced), _) => fenced.to_string(),
            (None, Some((code, reason))) => format!("{error} ({code:?}: {reason})"),
            (None, None) => error.to_string(),
        }
    }

    /// The producer's fatal error when it is a fencing (another host with the same
    /// transactional id took over): what the caller must report, whatever call met it.
    fn fenced(&self) -> Option<TxnError> {
        match self.inner.client().fatal_error()? {
            (RDKafkaErrorCode::Fenced, reason) => {
                Some(TxnError::Fenced(format!("{reason}; stopping (state is intact)")))
            }
            _ => None,
        }
    }

    fn send_trimmed(&self, index: usize) -> Result<()> {
        let (topic, key, headers) = {
            let table = lock(&self.inner.context().trimmable);
            let t = &table[index];
            let note = format!("{} bytes, too large for topic {}", t.value_len, t.topic);
            tracing::warn!(topic = %t.topic, bytes = t.value_len, "record too large for its topic: sent without its value");
            (
                t.topic.clone(),
                t.key.clone(),
                t.headers.clone().insert(Header { key: "value.omitted", value: Some(&note) }),
            )
        };
        self.queue(&topic, None, Some(&key), Some(&[]), Some(headers), 0)
    }

    /// Waits until every record sent so far is acknowledged (or has failed after
    /// librdkafka's own retries, bounded by `message.timeout.ms`).
    pub fn wait_acks(&self) -> Result<()> {
        self.drain()?;
        let too_large = std::mem::take(&mut *lock(&self.inner.context().too_large));
        if !too_large.is_empty() {
            for index in too_large {
                self.send_trimmed(index)?;
            }
            self.drain()?;
        }
        // Everything is delivered: no opaque can point into the table any more.
        lock(&self.inner.context().trimmable).clear();
        let failure = lock(&self.inner.context().first_failure).take();
        match failure {
            None => Ok(()),
            // Purged because the producer was fenced: say so, that is what to act on.
            Some(f) => Err(match self.fenced() {
                Some(fenced) => anyhow!("{fenced}"),
                None => anyhow!("Kafka did not acknowledge a record: {f}"),
            }),
        }
    }

    /// Waits until every record is delivered (or failed) and its delivery report served.
    /// rust-rdkafka's `flush` polls in 100 ms steps, which would add up to 100 ms to every
    /// batch, so it is called with a 1 ms budget in a loop: each call still does what a flush
    /// must (send at once, wake the broker threads), without the coarse sleep. Deliveries end
    /// either way within `message.timeout.ms`.
    /// Gives up after `ack_timeout`: the caller then stops without writing state or committing,
    /// which is always safe, and a restart resumes exactly. A bounded wait turns any client
    /// stall (seen occasionally across a broker restart) into a clear exit instead of a hang.
    fn drain(&self) -> Result<()> {
        let deadline = Instant::now() + self.ack_timeout;
        loop {
            match self.inner.flush(Duration::from_millis(1)) {
                Ok(()) => break,
                Err(KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut)) => {}
                Err(e) => return Err(anyhow!("waiting for Kafka acknowledgements: {e}")),
            }
            if self.stop.giving_up() {
                return Err(Unfinished(format!(
                    "stopping with {} records Kafka did not acknowledge in the stop's time: their batch reached \
                     neither state nor the group's offsets, so the next start counts it (as after a crash)",
                    self.inner.in_flight_count()
                ))
                .into());
            }
            if Instant::now() > deadline {
                return Err(anyhow!(
                    "Kafka acknowledged nothing for {:?} (--ack-timeout) with {} records in flight; stopping \
                     without writing state or committing: restart the host (it resumes exactly) once the \
                     brokers answer",
                    self.ack_timeout,
                    self.inner.in_flight_count()
                ));
            }
        }
        // Every record has its delivery report queued; serve them (bounded: the queue only
        // holds what was just delivered, plus transient error events).
        for _ in 0..1000 {
            if self.inner.in_flight_count() == 0 {
                break;
            }
            self.inner.poll(Duration::from_millis(1));
        }
        Ok(())
    }

    /// Serves delivery callbacks of records nobody waits for (board snapshots).
    pub fn poll(&self) {
        self.inner.poll(Duration::ZERO);
    }
}
