//! The data path of `host run --scale-out`: several hosts in one consumer group share one
//! job, each keeping the state of the partitions Kafka assigns it (docs/scale-out.md).
//!
//! Every poll, top to bottom:
//! - **stage A**, records of input partitions: the guest -> its deltas, summed per key, are
//!   produced to the repartition topic keyed by counter key (murmur2, as Java clients do,
//!   so a key always lands in the same partition). Records counted and skipped travel the
//!   same way, as deltas of reserved keys (`0xFF` + name). Stage A keeps no state.
//! - **stage B**, records of repartition partition p: shard p (a RocksDB of its own,
//!   `<state-dir>/shard-<p>`) adds the deltas; the new values go to changelog partition p,
//!   then into the shard with the repartition offset they reflect, in one atomic write.
//! - **commit**: the offsets of both stages, once all of the above is durable.
//!
//! The loop (`engine::cycle`) moves polls as it moves a single host's batches: a poll's
//! input is with the guest thread (which writes nothing) while the one before it is sent and
//! the one before that finished, so its output is computed on shards that hold every earlier
//! poll, and the durable writes happen in the committer's order, one poll after another.
//!
//! So each key's counter lives in exactly one shard (Kafka Streams' `groupBy().count()`), and
//! the global board is the guest's top-n over the shards' local top-Ns (`host board`).
//!
//! # Guarantees
//!
//! **at-least-once**: per poll, the repartition, changelog and dead-letter records are
//! acknowledged, then the shards written, then the offsets committed. Stage B is exact as a
//! single host is (a shard skips repartition records below the offset it holds; a shard
//! behind its changelog replays the tail when opened), with one exception: a crash while a
//! shard's changelog records are being acknowledged can leave part of them there, and the
//! batch's deltas are then added again on top for those keys. Stage A holds no offsets in
//! state: a crash between its acknowledgements and its commit sends the deltas of that poll
//! again. So counts never fall below the truth, and exceed it by at most the deltas in
//! flight at a crash (Kafka Streams' at-least-once has the same shape).
//!
//! **exactly-once**: one Kafka transaction per `--commit-interval` carries the repartition,
//! changelog, dead-letter and board records and the offsets of both stages, sent with the
//! group's metadata so a host that lost its partitions is fenced. Shards apply a transaction
//! after it commits; a crash in between is repaired by the tail replay when the shard is
//! opened again, here or on another host. Exact.
//!
//! # Windows (`--window`)
//!
//! Stage A does what a single host does with a record: it assigns it to the windows still
//! open by its input partition's stream time and skips (and dead-letters) a late one; its
//! deltas go to the repartition topic under windowed counter keys, so each (window, key)
//! counter lives in one shard. A partition's stream time is committed with its offset (offset
//! metadata, as Kafka Streams keeps its partition time), so whoever owns the partition next,
//! after a rebalance, a crash or an abort, judges its records as the first owner did. With
//! every poll, stage A also reports the stream times of its input partitions to every shard;
//! a shard keeps them (state and changelog, like a single host's) and drops the windows the
//! slowest input partition has left behind by more than the retention, in the same batch,
//! tombstoning their counters in its changelog partition. A delta for a window a shard has
//! dropped already is ignored, with a warning: it comes from an input partition that held no
//! records when the shard opened and then received records older than the windows the others
//! had moved past (a single host skips and dead-letters such a record at its input; here it
//! is counted as processed, and its delta is lost to the dropped window). With `--emit final`, a
//! shard produces its board of each window it has counts in once the window is complete by
//! those stream times (`window/<start>/shard/<p>`: the window's final board is the union of
//! the shards'), records how far it went as state, keeps a window until its board is out, and
//! publishes a marker of how far its final boards go (`final/shard/<p>`).
//!
//! # Rebalances (cooperative-sticky)
//!
//! Revoked partitions are finished before they are given up: the poll under way is written
//! and committed (the open transaction too), their shards closed, and only then
//! `incremental_unassign` lets the group move them, so the next owner starts exactly where
//! this one stopped. An assigned repartition partition's shard is opened and brought up to
//! its changelog partition's end (only the tail when the shard already holds state) before
//! any of its records is counted; partitions that stay keep their shards.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::BorrowedMessage;
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::changelog;
use crate::engine::committer::{Metadata, Offsets, Positions, Sent, Tasks, Timings};
use crate::engine::config::{Emit, Guarantee, RunConfig};
use crate::engine::cycle::{self, Engine, Rebalance, StopHost, Topology};
use crate::engine::fault::{self, Step};
use crate::engine::records::{
    ConsumerFailed, Group, NO_VALUE, checked_top_n, group_for, guest_event_times, open_windows, skip_record, take_once,
};
use crate::engine::standby::{StandbyConfig, Standbys};
use crate::engine::task::{Durability, Task};
use crate::guest::reload::GuestReload;
use crate::guest::{Counter, Records};
use crate::kafka::clients::{ScaleOutConsumer, ScaleOutContext};
use crate::kafka::commit::AnsweredCommits;
use crate::kafka::producer::AckedProducer;
use crate::process::shutdown::Shutdown;
use crate::state::{Change, Totals, decode_u64, meta};
use crate::window::{self, Millis, WindowSpec};

/// exactly-once: Kafka's transaction.timeout.ms for scale-out hosts (see `run`).
const TRANSACTION_TIMEOUT_MS: &str = "10000";

/// How long one seek of a newly opened shard's partition may block, and for how long a seek
/// librdkafka refuses is tried again (see `finish_opening`).
const SEEK_WAIT: Duration = Duration::from_secs(10);
const SEEK_RETRY_FOR: Duration = Duration::from_secs(30);

/// How often an idle host with `--stop-at-end` asks whether the whole job is done.
const DONE_CHECK_EVERY: Duration = Duration::from_millis(500);
/// The longest a stop waits for its last offset commit to land (less within a stop's bound):
/// a group whose member left in the middle of a join settles within a session timeout.
const LAST_COMMIT_WAIT: Duration = Duration::from_secs(30);
/// Between two attempts of the last commit while the group rebalances.
const LAST_COMMIT_RETRY: Duration = Duration::from_millis(200);

