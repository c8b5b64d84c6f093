//! librdkafka client configurations. Every non-default setting says why on its line.

use rdkafka::client::ClientContext;
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::{ClientConfig, TopicPartitionList};

use std::time::Duration;

use crate::kafka::Connection;
use crate::process::shutdown::Shutdown;

/// The admin client (topic checks, creation, deletion).
pub fn admin(kafka: &Connection) -> ClientConfig {
    let mut config = base(kafka);
    apply_overrides(&mut config, kafka);
    config
}

fn base(kafka: &Connection) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", &kafka.brokers);
    config
}

/// Consumer prefetch depth (librdkafka defaults: 100000 messages, 1 MiB per partition fetch),
/// bounded in memory by queued.max.messages.kbytes. Deeper prefetch keeps the fetcher busy
/// while the pipeline works: the benchmark's host rate went from ~180k to ~350k orders/s,
/// and raw consumption from ~0.3M to ~1M records/s (bench/RESULTS.md).
const PREFETCH_MESSAGES: &str = "1000000";
const PREFETCH_PARTITION_BYTES: &str = "8388608";
/// The changelog reader's queue instead (see `reader`): a deep one made a 1M-key restore no
/// faster and its peak RSS ~380 MiB instead of ~220; a short refill backoff made it faster.
const READER_QUEUE_MESSAGES: &str = "50000";
const FETCH_QUEUE_BACKOFF_MS: &str = "5";

/// The input consumer of `host run`.
pub fn consumer(kafka: &Connection, group: &str, instance_id: Option<&str>, stop_at_end: bool) -> ClientConfig {
    let mut config = base(kafka);
    if stop_at_end {
        // Tells the pipeline when a partition has been consumed to its end.
        config.set("enable.partition.eof", "true");
    }
    if let Some(id) = instance_id {
        // Static membership: a restart (or crash and restart) resumes without a rebalance.
        config.set("group.instance.id", id);
    }
    config
        .set("group.id", group)
        // Offsets are committed by the pipeline only after the changelog and state are durable.
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        // A new group counts the topic from its beginning, not just what arrives after start.
        .set("auto.offset.reset", "earliest")
        // Incremental rebalances: partitions that stay assigned keep flowing.
        .set("partition.assignment.strategy", "cooperative-sticky")
        // A fetch that finds too little data waits at the broker for at most this long (default
        // 500 ms). Partitions become fetchable one by one as their offsets arrive, so the first
        // fetch after an assignment can hold only a partition already at its end: it then sat
        // out the whole 500 ms while the others had records (seen in the exactly-once restart
        // benchmark: first records 0.5 s late in about a third of the restarts).
        .set("fetch.wait.max.ms", "100")
        // Prefetch deeper, so fetching goes on while a batch waits for its acknowledgements.
        .set("queued.min.messages", PREFETCH_MESSAGES)
        .set("max.partition.fetch.bytes", PREFETCH_PARTITION_BYTES);
    apply_overrides(&mut config, kafka);
    config
}

/// The producer of changelog, board and dead-letter records; transactional when given an id.
pub fn producer(kafka: &Connection, transactional_id: Option<&str>) -> ClientConfig {
    let mut config = base(kafka);
    if let Some(id) = transactional_id {
        // Kafka's default transaction.timeout.ms (60 s) bounds how long a crashed host's open
        // transaction can hold back read_committed readers; the restarted host aborts it at once.
        config.set("transactional.id", id);
    }
    config
        // Retries must not reorder or duplicate: the changelog's last value per key must be the newest.
        .set("enable.idempotence", "true")
        .set("acks", "all")
        // The pipeline flushes every batch and waits for it; lingering only adds latency.
        .set("linger.ms", "1")
        // Changelog values are 8 bytes: keys dominate, and they compress well.
        .set("compression.type", "lz4");
    // message.max.bytes is set by AckedProducer::new to the topics' own limit.
    apply_overrides(&mut config, kafka);
    config
}

