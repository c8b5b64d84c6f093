//! The direct topology of `host run` (one host): input -> guest -> one state task, no
//! repartitioning. A batch, top to bottom: `submit_batch` (to the guest thread), then
//! `send_batch` (deltas -> the state's values -> changelog records), then the committer
//! (`engine::committer`) makes it durable; the loop is `engine::cycle`'s.
//!
//! # The guarantee, and why each step is where it is
//!
//! Per batch the committer makes three durable writes, in this order:
//!
//! 1. **Changelog**: the newest value of every key the batch changed, plus the metadata the
//!    batch changes (records counted/skipped, and the next input offset of each partition),
//!    produced with idempotence and `acks=all`; the host waits for every acknowledgement.
//! 2. **State**: the same values, in one atomic RocksDB write batch, fsynced.
//! 3. **Offsets**: the input offsets are committed to the consumer group (asynchronously:
//!    state already holds them, so the commit only saves a restart some re-reading).
//!
//! What a crash (`kill -9`) in each gap leaves, with the state dir intact:
//! - *before or during 1*: nothing durable reflects the batch except, perhaps, some of its
//!   changelog records. State still holds the old values and the old input offsets, so the
//!   batch is consumed again and recomputes the same values from the same state; the
//!   changelog gets them again (compaction collapses the duplicates). Exact.
//! - *between 1 and 2*: the changelog is ahead of state; same as above. Exact.
//! - *between 2 and 3*: state reflects the batch but the group offsets do not. The batch is
//!   consumed again, but state stores the next offset of each partition it reflects, and
//!   records below it are skipped as already applied. Exact (the seed design inflates here).
//! - *after 3*: nothing to redo. Exact.
//!
//! With the state dir lost, `restore` rebuilds it from the changelog, metadata included, so
//! the same reasoning holds with one exception: a crash *during 1* can leave only part of
//! the batch's changelog records acknowledged. A restore from that changelog may hold some
//! keys at their new values while the input offsets are old; re-consuming the batch then
//! adds its deltas to those keys a second time. So after a crash *and* a lost state dir,
//! counters can be inflated by at most one batch's deltas; they are never below the truth.
//!
//! Malformed records (the guest says why, or traps on them) are skipped, counted as state,
//! logged at a bounded rate and copied to the dead-letter topic when one is set, within the
//! same batch and before its commit, so none is lost.
//!
//! The board is read from committed state between batches, so it never shows half a batch.
//!
//! # Exactly-once (`--guarantee exactly-once`)
//!
//! Batches go into a Kafka transaction instead: their changelog records, dead letters and
//! any board, then (every `--commit-interval`, or at once when the input is idle) the input
//! offsets with `send_offsets_to_transaction`, and the commit. Values of keys changed by the
//! open transaction live in its overlay; only after the commit does one atomic RocksDB write
//! apply the transaction, together with the changelog positions it reaches.
//! - *crash before the commit*: the restarted producer (same transactional id) aborts the
//!   open transaction; neither state nor the group's offsets moved. Exact.
//! - *crash after the commit, before state*: the group's offsets are past the transaction,
//!   state is not: at start-up state replays the changelog from its stored positions to the
//!   end (read_committed), which is that transaction and nothing more. Exact.
//! - *state dir lost*: a full restore reads only committed transactions. Exact.
//! - *abortable error*: the transaction is aborted, its overlay dropped, the input rewound to
//!   what state reflects. A fenced or fatal error stops the host (state stays valid).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use rdkafka::Message;
use rdkafka::consumer::Consumer;
use rdkafka::message::BorrowedMessage;

use crate::changelog;
use crate::engine::committer::{Metadata, Offsets, Positions, Sent, StepTimer, Tasks, Timings};
use crate::engine::config::{Emit, Guarantee, RunConfig};
use crate::engine::cycle::{self, Engine, Rebalance, StopHost, Topology, all_at_end};
use crate::engine::fault::{self, Step};
use crate::engine::one_host::{self, InputProgress, Started};
use crate::engine::records::{Group, NO_VALUE, checked_top_n, group_for, guest_event_times, open_windows, skip_record};
use crate::engine::task::{Durability, Task};
use crate::guest::reload::GuestReload;
use crate::guest::{Counter, Records};
use crate::kafka::clients::{HostConsumer, HostContext};
use crate::kafka::producer::AckedProducer;
use crate::process::shutdown::Shutdown;
use crate::state::{Change, Store, Totals, meta};
use crate::window::{self, Millis, WindowSpec};

