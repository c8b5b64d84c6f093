//! The one loop of `host run`, for both topologies ([`crate::engine::direct`]: one host;
//! [`crate::engine::repartitioned`]: `--scale-out`): poll, keep batches moving, commit on
//! time, boards, guest swaps, rebalances, the stall watchdog and the stop. What a batch
//! *does* is the topology's; when it becomes durable, the committer's.
//!
//! Three batches move at once, each at a different step:
//! - the newest is polled and handed to the guest thread (`submit`, which writes nothing);
//! - the one before has its records on their way to the broker (`send`);
//! - between the two, the loop finishes the oldest (acknowledgements, state, offsets:
//!   `Committer::finish`) before it turns the guest's result of the next into records.
//!
//! So every durable write happens in the committer's order, one batch after another: a
//! batch's records are computed on state that holds every earlier batch, and sent only then.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
use rdkafka::TopicPartitionList;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::message::BorrowedMessage;

use crate::engine::committer::{Committer, Metadata, Offsets, Sent, Tasks};
use crate::engine::config::RunConfig;
use crate::engine::log_limit::LogLimit;
use crate::engine::pace::Pace;
use crate::engine::records::{POLL_WAIT, poll_batch};
use crate::engine::stall::Watchdog;
use crate::guest::reload::GuestReload;
use crate::guest::thread::GuestThread;
use crate::guest::{Counter, Guest};
use crate::kafka::producer::AckedProducer;
use crate::process::shutdown::Shutdown;
use crate::serve::metrics::Metrics;

/// What the loop owns for any topology; `G` is the guest on its thread (a counting guest's
/// [`GuestThread`], or a processor's).
pub struct Engine<G = GuestThread> {
    /// The write order and the exactly-once transaction.
    pub committer: Committer,
    pub guest: G,
    /// Hot swap of the guest (not for the benchmark's native baseline).
    pub reload: Option<GuestReload>,
    pub metrics: Arc<Metrics>,
    /// For /readyz: set once the host counts.
    pub ready: Arc<AtomicBool>,
    /// SIGINT/SIGTERM end the loop; SIGHUP reloads the guest; a stop's log says what it met.
    pub shutdown: Shutdown,
    pub watchdog: Watchdog,
    pub pace: Pace,
    /// Malformed records and consumer errors, logged at a bounded rate.
    pub rejected_log: LogLimit,
    pub consumer_log: LogLimit,
    pub max_batch: usize,
    pub flush_interval: Duration,
    pub stop_at_end: bool,
}

impl<G> Engine<G> {
    pub fn new(
        args: &RunConfig,
        producer: AckedProducer,
        guest: G,
        reload: Option<GuestReload>,
        shutdown: &Shutdown,
        http: &crate::serve::http::Shared,
    ) -> Result<Engine<G>> {
        let metrics = http.metrics.clone();
        Ok(Engine {
            committer: Committer::new(
                producer,
                args.guarantee,
                args.commit_interval,
                metrics.clone(),
                shutdown.clone(),
            ),
            guest,
            reload,
            metrics,
            ready: http.ready.clone(),
            shutdown: shutdown.clone(),
            watchdog: Watchdog::new(args.stall_timeout),
            pace: Pace::new(args.max_rate),
            rejected_log: LogLimit::new(Duration::from_secs(1)),
            consumer_log: LogLimit::new(Duration::from_secs(5)),
            max_batch: args.max_batch,
            flush_interval: args.flush_interval,
            stop_at_end: args.stop_at_end,
        })
    }
}

/// What the group changed since the last poll.
#[derive(Default)]
pub struct Rebalance {
    /// Partitions to give up once what is under way of them is committed.
    pub revoked: Option<TopicPartitionList>,
    /// They were lost (the session timed out): another host may count them already.
    pub lost: bool,
}

/// A sent batch of topology `T`, waiting for its acknowledgements (at-least-once).
type InFlight<'c, T> = Sent<<<T as Topology<'c>>::Tasks as Tasks<<T as Topology<'c>>::Context>>::Batch>;