/// `host run --scale-out`.
pub fn run(
    args: RunConfig,
    guest: Box<dyn Counter + Send>,
    reload: Option<GuestReload>,
    shutdown: &Shutdown,
    http: &crate::serve::http::Shared,
) -> Result<()> {
    args.check_guest(guest.as_ref())?;
    let state_dir = args.state_dir.clone();
    if state_dir.join("CURRENT").exists() {
        bail!(
            "state dir {} holds a single host's state; a --scale-out host keeps one shard per partition \
             under its state dir. Give this host another --state-dir (and a new changelog topic and group)",
            state_dir.display()
        );
    }
    shutdown.starting("checking the topics");
    let checked = crate::kafka::topics::check(&args.kafka, &args.topics, args.create_topics, args.partitions)?;
    let exactly_once = args.exactly_once();
    let instance_id = crate::kafka::clients::instance_id(args.instance_id.as_deref(), &args.group, &state_dir);
    // Keys go to repartition partitions the way Java clients place them. A host that dies
    // with a transaction open holds back every read_committed reader of the partitions it
    // wrote to until the transaction times out (nobody else can fence its id): 10 s, as Kafka
    // Streams does, rather than librdkafka's 60 s. (Both can be overridden by --kafka-config.)
    let mut kafka = args.kafka.clone();
    kafka.properties.insert(0, ("partitioner".into(), "murmur2_random".into()));
    if exactly_once {
        kafka.properties.insert(0, ("transaction.timeout.ms".into(), TRANSACTION_TIMEOUT_MS.into()));
    }
    let producer = AckedProducer::for_run(
        &kafka,
        &args.topics.changelog,
        args.transactional_id().as_deref(),
        checked.max_message_bytes,
        args.ack_timeout,
        shutdown,
    )?;
    lock(&http.shards).count = checked.shards;
    // A client id of this host's own (unless --kafka-config gives one): how its standby
    // keeper finds it among the group's members.
    let given_client_id = args.kafka.properties.iter().find(|(k, _)| k == "client.id").map(|(_, v)| v.clone());
    let client_id = given_client_id.clone().unwrap_or_else(|| {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        format!("streamhost-{}-{nanos:x}", std::process::id())
    });
    let repartition = args.scale_out.as_ref().context("a repartitioned run without --scale-out")?.repartition.clone();
    tracing::info!(
        guest = %guest.describe(),
        guarantee = args.guarantee.name(),
        input = %args.topics.input,
        repartition = %repartition,
        group = %args.group,
        instance_id = instance_id.as_deref().unwrap_or("(dynamic)"),
        state_dir = %state_dir.display(),
        "host running (scale-out)"
    );
    let guest = crate::guest::thread::GuestThread::spawn(guest)?;
    let mut engine = Engine::new(&args, producer, guest, reload, shutdown, http)?;
    let mut standbys = match args.scale_out.as_ref().map_or(0, |s| s.standby_replicas) {
        0 => None,
        replicas => Some(Standbys::start(
            StandbyConfig {
                kafka: args.kafka.clone(),
                group: args.group.clone(),
                client_id: client_id.clone(),
                changelog: args.topics.changelog.clone(),
                repartition: repartition.clone(),
                state_dir: state_dir.clone(),
                replicas,
            },
            shutdown,
        )?),
    };
    let partitions = checked.shards.context("the topic check counts the shards of a --scale-out job")?;
    // One consumer after another: a consumer that fails for good (`records::ConsumerFailed`)
    // is given up for a new one, as Kafka Streams replaces a stream thread; the shards open
    // again from their dirs and the input resumes from the group's committed offsets, as after
    // a restart, without one.
    loop {
        let mut consumer_config =
            crate::kafka::clients::scale_out_consumer(&args.kafka, &args.group, instance_id.as_deref(), false);
        if given_client_id.is_none() {
            consumer_config.set("client.id", &client_id);
        }
        let consumer: ScaleOutConsumer =
            consumer_config.create_with_context(ScaleOutContext::default()).context("creating the Kafka consumer")?;
        // Closed only after a clean run, once the loop has committed everything
        // (`config::close`); on an error the process exits at once, like a crash.
        let consumer = std::mem::ManuallyDrop::new(consumer);
        consumer
            .subscribe(&[&args.topics.input, &repartition])
            .context("subscribing to the input and repartition topics")?;
        let mut job = Repartitioned {
            shards: Shards {
                open: BTreeMap::new(),
                txn: BTreeMap::new(),
                processed: Offsets::new(),
                submitted: Offsets::new(),
                metadata: Metadata::new(),
                in_doubt: BTreeMap::new(),
                shutdown: shutdown.clone(),
                input_stream_times: BTreeMap::new(),
                input: args.topics.input.clone(),
                repartition: repartition.clone(),
                changelog: args.topics.changelog.clone(),
                windows: args.windows.as_ref().map(|w| w.spec),
                emit: args.emit(),
            },
            partitions,
            repartition: repartition.clone(),
            opening: BTreeMap::new(),
            seeking: BTreeMap::new(),
            not_owned: crate::state::shard_dirs(&state_dir)?.into_keys().map(|p| (p, Instant::now())).collect(),
            held: http.shards.clone(),
            standbys: standbys.take(),
            watermarks: None,
            last_done_check: Instant::now(),
            args: args.clone(),
        };
        shutdown.working("counting");
        match cycle::run(&mut engine, &mut job, &consumer) {
            Err(e) if e.downcast_ref::<ConsumerFailed>().is_some() && !shutdown.requested() => {
                tracing::warn!(
                    error = %format!("{e:#}"),
                    "the Kafka consumer failed for good: a new one takes its place (shards open again from their dirs, \
                     the input resumes from the group's committed offsets)"
                );
                engine.ready.store(false, std::sync::atomic::Ordering::Relaxed);
                engine.committer.drop_transaction()?;
                standbys = job.standbys.take();
                job.close_everything();
                drop(job);
                let consumer = std::mem::ManuallyDrop::into_inner(consumer);
                consumer.context().closing(); // nothing of its own to finish: revocations at once
                crate::kafka::clients::close(consumer, shutdown);
                continue;
            }
            ran => ran?,
        }
        shutdown.working("closing the Kafka consumer");
        let consumer = std::mem::ManuallyDrop::into_inner(consumer);
        consumer.context().closing();
        crate::kafka::clients::close(consumer, shutdown);
        return Ok(());
    }
}

/// The repartitioned topology: input -> guest -> repartition topic -> a state task (shard)
/// per repartition partition this host is assigned.
struct Repartitioned {
    args: RunConfig,
    repartition: String,
    /// The state tasks: the shards this host owns and counts.
    shards: Shards,
    /// Shards being opened (caught up with the changelog) while their partition is paused.
    opening: BTreeMap<i32, std::thread::JoinHandle<Result<Shard>>>,
    /// Shards open whose paused partition is not yet sought to the offset they hold (see
    /// `finish_opening`), and since when.
    seeking: BTreeMap<i32, (Shard, Instant)>,
    /// Shards on disk of partitions this host does not own, and since when: deleted after
    /// `--shard-cleanup-delay`, so a host keeps only its partitions' state (and, for a while,
    /// a partition's that may come back).
    not_owned: BTreeMap<i32, Instant>,
    /// Warm copies of other hosts' shards (`--standby-replicas`).
    standbys: Option<Standbys>,
    /// For --http: the shards this host holds.
    held: Arc<std::sync::Mutex<crate::serve::http::HeldShards>>,
    /// `--stop-at-end`: a client that reads high watermarks (see `job_done`), and when it
    /// last looked.
    watermarks: Option<crate::kafka::clients::HostConsumer>,
    last_done_check: Instant,
    /// The job's shard count (the partitions of the repartition topic): stage A reports
    /// stream times to every shard.
    partitions: i32,
}

/// The state tasks of a scale-out host: one shard per repartition partition it owns
/// (`Durability::Replayed`), and what the open transaction changes in them.
struct Shards {
    open: BTreeMap<i32, Shard>,
    /// exactly-once: what the open transaction changes in each shard, once it commits.
    txn: BTreeMap<i32, ShardBatch>,
    /// Next offset per (topic, partition) whose records are processed (what a commit sends),
    /// and the metadata committed with them.
    processed: Offsets,
    /// Next offset per (topic, partition) of the records submitted: `processed` plus the poll
    /// with the guest (see `records::take_once`).
    submitted: Offsets,
    metadata: Metadata,
    /// exactly-once: shards a transaction that committed or aborted (unknown which) touched,
    /// closed, to be opened again from their changelog (see `Tasks::in_doubt`).
    in_doubt: BTreeMap<i32, Shard>,
    /// A rewind waits for the group's committed offsets until they come or a stop.
    shutdown: Shutdown,
    /// --window, stage A: per input partition this host reads, its stream time after the polls
    /// submitted (restored from the group's offset metadata when the partition is assigned,
    /// and after an abort).
    input_stream_times: BTreeMap<i32, Millis>,
    input: String,
    repartition: String,
    changelog: String,
    windows: Option<WindowSpec>,
    emit: Emit,
}

/// The state of one repartition partition.
struct Shard {
    task: Task,
    /// The next repartition offset the shard reflects: records below it are counted.
    applied: i64,
    /// --window: the stream time of every input partition as stage A reported it (what the
    /// shard holds), the first window start kept, and the input partitions that held
    /// records when the shard opened (until each has reported, no window is dropped).
    stream_times: BTreeMap<i32, Millis>,
    kept_from: Option<Millis>,
    non_empty: BTreeSet<i32>,
    /// --emit final: the newest window whose final board this shard produced.
    emitted_through: Option<Millis>,
}

/// What a poll (or, under exactly-once, the open transaction) changes in one shard: new
/// counter values, totals and the next repartition offset, not yet in the shard.
struct ShardBatch {
    /// New counter values (`None`: deleted, a window past its retention).
    counts: HashMap<Vec<u8>, Option<u64>>,
    totals: Totals,
    next: i64,
    /// --window: input partitions' stream times reported, and the first window start kept;
    /// --emit final: the newest window whose final board was produced.
    stream_times: BTreeMap<i32, Millis>,
    kept_from: Option<Millis>,
    emitted_through: Option<Millis>,
}