/// `host run` on one host: the whole state in one store, no repartitioning (the guarantee
/// in the module doc).
pub fn run(
    args: RunConfig,
    guest: Box<dyn Counter + Send>,
    reload: Option<GuestReload>,
    shutdown: &Shutdown,
    http: &crate::serve::http::Shared,
) -> Result<()> {
    let windows = args.windows.as_ref().map(|w| w.spec);
    if !crate::state::shard_dirs(&args.state_dir)?.is_empty() {
        anyhow::bail!(
            "state dir {} holds the shards of a --scale-out host: run with --scale-out, or give this host \
             another --state-dir (and a new changelog topic and group)",
            args.state_dir.display()
        );
    }
    args.check_guest(guest.as_ref())?;
    let mut task = Task::open(&args.state_dir, Durability::Fsynced, &args.topics.changelog, None)?;
    check_windows_match_state(task.store(), windows.as_ref())?;
    let Started { producer, consumer, transactional_id, instance_id } = one_host::start(&args, &mut task, shutdown)?;

    // Readers see state from now on (a restore, which rebuilds it, is over).
    let store = task.store();
    let _ = http.store.set(store.shared());
    let applied = store.input_offsets(&args.topics.input)?;
    one_host::check_input_not_behind_state(&args, store, &applied)?;
    let stream_times = store.stream_times(&args.topics.input)?;
    let non_empty_partitions = match windows {
        Some(_) => changelog::non_empty_partitions(&args.kafka, &args.topics.input)?,
        None => BTreeSet::new(),
    };
    let emitted_through = store.meta_i64(meta::EMITTED_THROUGH)?;
    let emit = args.emit();
    let mut state = Local {
        input: InputProgress::new(&args.topics.input, applied),
        totals: store.totals()?,
        changelog: args.topics.changelog.clone(),
        emit,
        task,
        txn: None,
        windows,
        stream_times,
        kept_from: None,
        non_empty_partitions,
        emitted_through,
    };
    // What the host that wrote state had dropped (it follows from state's stream times), so a
    // replayed batch finds the same windows gone as the first time. (With --emit final it
    // also depends on boards produced between batches: left unknown, the first drop scans.)
    if emit == Emit::Changes {
        state.kept_from = state.keep_from(&state.stream_times);
    }
    let guest = crate::guest::thread::GuestThread::spawn(guest)?;
    let mut engine = Engine::new(&args, producer, guest, reload, shutdown, http)?;
    tracing::info!(
        guest = %engine.guest.describe(),
        guarantee = args.guarantee.name(),
        transactional_id = transactional_id.as_deref().unwrap_or("(none)"),
        input = %args.topics.input,
        group = %args.group,
        instance_id = instance_id.as_deref().unwrap_or("(dynamic)"),
        state_dir = %state.task.store().dir().display(),
        records_processed = state.totals.records_processed,
        "host running"
    );
    let mut direct = Direct { args, state, board_view: http.board.clone() };
    shutdown.working("counting");
    cycle::run(&mut engine, &mut direct, &consumer)?;
    shutdown.working("closing the Kafka consumer");
    crate::kafka::clients::close(std::mem::ManuallyDrop::into_inner(consumer), shutdown);
    Ok(())
}

/// Refuses state counted in other windows (or none) than this run's: its counters would not
/// mean what this run's do.
fn check_windows_match_state(store: &Store, windows: Option<&WindowSpec>) -> Result<()> {
    let stored = store.meta_text(meta::WINDOWS)?;
    let wanted = windows.map(WindowSpec::describe);
    let has_plain_counters = store.counts().next().is_some();
    let found = match (&stored, has_plain_counters) {
        (Some(stored), _) => format!("windows {stored}"),
        (None, true) => "cumulative counters (no --window)".to_owned(),
        (None, false) => return Ok(()),
    };
    if stored == wanted && !(wanted.is_some() && has_plain_counters) {
        return Ok(());
    }
    let asked = wanted.map_or("cumulative counters (no --window)".to_owned(), |w| format!("windows {w}"));
    anyhow::bail!(
        "state dir {} holds {found}, but this run asks for {asked}: run with the same window flags, \
         or start over with a new --state-dir, changelog topic and group",
        store.dir().display()
    )
}

