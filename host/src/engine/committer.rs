//! The commit order, written once for both topologies: how a batch's records, its state and
//! its input offsets become durable, and the exactly-once transaction around them.
//!
//! **at-least-once**, per batch, in this order ([`Committer::finish`]):
//! 1. every record the batch produced (changelog, repartition, dead letters) acknowledged by
//!    Kafka (`acks=all`, idempotent);
//! 2. state: the tasks write what the batch changed ([`Tasks::apply_batch`]), with the input
//!    offsets it reflects;
//! 3. the input offsets committed to the group, asynchronously (state already holds them, or,
//!    for stage A of a repartitioned job, the deltas are in Kafka already).
//!
//! **exactly-once**: batches join one open transaction ([`Committer::joined`]); every
//! `--commit-interval` (or at once when the input is idle, or before a rebalance gives
//! partitions up) [`Committer::commit_txn`] adds the input offsets with the group's metadata
//! (so a host that lost its partitions is fenced), commits, and only then do the tasks write
//! what the transaction carried ([`Tasks::apply_transaction`]). An abortable failure aborts
//! it and the tasks rewind the input ([`Tasks::rewind`]); a fenced or fatal one stops the host.
//!
//! What a crash in each gap costs is each topology's to say (its module doc), because it
//! depends on what its state holds; the fault points (`engine::fault`) sit here, between the
//! steps, so that every gap is tested the same way in both.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::{Offset, TopicPartitionList};

use crate::engine::config::Guarantee;
use crate::engine::fault::{self, Step};
use crate::engine::log_limit::LogLimit;
use crate::engine::stats::RunStats;
use crate::kafka::producer::{AckedProducer, TxnError};
use crate::process::shutdown::Shutdown;
use crate::serve::metrics::Metrics;

/// Next offset per (topic, partition): what a batch consumed, what a commit sends.
pub type Offsets = BTreeMap<(String, i32), i64>;

/// Metadata committed with an input partition's offset (with windows: the partition's stream
/// time as of that offset, so that the next owner of the partition judges lateness as this
/// one did; Kafka Streams keeps its partition time the same way).
pub type Metadata = BTreeMap<(String, i32), String>;

/// Per changelog partition, the offset after the last record Kafka acknowledged.
pub type Positions = BTreeMap<i32, i64>;

/// A topology's state as the committer sees it: the state tasks it writes to, and how the
/// input is rewound after an aborted transaction.
pub trait Tasks<C: ConsumerContext> {
    /// at-least-once: what one batch changes in state, held while its records are acknowledged.
    type Batch;

    /// at-least-once: writes a batch whose records Kafka has acknowledged.
    fn apply_batch(&mut self, batch: Self::Batch, positions: &Positions) -> Result<()>;

    /// exactly-once: writes what the transaction that just committed carried (the tasks hold
    /// it meanwhile: its batches read their own writes).
    fn apply_transaction(&mut self, positions: &Positions) -> Result<()>;

    /// exactly-once, after an abort: forgets what the transaction carried and seeks every
    /// assigned partition to where state (or the group) says it resumes.
    fn rewind(&mut self, consumer: &BaseConsumer<C>) -> Result<()>;

    /// exactly-once, after a transaction that committed or aborted, unknown which
    /// ([`TxnError::InDoubt`]): forgets what it carried, and reads state and the input again
    /// from what Kafka holds, which says which. Tasks that cannot stop the host (a restart
    /// does the same).
    fn in_doubt(&mut self, _consumer: &BaseConsumer<C>, reason: &str) -> Result<()> {
        Err(anyhow::anyhow!(
            "transaction committed or aborted, unknown which ({reason}); stopping (state is intact: a restart \
             resumes exactly)"
        ))
    }
}

/// at-least-once: a batch whose records are sent, not yet known to be acknowledged.
pub struct Sent<B> {
    /// What it changes in state (the tasks' [`Tasks::Batch`]).
    pub changes: B,
    /// False when it sent nothing (every record was in state already): no acknowledgement to
    /// wait for, only offsets to commit.
    pub produced: bool,
    pub offsets: Offsets,
    pub metadata: Metadata,
    /// Record timestamps (ms), for the latency histogram once acknowledged.
    pub timestamps: Vec<i64>,
    pub changelog_records: u64,
    pub timings: Timings,
}