/// A poll's records to process, its input records with the guest (see `submit`).
struct Submitted<'c> {
    input: Vec<BorrowedMessage<'c>>,
    /// The input records given to the guest, in groups of one `process-batch` call each.
    groups: Vec<Group>,
    /// Input records refused without asking the guest (no value; late, with --window).
    rejected: Vec<(usize, String)>,
    repartitioned: Vec<BorrowedMessage<'c>>,
    with_guest: bool,
    /// --window: the stream times of this poll's input partitions after it, and the offset
    /// metadata that carries them.
    stream_times: BTreeMap<i32, Millis>,
    metadata: Metadata,
}

/// at-least-once: a poll whose records are sent, not yet known to be acknowledged.
type InFlight = Sent<BTreeMap<i32, ShardBatch>>;

impl<'c> Topology<'c> for Repartitioned {
    type Context = ScaleOutContext;
    type Tasks = Shards;
    type Submitted = Submitted<'c>;
    type Guest = crate::guest::thread::GuestThread;

    fn tasks(&mut self) -> &mut Shards {
        &mut self.shards
    }

    fn input_records(&self, batch: &[BorrowedMessage<'c>]) -> usize {
        batch.iter().filter(|m| m.topic() == self.args.topics.input).count()
    }

    fn waiting(&self, consumer: &ScaleOutConsumer) -> i64 {
        self.records_waiting(consumer)
    }

    /// A partition's records are counted only on its caught-up shard: an assigned
    /// repartition partition is paused while its shard opens.
    fn rebalance(&mut self, engine: &mut Engine, consumer: &'c ScaleOutConsumer) -> Result<Rebalance> {
        for (partition, shard) in std::mem::take(&mut self.shards.in_doubt) {
            lock(&self.held).stores.remove(&partition);
            drop(shard);
            tracing::info!(shard = partition, "shard opened again: its changelog says how the transaction ended");
            self.start_opening(consumer, partition, &engine.shutdown)?;
        }
        let rebalances = consumer.context().take();
        for (topic, partition) in &rebalances.assigned {
            if *topic == self.repartition {
                self.start_opening(consumer, *partition, &engine.shutdown)?;
            }
        }
        // --window: an input partition's stream time comes with it, on its committed offset.
        let input = &self.shards.input;
        let assigned_input: Vec<i32> =
            rebalances.assigned.iter().filter(|(topic, _)| topic == input).map(|(_, q)| *q).collect();
        if self.shards.windows.is_some() && !assigned_input.is_empty() {
            let mut list = TopicPartitionList::new();
            for q in &assigned_input {
                list.add_partition(input, *q);
            }
            let committed = consumer
                .committed_offsets(list, Duration::from_secs(10))
                .context("reading the stream times of the input partitions assigned")?;
            for element in committed.elements() {
                self.shards.restore_stream_time(element.partition(), element.metadata());
            }
        }
        self.finish_opening(consumer, false, &engine.shutdown)?;
        Ok(Rebalance { revoked: rebalances.revoked, lost: rebalances.lost })
    }

    fn ready(&self, consumer: &ScaleOutConsumer) -> bool {
        !self.any_opening() && consumer.assignment().is_ok_and(|a| a.count() > 0)
    }

    fn done(&mut self, consumer: &ScaleOutConsumer, _at_end: &BTreeSet<i32>) -> bool {
        if self.any_opening() || self.last_done_check.elapsed() < DONE_CHECK_EVERY {
            return false;
        }
        self.last_done_check = Instant::now();
        // A failed look (a broker busy or away) only means: not known to be done yet.
        let done = self.job_done(consumer).unwrap_or_else(|e| {
            tracing::debug!(error = %format!("{e:#}"), "cannot tell whether the job is done yet");
            false
        });
        if done {
            tracing::info!(
                "the whole job is counted to its end: the group committed every input and repartition partition (--stop-at-end)"
            );
        }
        done
    }

    fn submit(&mut self, engine: &mut Engine, batch: Vec<BorrowedMessage<'c>>) -> Result<Submitted<'c>> {
        self.submit_poll(engine, batch)
    }

    fn send(&mut self, engine: &mut Engine, submitted: Submitted<'c>) -> Result<Option<InFlight>> {
        self.send_poll(engine, submitted)
    }

    fn discard(&mut self, engine: &mut Engine, submitted: Submitted<'c>) -> Result<()> {
        if submitted.with_guest {
            let _ = engine.guest.receive()?;
        }
        Ok(())
    }

    fn give_up(
        &mut self,
        engine: &mut Engine,
        consumer: &ScaleOutConsumer,
        revoked: &TopicPartitionList,
        lost: bool,
    ) -> Result<()> {
        self.give_up_partitions(engine, consumer, revoked, lost)
    }

    /// at-least-once: asynchronous commits can fail (e.g. during a rebalance) and no later
    /// poll may bring the partition's records to commit again: once idle, the processed
    /// offsets are committed and confirmed (the group's offsets are what `--stop-at-end`, and
    /// a restart, go by).
    fn idle(&mut self, engine: &mut Engine, consumer: &ScaleOutConsumer) {
        engine.committer.confirm_commits(consumer, &self.shards.processed, &self.shards.metadata);
    }

    fn between_batches(&mut self) {
        self.delete_old_shards();
    }

    fn publish_board(&mut self, engine: &mut Engine, _consumer: &ScaleOutConsumer) -> Result<()> {
        self.publish_boards(engine)
    }

    fn swap_guest(&mut self, engine: &mut Engine) -> Result<()> {
        cycle::swap_counting_guest(engine, |guest| self.args.accepts_swap(guest))
    }

    fn processed(&self) -> (Offsets, Metadata) {
        (self.shards.processed.clone(), self.shards.metadata.clone())
    }

    /// at-least-once: stage A's input offsets are in no state, so a stop lands them, confirmed
    /// by the broker's answer, before the consumer closes and the group moves the partitions
    /// (or the next owner counts the last deltas again). A commit sent while the group
    /// rebalances fails (`REBALANCE_IN_PROGRESS`, `ILLEGAL_GENERATION`) or waits for it to
    /// settle, which takes up to a session timeout when a member left in the middle of a join;
    /// librdkafka does not retry it. So it is sent again until it lands, the group served
    /// meanwhile (what it fetches is dropped), within the stop's bound; past that, the next
    /// owner may count the last batch again, as after a crash.
    fn commit_last(&mut self, engine: &mut Engine, consumer: &ScaleOutConsumer) {
        let offsets = match crate::engine::committer::partition_list(&self.shards.processed, &self.shards.metadata) {
            Ok(offsets) => offsets,
            Err(e) => return tracing::warn!(error = %format!("{e:#}"), "the last offset commit cannot be built"),
        };
        if let Ok(assignment) = consumer.assignment() {
            let _ = consumer.pause(&assignment);
        }
        consumer.context().last_commit(offsets);
        let _waiting = engine.shutdown.waiting_for("the last offset commit to land");
        let commits = AnsweredCommits::new(consumer);
        let started = Instant::now();
        // Longer than the stop's other waits on Kafka: a group held in a rebalance by a member
        // that left in the middle of a join settles only after that member's session timeout.
        let give_up = started + engine.shutdown.last_wait_limit(LAST_COMMIT_WAIT);
        let (mut outstanding, mut next_try) = (false, started);
        while let Some(offsets) = consumer.context().pending_commit() {
            if Instant::now() >= give_up {
                return tracing::warn!(
                    waited_ms = started.elapsed().as_millis() as u64,
                    "the last offset commit did not land in time (the group is rebalancing): the next owner of \
                     these partitions may count their last batch again (at-least-once)"
                );
            }
            if !outstanding && Instant::now() >= next_try {
                outstanding = commits.send(&offsets).is_ok();
                next_try = Instant::now() + LAST_COMMIT_RETRY;
            }
            match commits.answer(Duration::ZERO) {
                Some(Ok(())) => break,
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "the last offset commit failed; sending it again");
                    outstanding = false;
                }
                None => {}
            }
            // Serves the group: its rebalances (a revocation commits its share first).
            let _ = consumer.poll(Duration::from_millis(20));
        }
        consumer.context().last_commit_landed();
        tracing::debug!(ms = started.elapsed().as_millis() as u64, "the last offset commit landed");
    }

