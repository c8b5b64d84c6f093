//! The processing topology of `host run` with a processor guest (`wit/processor`): input ->
//! guest (keyed state and emits, through host calls) -> one state task, on one host. A batch,
//! top to bottom: `submit` (the tables' news, then the records, to the guest thread, which
//! reads state through every batch not yet in the store and fires the timers that come due),
//! then `send` (dead letters, emits, then the changelog of the values and timers the batch
//! wrote), then the committer makes it durable in the one order (`engine::committer`). A
//! wall-clock timer due while no record comes gets a batch without records (`tick_due`).
//!
//! # The guarantee
//!
//! The counting topology's (`engine::direct`), step for step: the changelog holds the newest
//! value of every key a batch wrote plus the input offsets it reflects, state holds the same
//! in one fsynced write, then the offsets are committed; under exactly-once the batch's
//! emits, dead letters and changelog records are in one transaction with its input offsets,
//! and state follows the commit. A processor's writes are values, not deltas, so a batch
//! consumed again after a crash recomputes the same values from the same state.
//!
//! Emits under at-least-once are acknowledged *before* the batch's changelog records are
//! sent: a crash that also loses the state dir then restores no write whose emit was lost
//! (a guest that remembers "sent" in state and emits once, as a dedup does, would otherwise
//! never send it again). An emit may be sent twice (a crash before the offsets land); under
//! exactly-once, read_committed consumers see each once.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context, Result};
use rdkafka::Message;
use rdkafka::consumer::Consumer;
use rdkafka::message::{BorrowedMessage, Headers};

use crate::changelog;
use crate::engine::committer::{Metadata, Offsets, Positions, Sent, StepTimer, Tasks, Timings};
use crate::engine::config::{Guarantee, RunConfig};
use crate::engine::cycle::{self, Engine, Rebalance, Topology, all_at_end};
use crate::engine::one_host::{self, InputProgress, Started};
use crate::engine::records::skip_record;
use crate::engine::tables::Tables;
use crate::engine::task::{Durability, Task};
use crate::guest::processor::thread::{ProcessorThread, StateNotices};
use crate::guest::processor::{Header, InputRecord, ProcessorGuest};
use crate::kafka::clients::{HostConsumer, HostContext};
use crate::process::shutdown::Shutdown;
use crate::state::{Change, Store, Totals, meta};

/// `host run` with a processor guest, on one host (the guarantee in the module doc).
pub fn run(
    mut args: RunConfig,
    mut guest: ProcessorGuest,
    shutdown: &Shutdown,
    http: &crate::serve::http::Shared,
) -> Result<()> {
    let description = guest.description().clone();
    args.check_processor(&description)?;
    // A processor publishes no boards: the board topic is not this run's.
    args.topics.boards = false;
    if !crate::state::shard_dirs(&args.state_dir)?.is_empty() {
        anyhow::bail!(
            "state dir {} holds the shards of a --scale-out host; give this processor another --state-dir",
            args.state_dir.display()
        );
    }
    let mut task = Task::open(&args.state_dir, Durability::Fsynced, &args.topics.changelog, None)?;
    check_state_is_a_processors(task.store(), description.state_version)?;
    let Started { producer, consumer, transactional_id: _, instance_id: _ } =
        one_host::start(&args, &mut task, shutdown)?;

    let store = task.store();
    let _ = http.store.set(store.shared());
    let applied = store.input_offsets(&args.topics.input)?;
    one_host::check_input_not_behind_state(&args, store, &applied)?;
    // The tables, read to their ends before the first record.
    let tables = Tables::open(&args.state_dir, &args.kafka, &args.topics.tables, shutdown)?;
    guest.set_state(store.shared(), tables.stores(), args.max_state_ops);
    let guest = ProcessorThread::spawn(guest)?;
    let state = Values {
        input: InputProgress::new(&args.topics.input, applied),
        totals: store.totals()?,
        changelog: args.topics.changelog.clone(),
        state_version: description.state_version,
        notices: guest.notices(),
        task,
        txn: None,
    };
    let outputs: BTreeMap<String, String> = args.topics.outputs.iter().cloned().collect();
    let mut engine = Engine::new(&args, producer, guest, None, shutdown, http)?;
    tracing::info!(
        guest = %engine.guest.describe(),
        world = "processor",
        guarantee = args.guarantee.name(),
        input = %args.topics.input,
        outputs = ?outputs,
        group = %args.group,
        state_dir = %state.task.store().dir().display(),
        records_processed = state.totals.records_processed,
        "host running"
    );
    let dead_letter = args.topics.dead_letter.clone();
    let mut processing = Processing { state, outputs, dead_letter, tables, next_seq: 1 };
    shutdown.working("processing");
    cycle::run(&mut engine, &mut processing, &consumer)?;
    shutdown.working("closing the Kafka consumer");
    crate::kafka::clients::close(std::mem::ManuallyDrop::into_inner(consumer), shutdown);
    Ok(())
}