/// A consumer that reads a topic by assignment, without a group's committed offsets
/// (restore, and the tests' readers). librdkafka still wants a group id to exist.
pub fn reader(kafka: &Connection, group: &str) -> ClientConfig {
    let mut config = base(kafka);
    config
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        // Tells us when a partition has been read to its current end, even when the last
        // offset is a transaction marker that is never delivered as a message.
        .set("enable.partition.eof", "true")
        // Records of aborted transactions never reach state (librdkafka's default, made explicit).
        .set("isolation.level", "read_committed")
        .set("auto.offset.reset", "earliest")
        // A bulk read: once a partition's fetch queue is full, librdkafka waits
        // fetch.queue.backoff.ms (default 1 s) before fetching for it again, which starves a
        // fast reader. A short backoff with a modest queue reads 1M keys in ~1.2 s instead of
        // ~2.0 s here, with a lower peak RSS (~215 MiB) than a deep queue (~350 MiB).
        .set("queued.min.messages", READER_QUEUE_MESSAGES)
        .set("fetch.queue.backoff.ms", FETCH_QUEUE_BACKOFF_MS)
        // The reader stops at end offsets it knows: a fetch that finds nothing new should say
        // so at once (partition EOF) rather than long-poll for 500 ms, the default.
        .set("fetch.wait.max.ms", "10");
    apply_overrides(&mut config, kafka);
    config
}

/// A client for high watermarks (the ends of partitions, open transactions included): a
/// read_committed consumer is given the last stable offset instead.
pub fn watermark_reader(kafka: &Connection) -> anyhow::Result<HostConsumer> {
    use anyhow::Context;
    let mut config = reader(kafka, &format!("streamhost-watermarks-{}", std::process::id()));
    config.set("isolation.level", "read_uncommitted");
    config.create_with_context(HostContext::default()).context("creating a watermark reader")
}

/// The default static membership id: stable across restarts of the host that owns
/// `state_dir` on this machine, different for every other state dir or machine.
pub fn default_instance_id(group: &str, state_dir: &std::path::Path) -> String {
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let dir = std::fs::canonicalize(state_dir).unwrap_or_else(|_| state_dir.to_owned());
    // FNV-1a: short, stable across builds (std's hasher is not).
    let hash = dir
        .as_os_str()
        .as_encoded_bytes()
        .iter()
        .fold(0xcbf29ce484222325u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x100000001b3));
    format!("{group}-{}-{:08x}", hostname.trim(), hash as u32)
}

/// The static membership id of a host: `--instance-id` as given (`none`: dynamic
/// membership), else [`default_instance_id`].
pub fn instance_id(given: Option<&str>, group: &str, state_dir: &std::path::Path) -> Option<String> {
    match given {
        Some("none") => None,
        Some(id) => Some(id.to_owned()),
        None => Some(default_instance_id(group, state_dir)),
    }
}

/// The user's pass-through properties (SASL/SSL and the like) are applied last, so they win
/// over our defaults.
fn apply_overrides(config: &mut ClientConfig, kafka: &Connection) {
    for (key, value) in &kafka.properties {
        config.set(key, value);
    }
}

/// Context of the host's consumers: librdkafka also reports "partition end" through the
/// error callback, which rust-rdkafka logs as an error; it is an expected event here. Its
/// rebalance handling is safe while the consumer closes (see [`apply_rebalance`]).
#[derive(Default)]
pub struct HostContext {
    /// The group assigns eagerly (a `partition.assignment.strategy` without cooperative-sticky,
    /// through --kafka-config), not incrementally.
    eager: bool,
}

impl ClientContext for HostContext {
    fn error(&self, error: KafkaError, reason: &str) {
        log_client_error(error, reason)
    }
}