/// The direct topology: input -> guest -> one state task, no repartitioning.
struct Direct {
    args: RunConfig,
    /// The state task: the whole state in one store.
    state: Local,
    /// For the board page: the boards published, with the lag.
    board_view: Arc<std::sync::Mutex<crate::serve::http::BoardView>>,
}

/// The single host's state task: the whole state in one store, written with an fsync per
/// batch (so under at-least-once it never replays its changelog's tail, see the module doc),
/// and what the batches under way and the open transaction change in it.
struct Local {
    task: Task,
    changelog: String,
    emit: Emit,
    /// Where state and the guest are in the input (a record already in state is skipped,
    /// see the module doc).
    input: InputProgress,
    totals: Totals,
    /// exactly-once: what the open transaction changes in state, once it commits.
    txn: Option<TxnChanges>,
    /// --window: the windows, and the stream time per partition after the batches submitted.
    windows: Option<WindowSpec>,
    stream_times: BTreeMap<i32, Millis>,
    /// --window: windows starting before this are no longer in state (`None`: unknown).
    kept_from: Option<Millis>,
    /// --window: the input partitions that held records at start-up. Until each has a
    /// stream time (has delivered), no window completes or is dropped: its records may
    /// belong to any window, and the slowest partition's stream time is only known then (a
    /// consumer may read one partition far ahead of another, e.g. in a backfill).
    non_empty_partitions: BTreeSet<i32>,
    /// --emit final: the newest window whose final board was produced.
    emitted_through: Option<Millis>,
}

/// exactly-once: what the open transaction's batches (and boards) change in state.
#[derive(Default)]
struct TxnChanges {
    /// New values of the keys its batches changed (`None`: deleted).
    overlay: HashMap<Vec<u8>, Option<u64>>,
    /// With --window: stream time per partition after its batches.
    stream_times: BTreeMap<i32, Millis>,
    /// Metadata its boards changed (--emit final).
    meta: Vec<Change>,
    /// Next input offset per partition after its batches.
    next_offsets: BTreeMap<i32, i64>,
}

/// at-least-once: what one batch changes in state (empty when every record of the batch was
/// already in state; then only the offsets are committed).
struct LocalBatch {
    changes: Vec<Change>,
    next_offsets: BTreeMap<i32, i64>,
}

/// A polled batch handed to the guest thread, before its result is back. Preparing it
/// writes nothing.
struct Submitted<'c> {
    messages: Vec<BorrowedMessage<'c>>,
    /// Indexes (into `messages`) of the records not yet counted.
    fresh: Vec<usize>,
    /// The records given to the guest, in groups of one `process-batch` call each.
    groups: Vec<Group>,
    /// Fresh records rejected without asking the guest (no value, late).
    rejected: Vec<(usize, String)>,
    /// Next offset per partition after the batch (what gets committed).
    next_offsets: BTreeMap<i32, i64>,
    /// With --window: stream time per partition after the batch.
    stream_times: BTreeMap<i32, Millis>,
}

impl<'c> Topology<'c> for Direct {
    type Context = HostContext;
    type Tasks = Local;
    type Submitted = Submitted<'c>;
    type Guest = crate::guest::thread::GuestThread;

    fn tasks(&mut self) -> &mut Local {
        &mut self.state
    }