/// Refuses a state dir a counting guest wrote, or one a processor of another state version
/// wrote (its values would not mean what this guest's do).
fn check_state_is_a_processors(store: &Store, state_version: u32) -> Result<()> {
    if store.counts().next().is_some() || store.windowed_counts().next().is_some() {
        anyhow::bail!(
            "state dir {} holds a counting guest's counters; a processor guest needs its own --state-dir \
             (and changelog topic and group)",
            store.dir().display()
        );
    }
    if let Some(stored) = store.meta_i64(meta::PROCESSOR_STATE_VERSION)?
        && stored != i64::from(state_version)
    {
        anyhow::bail!(
            "state dir {} holds state version {stored}, but this guest declares state version {state_version}; \
             run the guest that wrote it, or start over with a new --state-dir, changelog topic and group \
             (migrations between state versions are not supported yet)",
            store.dir().display()
        );
    }
    Ok(())
}

/// The processing topology: input -> processor guest -> one state task.
struct Processing {
    state: Values,
    /// The guest's outputs, by name, to their topics.
    outputs: BTreeMap<String, String>,
    dead_letter: Option<String>,
    /// The tables' copies: what their topics get is read between batches.
    tables: Tables,
    /// The sequence number of the next batch submitted (the guest thread keeps the writes
    /// of each until the task says it is in the store).
    next_seq: u64,
}

/// The processor's state task: its values in one store, fsynced per batch (see the module
/// doc), with what the open transaction wrote.
struct Values {
    task: Task,
    changelog: String,
    state_version: u32,
    /// Where state and the guest are in the input.
    input: InputProgress,
    totals: Totals,
    /// Tells the guest thread which batches are in the store.
    notices: StateNotices,
    /// exactly-once: what the open transaction's batches write, once it commits.
    txn: Option<TxnWrites>,
}

#[derive(Default)]
struct TxnWrites {
    values: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    next_offsets: BTreeMap<i32, i64>,
    /// The newest batch in it.
    last_seq: u64,
}

/// at-least-once: what one batch changes in state.
struct ValuesBatch {
    seq: u64,
    changes: Vec<Change>,
    next_offsets: BTreeMap<i32, i64>,
}

/// A polled batch handed to the guest thread.
struct Submitted<'c> {
    seq: u64,
    messages: Vec<BorrowedMessage<'c>>,
    /// Indexes (into `messages`) of the records given to the guest.
    fresh: Vec<usize>,
    next_offsets: BTreeMap<i32, i64>,
}

impl<'c> Topology<'c> for Processing {
    type Context = HostContext;
    type Tasks = Values;
    type Submitted = Submitted<'c>;
    type Guest = ProcessorThread;

    fn tasks(&mut self) -> &mut Values {
        &mut self.state
    }