fn log_client_error(error: KafkaError, reason: &str) {
    match error {
        KafkaError::PartitionEOF(_) | KafkaError::Global(RDKafkaErrorCode::PartitionEOF) => {
            tracing::trace!("librdkafka: {reason}")
        }
        _ => tracing::error!("librdkafka: {error}: {reason}"),
    }
}

impl ConsumerContext for HostContext {
    fn rebalance(
        &self,
        consumer: &rdkafka::consumer::BaseConsumer<Self>,
        err: rdkafka::types::RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        apply_rebalance(consumer, err, tpl, self.eager)
    }
}

/// Does what a rebalance event asks (assign or unassign its partitions) without ever asking
/// librdkafka anything else. rust-rdkafka's default handler first asks for the rebalance
/// protocol; that request, like every request to the group, is never answered once the group
/// has terminated (its handler drops requests unanswered), and waits forever. A consumer that
/// closes while its group join is under way meets exactly that: the join's assignment is
/// still queued when closing terminates the group, and serving it hung the host at exit
/// (librdkafka #4041, rust-rdkafka #509). So: the protocol is known from our own settings,
/// and an event that arrives after the group terminated is stale and left alone (what it
/// would assign or revoke is gone with the group). [`close`] bounds whatever is left.
fn apply_rebalance<C: ConsumerContext>(
    consumer: &rdkafka::consumer::BaseConsumer<C>,
    err: rdkafka::types::RDKafkaRespErr,
    tpl: &TopicPartitionList,
    eager: bool,
) {
    use rdkafka::consumer::Consumer;
    use rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS;
    if consumer.closed() {
        tracing::debug!("rebalance event after the consumer closed: ignored");
        return;
    }
    let assign = err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS;
    let done = match (assign, eager) {
        (true, false) => consumer.incremental_assign(tpl),
        (false, false) => consumer.incremental_unassign(tpl),
        (true, true) => consumer.assign(tpl),
        (false, true) => consumer.unassign(),
    };
    if let Err(e) = done {
        tracing::error!(error = %e, assign, "applying a rebalance failed");
    }
}

/// True for a consumer error (or a look-up's) that passes by itself (a broker away, a leader
/// moving): the caller waits instead of failing.
pub fn is_transient(error: &KafkaError) -> bool {
    use RDKafkaErrorCode::*;
    let code = match error {
        KafkaError::MessageConsumption(code) | KafkaError::Global(code) | KafkaError::MetadataFetch(code) => *code,
        _ => return false,
    };
    matches!(
        code,
        BrokerTransportFailure
            | AllBrokersDown
            | OperationTimedOut
            | RequestTimedOut
            | NotLeaderForPartition
            | LeaderNotAvailable
            | NotCoordinator
            | CoordinatorNotAvailable
            | NetworkException
            | Resolve
    )
}

/// A consumer with [`HostContext`].
pub type HostConsumer = rdkafka::consumer::BaseConsumer<HostContext>;

/// The input consumer of `host run`, subscribed by the caller.
pub fn input_consumer(
    kafka: &Connection,
    group: &str,
    instance_id: Option<&str>,
    stop_at_end: bool,
) -> anyhow::Result<HostConsumer> {
    use anyhow::Context;
    let config = consumer(kafka, group, instance_id, stop_at_end);
    let eager = !config.get("partition.assignment.strategy").is_some_and(|s| s.contains("cooperative"));
    config.create_with_context(HostContext { eager }).context("creating the Kafka consumer")
}