    fn input_records(&self, batch: &[BorrowedMessage<'c>]) -> usize {
        batch.len()
    }

    fn waiting(&self, consumer: &HostConsumer) -> i64 {
        self.state.lag(consumer).values().sum()
    }

    /// One host per group (`check_group_is_ours`): its partitions never move.
    fn rebalance(&mut self, _engine: &mut Engine, _consumer: &'c HostConsumer) -> Result<Rebalance> {
        Ok(Rebalance::default())
    }

    fn ready(&self, consumer: &HostConsumer) -> bool {
        consumer.assignment().is_ok_and(|a| a.count() > 0)
    }

    fn done(&mut self, consumer: &HostConsumer, at_end: &BTreeSet<i32>) -> bool {
        let done = all_at_end(consumer, at_end);
        if done {
            tracing::info!("every assigned partition is consumed to its end (--stop-at-end)");
        }
        done
    }

    fn submit(&mut self, engine: &mut Engine, batch: Vec<BorrowedMessage<'c>>) -> Result<Submitted<'c>> {
        self.submit_batch(engine, batch)
    }

    fn send(&mut self, engine: &mut Engine, submitted: Submitted<'c>) -> Result<Option<Sent<LocalBatch>>> {
        self.send_batch(engine, submitted)
    }

    fn discard(&mut self, engine: &mut Engine, _submitted: Submitted<'c>) -> Result<()> {
        let (_result, _) = engine.guest.receive()?;
        Ok(())
    }

    fn give_up(&mut self, _: &mut Engine, _: &HostConsumer, _: &rdkafka::TopicPartitionList, _: bool) -> Result<()> {
        Ok(())
    }

    /// State holds the offsets it reflects: an offset commit that did not land costs a
    /// restart only some re-reading, so none is confirmed.
    fn idle(&mut self, _engine: &mut Engine, _consumer: &HostConsumer) {}

    fn publish_board(&mut self, engine: &mut Engine, consumer: &HostConsumer) -> Result<()> {
        self.flush_board(engine, consumer)
    }

    fn swap_guest(&mut self, engine: &mut Engine) -> Result<()> {
        cycle::swap_counting_guest(engine, |guest| self.args.accepts_swap(guest))
    }

    fn processed(&self) -> (Offsets, Metadata) {
        self.state.input.processed()
    }

    fn stopped(&self) {
        tracing::info!(
            records_processed = self.state.totals.records_processed,
            records_skipped = self.state.totals.records_skipped,
            "stopped cleanly"
        );
    }
}

impl Direct {
    /// Step 1: hands every record not yet counted to the guest thread. Writes nothing.
    fn submit_batch<'c>(&mut self, engine: &mut Engine, messages: Vec<BorrowedMessage<'c>>) -> Result<Submitted<'c>> {
        engine.committer.stats.batch_polled(messages.len());
        engine.metrics.records_consumed.inc_by(messages.len() as u64);
        engine.metrics.batch_records.observe(messages.len() as f64);
        let mut next_offsets = BTreeMap::new();
        let mut fresh = Vec::with_capacity(messages.len());
        let mut rejected = Vec::new();
        // Cumulative: one group. Windowed: one per set of open windows (a batch spans few).
        let mut groups: Vec<(Group, Records)> = Vec::new();
        if self.state.windows.is_none() {
            groups.push((Group { windows: None, positions: Vec::with_capacity(messages.len()) }, Records::default()));
        }
        let guest_times = self.guest_event_times(engine, &messages)?;
        for (index, message) in messages.iter().enumerate() {
            let next = next_offsets.entry(message.partition()).or_insert(0);
            *next = (*next).max(message.offset() + 1);
            if !self.state.input.submit(message) {
                continue;
            }
            fresh.push(index);
            let Some(value) = message.payload() else {
                rejected.push((index, NO_VALUE.to_owned()));
                continue;
            };
            let group = match self.state.windows {
                None => 0,
                Some(spec) => {
                    match self.state.open_windows(&spec, message, guest_times.get(index).copied().flatten()) {
                        Ok(open) => group_for(&mut groups, open),
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
        let (groups, records): (Vec<Group>, Vec<Records>) = groups.into_iter().unzip();
        engine.guest.submit(records)?;
        let stream_times = self.state.stream_times.clone();
        Ok(Submitted { messages, fresh, groups, rejected, next_offsets, stream_times })
    }

    /// With `--event-time guest`: the event time the guest gives each record of the batch
    /// not yet counted (by index into `messages`); empty otherwise.
    fn guest_event_times(
        &mut self,
        engine: &mut Engine,
        messages: &[BorrowedMessage<'_>],
    ) -> Result<Vec<Option<Millis>>> {
        if !self.needs_event_time() {
            return Ok(Vec::new());
        }
        let state = &self.state;
        let guest = (&mut engine.guest, &*engine.metrics, &mut engine.rejected_log);
        guest_event_times(guest, messages, |m| !state.already_counted(m))
    }

    /// Step 2, first half: takes the guest's result, dead-letters the rejected records, adds
    /// the deltas to state's values (the overlay), and sends the changelog records. Needs
    /// state to hold every earlier batch.
    fn send_batch(&mut self, engine: &mut Engine, batch: Submitted<'_>) -> Result<Option<Sent<LocalBatch>>> {
        let mut timer = StepTimer::start();
        let waiting = engine.shutdown.waiting_for("waiting for the guest's answer");
        let (results, guest_ms) = engine.guest.receive()?;
        drop(waiting);
        let results = results?;
        let guest_wait_ms = timer.lap();
        // Everything this batch produces (dead letters included) goes into the transaction.
        engine.committer.open_transaction()?;
        let mut rejected = batch.rejected;
        let mut deltas: Vec<(Vec<u8>, u64)> = Vec::new();
        for (group, result) in batch.groups.iter().zip(results) {
            for r in result.rejected {
                let index =
                    *group.positions.get(r.index as usize).context("guest rejected a record index out of range")?;
                rejected.push((index, r.reason));
            }
            match &group.windows {
                None => deltas.extend(result.deltas.into_iter().map(|d| (d.key.into_bytes(), d.amount))),
                Some(starts) => {
                    for d in result.deltas {
                        deltas
                            .extend(starts.iter().map(|start| (window::state_key(*start, d.key.as_bytes()), d.amount)));
                    }
                }
            }
        }
        // In input order, so dead letters keep the order of their records.
        rejected.sort_by_key(|(index, _)| *index);
        self.state.totals.records_processed += (batch.fresh.len() - rejected.len()) as u64;
        engine.metrics.records_counted.inc_by((batch.fresh.len() - rejected.len()) as u64);
        engine.metrics.step("guest", guest_ms / 1000.0);
        for (index, reason) in &rejected {
            self.reject(engine, &batch.messages[*index], reason)?;
        }
        let mut overlay: HashMap<Vec<u8>, u64> = HashMap::new();
        for (key, amount) in deltas {
            // The newest value: this batch's, else the open transaction's, else state's.
            let current = match overlay.get(&key) {
                Some(v) => *v,
                None => self.state.current(&key)?,
            };
            let updated = current.saturating_add(amount);
            if updated == u64::MAX && current != u64::MAX {
                tracing::warn!(key = %String::from_utf8_lossy(&key), "counter saturated at u64::MAX");
            }
            overlay.insert(key, updated);
        }
        let changed = !batch.fresh.is_empty();
        // With --window: the counters of windows past their retention go, in this same batch.
        let dropped =
            if changed { self.state.expired_counters(&batch.stream_times, &mut overlay)? } else { Vec::new() };
        let changes = if changed {
            self.state.changes(&overlay, &dropped, &batch.next_offsets, &batch.stream_times)
        } else {
            Vec::new()
        };
        self.send_changelog(engine.committer.producer(), &changes)?;
        let timestamps: Vec<i64> = batch.messages.iter().filter_map(|m| m.timestamp().to_millis()).collect();
        let offsets = self.state.input.offsets(&batch.next_offsets);
        let changelog_records = changes.len() as u64;
        if engine.committer.in_transaction() {
            // exactly-once: the batch joins the open transaction; state waits for its commit.
            let txn = self.state.txn.get_or_insert_default();
            txn.overlay.extend(overlay.into_iter().map(|(key, value)| (key, Some(value))));
            txn.overlay.extend(dropped.into_iter().map(|key| (key, None)));
            for (partition, next) in batch.next_offsets {
                let at = txn.next_offsets.entry(partition).or_insert(next);
                *at = (*at).max(next);
            }
            txn.stream_times.extend(batch.stream_times);
            tracing::debug!(records = batch.messages.len(), guest_ms, guest_wait_ms, send_ms = timer.lap(), "batch");
            engine.committer.joined(offsets, Metadata::new(), timestamps, changelog_records);
            return Ok(None);
        }
        Ok(Some(Sent {
            // State holds the stream times (and every offset it reflects): nothing to commit with them.
            metadata: Metadata::new(),
            produced: !changes.is_empty(),
            changes: LocalBatch { changes, next_offsets: batch.next_offsets },
            offsets,
            timestamps,
            changelog_records,
            timings: Timings { records: batch.messages.len(), guest_ms, guest_wait_ms, send_ms: timer.lap() },
        }))
    }

    /// A malformed record: counted, logged at a bounded rate, dead-lettered when configured.
    fn reject(&mut self, engine: &mut Engine, message: &BorrowedMessage<'_>, reason: &str) -> Result<()> {
        self.state.totals.records_skipped += 1;
        let dead_letter = self.args.topics.dead_letter.as_deref();
        let (producer, log) = (engine.committer.producer(), &mut engine.rejected_log);
        skip_record(producer, dead_letter, &engine.metrics, log, message, reason)
    }

    fn needs_event_time(&self) -> bool {
        self.args.needs_guest_event_time()
    }

    fn send_changelog(&self, producer: &AckedProducer, changes: &[Change]) -> Result<()> {
        changelog::send(producer, &self.state.changelog, changes)
    }

    /// Ranks and prints the board and produces it (with --emit final: the final boards of
    /// the windows completed since the last flush instead).
    fn publish_board(&mut self, engine: &mut Engine) -> Result<crate::board::Snapshot> {
        let (topic, n) = (self.args.topics.output.clone(), self.args.top_n);
        let state = &self.state;
        // The board reads state, so the stream times state holds.
        let stream_times = state.task.store().stream_times(&state.input.topic)?;
        let closing_blocked = state.closing_blocked(&stream_times);
        let windows = state.windows.as_ref().map(|spec| crate::board::Windows { spec, stream_times, closing_blocked });
        let (guest, metrics) = (&mut engine.guest, &engine.metrics);
        let top_n = &mut |counts: &[crate::guest::Entry], n| checked_top_n(guest, metrics, counts, n);
        let snapshot = crate::board::snapshot(state.task.store(), top_n, n, windows.as_ref())?;
        let producer = engine.committer.producer();
        let Some(windows) = windows.filter(|_| state.emit == Emit::Final) else {
            crate::board::produce(producer, &topic, &snapshot)?;
            return Ok(snapshot);
        };
        let after = state.emitted_through;
        let Some(newest) = crate::board::emit_final(state.task.store(), top_n, producer, &topic, n, &windows, after)?
        else {
            return Ok(snapshot);
        };
        // Recorded like any state: in the changelog, then in state (under exactly-once, in
        // the open transaction and in state when it commits).
        let change = Change::u64(meta::EMITTED_THROUGH, newest as u64);
        self.send_changelog(producer, std::slice::from_ref(&change))?;
        if engine.committer.in_transaction() {
            self.state.txn.get_or_insert_default().meta.push(change);
        } else {
            producer.wait_acks().context(StopHost)?;
            self.state.task.write([change])?;
        }
        self.state.emitted_through = Some(newest);
        Ok(snapshot)
    }

    fn flush_board(&mut self, engine: &mut Engine, consumer: &HostConsumer) -> Result<()> {
        // Under exactly-once the board goes into the transaction.
        engine.committer.open_transaction()?;
        let started = Instant::now();
        let snapshot = self.publish_board(engine)?;
        if engine.committer.exactly_once() {
            // The board is in the open transaction: "produced" means it reached the broker
            // there (its fate is the transaction's).
            engine.committer.producer().wait_acks().context(StopHost)?;
        }
        engine.metrics.board_flush_seconds.observe(started.elapsed().as_secs_f64());
        if self.args.http.is_some() {
            // For the board page and /metrics only: a round trip per partition.
            let lag = self.state.lag(consumer);
            for (partition, behind) in &lag {
                engine.metrics.consumer_lag.get_or_create(&vec![("partition", partition.to_string())]).set(*behind);
            }
            self.board_view.lock().unwrap_or_else(|p| p.into_inner()).publish(snapshot, lag);
        }
        fault::point(Step::AfterBoard);
        Ok(())
    }
}

impl Tasks<HostContext> for Local {
    type Batch = LocalBatch;

    /// One atomic, fsynced write batch (a batch that changed nothing only moves `applied`).
    fn apply_batch(&mut self, batch: LocalBatch, _positions: &Positions) -> Result<()> {
        if !batch.changes.is_empty() {
            let local = Change::written_under(Guarantee::AtLeastOnce.name());
            self.task.write(batch.changes.into_iter().chain([local]))?;
        }
        self.input.applied(&batch.next_offsets);
        Ok(())
    }

    /// One atomic write of the transaction's values, with the changelog positions it reaches.
    fn apply_transaction(&mut self, positions: &Positions) -> Result<()> {
        let txn = self.txn.take().unwrap_or_default();
        let mut changes: Vec<Change> =
            txn.overlay.into_iter().map(|(key, value)| Change::Count { key, value }).collect();
        changes.extend(txn.stream_times.iter().map(|(p, t)| self.stream_time_change(*p, *t)));
        changes.extend(txn.meta);
        changes.extend(self.windows_change());
        changes.extend(self.totals_changes());
        let next_offsets = self.input.applied_with(&txn.next_offsets);
        changes.extend(next_offsets.iter().map(|(p, next)| self.input_offset_change(*p, *next)));
        changes.extend(changelog::position_changes(&self.changelog, positions));
        changes.push(Change::written_under(Guarantee::ExactlyOnce.name()));
        self.task.write(changes)?;
        self.input.applied = next_offsets;
        Ok(())
    }

    /// Back to what state holds: counts restart from state's, the input from its offsets.
    fn rewind(&mut self, consumer: &HostConsumer) -> Result<()> {
        self.txn = None;
        self.totals = self.task.store().totals()?;
        self.stream_times = self.task.store().stream_times(&self.input.topic)?;
        self.emitted_through = self.task.store().meta_i64(meta::EMITTED_THROUGH)?;
        self.kept_from = None;
        self.input.rewind(consumer)
    }
}

impl Local {
    fn already_counted(&self, message: &BorrowedMessage<'_>) -> bool {
        self.input.already_counted(message)
    }

    /// A counter's newest value outside the batch being counted: the open transaction's,
    /// else state's.
    fn current(&self, key: &[u8]) -> Result<u64> {
        match self.txn.as_ref().and_then(|t| t.overlay.get(key)) {
            Some(v) => Ok(v.unwrap_or(0)),
            None => self.task.store().count(key),
        }
    }

    /// With --window: the windows still open for `message` (see `records::open_windows`),
    /// advancing its partition's stream time.
    fn open_windows(
        &mut self,
        spec: &WindowSpec,
        message: &BorrowedMessage<'_>,
        guest_time: Option<Millis>,
    ) -> Result<Vec<Millis>, String> {
        let partition = message.partition();
        let t = guest_time.or_else(|| message.timestamp().to_millis());
        let stream_time = self.stream_times.get(&partition).copied();
        let (t, open) = open_windows(spec, t, partition, stream_time, self.kept_from)?;
        let at = self.stream_times.entry(partition).or_insert(t);
        *at = (*at).max(t);
        Ok(open)
    }

    /// The batch as state changes: counters (and, with --window, the counters of expired
    /// windows deleted, and the stream times), totals, and the input offsets they reflect.
    fn changes(
        &self,
        overlay: &HashMap<Vec<u8>, u64>,
        dropped: &[Vec<u8>],
        next_offsets: &BTreeMap<i32, i64>,
        stream_times: &BTreeMap<i32, Millis>,
    ) -> Vec<Change> {
        let mut changes: Vec<Change> =
            overlay.iter().map(|(key, value)| Change::Count { key: key.clone(), value: Some(*value) }).collect();
        changes.extend(dropped.iter().map(|key| Change::Count { key: key.clone(), value: None }));
        changes.extend(stream_times.iter().map(|(p, t)| self.stream_time_change(*p, *t)));
        changes.extend(self.windows_change());
        changes.extend(self.totals_changes());
        let txn = self.txn.as_ref().map(|t| &t.next_offsets);
        for (partition, next) in next_offsets {
            // Never backwards: neither below state's nor below the open transaction's.
            changes.push(self.input_offset_change(*partition, self.input.not_behind(*partition, *next, txn)));
        }
        changes
    }

    fn totals_changes(&self) -> [Change; 2] {
        [
            Change::u64(meta::RECORDS_PROCESSED, self.totals.records_processed),
            Change::u64(meta::RECORDS_SKIPPED, self.totals.records_skipped),
        ]
    }

    fn input_offset_change(&self, partition: i32, next: i64) -> Change {
        Change::u64(&meta::input_offset(&self.input.topic, partition), next as u64)
    }

    /// With --window, the windows state is counted in (in every batch: a restore from the
    /// changelog must know them too, and it is one small record).
    fn windows_change(&self) -> Option<Change> {
        let windows = self.windows?.describe();
        Some(Change::Meta { name: meta::WINDOWS.into(), value: Some(windows.into_bytes()) })
    }

    fn stream_time_change(&self, partition: i32, time: Millis) -> Change {
        Change::u64(&meta::stream_time(&self.input.topic, partition), time as u64)
    }

    /// --window: the first window start kept in state once the partitions are at
    /// `stream_times` (`None` while closing is blocked, or without windows). With --emit
    /// final, a window stays until its final board is out.
    fn keep_from(&self, stream_times: &BTreeMap<i32, Millis>) -> Option<Millis> {
        let (spec, slowest) = (self.windows?, stream_times.values().min()?);
        if self.closing_blocked(stream_times) {
            return None;
        }
        let keep_from = spec.keep_from(*slowest);
        Some(match self.emit {
            Emit::Final => keep_from.min(self.emitted_through.map_or(Millis::MIN, |e| e.saturating_add(1))),
            Emit::Changes => keep_from,
        })
    }

    /// --window: true while an input partition that held records at start-up has no stream
    /// time in `stream_times` (see `non_empty_partitions`).
    fn closing_blocked(&self, stream_times: &BTreeMap<i32, Millis>) -> bool {
        self.non_empty_partitions.iter().any(|p| !stream_times.contains_key(p))
    }

    /// With --window: the state keys of every counter whose window is past its retention
    /// once the slowest partition is at its stream time in `stream_times` (none when nothing
    /// new expired); such counters of this batch (`overlay`) are left out of it. With --emit
    /// final, a window goes only after its board.
    fn expired_counters(
        &mut self,
        stream_times: &BTreeMap<i32, Millis>,
        overlay: &mut HashMap<Vec<u8>, u64>,
    ) -> Result<Vec<Vec<u8>>> {
        let Some(keep_from) = self.keep_from(stream_times) else { return Ok(Vec::new()) };
        if self.kept_from.is_some_and(|kept| kept >= keep_from) {
            return Ok(Vec::new());
        }
        let before = |key: &[u8]| window::parse_state_key(key).is_some_and(|(start, _)| start < keep_from);
        // A window can open and expire within one batch (a jump in event time): its counters
        // were never written, so they just go.
        overlay.retain(|key, _| !before(key));
        let mut keys: Vec<Vec<u8>> = self
            .task
            .store()
            .windowed_keys_between(self.kept_from, keep_from)
            .map(|k| k.map(Vec::from))
            .collect::<Result<_>>()?;
        if let Some(txn) = &self.txn {
            // Counters the open transaction holds and state does not yet.
            keys.extend(txn.overlay.iter().filter(|(k, v)| v.is_some() && before(k)).map(|(k, _)| k.clone()));
            keys.sort();
            keys.dedup();
        }
        if !keys.is_empty() {
            tracing::debug!(counters = keys.len(), before = %window::rfc3339(keep_from), "dropping expired windows");
        }
        self.kept_from = Some(keep_from);
        Ok(keys)
    }

    fn lag(&self, consumer: &HostConsumer) -> BTreeMap<i32, i64> {
        self.input.lag(consumer)
    }
}