    fn input_records(&self, batch: &[BorrowedMessage<'c>]) -> usize {
        batch.len()
    }

    fn waiting(&self, consumer: &HostConsumer) -> i64 {
        self.state.input.lag(consumer).values().sum()
    }

    /// One host per group: its partitions never move.
    fn rebalance(&mut self, _: &mut Engine<ProcessorThread>, _: &'c HostConsumer) -> Result<Rebalance> {
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

    fn tick_due(&self, engine: &Engine<ProcessorThread>) -> bool {
        engine.guest.wall_clock_timer_due()
    }

    /// Step 1: every record not yet processed to the guest thread, as one batch (none: a
    /// wall-clock timer is due). Writes nothing.
    fn submit(
        &mut self,
        engine: &mut Engine<ProcessorThread>,
        messages: Vec<BorrowedMessage<'c>>,
    ) -> Result<Submitted<'c>> {
        if !messages.is_empty() {
            engine.committer.stats.batch_polled(messages.len());
            engine.metrics.records_consumed.inc_by(messages.len() as u64);
            engine.metrics.batch_records.observe(messages.len() as f64);
        }
        let mut next_offsets = BTreeMap::new();
        let mut fresh = Vec::with_capacity(messages.len());
        let mut records = Vec::with_capacity(messages.len());
        for (index, message) in messages.iter().enumerate() {
            let next = next_offsets.entry(message.partition()).or_insert(0);
            *next = (*next).max(message.offset() + 1);
            if !self.state.input.submit(message) {
                continue;
            }
            fresh.push(index);
            records.push(input_record(message));
        }
        // The batch sees the tables as read up to now.
        self.read_tables(engine)?;
        let seq = self.next_seq;
        self.next_seq += 1;
        engine.guest.submit(seq, records)?;
        Ok(Submitted { seq, messages, fresh, next_offsets })
    }

    /// Step 2: the guest's effects as records: dead letters, emits (acknowledged first under
    /// at-least-once, see the module doc), then the changelog of the values it wrote.
    fn send(
        &mut self,
        engine: &mut Engine<ProcessorThread>,
        batch: Submitted<'c>,
    ) -> Result<Option<Sent<ValuesBatch>>> {
        let mut timer = StepTimer::start();
        let waiting = engine.shutdown.waiting_for("waiting for the guest's answer");
        let (effects, guest_ms) = engine.guest.receive()?;
        drop(waiting);
        let effects = effects?;
        let guest_wait_ms = timer.lap();
        engine.committer.open_transaction()?;
        let processed = (batch.fresh.len() - effects.rejected.len()) as u64;
        self.state.totals.records_processed += processed;
        engine.metrics.records_counted.inc_by(processed);
        engine.metrics.step("guest", guest_ms / 1000.0);
        for (index, reason) in &effects.rejected {
            let message = &batch.messages[batch.fresh[*index]];
            self.state.totals.records_skipped += 1;
            let (producer, log) = (engine.committer.producer(), &mut engine.rejected_log);
            skip_record(producer, self.dead_letter.as_deref(), &engine.metrics, log, message, reason)?;
        }
        let producer = engine.committer.producer();
        for emit in &effects.emits {
            let topic = self.outputs.get(&emit.output).context("an emit to an output the guest did not declare")?;
            producer.send_record(topic, emit.key.as_deref(), emit.value.as_deref(), headers(&emit.headers))?;
        }
        if !engine.committer.in_transaction() && !effects.emits.is_empty() {
            producer.wait_acks().context("the emits of a batch were not acknowledged")?;
        }
        engine.metrics.timers_fired.inc_by(effects.timers_fired);
        for failure in &effects.timer_failures {
            engine.metrics.timer_failures.inc();
            if let Some(suppressed) = engine.rejected_log.allow() {
                tracing::warn!(suppressed, "a timer's call failed; what it did is dropped: {failure}");
            }
        }
        // A batch without records changes state when its timers did.
        let changed = !batch.fresh.is_empty() || !effects.writes.is_empty();
        let changes =
            if changed { self.state.changes(effects.writes.iter().cloned(), &batch.next_offsets) } else { Vec::new() };
        changelog::send(producer, &self.state.changelog, &changes)?;
        let timestamps: Vec<i64> = batch.messages.iter().filter_map(|m| m.timestamp().to_millis()).collect();
        let offsets = self.state.input.offsets(&batch.next_offsets);
        let changelog_records = changes.len() as u64;
        if engine.committer.in_transaction() {
            let txn = self.state.txn.get_or_insert_default();
            txn.values.extend(effects.writes);
            for (partition, next) in batch.next_offsets {
                let at = txn.next_offsets.entry(partition).or_insert(next);
                *at = (*at).max(next);
            }
            txn.last_seq = batch.seq;
            engine.committer.joined(offsets, Metadata::new(), timestamps, changelog_records);
            return Ok(None);
        }
        Ok(Some(Sent {
            metadata: Metadata::new(),
            produced: !changes.is_empty() || !effects.rejected.is_empty() || !effects.emits.is_empty(),
            changes: ValuesBatch { seq: batch.seq, changes, next_offsets: batch.next_offsets },
            offsets,
            timestamps,
            changelog_records,
            timings: Timings { records: batch.messages.len(), guest_ms, guest_wait_ms, send_ms: timer.lap() },
        }))
    }

    fn discard(&mut self, engine: &mut Engine<ProcessorThread>, _submitted: Submitted<'c>) -> Result<()> {
        let (_effects, _) = engine.guest.receive()?;
        Ok(())
    }

    fn give_up(
        &mut self,
        _: &mut Engine<ProcessorThread>,
        _: &HostConsumer,
        _: &rdkafka::TopicPartitionList,
        _: bool,
    ) -> Result<()> {
        Ok(())
    }

    /// A quiet moment: the tables' topics are read on, so the next batch sees their news.
    fn idle(&mut self, engine: &mut Engine<ProcessorThread>, _: &HostConsumer) {
        if let Err(e) = self.read_tables(engine) {
            tracing::warn!(error = %format!("{e:#}"), "reading the tables failed; trying again");
        }
    }

    /// A processor publishes no board.
    fn publish_board(&mut self, _: &mut Engine<ProcessorThread>, _: &HostConsumer) -> Result<()> {
        Ok(())
    }

    /// Hot swap of a processor (its state carried over) is not in this version: say so.
    fn swap_guest(&mut self, engine: &mut Engine<ProcessorThread>) -> Result<()> {
        if engine.shutdown.take_reload() {
            tracing::warn!(
                "SIGHUP: a processor guest is not swapped while running yet; restart the host with the new guest"
            );
        }
        Ok(())
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

impl Processing {
    /// What the tables' topics got since the last look, to the guest thread (applied before
    /// the next batch).
    fn read_tables(&mut self, engine: &mut Engine<ProcessorThread>) -> Result<()> {
        let updates = self.tables.poll()?;
        if !updates.is_empty() {
            engine.guest.update_tables(updates)?;
        }
        Ok(())
    }
}

/// A consumed record as the guest sees it.
fn input_record(message: &BorrowedMessage<'_>) -> InputRecord {
    let headers = message
        .headers()
        .map(|h| {
            h.iter().map(|h| Header { key: h.key.to_owned(), value: h.value.unwrap_or_default().to_vec() }).collect()
        })
        .unwrap_or_default();
    InputRecord {
        key: message.key().map(<[u8]>::to_vec),
        value: message.payload().map(<[u8]>::to_vec),
        headers,
        timestamp: message.timestamp().to_millis().unwrap_or(-1),
        partition: message.partition(),
        offset: message.offset(),
    }
}

fn headers(headers: &[(String, Vec<u8>)]) -> Option<rdkafka::message::OwnedHeaders> {
    if headers.is_empty() {
        return None;
    }
    let mut out = rdkafka::message::OwnedHeaders::new_with_capacity(headers.len());
    for (key, value) in headers {
        out = out.insert(rdkafka::message::Header { key, value: Some(value) });
    }
    Some(out)
}

impl Tasks<HostContext> for Values {
    type Batch = ValuesBatch;

    fn apply_batch(&mut self, batch: ValuesBatch, _positions: &Positions) -> Result<()> {
        if !batch.changes.is_empty() {
            let local = Change::written_under(Guarantee::AtLeastOnce.name());
            self.task.write(batch.changes.into_iter().chain([local]))?;
        }
        self.input.applied(&batch.next_offsets);
        self.notices.applied(batch.seq);
        Ok(())
    }

    fn apply_transaction(&mut self, positions: &Positions) -> Result<()> {
        let txn = self.txn.take().unwrap_or_default();
        let next_offsets = self.input.applied_with(&txn.next_offsets);
        let mut changes: Vec<Change> =
            txn.values.into_iter().map(|(key, value)| Change::Value { key, value }).collect();
        changes.extend(self.meta_changes(&next_offsets));
        changes.extend(changelog::position_changes(&self.changelog, positions));
        changes.push(Change::written_under(Guarantee::ExactlyOnce.name()));
        self.task.write(changes)?;
        self.input.applied = next_offsets;
        self.notices.applied(txn.last_seq);
        Ok(())
    }

    fn rewind(&mut self, consumer: &HostConsumer) -> Result<()> {
        self.txn = None;
        self.totals = self.task.store().totals()?;
        self.notices.rewind();
        self.input.rewind(consumer)
    }
}

impl Values {
    /// A batch as state changes: the values it wrote, the totals, the state version and the
    /// input offsets it reflects (never backwards).
    fn changes(
        &self,
        writes: impl Iterator<Item = (Vec<u8>, Option<Vec<u8>>)>,
        next_offsets: &BTreeMap<i32, i64>,
    ) -> Vec<Change> {
        let mut changes: Vec<Change> = writes.map(|(key, value)| Change::Value { key, value }).collect();
        let txn = self.txn.as_ref().map(|t| &t.next_offsets);
        let offsets: BTreeMap<i32, i64> =
            next_offsets.iter().map(|(p, next)| (*p, self.input.not_behind(*p, *next, txn))).collect();
        changes.extend(self.meta_changes(&offsets));
        changes
    }

    fn meta_changes(&self, next_offsets: &BTreeMap<i32, i64>) -> Vec<Change> {
        let mut changes = vec![
            Change::u64(meta::RECORDS_PROCESSED, self.totals.records_processed),
            Change::u64(meta::RECORDS_SKIPPED, self.totals.records_skipped),
            Change::u64(meta::PROCESSOR_STATE_VERSION, u64::from(self.state_version)),
        ];
        changes.extend(
            next_offsets.iter().map(|(p, next)| Change::u64(&meta::input_offset(&self.input.topic, *p), *next as u64)),
        );
        changes
    }
}