/// What a batch took before the committer got it, for the per-batch debug line.
#[derive(Default, Clone, Copy)]
pub struct Timings {
    pub records: usize,
    /// The guest thread's time on it, and the part of it the loop waited for.
    pub guest_ms: f64,
    pub guest_wait_ms: f64,
    pub send_ms: f64,
}

/// exactly-once: the open transaction's input side (its state side is with the tasks).
struct OpenTxn {
    opened: Instant,
    offsets: Offsets,
    metadata: Metadata,
    timestamps: Vec<i64>,
    changelog_records: u64,
}

pub struct Committer {
    producer: AckedProducer,
    guarantee: Guarantee,
    commit_interval: Duration,
    txn: Option<OpenTxn>,
    /// at-least-once: asynchronous commits sent since the last one known to have landed.
    unconfirmed: bool,
    metrics: Arc<Metrics>,
    pub stats: RunStats,
    commit_log: LogLimit,
    shutdown: Shutdown,
}

impl Committer {
    pub fn new(
        producer: AckedProducer,
        guarantee: Guarantee,
        commit_interval: Duration,
        metrics: Arc<Metrics>,
        shutdown: Shutdown,
    ) -> Self {
        Committer {
            producer,
            guarantee,
            commit_interval,
            txn: None,
            unconfirmed: false,
            metrics,
            stats: RunStats::default(),
            commit_log: LogLimit::new(Duration::from_secs(5)),
            shutdown,
        }
    }

    /// Where every record goes out: changelog, repartition, dead letters, boards.
    pub fn producer(&self) -> &AckedProducer {
        &self.producer
    }

    pub fn exactly_once(&self) -> bool {
        self.guarantee == Guarantee::ExactlyOnce
    }

    /// exactly-once: opens a transaction unless one is open, before anything that belongs in
    /// it is produced. Nothing under at-least-once.
    pub fn open_transaction(&mut self) -> Result<()> {
        if self.exactly_once() && self.txn.is_none() {
            self.producer.begin().map_err(TxnError::stopping).context(crate::engine::cycle::StopHost)?;
            self.txn = Some(OpenTxn {
                opened: Instant::now(),
                offsets: Offsets::new(),
                metadata: Metadata::new(),
                timestamps: Vec::new(),
                changelog_records: 0,
            });
        }
        Ok(())
    }

    pub fn in_transaction(&self) -> bool {
        self.txn.is_some()
    }

    /// True when the open transaction carries input offsets (not only boards).
    pub fn transaction_carries_batches(&self) -> bool {
        self.txn.as_ref().is_some_and(|t| !t.offsets.is_empty())
    }

    /// exactly-once: the open transaction is to be committed now: the input is idle (nothing
    /// else would come to fill it), or `--commit-interval` is up.
    pub fn transaction_due(&self, idle: bool) -> bool {
        self.txn.as_ref().is_some_and(|t| idle || t.opened.elapsed() >= self.commit_interval)
    }

    /// exactly-once: a batch's records were sent into the open transaction (its state changes
    /// are with the tasks until the commit).
    pub fn joined(&mut self, offsets: Offsets, metadata: Metadata, timestamps: Vec<i64>, changelog_records: u64) {
        let txn = self.txn.as_mut().expect("a batch joins an open transaction");
        for (partition, next) in offsets {
            let at = txn.offsets.entry(partition).or_insert(next);
            *at = (*at).max(next);
        }
        // Batches join in order: the newest metadata goes with the newest offsets.
        txn.metadata.extend(metadata);
        txn.timestamps.extend(timestamps);
        txn.changelog_records += changelog_records;
        fault::point(Step::MidTransaction);
    }