/// One way of turning input into state: direct (input -> guest -> one task) or
/// repartitioned (input -> guest -> repartition topic -> a task per partition).
pub trait Topology<'c> {
    type Context: ConsumerContext + 'c;
    /// The state tasks the committer writes to.
    type Tasks: Tasks<Self::Context>;
    /// A polled batch handed to the guest thread.
    type Submitted;
    /// The guest, on its thread.
    type Guest;

    fn tasks(&mut self) -> &mut Self::Tasks;

    /// Records of a poll that are the job's input (for `--max-rate`).
    fn input_records(&self, batch: &[BorrowedMessage<'c>]) -> usize;

    /// The stall watchdog's look: records waiting on the partitions this host counts.
    fn waiting(&self, consumer: &BaseConsumer<Self::Context>) -> i64;

    /// After a poll: what the group changed (a direct topology is alone in its group).
    fn rebalance(
        &mut self,
        engine: &mut Engine<Self::Guest>,
        consumer: &'c BaseConsumer<Self::Context>,
    ) -> Result<Rebalance>;

    /// Ready to count (for /readyz).
    fn ready(&self, consumer: &BaseConsumer<Self::Context>) -> bool;

    /// `--stop-at-end`, asked when nothing is under way: is the whole job counted?
    fn done(&mut self, consumer: &BaseConsumer<Self::Context>, at_end: &BTreeSet<i32>) -> bool;

    /// A batch without records is due (a processor's wall-clock timer): `submit` it.
    fn tick_due(&self, _engine: &Engine<Self::Guest>) -> bool {
        false
    }

    /// Step 1: hands the records not yet counted to the guest thread. Writes nothing.
    fn submit(&mut self, engine: &mut Engine<Self::Guest>, batch: Vec<BorrowedMessage<'c>>) -> Result<Self::Submitted>;

    /// Step 2: the guest's result as records sent (into the open transaction under
    /// exactly-once; else returned, to be finished after the next batch is submitted).
    fn send(
        &mut self,
        engine: &mut Engine<Self::Guest>,
        submitted: Self::Submitted,
    ) -> Result<Option<InFlight<'c, Self>>>;

    /// Drops a submitted batch whose records will be read again (after an abort's rewind).
    fn discard(&mut self, engine: &mut Engine<Self::Guest>, submitted: Self::Submitted) -> Result<()>;

    /// Gives revoked partitions up: what was under way of them is finished by now.
    fn give_up(
        &mut self,
        engine: &mut Engine<Self::Guest>,
        consumer: &BaseConsumer<Self::Context>,
        revoked: &TopicPartitionList,
        lost: bool,
    ) -> Result<()>;

    /// Nothing under way and nothing polled: time for work that waits for a quiet moment.
    fn idle(&mut self, engine: &mut Engine<Self::Guest>, consumer: &BaseConsumer<Self::Context>);

    /// Between batches, every loop: housekeeping.
    fn between_batches(&mut self) {}

    /// Every `--flush-interval`: the board(s) from committed state.
    fn publish_board(&mut self, engine: &mut Engine<Self::Guest>, consumer: &BaseConsumer<Self::Context>)
    -> Result<()>;

    /// Between batches: a new guest takes over if one is ready (hot swap).
    fn swap_guest(&mut self, engine: &mut Engine<Self::Guest>) -> Result<()>;

    /// Next offset per partition of every record processed, with the metadata committed with
    /// it (the last commit at a stop).
    fn processed(&self) -> (Offsets, Metadata);

    /// at-least-once, the loop is over and everything is finished: the last offset commit.
    /// Asynchronous here: closing the consumer waits for it (bounded), so the group ends where
    /// state is, and a synchronous commit could wait forever on a coordinator that is away
    /// (state holds the offsets either way).
    fn commit_last(&mut self, engine: &mut Engine<Self::Guest>, consumer: &BaseConsumer<Self::Context>) {
        let (processed, metadata) = self.processed();
        engine.committer.commit_offsets(consumer, &processed, &metadata, rdkafka::consumer::CommitMode::Async);
    }

    /// A stop: before the batches under way are finished.
    fn stopping(&mut self) {}

    /// The last log line of a clean stop.
    fn stopped(&self);
}

/// Runs `topology` until a stop is requested (or, with `--stop-at-end`, the job is done),
/// then finishes and commits what is under way and publishes a last board.
pub fn run<'c, T: Topology<'c>>(
    engine: &mut Engine<T::Guest>,
    topology: &mut T,
    consumer: &'c BaseConsumer<T::Context>,
) -> Result<()> {
    let mut last_board = Instant::now();
    let mut at_end = BTreeSet::new();
    let mut with_guest: Option<T::Submitted> = None;
    let mut in_flight: Option<InFlight<'c, T>> = None;
    while !engine.shutdown.requested() {
        // With a batch under way, don't wait for input: moving it on is the better use of time.
        let idle = with_guest.is_none() && in_flight.is_none() && !engine.committer.in_transaction();
        let wait = if idle { POLL_WAIT } else { Duration::ZERO };
        let batch = if engine.watchdog.input_stopped_by_fault() {
            std::thread::sleep(wait);
            Vec::new()
        } else {
            match poll_batch(consumer, engine.max_batch, wait, &mut engine.consumer_log, &mut at_end) {
                Ok(batch) => batch,
                Err(failed) => {
                    // The consumer failed for good: what is under way is finished (the batch in
                    // flight: at-least-once, acknowledged and in state; its offsets may not land)
                    // or dropped (the one with the guest, whose result is taken so that the guest
                    // thread is ready for another consumer's batches).
                    if let Some(oldest) = in_flight.take() {
                        engine.committer.finish(consumer, topology.tasks(), oldest)?;
                    }
                    if let Some(dropped) = with_guest.take() {
                        topology.discard(engine, dropped)?;
                    }
                    return Err(failed);
                }
            }
        };
        let polled = !batch.is_empty();
        engine.pace.consumed(topology.input_records(&batch));
        if engine.watchdog.due(polled) {
            engine.watchdog.looked(topology.waiting(consumer))?;
        }
        let rebalance = topology.rebalance(engine, consumer)?;
        if !engine.ready.load(Ordering::Relaxed) && topology.ready(consumer) {
            engine.ready.store(true, Ordering::Relaxed);
            tracing::info!("ready: partitions assigned");
        }
        // 1. The newest batch goes to the guest thread (or, when a processor's wall-clock
        // timer is due and nothing is with the guest, a batch without records, for it).
        let newest = if polled || (with_guest.is_none() && topology.tick_due(engine)) {
            Some(topology.submit(engine, batch)?)
        } else {
            None
        };
        // The rest of the oldest batch: its acknowledgements, state write and offset commit.
        if let Some(oldest) = in_flight.take() {
            engine.committer.finish(consumer, topology.tasks(), oldest)?;
        }
        // 2. The guest's result of the batch before the newest, as records.
        if let Some(submitted) = with_guest.take() {
            in_flight = topology.send(engine, submitted)?;
        }
        with_guest = newest;
        // exactly-once: commit when the interval is up, at once when nothing else came, and
        // before partitions are given up (not when they are lost: then it is aborted).
        if engine.committer.transaction_due(with_guest.is_none() || rebalance.revoked.is_some())
            && !rebalance.lost
            && !engine.committer.commit_txn(consumer, topology.tasks())?
            && let Some(dropped) = with_guest.take()
        {
            // Aborted and rewound: the batch polled since is read again.
            topology.discard(engine, dropped)?;
        }
        if let Some(revoked) = rebalance.revoked {
            // Revoked partitions are finished before they are given up.
            finish_under_way(engine, topology, consumer, &mut with_guest, &mut in_flight)?;
            topology.give_up(engine, consumer, &revoked, rebalance.lost)?;
        }
        let quiet = !polled && with_guest.is_none() && in_flight.is_none();
        if quiet {
            topology.idle(engine, consumer);
        }
        topology.between_batches();
        if last_board.elapsed() >= engine.flush_interval {
            // State holds whole batches only (the ones under way are not in it yet).
            last_board = Instant::now();
            publish_board(engine, topology, consumer)?;
        }
        topology.swap_guest(engine)?;
        engine.committer.producer().poll();
        if engine.stop_at_end && idle && quiet && !engine.committer.in_transaction() && topology.done(consumer, &at_end)
        {
            break;
        }
    }
    engine.shutdown.working("finishing the batches under way");
    topology.stopping();
    finish_under_way(engine, topology, consumer, &mut with_guest, &mut in_flight)?;
    engine.committer.commit_txn(consumer, topology.tasks())?;
    if !engine.committer.exactly_once() {
        engine.shutdown.working("committing the last offsets");
        topology.commit_last(engine, consumer);
    }
    tracing::info!("shutting down: committed, publishing a last board");
    engine.shutdown.working("publishing a last board");
    publish_board(engine, topology, consumer)?;
    engine.committer.commit_txn(consumer, topology.tasks())?;
    engine.committer.producer().wait_acks()?;
    engine.committer.stats.log();
    topology.stopped();
    Ok(())
}

/// A counting guest's hot swap: a new guest takes over from the next batch submitted (each
/// batch is counted by one), if `accepts` it.
pub fn swap_counting_guest(engine: &mut Engine, accepts: impl FnOnce(&Guest) -> bool) -> Result<()> {
    if let Some(next) = engine.reload.as_mut().and_then(|r| r.poll(engine.shutdown.take_reload()))
        && accepts(&next)
    {
        tracing::info!(guest = %next.describe(), load_ms = next.info.load_ms as u64, "guest swapped in");
        engine.guest.swap(Box::new(next))?;
    }
    Ok(())
}

/// Finishes every batch under way, in order: the one in flight, then the one with the guest.
fn finish_under_way<'c, T: Topology<'c>>(
    engine: &mut Engine<T::Guest>,
    topology: &mut T,
    consumer: &'c BaseConsumer<T::Context>,
    with_guest: &mut Option<T::Submitted>,
    in_flight: &mut Option<InFlight<'c, T>>,
) -> Result<()> {
    if let Some(oldest) = in_flight.take() {
        engine.committer.finish(consumer, topology.tasks(), oldest)?;
    }
    if let Some(submitted) = with_guest.take()
        && let Some(last) = topology.send(engine, submitted)?
    {
        engine.committer.finish(consumer, topology.tasks(), last)?;
    }
    Ok(())
}

/// A board that cannot be published is skipped this interval (the next one tries again),
/// unless what failed is something the batches depend on too ([`StopHost`]).
fn publish_board<'c, T: Topology<'c>>(
    engine: &mut Engine<T::Guest>,
    topology: &mut T,
    consumer: &BaseConsumer<T::Context>,
) -> Result<()> {
    match topology.publish_board(engine, consumer) {
        Err(e) if e.downcast_ref::<StopHost>().is_some() => Err(e),
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "board not published this interval");
            Ok(())
        }
        Ok(()) => Ok(()),
    }
}

/// The context of an error met on the way to a board that the host must not go on past: a
/// transaction that cannot begin, or an acknowledgement that failed (the wait covers the
/// records of the batch in flight too, and a failure is reported once).
#[derive(Debug)]
pub struct StopHost;

impl std::fmt::Display for StopHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the host cannot go on")
    }
}

/// True when partitions are assigned and every one of them reported its end.
pub fn all_at_end<C: ConsumerContext>(consumer: &BaseConsumer<C>, at_end: &BTreeSet<i32>) -> bool {
    match consumer.assignment() {
        Ok(assignment) => {
            let partitions: Vec<i32> = assignment.elements().iter().map(|e| e.partition()).collect();
            !partitions.is_empty() && partitions.iter().all(|p| at_end.contains(p))
        }
        Err(_) => false,
    }
}