    /// Shards still opening stop at once when asked to; waited for, so that none is left
    /// half-created on disk by the process ending under it.
    fn stopping(&mut self) {
        for (_, opening) in std::mem::take(&mut self.opening) {
            let _ = opening.join();
        }
    }

    fn stopped(&self) {
        tracing::info!(shards = ?self.shards.open.keys().collect::<Vec<_>>(), "stopped cleanly");
    }
}

impl Repartitioned {
    /// For the stall watchdog: records waiting on the partitions this host counts (not those
    /// paused while their shard opens): each one's end minus the next offset processed in this
    /// run, or else the group's committed offset.
    fn records_waiting(&self, consumer: &ScaleOutConsumer) -> i64 {
        let Ok(assignment) = consumer.assignment() else { return 0 };
        let committed = consumer.committed_offsets(assignment.clone(), Duration::from_secs(1)).ok();
        let committed_next =
            |topic: &str, partition: i32| match committed.as_ref()?.find_partition(topic, partition)?.offset() {
                Offset::Offset(next) => Some(next),
                _ => None,
            };
        let mut waiting = 0;
        for element in assignment.elements() {
            let (topic, partition) = (element.topic(), element.partition());
            if topic == self.repartition && self.is_opening(partition) {
                continue;
            }
            let Ok((low, high)) = consumer.fetch_watermarks(topic, partition, Duration::from_secs(1)) else { continue };
            let next = self
                .shards
                .processed
                .get(&(topic.to_owned(), partition))
                .copied()
                .or_else(|| committed_next(topic, partition));
            waiting += (high - next.unwrap_or(low).max(low)).max(0);
        }
        waiting
    }