/// Longest a clean exit waits for the consumer to close (to leave the group, for a dynamic
/// member, and land its last commits): everything it owes is committed by then.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// Closes `consumer` on a thread of its own and waits for it at most [`CLOSE_WAIT`] (less when
/// a stop is due sooner). Past that the process goes on to exit without it: state and offsets
/// are committed, so nothing depends on the close but the group's notice that this member
/// left, which a session timeout gives as well. (rust-rdkafka closes a consumer when it is
/// dropped, serving rebalance events until librdkafka says it closed.)
pub fn close<C: ConsumerContext + 'static>(consumer: rdkafka::consumer::BaseConsumer<C>, shutdown: &Shutdown) {
    let wait = shutdown.wait_limit(CLOSE_WAIT);
    let (closed, done) = std::sync::mpsc::channel();
    let started = std::time::Instant::now();
    let spawned = std::thread::Builder::new().name("consumer-close".into()).spawn(move || {
        drop(consumer);
        let _ = closed.send(());
    });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot close the Kafka consumer on a thread: exiting without closing it");
        return;
    }
    match done.recv_timeout(wait) {
        Ok(()) => tracing::debug!(ms = started.elapsed().as_millis() as u64, "consumer closed"),
        Err(_) => tracing::warn!(
            "the Kafka consumer did not close within {}: exiting without it (state and offsets are committed; \
             the group notices this member gone after its session timeout)",
            humantime::format_duration(Duration::from_millis(wait.as_millis() as u64))
        ),
    }
}

/// The consumer of a `--scale-out` host: cooperative-sticky assignment always (a revocation
/// must take only the partitions that move), with static membership as for `host run`.
pub fn scale_out_consumer(
    kafka: &Connection,
    group: &str,
    instance_id: Option<&str>,
    stop_at_end: bool,
) -> ClientConfig {
    let mut config = consumer(kafka, group, instance_id, stop_at_end);
    // After the user's overrides: the revocation handling below needs incremental rebalances.
    config.set("partition.assignment.strategy", "cooperative-sticky");
    config
}

/// Partitions a rebalance gave or took, for the scale-out loop to act on between batches.
#[derive(Default, Debug)]
pub struct Rebalances {
    /// Assigned (already `incremental_assign`ed): their shards are to be opened.
    pub assigned: Vec<(String, i32)>,
    /// Taken away, but NOT yet unassigned: the loop finishes and commits what it has of
    /// them, closes their shards, then calls `incremental_unassign` (and the group moves them
    /// only then). `lost`: the group already gave them away (session timeout): nothing of
    /// them may be committed.
    pub revoked: Option<TopicPartitionList>,
    pub lost: bool,
}

/// Context of a `--scale-out` host's consumer: like [`HostContext`], and it defers
/// revocations to the loop (see [`Rebalances`]) until the loop is over. librdkafka calls
/// `rebalance` from `poll`, on the loop's own thread.
#[derive(Default)]
pub struct ScaleOutContext {
    pub rebalances: std::sync::Mutex<Rebalances>,
    /// Set once the loop has finished and committed everything: the consumer is closing, and
    /// a revocation (closing revokes everything) is applied at once.
    closing: std::sync::atomic::AtomicBool,
    /// At-least-once's last commit, once the loop is over (see [`ScaleOutContext::last_commit`]).
    last: std::sync::Mutex<LastCommit>,
}

/// The offsets a stopping scale-out host still has to land: next offset per partition still
/// assigned. A revocation takes its partitions out (after committing them): from then on
/// their new owner commits them.
#[derive(Default)]
struct LastCommit {
    offsets: Option<TopicPartitionList>,
}