    /// at-least-once, the rest of a sent batch: acknowledgements, state, offsets (module doc).
    pub fn finish<C: ConsumerContext, T: Tasks<C>>(
        &mut self,
        consumer: &BaseConsumer<C>,
        tasks: &mut T,
        sent: Sent<T::Batch>,
    ) -> Result<()> {
        let mut timer = StepTimer::start();
        let (mut changelog_ms, mut state_ms) = (0.0, 0.0);
        if sent.produced {
            // 1. Every record acknowledged.
            let waiting = self.shutdown.waiting_for("waiting for Kafka to acknowledge the changelog");
            self.producer.wait_acks().context("changelog write")?;
            drop(waiting);
            changelog_ms = timer.lap();
            self.metrics.step("changelog", changelog_ms / 1000.0);
            self.durable(sent.changelog_records, sent.timestamps);
            fault::point(Step::AfterChangelog);
        }
        // 2. State.
        tasks.apply_batch(sent.changes, &self.producer.changelog_positions()).context("state write")?;
        if sent.produced {
            state_ms = timer.lap();
            self.metrics.step("state", state_ms / 1000.0);
            fault::point(Step::AfterState);
        }
        // 3. Offsets: only now is the batch committed to the group.
        // Sent or not, it is to be confirmed (`confirm_commits`).
        self.commit_offsets(consumer, &sent.offsets, &sent.metadata, CommitMode::Async);
        self.unconfirmed = true;
        let commit_ms = timer.lap();
        self.metrics.step("commit", commit_ms / 1000.0);
        self.stats.committed();
        let t = sent.timings;
        tracing::debug!(
            records = t.records,
            guest_ms = t.guest_ms,
            guest_wait_ms = t.guest_wait_ms,
            send_ms = t.send_ms,
            changelog_ms,
            state_ms,
            commit_ms,
            "batch"
        );
        fault::point(Step::AfterCommit);
        Ok(())
    }

    /// exactly-once: commits the open transaction with its input offsets, then has the tasks
    /// apply it. Returns false when it had to be aborted instead (the tasks rewound the input;
    /// the caller drops what it polled since).
    pub fn commit_txn<C: ConsumerContext, T: Tasks<C>>(
        &mut self,
        consumer: &BaseConsumer<C>,
        tasks: &mut T,
    ) -> Result<bool> {
        let Some(txn) = self.txn.take() else { return Ok(true) };
        let mut timer = StepTimer::start();
        let offsets = partition_list(&txn.offsets, &txn.metadata)?;
        let group = consumer.group_metadata().context("the consumer has no group metadata")?;
        // Fault points count transactions that carry batches, not board-only ones.
        let carries_batches = !txn.offsets.is_empty();
        let committed = if carries_batches && fault::due(Step::AbortTransaction) {
            Err(TxnError::Abortable("fault injection (abort-transaction)".into()))
        } else {
            let committed = self.producer.commit(&offsets, group);
            // Counted among transactions that change state.
            if committed.is_ok() && txn.changelog_records > 0 && fault::due(Step::LostCommitAnswer) {
                Err(self.producer.lost_commit_answer())
            } else {
                committed
            }
        };
        match committed {
            Ok(()) => {}
            Err(TxnError::Abortable(reason)) => {
                self.abort(consumer, tasks, &reason)?;
                return Ok(false);
            }
            // A new producer aborted it already: rewind as after an abort.
            Err(TxnError::Replaced(reason)) => {
                tracing::warn!(reason, "the transaction was aborted; the input is rewound to the last commit");
                self.metrics.transactions_aborted.inc();
                tasks.rewind(consumer)?;
                return Ok(false);
            }
            Err(TxnError::InDoubt(reason)) => {
                self.in_doubt(consumer, tasks, &reason)?;
                return Ok(false);
            }
            Err(e) => return Err(e.stopping()),
        }
        let commit_ms = timer.lap();
        self.metrics.step("commit", commit_ms / 1000.0);
        self.durable(txn.changelog_records, txn.timestamps);
        if carries_batches {
            fault::point(Step::AfterChangelog);
        }
        tasks.apply_transaction(&self.producer.changelog_positions()).context("state write")?;
        let state_ms = timer.lap();
        self.metrics.step("state", state_ms / 1000.0);
        tracing::debug!(commit_ms, state_ms, "transaction committed and applied");
        if carries_batches {
            self.stats.committed();
            fault::point(Step::AfterState);
            fault::point(Step::AfterCommit);
        }
        Ok(true)
    }

    /// exactly-once: aborts the open transaction, if any, for a run that starts over with a
    /// new consumer (its tasks are given up: they open again from their state).
    pub fn drop_transaction(&mut self) -> Result<()> {
        if self.txn.take().is_some() {
            self.metrics.transactions_aborted.inc();
            match self.producer.abort() {
                // Timed out: aborted, or committed; the new run reads state back either way.
                Ok(()) | Err(TxnError::Replaced(_) | TxnError::InDoubt(_)) => {}
                Err(e) => return Err(e.stopping()),
            }
        }
        Ok(())
    }