    /// A poll's records not yet submitted (a record delivered again is dropped, see
    /// `take_once`; those of a shard still opening, fetched before its partition was paused,
    /// are read again after the seek when it opens); its input records go to the guest
    /// thread. Writes nothing.
    fn submit_poll<'c>(&mut self, engine: &mut Engine, batch: Vec<BorrowedMessage<'c>>) -> Result<Submitted<'c>> {
        let (mut input, mut repartitioned) = (Vec::new(), Vec::new());
        for message in batch {
            let is_input = message.topic() == self.args.topics.input;
            let key = (message.topic().to_owned(), message.partition());
            if (is_input || self.shards.open.contains_key(&message.partition()))
                && take_once(&mut self.shards.submitted, &key, message.offset())
            {
                if is_input { input.push(message) } else { repartitioned.push(message) }
            }
        }
        // Records of the input (the repartition topic's are the job's own traffic).
        engine.committer.stats.batch_polled(input.len());
        engine.metrics.records_consumed.inc_by(input.len() as u64);
        engine.metrics.batch_records.observe(input.len() as f64);
        let mut rejected: Vec<(usize, String)> = Vec::new();
        // Cumulative: one group. Windowed: one per set of open windows (a poll spans few).
        let mut groups: Vec<(Group, Records)> = Vec::new();
        let windows = self.shards.windows;
        if windows.is_none() {
            groups.push((Group { windows: None, positions: Vec::with_capacity(input.len()) }, Records::default()));
        }
        let guest_times = self.guest_event_times(engine, &input)?;
        for (index, message) in input.iter().enumerate() {
            let Some(value) = message.payload() else {
                rejected.push((index, NO_VALUE.to_owned()));
                continue;
            };
            let group = match &windows {
                None => 0,
                Some(spec) => {
                    // Stage A judges lateness, as a single host does: by the partition's stream time.
                    let q = message.partition();
                    let t = guest_times.get(index).copied().flatten().or_else(|| message.timestamp().to_millis());
                    let stream_time = self.shards.input_stream_times.get(&q).copied();
                    match open_windows(spec, t, q, stream_time, None) {
                        Ok((t, open)) => {
                            let at = self.shards.input_stream_times.entry(q).or_insert(t);
                            *at = (*at).max(t);
                            group_for(&mut groups, open)
                        }
                        Err(reason) => {
                            rejected.push((index, reason));
                            continue;
                        }
                    }
                }
            };
            groups[group].0.positions.push(index);
            groups[group].1.push(value);
        }
        let (mut stream_times, mut metadata) = (BTreeMap::new(), Metadata::new());
        if windows.is_some() {
            for message in &input {
                let q = message.partition();
                if let Some(t) = self.shards.input_stream_times.get(&q) {
                    stream_times.insert(q, *t);
                    metadata.insert((self.shards.input.clone(), q), stream_time_metadata(*t));
                }
            }
        }
        let with_guest = !input.is_empty();
        let (groups, records): (Vec<Group>, Vec<Records>) = groups.into_iter().unzip();
        if with_guest {
            engine.guest.submit(records)?;
        }
        Ok(Submitted { input, groups, rejected, repartitioned, with_guest, stream_times, metadata })
    }

    /// With `--event-time guest`: the event time the guest gives each input record (by index
    /// into `input`); empty otherwise.
    fn guest_event_times(&self, engine: &mut Engine, input: &[BorrowedMessage<'_>]) -> Result<Vec<Option<Millis>>> {
        if !self.args.needs_guest_event_time() {
            return Ok(Vec::new());
        }
        guest_event_times((&mut engine.guest, &*engine.metrics, &mut engine.rejected_log), input, |_| true)
    }

    /// A submitted poll's writes, sent: stage A (the guest's deltas to the repartition topic)
    /// and stage B (the shards' new values to their changelog partitions). Under exactly-once
    /// into the open transaction; under at-least-once the rest (acknowledgements -> shards ->
    /// offsets) is the committer's, after the next poll is submitted. Needs the shards to hold
    /// every earlier poll.
    fn send_poll(&mut self, engine: &mut Engine, submitted: Submitted<'_>) -> Result<Option<InFlight>> {
        let started = Instant::now();
        engine.committer.open_transaction()?;
        let Submitted { input, groups, rejected, repartitioned, with_guest, stream_times, metadata } = submitted;
        // Stage A.
        let guest_ms =
            if with_guest { self.repartition_deltas(engine, &input, &groups, rejected, &stream_times)? } else { 0.0 };
        // Stage B, per shard.
        let mut by_partition: BTreeMap<i32, Vec<&BorrowedMessage<'_>>> = BTreeMap::new();
        for message in &repartitioned {
            by_partition.entry(message.partition()).or_default().push(message);
        }
        let mut counted: BTreeMap<i32, ShardBatch> = BTreeMap::new();
        let mut changelog_records = 0;
        for (partition, messages) in by_partition {
            let pending = self.shards.txn.remove(&partition);
            let (shard_batch, sent) = self.count_in_shard(engine, partition, pending, &messages)?;
            changelog_records += sent;
            counted.insert(partition, shard_batch);
        }
        let all = input.iter().chain(&repartitioned);
        let offsets: Offsets = all.clone().map(|m| ((m.topic().to_owned(), m.partition()), m.offset() + 1)).collect();
        let timestamps: Vec<i64> = all.filter_map(|m| m.timestamp().to_millis()).collect();
        self.shards.processed.extend(offsets.clone());
        self.shards.metadata.extend(metadata.clone());
        if engine.committer.in_transaction() {
            self.shards.txn.extend(counted);
            engine.committer.joined(offsets, metadata, timestamps, changelog_records);
            return Ok(None);
        }
        let timings = Timings {
            records: input.len() + repartitioned.len(),
            guest_ms,
            guest_wait_ms: 0.0,
            send_ms: started.elapsed().as_secs_f64() * 1000.0,
        };
        let produced = with_guest || !counted.is_empty();
        Ok(Some(Sent { changes: counted, produced, offsets, metadata, timestamps, changelog_records, timings }))
    }

    /// Stage A: the guest's result for the input records; their deltas, summed per counter
    /// key (with --window, per window and key), and the records counted and skipped go to the
    /// repartition topic keyed by counter key; with --window, every shard is told the stream
    /// times of this poll's input partitions.
    fn repartition_deltas(
        &mut self,
        engine: &mut Engine,
        messages: &[BorrowedMessage<'_>],
        groups: &[Group],
        mut rejected: Vec<(usize, String)>,
        stream_times: &BTreeMap<i32, Millis>,
    ) -> Result<f64> {
        let waiting = engine.shutdown.waiting_for("waiting for the guest's answer");
        let (results, guest_ms) = engine.guest.receive()?;
        drop(waiting);
        engine.metrics.step("guest", guest_ms / 1000.0);
        let mut sums: HashMap<Vec<u8>, u64> = HashMap::new();
        for (group, result) in groups.iter().zip(results?) {
            for r in result.rejected {
                let index =
                    *group.positions.get(r.index as usize).context("guest rejected a record index out of range")?;
                rejected.push((index, r.reason));
            }
            for delta in result.deltas {
                let starts: Vec<Option<Millis>> = match &group.windows {
                    None => vec![None],
                    Some(starts) => starts.iter().copied().map(Some).collect(),
                };
                for start in starts {
                    let sum = sums.entry(window::counter_key(start, delta.key.as_bytes())).or_insert(0);
                    *sum = sum.saturating_add(delta.amount);
                }
            }
        }
        rejected.sort_by_key(|(index, _)| *index);
        let dead_letter = self.args.topics.dead_letter.as_deref();
        for (index, reason) in &rejected {
            let (producer, log) = (engine.committer.producer(), &mut engine.rejected_log);
            skip_record(producer, dead_letter, &engine.metrics, log, &messages[*index], reason)?;
        }
        let counted = (messages.len() - rejected.len()) as u64;
        engine.metrics.records_counted.inc_by(counted);
        let producer = engine.committer.producer();
        for (key, amount) in &sums {
            producer.send(&self.repartition, key, &amount.to_be_bytes(), None)?;
        }
        for (q, t) in stream_times {
            let key = changelog::meta_key(&meta::stream_time(&self.shards.input, *q));
            for p in 0..self.partitions {
                producer.send_to(&self.repartition, p, &key, Some(&(*t as u64).to_be_bytes()), None)?;
            }
        }
        for (name, amount) in [(meta::RECORDS_PROCESSED, counted), (meta::RECORDS_SKIPPED, rejected.len() as u64)] {
            if amount > 0 {
                producer.send(&self.repartition, &changelog::meta_key(name), &amount.to_be_bytes(), None)?;
            }
        }
        Ok(guest_ms)
    }

    /// Stage B for one shard: adds the deltas of its repartition records not yet counted to
    /// `pending` (the open transaction's changes to it, else a fresh batch) and sends the new
    /// values, totals and repartition offset to its changelog partition (with --window, also
    /// the input partitions' stream times and the deletion of windows past their retention);
    /// with the number of changelog records sent.
    fn count_in_shard(
        &mut self,
        engine: &mut Engine,
        partition: i32,
        pending: Option<ShardBatch>,
        messages: &[&BorrowedMessage<'_>],
    ) -> Result<(ShardBatch, u64)> {
        let shard = self.shards.open.get(&partition).context("a repartition record for a shard not open")?;
        let store = shard.task.store();
        let mut batch = match pending {
            Some(batch) => batch,
            None => ShardBatch {
                counts: HashMap::new(),
                totals: store.totals()?,
                next: shard.applied,
                stream_times: BTreeMap::new(),
                kept_from: shard.kept_from,
                emitted_through: None,
            },
        };
        let mut changed: BTreeSet<Vec<u8>> = BTreeSet::new();
        let totals_before = batch.totals;
        let stream_times_before = batch.stream_times.clone();
        for message in messages {
            if message.offset() < batch.next {
                continue; // counted already (a re-delivery after a crash or a rebalance)
            }
            batch.next = message.offset() + 1;
            let (Some(key), Some(value)) = (message.key(), message.payload().filter(|v| v.len() == 8)) else {
                if let Some(suppressed) = engine.consumer_log.allow() {
                    tracing::warn!(
                        partition,
                        offset = message.offset(),
                        suppressed,
                        "repartition record is not a (key, 8-byte amount) delta: ignored (written by another program?)"
                    );
                }
                continue;
            };
            let amount = decode_u64(value);
            if let Some(name) = key.strip_prefix(&[changelog::META_KEY_PREFIX]) {
                let name = String::from_utf8_lossy(name);
                if name == meta::RECORDS_PROCESSED {
                    batch.totals.records_processed += amount;
                } else if name == meta::RECORDS_SKIPPED {
                    batch.totals.records_skipped += amount;
                } else if let Some((_, q)) = meta::parse_stream_time(&name) {
                    // Never backwards (a new owner of the input partition may report an older
                    // time, from the offset it resumes at, before it catches up).
                    let held = shard.stream_times.get(&q).copied().unwrap_or(Millis::MIN);
                    let t = (amount as Millis).max(held);
                    let at = batch.stream_times.entry(q).or_insert(t);
                    *at = (*at).max(t);
                }
                continue;
            }
            if let Some((start, _)) = window::parse_state_key(key)
                && batch.kept_from.is_some_and(|kept| start < kept)
            {
                // Its window is gone from this shard already: a record a new owner of its input
                // partition took for on time (see the module doc).
                if let Some(suppressed) = engine.consumer_log.allow() {
                    tracing::warn!(shard = partition, window = %window::rfc3339(start), suppressed,
                        "a delta for a window already dropped: ignored");
                }
                continue;
            }
            let current = match batch.counts.get(key) {
                Some(value) => value.unwrap_or(0),
                None => store.count(key)?,
            };
            batch.counts.insert(key.to_vec(), Some(current.saturating_add(amount)));
            changed.insert(key.to_vec());
        }
        // --window: the counters of windows past their retention go, in this same batch.
        if let Some(spec) = &self.shards.windows {
            let mut times = shard.stream_times.clone();
            for (q, t) in &batch.stream_times {
                let at = times.entry(*q).or_insert(*t);
                *at = (*at).max(*t);
            }
            let emitted = batch.emitted_through.max(shard.emitted_through);
            if let Some(keep_from) = keep_from(spec, &times, &shard.non_empty, self.shards.emit, emitted)
                && batch.kept_from.is_none_or(|kept| kept < keep_from)
            {
                let mut expired: Vec<Vec<u8>> = store
                    .windowed_keys_between(batch.kept_from, keep_from)
                    .map(|k| k.map(Vec::from))
                    .collect::<Result<_>>()?;
                let before = |key: &[u8]| window::parse_state_key(key).is_some_and(|(start, _)| start < keep_from);
                expired.extend(batch.counts.keys().filter(|k| before(k)).cloned());
                for key in expired {
                    batch.counts.insert(key.clone(), None);
                    changed.insert(key);
                }
                batch.kept_from = Some(keep_from);
            }
        }
        let (producer, topic) = (engine.committer.producer(), &self.shards.changelog);
        for key in &changed {
            let value = batch.counts[key].map(u64::to_be_bytes);
            producer.send_to(topic, partition, key, value.as_ref().map(|v| v.as_slice()), None)?;
        }
        let mut metas = vec![(meta::input_offset(&self.repartition, partition), batch.next as u64)];
        if batch.totals != totals_before {
            metas.push((meta::RECORDS_PROCESSED.to_owned(), batch.totals.records_processed));
            metas.push((meta::RECORDS_SKIPPED.to_owned(), batch.totals.records_skipped));
        }
        for (q, t) in &batch.stream_times {
            if stream_times_before.get(q) != Some(t) {
                metas.push((meta::stream_time(&self.shards.input, *q), *t as u64));
            }
        }
        let mut sent = metas.len() as u64 + changed.len() as u64;
        for (name, value) in metas {
            let headers = Some(changelog::meta_headers(&name));
            producer.send_to(topic, partition, &changelog::meta_key(&name), Some(&value.to_be_bytes()), headers)?;
        }
        if let Some(windows) = self.shards.windows.filter(|_| !changed.is_empty()) {
            // A restore of the shard must know what its counters are counted in.
            let name = meta::WINDOWS;
            let (key, headers) = (changelog::meta_key(name), Some(changelog::meta_headers(name)));
            producer.send_to(topic, partition, &key, Some(windows.describe().as_bytes()), headers)?;
            sent += 1;
        }
        Ok((batch, sent))
    }

    /// Starts opening shard `partition` on a thread of its own while its repartition
    /// partition is paused, so the partitions this host already counts keep flowing.
    fn start_opening(&mut self, consumer: &ScaleOutConsumer, partition: i32, shutdown: &Shutdown) -> Result<()> {
        if self.shards.open.contains_key(&partition) || self.is_opening(partition) {
            return Ok(());
        }
        consumer.pause(&self.repartition_partition(partition)?).context("pausing a repartition partition")?;
        self.not_owned.remove(&partition);
        // A warm copy in the shard's dir is closed first; then the shard opens from it.
        let releaser = self.standbys.as_ref().and_then(Standbys::releaser);
        let source = ShardSource {
            kafka: self.args.kafka.clone(),
            changelog: self.shards.changelog.clone(),
            repartition: self.repartition.clone(),
            input: self.shards.input.clone(),
            windows: self.shards.windows,
            emit: self.shards.emit,
            guarantee: self.args.guarantee,
            dir: crate::state::shard_dir(&self.args.state_dir, partition),
            partition,
        };
        let shutdown = shutdown.clone();
        let opening = std::thread::Builder::new()
            .name(format!("shard-{partition}"))
            .spawn(move || {
                if let Some(releaser) = releaser {
                    releaser.release(partition);
                }
                source.open(&shutdown)
            })
            .context("starting a shard's restore")?;
        self.opening.insert(partition, opening);
        Ok(())
    }

    /// Shards whose catching up is over start counting: their partition is sought to the
    /// offset the shard holds (records fetched before the pause were dropped) and resumed.
    fn finish_opening(&mut self, consumer: &ScaleOutConsumer, wait: bool, shutdown: &Shutdown) -> Result<()> {
        let done: Vec<i32> =
            self.opening.iter().filter(|(_, thread)| wait || thread.is_finished()).map(|(p, _)| *p).collect();
        for partition in done {
            let thread = self.opening.remove(&partition).expect("listed above");
            let shard = match thread.join().map_err(|_| anyhow!("the restore of shard {partition} panicked"))? {
                Ok(shard) => shard,
                // Interrupted by a shutdown: the shard is caught up again when next opened.
                Err(e) if shutdown.requested() => {
                    tracing::info!(shard = partition, reason = %format!("{e:#}"), "shard not opened: shutting down");
                    continue;
                }
                Err(e) => return Err(e),
            };
            self.seeking.insert(partition, (shard, Instant::now()));
        }
        let sought: Vec<i32> = self.seeking.keys().copied().collect();
        for partition in sought {
            let (shard, since) = &self.seeking[&partition];
            if let Err(e) = consumer.seek(&self.repartition, partition, Offset::Offset(shard.applied), SEEK_WAIT) {
                // librdkafka refuses a seek ("erroneous state") while the partition's fetch has
                // not started (its committed offset still being looked up): tried again at the
                // next poll, the partition staying paused meanwhile.
                if since.elapsed() < SEEK_RETRY_FOR {
                    tracing::debug!(shard = partition, error = %e, "seek not possible yet; trying again");
                    continue;
                }
                return Err(anyhow!(e)).with_context(|| format!("seeking repartition partition {partition}"));
            }
            let (shard, _) = self.seeking.remove(&partition).expect("listed above");
            consumer.resume(&self.repartition_partition(partition)?).context("resuming a repartition partition")?;
            lock(&self.held).stores.insert(partition, shard.task.store().shared());
            self.shards.open.insert(partition, shard);
        }
        Ok(())
    }

    /// Everything this consumer's run held, given up for the next consumer: restores under way
    /// are waited for, and every shard is closed (their dirs keep their state).
    fn close_everything(&mut self) {
        for (_, opening) in std::mem::take(&mut self.opening) {
            let _ = opening.join();
        }
        self.seeking.clear();
        self.shards.open.clear();
        self.shards.in_doubt.clear();
        self.shards.txn.clear();
        lock(&self.held).stores.clear();
    }

    /// A shard of `partition` is being opened (restored or caught up, or about to be sought).
    fn is_opening(&self, partition: i32) -> bool {
        self.opening.contains_key(&partition) || self.seeking.contains_key(&partition)
    }

    fn any_opening(&self) -> bool {
        !self.opening.is_empty() || !self.seeking.is_empty()
    }

    /// Deletes the shards not owned for `--shard-cleanup-delay` (a failure is only logged:
    /// the next look tries again).
    fn delete_old_shards(&mut self) {
        let delay = self.args.scale_out.as_ref().map_or(Duration::ZERO, |s| s.shard_cleanup_delay);
        let due: Vec<i32> =
            self.not_owned.iter().filter(|(_, since)| since.elapsed() >= delay).map(|(p, _)| *p).collect();
        for partition in due {
            if self.shards.open.contains_key(&partition) || self.is_opening(partition) {
                self.not_owned.remove(&partition);
                continue;
            }
            if self.standbys.as_ref().is_some_and(|s| s.holds(partition)) {
                // A warm copy: kept while it is one.
                self.not_owned.insert(partition, Instant::now());
                continue;
            }
            let dir = crate::state::shard_dir(&self.args.state_dir, partition);
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => {
                    tracing::info!(shard = partition, dir = %dir.display(), "shard deleted (not owned for --shard-cleanup-delay)")
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(shard = partition, error = %e, "cannot delete a shard no longer owned; trying again later");
                    self.not_owned.insert(partition, Instant::now());
                    continue;
                }
            }
            self.not_owned.remove(&partition);
        }
    }

    fn repartition_partition(&self, partition: i32) -> Result<TopicPartitionList> {
        let mut list = TopicPartitionList::new();
        list.add_partition_offset(&self.repartition, partition, Offset::Invalid)?;
        Ok(list)
    }

    /// Revoked partitions: what is under way of them is committed (unless they are lost
    /// already), their shards are closed, and only then are they given up.
    fn give_up_partitions(
        &mut self,
        engine: &mut Engine,
        consumer: &ScaleOutConsumer,
        revoked: &TopicPartitionList,
        lost: bool,
    ) -> Result<()> {
        let committer = &mut engine.committer;
        if lost {
            // The group has given them to another host: nothing of ours may count.
            committer.abort_open(consumer, &mut self.shards, "partitions lost (session timed out)")?;
        } else {
            committer.commit_txn(consumer, &mut self.shards)?;
            if !committer.exactly_once() {
                let revoked: Offsets = revoked
                    .elements()
                    .iter()
                    .filter_map(|e| {
                        let key = (e.topic().to_owned(), e.partition());
                        self.shards.processed.get(&key).map(|next| (key, *next))
                    })
                    .collect();
                committer.commit_offsets(consumer, &revoked, &self.shards.metadata, CommitMode::Sync);
            }
        }
        // A shard still opening is waited for (its restore is bounded), then closed.
        self.finish_opening(consumer, true, &engine.shutdown)?;
        for element in revoked.elements() {
            self.shards.processed.remove(&(element.topic().to_owned(), element.partition()));
            self.shards.submitted.remove(&(element.topic().to_owned(), element.partition()));
            self.shards.metadata.remove(&(element.topic().to_owned(), element.partition()));
            if element.topic() == self.shards.input {
                self.shards.input_stream_times.remove(&element.partition());
            }
            if element.topic() == self.repartition && self.seeking.remove(&element.partition()).is_some() {
                tracing::info!(
                    shard = element.partition(),
                    "shard closed before it counted (partition moves to another host)"
                );
                self.not_owned.insert(element.partition(), Instant::now());
            }
            if element.topic() == self.repartition && self.shards.in_doubt.remove(&element.partition()).is_some() {
                lock(&self.held).stores.remove(&element.partition());
                self.not_owned.insert(element.partition(), Instant::now());
            }
            if element.topic() == self.repartition && self.shards.open.remove(&element.partition()).is_some() {
                lock(&self.held).stores.remove(&element.partition());
                tracing::info!(shard = element.partition(), "shard closed (partition moves to another host)");
                self.not_owned.insert(element.partition(), Instant::now());
            }
            if element.topic() == self.repartition
                && let Some(standbys) = &self.standbys
            {
                standbys.gave_up(element.partition());
            }
        }
        consumer.incremental_unassign(revoked).context("giving up revoked partitions")?;
        Ok(())
    }

    /// Every shard's local board (from its committed state) to the output topic under
    /// `shard/<p>`; under exactly-once, inside a transaction.
    fn publish_boards(&mut self, engine: &mut Engine) -> Result<()> {
        if self.shards.open.is_empty() {
            return Ok(());
        }
        engine.committer.open_transaction()?;
        let (topic, n) = (self.args.topics.output.clone(), self.args.top_n);
        let started = Instant::now();
        let mut summary = Vec::new();
        let mut emitted: Vec<(i32, Millis)> = Vec::new();
        for (partition, shard) in &self.shards.open {
            let (guest, metrics) = (&mut engine.guest, &engine.metrics);
            let windows = self.shards.windows.as_ref().map(|spec| crate::board::Windows {
                spec,
                stream_times: shard.stream_times.clone(),
                closing_blocked: shard.non_empty.iter().any(|q| !shard.stream_times.contains_key(q)),
            });
            let top_n = &mut |c: &[crate::guest::Entry], n| checked_top_n(guest, metrics, c, n);
            let snapshot = crate::board::local_snapshot(shard.task.store(), top_n, n, windows.as_ref())?;
            let key = crate::board::shard_key(*partition);
            let producer = engine.committer.producer();
            crate::board::produce_as(producer, &topic, &key, &snapshot)?;
            summary.push(format!("{partition}: {}", snapshot.top.first().map_or("-".into(), |e| e.key.clone())));
            if let Some(windows) = windows.filter(|_| self.shards.emit == Emit::Final) {
                // --emit final: this shard's board of each window complete since the last.
                let key = |start: Millis| format!("window/{start}/shard/{partition}");
                let out = crate::board::FinalBoards { producer, topic: &topic, key: &key };
                let pending = self.shards.txn.get(partition).and_then(|b| b.emitted_through);
                let after = pending.max(shard.emitted_through);
                let store = shard.task.store();
                if let Some(newest) = crate::board::emit_final_as(store, top_n, &out, n, &windows, after)? {
                    emitted.push((*partition, newest));
                }
                // How far this shard's final boards go: a window is final on every shard
                // once every shard's marker is past it (README, "Scale-out").
                if let Some(through) = crate::board::complete_through(&windows) {
                    let marker = serde_json::json!({ "complete_through_ms": through, "shards": self.partitions });
                    producer.send(
                        &topic,
                        crate::board::final_marker_key(*partition).as_bytes(),
                        marker.to_string().as_bytes(),
                        None,
                    )?;
                }
            }
        }
        for (partition, newest) in emitted {
            self.record_emitted(engine, partition, newest)?;
        }
        engine.metrics.board_flush_seconds.observe(started.elapsed().as_secs_f64());
        tracing::info!(shards = %summary.join(", "), "local boards published (`host board` shows the global one)");
        // A board-only transaction is committed by the loop (`Committer::transaction_due`),
        // which also drops the poll with the guest if the commit has to be aborted.
        fault::point(Step::AfterBoard);
        Ok(())
    }

    /// --emit final: shard `partition` produced final boards through window `newest`: recorded
    /// like any of its state, in its changelog partition and then in the shard (under
    /// exactly-once, with the open transaction).
    fn record_emitted(&mut self, engine: &mut Engine, partition: i32, newest: Millis) -> Result<()> {
        let name = meta::EMITTED_THROUGH;
        let (key, headers) = (changelog::meta_key(name), Some(changelog::meta_headers(name)));
        let producer = engine.committer.producer();
        producer.send_to(&self.shards.changelog, partition, &key, Some(&(newest as u64).to_be_bytes()), headers)?;
        if engine.committer.in_transaction() {
            let shard = self.shards.open.get(&partition).context("a final board of a shard not open")?;
            let batch = match self.shards.txn.remove(&partition) {
                Some(batch) => batch,
                None => ShardBatch {
                    counts: HashMap::new(),
                    totals: shard.task.store().totals()?,
                    next: shard.applied,
                    stream_times: BTreeMap::new(),
                    kept_from: shard.kept_from,
                    emitted_through: None,
                },
            };
            self.shards.txn.insert(partition, ShardBatch { emitted_through: Some(newest), ..batch });
        } else {
            producer.wait_acks().context(StopHost)?;
            let shard = self.shards.open.get_mut(&partition).context("a final board of a shard not open")?;
            shard.task.write([Change::u64(name, newest as u64)])?;
            shard.emitted_through = Some(newest);
        }
        Ok(())
    }

    /// `--stop-at-end`: true once the whole job is counted, by every host: every input
    /// partition has its offset committed at its end (so every delta is in the repartition
    /// topic), and every repartition partition has its offset committed past its last record
    /// (so every delta is in a shard). Waiting for the group's commits, not this host's own
    /// positions, keeps a host running while a dead one still holds partitions.
    fn job_done(&mut self, consumer: &ScaleOutConsumer) -> Result<bool> {
        let watermarks = match &self.watermarks {
            Some(client) => client,
            None => self.watermarks.insert(crate::kafka::clients::watermark_reader(&self.args.kafka)?),
        };
        let input = &self.args.topics.input;
        if !committed_to_end(consumer, watermarks, input)?.is_empty() {
            return Ok(false);
        }
        let behind = committed_to_end(consumer, watermarks, &self.repartition)?;
        if behind.is_empty() {
            return Ok(true);
        }
        // Under exactly-once a partition ends with transaction markers, which no offset
        // commit passes: behind only by markers is at the end.
        changelog::only_markers_after(&self.args.kafka, &self.repartition, &behind)
    }
}

/// The partitions of `topic` whose committed offset in the group is short of the high
/// watermark (the end, open transactions included; a read_committed consumer would be told
/// the last stable offset instead): partition -> (committed, high watermark).
fn committed_to_end(
    consumer: &ScaleOutConsumer,
    watermarks: &crate::kafka::clients::HostConsumer,
    topic: &str,
) -> Result<BTreeMap<i32, (i64, i64)>> {
    let ends = changelog::end_offsets(watermarks, topic)?;
    // A topic whose partitions are not known (yet) is not "all done".
    anyhow::ensure!(!ends.is_empty(), "no partitions of `{topic}` known yet");
    let mut all = TopicPartitionList::new();
    for partition in ends.keys() {
        all.add_partition(topic, *partition);
    }
    let committed = consumer.committed_offsets(all, Duration::from_secs(10))?;
    let mut behind = BTreeMap::new();
    for element in committed.elements() {
        let (low, high) = ends[&element.partition()];
        let next = match element.offset() {
            Offset::Offset(next) => next.max(low),
            _ => low,
        };
        if next < high {
            behind.insert(element.partition(), (next, high));
        }
    }
    Ok(behind)
}

/// What opening a shard needs, on the thread that opens it.
struct ShardSource {
    kafka: crate::kafka::Connection,
    changelog: String,
    repartition: String,
    input: String,
    windows: Option<WindowSpec>,
    emit: Emit,
    guarantee: Guarantee,
    dir: std::path::PathBuf,
    partition: i32,
}

impl ShardSource {
    /// Opens the shard and brings it up to its changelog partition's end: restored in full
    /// if new (or lost), else only the tail another owner wrote since.
    fn open(self, shutdown: &Shutdown) -> Result<Shard> {
        let (kafka, partition) = (&self.kafka, self.partition);
        let started = Instant::now();
        let mut task = Task::open(&self.dir, Durability::Replayed, &self.changelog, Some(partition))?;
        let report = match task.restore_if_needed(kafka, shutdown)? {
            Some(report) => report,
            None => task.catch_up(kafka, self.guarantee, shutdown)?,
        };
        let applied = task.store().input_offsets(&self.repartition)?.get(&partition).copied().unwrap_or(0);
        let (mut stream_times, mut non_empty, mut kept_from) = (BTreeMap::new(), BTreeSet::new(), None);
        let emitted_through = task.store().meta_i64(meta::EMITTED_THROUGH)?;
        if let Some(spec) = self.windows {
            stream_times = task.store().stream_times(&self.input)?;
            non_empty = changelog::non_empty_partitions(kafka, &self.input)?;
            kept_from = keep_from(&spec, &stream_times, &non_empty, self.emit, emitted_through);
        }
        tracing::info!(
            shard = partition,
            changelog_records_read = report.records_read,
            next_offset = applied,
            ms = started.elapsed().as_millis() as u64,
            "shard open"
        );
        Ok(Shard { task, applied, stream_times, kept_from, non_empty, emitted_through })
    }
}

fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl Tasks<ScaleOutContext> for Shards {
    type Batch = BTreeMap<i32, ShardBatch>;

    fn apply_batch(&mut self, counted: Self::Batch, positions: &Positions) -> Result<()> {
        for (partition, batch) in counted {
            self.apply(partition, batch, Guarantee::AtLeastOnce, positions)?;
        }
        Ok(())
    }

    fn apply_transaction(&mut self, positions: &Positions) -> Result<()> {
        for (partition, batch) in std::mem::take(&mut self.txn) {
            self.apply(partition, batch, Guarantee::ExactlyOnce, positions)?;
        }
        Ok(())
    }

    /// Every assigned partition back to what is committed (input) or in its shard
    /// (repartition).
    fn rewind(&mut self, consumer: &ScaleOutConsumer) -> Result<()> {
        self.txn.clear();
        let assignment = consumer.assignment().context("reading the consumer's assignment")?;
        let committed = self.committed_offsets(consumer, assignment)?;
        let mut seeks = TopicPartitionList::new();
        for element in committed.elements() {
            let (topic, partition) = (element.topic(), element.partition());
            let offset = match self.open.get(&partition).filter(|_| topic == self.repartition) {
                Some(shard) => Offset::Offset(shard.applied),
                None => match element.offset() {
                    Offset::Offset(next) => Offset::Offset(next),
                    _ => Offset::Beginning,
                },
            };
            self.processed.remove(&(topic.to_owned(), partition));
            self.submitted.remove(&(topic.to_owned(), partition));
            self.metadata.remove(&(topic.to_owned(), partition));
            if topic == self.input {
                self.restore_stream_time(partition, element.metadata());
            }
            seeks.add_partition_offset(topic, partition, offset)?;
        }
        if seeks.count() == 0 {
            return Ok(()); // nothing assigned (librdkafka refuses an empty seek)
        }
        let sought = consumer.seek_partitions(seeks, Duration::from_secs(10)).context("rewinding the partitions")?;
        for element in sought.elements() {
            let (topic, partition) = (element.topic(), element.partition());
            match element.error() {
                Ok(()) => {}
                // Its fetch has not started (the group is moving it, its committed offset still
                // being looked up): it starts from the committed offset, which is where the
                // rewind would take it (an open shard holds just that under exactly-once, the
                // only guarantee that rewinds). Seen while a group rebalanced again and again
                // after a network cut.
                Err(KafkaError::OffsetFetch(RDKafkaErrorCode::State)) => {
                    tracing::debug!(topic, partition, "rewind: not fetching yet, it starts from the committed offset");
                }
                Err(e) => return Err(e).with_context(|| format!("rewinding {topic} [{partition}]")),
            }
        }
        Ok(())
    }

    /// The shards the transaction touched hold what they held before it; their changelog
    /// holds its records only if it committed. So they are closed, to be opened again at the
    /// next poll (which replays their changelog past the position they hold, as after a
    /// crash), and every partition is rewound: the input to the group's committed offsets
    /// (past the transaction's records only if it committed), the other shards to what they
    /// hold.
    fn in_doubt(&mut self, consumer: &ScaleOutConsumer, _reason: &str) -> Result<()> {
        for partition in self.txn.keys().copied().collect::<Vec<_>>() {
            if let Some(shard) = self.open.remove(&partition) {
                self.in_doubt.insert(partition, shard);
            }
        }
        self.rewind(consumer)
    }
}

impl Shards {
    /// The group's committed offsets of `partitions`, asked again until they come (a host cut
    /// off from the cluster waits for it to heal, as its other calls do) or a stop is requested.
    fn committed_offsets(
        &self,
        consumer: &ScaleOutConsumer,
        partitions: TopicPartitionList,
    ) -> Result<TopicPartitionList> {
        let started = Instant::now();
        let mut warned = Instant::now();
        loop {
            match consumer.committed_offsets(partitions.clone(), Duration::from_secs(10)) {
                Ok(committed) => return Ok(committed),
                Err(e) if !self.shutdown.requested() => {
                    if warned.elapsed() >= Duration::from_secs(10) {
                        warned = Instant::now();
                        tracing::warn!(error = %e, waiting_s = started.elapsed().as_secs(), "the group's committed offsets do not come; asking again");
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => return Err(e).context("reading the group's committed offsets"),
            }
        }
    }

    /// --window, stage A: input partition `q`'s stream time as its committed offset carries
    /// it (none: the partition's first record sets it).
    fn restore_stream_time(&mut self, q: i32, metadata: &str) {
        if self.windows.is_none() {
            return;
        }
        match parse_stream_time_metadata(metadata) {
            Some(t) => {
                self.input_stream_times.insert(q, t);
            }
            None => {
                self.input_stream_times.remove(&q);
            }
        }
    }

    /// Writes a shard's batch in one atomic write, with the changelog position its records
    /// reached (they are acknowledged or committed by now): the position the shard's next
    /// opening replays from (`Durability::Replayed`).
    fn apply(&mut self, partition: i32, batch: ShardBatch, guarantee: Guarantee, positions: &Positions) -> Result<()> {
        let shard = self.open.get_mut(&partition).context("applying to a shard not open")?;
        let mut changes: Vec<Change> =
            batch.counts.into_iter().map(|(key, value)| Change::Count { key, value }).collect();
        for (q, t) in &batch.stream_times {
            changes.push(Change::u64(&meta::stream_time(&self.input, *q), *t as u64));
        }
        if let Some(windows) = &self.windows {
            changes.push(Change::Meta { name: meta::WINDOWS.into(), value: Some(windows.describe().into_bytes()) });
        }
        if let Some(through) = batch.emitted_through {
            changes.push(Change::u64(meta::EMITTED_THROUGH, through as u64));
        }
        changes.push(Change::u64(meta::RECORDS_PROCESSED, batch.totals.records_processed));
        changes.push(Change::u64(meta::RECORDS_SKIPPED, batch.totals.records_skipped));
        changes.push(Change::u64(&meta::input_offset(&self.repartition, partition), batch.next as u64));
        if let Some(position) = positions.get(&partition) {
            changes.push(Change::u64(&meta::changelog_position(&self.changelog, partition), *position as u64));
        }
        changes.push(Change::written_under(guarantee.name()));
        shard.task.write(changes).with_context(|| format!("writing shard {partition}"))?;
        shard.applied = batch.next;
        for (q, t) in batch.stream_times {
            let at = shard.stream_times.entry(q).or_insert(t);
            *at = (*at).max(t);
        }
        shard.kept_from = batch.kept_from.max(shard.kept_from);
        shard.emitted_through = batch.emitted_through.max(shard.emitted_through);
        Ok(())
    }
}

/// --window: the first window start a shard keeps once the input partitions are at
/// `stream_times` (`None` while an input partition that held records when the shard opened
/// has not reported a stream time yet: its records may belong to any window). With --emit
/// final, a window stays until its final board is out.
fn keep_from(
    spec: &WindowSpec,
    stream_times: &BTreeMap<i32, Millis>,
    non_empty: &BTreeSet<i32>,
    emit: Emit,
    emitted_through: Option<Millis>,
) -> Option<Millis> {
    if non_empty.iter().any(|q| !stream_times.contains_key(q)) {
        return None;
    }
    let keep_from = spec.keep_from(*stream_times.values().min()?);
    Some(match emit {
        Emit::Final => keep_from.min(emitted_through.map_or(Millis::MIN, |e| e.saturating_add(1))),
        Emit::Changes => keep_from,
    })
}

/// How an input partition's stream time rides on its committed offset (`committer::Metadata`).
const STREAM_TIME_METADATA: &str = "streamhost.stream-time=";

fn stream_time_metadata(t: Millis) -> String {
    format!("{STREAM_TIME_METADATA}{t}")
}

fn parse_stream_time_metadata(metadata: &str) -> Option<Millis> {
    metadata.strip_prefix(STREAM_TIME_METADATA)?.parse().ok()
}