impl ScaleOutContext {
    /// What rebalances happened since the last call.
    pub fn take(&self) -> Rebalances {
        std::mem::take(&mut *self.rebalances.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// The loop is over: rebalances are applied as they come from now on (see [`close`]).
    pub fn closing(&self) {
        self.closing.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// At-least-once, the loop is over and `offsets` is everything it processed: stage A's
    /// input offsets are in no state, so they must land before their partitions go to another
    /// host, or it counts their last deltas again. From now on rebalances are applied at once,
    /// and a revocation (closing revokes everything) first commits its partitions' offsets
    /// synchronously (the group moves them only after). What is left is
    /// [`ScaleOutContext::pending_commit`].
    pub fn last_commit(&self, offsets: TopicPartitionList) {
        self.last.lock().unwrap_or_else(|p| p.into_inner()).offsets = Some(offsets);
        self.closing();
    }

    /// The last commit's offsets of the partitions still assigned (none: nothing left to land).
    pub fn pending_commit(&self) -> Option<TopicPartitionList> {
        let last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        last.offsets.clone().filter(|offsets| offsets.count() > 0)
    }

    /// The last commit landed: nothing is left for a revocation (closing's) to commit.
    pub fn last_commit_landed(&self) {
        self.last.lock().unwrap_or_else(|p| p.into_inner()).offsets = Some(TopicPartitionList::new());
    }

    /// A revocation after the loop: the last commit's share of `revoked`, committed (and taken
    /// out of what is left to land) before they are unassigned.
    fn commit_before_revoking(&self, consumer: &rdkafka::consumer::BaseConsumer<Self>, revoked: &TopicPartitionList) {
        use rdkafka::consumer::Consumer;
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let Some(offsets) = last.offsets.as_mut() else { return };
        let leaving: Vec<(String, i32)> =
            revoked.elements().iter().map(|e| (e.topic().to_owned(), e.partition())).collect();
        let mut share = TopicPartitionList::new();
        let mut staying = TopicPartitionList::new();
        for e in offsets.elements() {
            let list = if leaving.contains(&(e.topic().to_owned(), e.partition())) { &mut share } else { &mut staying };
            if list.add_partition_offset(e.topic(), e.partition(), e.offset()).is_ok()
                && !e.metadata().is_empty()
                && let Some(mut added) = list.find_partition(e.topic(), e.partition())
            {
                added.set_metadata(e.metadata());
            }
        }
        *offsets = staying;
        drop(last);
        if share.count() > 0
            && let Err(e) = consumer.commit(&share, rdkafka::consumer::CommitMode::Sync)
        {
            tracing::warn!(
                error = %e,
                "the stop's offset commit of revoked partitions failed: their next owner may count their last \
                 batch again (at-least-once)"
            );
        }
    }
}

impl ClientContext for ScaleOutContext {
    fn error(&self, error: KafkaError, reason: &str) {
        log_client_error(error, reason)
    }
}

impl ConsumerContext for ScaleOutContext {
    fn rebalance(
        &self,
        consumer: &rdkafka::consumer::BaseConsumer<Self>,
        err: rdkafka::types::RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        use rdkafka::consumer::Consumer;
        use rdkafka::types::RDKafkaRespErr::{
            RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS, RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS,
        };
        if self.closing.load(std::sync::atomic::Ordering::SeqCst) {
            if err == RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS && !consumer.assignment_lost() {
                self.commit_before_revoking(consumer, tpl);
            }
            return apply_rebalance(consumer, err, tpl, false);
        }
        let mut rebalances = self.rebalances.lock().unwrap_or_else(|p| p.into_inner());
        let partitions = || tpl.elements().iter().map(|e| (e.topic().to_owned(), e.partition())).collect::<Vec<_>>();
        match err {
            RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                tracing::info!(partitions = ?partitions(), "partitions assigned");
                if let Err(e) = consumer.incremental_assign(tpl) {
                    tracing::error!(error = %e, "incremental assign failed");
                }
                rebalances.assigned.extend(partitions());
            }
            RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let lost = consumer.assignment_lost();
                tracing::info!(partitions = ?partitions(), lost, "partitions revoked: finishing them first");
                let revoked = rebalances.revoked.get_or_insert_with(TopicPartitionList::new);
                for e in tpl.elements() {
                    let _ = revoked.add_partition(e.topic(), e.partition());
                }
                rebalances.lost |= lost;
            }
            other => tracing::error!(error = ?other, "rebalance failed"),
        }
    }
}

/// A consumer with [`ScaleOutContext`].
pub type ScaleOutConsumer = rdkafka::consumer::BaseConsumer<ScaleOutContext>;