    /// exactly-once: aborts the open transaction, if any (e.g. its partitions were lost).
    pub fn abort_open<C: ConsumerContext, T: Tasks<C>>(
        &mut self,
        consumer: &BaseConsumer<C>,
        tasks: &mut T,
        reason: &str,
    ) -> Result<()> {
        if self.txn.take().is_some() {
            self.abort(consumer, tasks, reason)?;
        }
        Ok(())
    }

    fn abort<C: ConsumerContext, T: Tasks<C>>(
        &mut self,
        consumer: &BaseConsumer<C>,
        tasks: &mut T,
        reason: &str,
    ) -> Result<()> {
        tracing::warn!(reason, "aborting the transaction; the input is rewound to the last commit");
        self.metrics.transactions_aborted.inc();
        let aborted = self.producer.abort();
        self.txn = None;
        match aborted {
            // Or it had timed out: aborted by its coordinator, and the producer replaced.
            Ok(()) | Err(TxnError::Replaced(_)) => tasks.rewind(consumer),
            Err(TxnError::InDoubt(reason)) => self.in_doubt(consumer, tasks, &reason),
            Err(e) => Err(e.stopping()),
        }
    }

    /// A transaction that committed or aborted, unknown which: state and the input are read
    /// back from Kafka (see [`Tasks::in_doubt`]).
    fn in_doubt<C: ConsumerContext, T: Tasks<C>>(
        &mut self,
        consumer: &BaseConsumer<C>,
        tasks: &mut T,
        reason: &str,
    ) -> Result<()> {
        tracing::warn!(
            reason,
            "the transaction committed or aborted, unknown which: state and the input are read again from Kafka"
        );
        self.metrics.transactions_aborted.inc();
        tasks.in_doubt(consumer, reason)
    }

    /// at-least-once: commits `offsets`; false when the commit failed (a synchronous one) or
    /// could not be sent (logged at a bounded rate; a later commit sends them again).
    pub fn commit_offsets<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        offsets: &Offsets,
        metadata: &Metadata,
        mode: CommitMode,
    ) -> bool {
        if offsets.is_empty() {
            return true;
        }
        let committed = partition_list(offsets, metadata).and_then(|list| Ok(consumer.commit(&list, mode)?));
        match committed {
            Ok(()) => true,
            Err(e) => {
                if let Some(suppressed) = self.commit_log.allow() {
                    tracing::warn!(error = %format!("{e:#}"), suppressed, "offset commit failed; it is sent again");
                }
                false
            }
        }
    }

    /// at-least-once: once idle, commits `processed` synchronously if asynchronous commits went
    /// out since the last confirmed one (one can fail, e.g. during a rebalance, and no later
    /// batch may come to commit that partition again).
    pub fn confirm_commits<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        processed: &Offsets,
        metadata: &Metadata,
    ) {
        if self.unconfirmed && self.commit_offsets(consumer, processed, metadata, CommitMode::Sync) {
            self.unconfirmed = false;
        }
    }

    /// Records written for good (acknowledged, or in a committed transaction).
    fn durable(&mut self, changelog_records: u64, timestamps: Vec<i64>) {
        self.stats.changelog_records += changelog_records;
        self.metrics.changelog_records.inc_by(changelog_records);
        self.stats.acknowledged(timestamps.into_iter());
    }
}

pub fn partition_list(offsets: &Offsets, metadata: &Metadata) -> Result<TopicPartitionList> {
    let mut list = TopicPartitionList::new();
    for ((topic, partition), next) in offsets {
        list.add_partition_offset(topic, *partition, Offset::Offset(*next))?;
        if let Some(metadata) = metadata.get(&(topic.clone(), *partition))
            && let Some(mut element) = list.find_partition(topic, *partition)
        {
            element.set_metadata(metadata);
        }
    }
    Ok(list)
}

/// Milliseconds between laps, for the per-batch debug line.
pub struct StepTimer(Instant);

impl StepTimer {
    pub fn start() -> Self {
        StepTimer(Instant::now())
    }

    pub fn lap(&mut self) -> f64 {
        let now = Instant::now();
        let ms = now.duration_since(self.0).as_secs_f64() * 1000.0;
        self.0 = now;
        ms
    }
}
