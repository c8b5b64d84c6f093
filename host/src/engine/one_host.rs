//! What a topology on one host (the counting guest's `direct`, the processor's `processing`)
//! does before its loop, in this order: the topics checked, the producer (before reading the
//! changelog, see `AckedProducer::for_run`), a new or lost state dir restored from the
//! changelog, the consumer subscribed (before the short catch-up, so that joining the group
//! overlaps it; nothing is consumed before the loop starts) once the group is known to be
//! this host's alone, and state caught up with the changelog. Also what both ask of the input
//! afterwards: is state ahead of it, and how far behind it is state.

use std::collections::BTreeMap;
use std::mem::ManuallyDrop;
use std::time::Duration;

use anyhow::{Context, Result};
use rdkafka::consumer::Consumer;
use rdkafka::message::BorrowedMessage;
use rdkafka::{Message, Offset};

use crate::changelog;
use crate::engine::committer::{Metadata, Offsets};
use crate::engine::config::RunConfig;
use crate::engine::records::take_once;
use crate::engine::task::Task;
use crate::kafka::clients::HostConsumer;
use crate::kafka::producer::AckedProducer;
use crate::process::shutdown::Shutdown;
use crate::state::Store;

/// Where a one-host run is in its input: per partition, the next offset state reflects
/// (`applied`), and the next one given to the guest (`submitted`: `applied` plus the batches on
/// their way to state). A record below `submitted` is already counted (or about to be:
/// batches are applied in order, and a failed one stops the host).
pub struct InputProgress {
    pub topic: String,
    pub applied: BTreeMap<i32, i64>,
    pub submitted: BTreeMap<i32, i64>,
}

impl InputProgress {
    /// From what state reflects.
    pub fn new(topic: &str, applied: BTreeMap<i32, i64>) -> InputProgress {
        InputProgress { topic: topic.to_owned(), submitted: applied.clone(), applied }
    }

    /// Already counted: a crash came between the state write and the offset commit, or the
    /// record was delivered again (see [`take_once`]).
    pub fn already_counted(&self, message: &BorrowedMessage<'_>) -> bool {
        self.submitted.get(&message.partition()).is_some_and(|next| message.offset() < *next)
    }

    /// True when `message` is not counted yet: it goes to the guest (`submitted` is raised
    /// past it, so the same record delivered again later in the batch is not).
    pub fn submit(&mut self, message: &BorrowedMessage<'_>) -> bool {
        take_once(&mut self.submitted, &message.partition(), message.offset())
    }

    /// A batch (or transaction) reaching `next_offsets` is in state.
    pub fn applied(&mut self, next_offsets: &BTreeMap<i32, i64>) {
        raise(&mut self.applied, next_offsets);
    }

    /// `applied` raised by `next_offsets`: what state will reflect once they are in it.
    pub fn applied_with(&self, next_offsets: &BTreeMap<i32, i64>) -> BTreeMap<i32, i64> {
        let mut applied = self.applied.clone();
        raise(&mut applied, next_offsets);
        applied
    }

    /// `next` for `partition`, never below what state or the open transaction (`txn`) holds.
    pub fn not_behind(&self, partition: i32, next: i64, txn: Option<&BTreeMap<i32, i64>>) -> i64 {
        let txn_next = txn.and_then(|t| t.get(&partition)).copied().unwrap_or(0);
        next.max(self.applied.get(&partition).copied().unwrap_or(0)).max(txn_next)
    }

    /// `next_offsets` as the group commits them.
    pub fn offsets(&self, next_offsets: &BTreeMap<i32, i64>) -> Offsets {
        next_offsets.iter().map(|(p, next)| ((self.topic.clone(), *p), *next)).collect()
    }

    /// Every offset state reflects, for the last commit at a stop (state holds the rest).
    pub fn processed(&self) -> (Offsets, Metadata) {
        (self.offsets(&self.applied), Metadata::new())
    }

    /// Back to what state reflects: the batches under way are forgotten and every assigned
    /// partition is read again from state's offset.
    pub fn rewind(&mut self, consumer: &HostConsumer) -> Result<()> {
        self.submitted = self.applied.clone();
        let assignment = consumer.assignment().context("reading the consumer's assignment")?;
        for element in assignment.elements() {
            let partition = element.partition();
            let offset = self.applied.get(&partition).map_or(Offset::Beginning, |next| Offset::Offset(*next));
            consumer
                .seek(element.topic(), partition, offset, Duration::from_secs(10))
                .with_context(|| format!("rewinding input partition {partition}"))?;
        }
        Ok(())
    }

    /// Records waiting on each assigned partition (see [`lag`]).
    pub fn lag(&self, consumer: &HostConsumer) -> BTreeMap<i32, i64> {
        lag(consumer, &self.applied)
    }
}

/// Raises `offsets` to `next_offsets` where they are behind (offsets never go back).
fn raise(offsets: &mut BTreeMap<i32, i64>, next_offsets: &BTreeMap<i32, i64>) {
    for (partition, next) in next_offsets {
        let at = offsets.entry(*partition).or_insert(*next);
        *at = (*at).max(*next);
    }
}

/// A one-host run's clients, ready for the loop.
pub struct Started {
    pub producer: AckedProducer,
    /// Closed only after a clean run (`clients::close`). On an error the process exits right
    /// away, like a crash: state is intact, and nothing is owed to the group.
    pub consumer: ManuallyDrop<HostConsumer>,
    pub transactional_id: Option<String>,
    pub instance_id: Option<String>,
}

/// Checks the topics, makes the clients, and brings `task` up to its changelog (the module doc).
pub fn start(args: &RunConfig, task: &mut Task, shutdown: &Shutdown) -> Result<Started> {
    shutdown.starting("checking the topics");
    let checked = crate::kafka::topics::check(&args.kafka, &args.topics, args.create_topics, args.partitions)?;
    tracing::debug!("topics checked");
    let transactional_id = args.transactional_id();
    let producer = AckedProducer::for_run(
        &args.kafka,
        &args.topics.changelog,
        transactional_id.as_deref(),
        checked.max_message_bytes,
        args.ack_timeout,
        shutdown,
    )?;

    // A new or lost state dir (or an interrupted restore): rebuilt from the changelog before
    // anything is counted on top of it.
    shutdown.starting("restoring state from the changelog");
    let restored = task.restore_if_needed(&args.kafka, shutdown)?;
    if let Some(report) = restored.as_ref().filter(|r| r.records_read > 0) {
        tracing::info!(
            keys = report.keys,
            records = report.records_read,
            "state was empty: restored it from the changelog"
        );
    }

    let instance_id = crate::kafka::clients::instance_id(args.instance_id.as_deref(), &args.group, task.store().dir());
    shutdown.starting("describing the consumer group");
    let consumer =
        crate::kafka::clients::input_consumer(&args.kafka, &args.group, instance_id.as_deref(), args.stop_at_end)?;
    let consumer = ManuallyDrop::new(consumer);
    check_group_is_ours(&consumer, &args.group, instance_id.as_deref(), shutdown)?;
    consumer.subscribe(&[&args.topics.input]).context("subscribing to the input topic")?;
    if restored.is_none() {
        shutdown.starting("catching up with the changelog");
        let report = task.catch_up(&args.kafka, args.guarantee, shutdown)?;
        if report.records_read > 0 {
            tracing::info!(
                records = report.records_read,
                "state caught up with the changelog (a crash came after a commit)"
            );
        }
    }
    Ok(Started { producer, consumer, transactional_id, instance_id })
}

/// Refuses to join a group that another host is consuming with: each host keeps the whole
/// state, so two would each count part of the input and publish boards of part of it
/// (several hosts share a job with `--scale-out`, in `repartitioned.rs`). A member left by this host's
/// own previous run (static membership: its member id starts with our instance id) is not
/// another host.
fn check_group_is_ours(
    consumer: &HostConsumer,
    group: &str,
    instance_id: Option<&str>,
    shutdown: &Shutdown,
) -> Result<()> {
    let groups = describe_group(consumer, group, shutdown)?;
    let ours = |member_id: &str| instance_id.is_some_and(|id| member_id.starts_with(&format!("{id}-")));
    let others: Vec<String> = groups
        .groups()
        .iter()
        .filter(|g| g.name() == group)
        .flat_map(|g| g.members())
        .filter(|m| !ours(m.id()))
        .map(|m| format!("{} (from {})", m.id(), m.client_host()))
        .collect();
    if !others.is_empty() {
        anyhow::bail!(
            "consumer group `{group}` is in use by another host: {}. Without --scale-out, one host per \
             group: each keeps the whole state, so two would each count part of the input. Stop the other \
             host, give this one another --group (and --state-dir), or spread the job over several hosts \
             with --scale-out (on a new changelog, README \"Scale-out\"). If the other member is this \
             host's own previous run with --instance-id none, it leaves the group when its session times \
             out (45 s)",
            others.join(", ")
        );
    }
    Ok(())
}

/// The group's description, asked again while its coordinator is still loading or moving
/// (a broker just started, or one that took the coordinator's partition over, answers
/// `CoordinatorLoadInProgress` for a few seconds: a moment to wait, not a reason to exit).
fn describe_group(consumer: &HostConsumer, group: &str, shutdown: &Shutdown) -> Result<rdkafka::groups::GroupList> {
    use rdkafka::error::RDKafkaErrorCode::{CoordinatorLoadInProgress, CoordinatorNotAvailable, NotCoordinator};
    let deadline = std::time::Instant::now() + COORDINATOR_WAIT;
    loop {
        match consumer.fetch_group_list(Some(group), Duration::from_secs(10)) {
            Ok(groups) => return Ok(groups),
            Err(e)
                if matches!(
                    e.rdkafka_error_code(),
                    Some(CoordinatorLoadInProgress | CoordinatorNotAvailable | NotCoordinator)
                ) && std::time::Instant::now() < deadline
                    && !shutdown.requested() =>
            {
                tracing::debug!(error = %e, "the group's coordinator is not ready yet; asking again");
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => return Err(e).with_context(|| format!("describing consumer group {group}")),
        }
    }
}

/// How long start-up waits for a group coordinator that is loading or moving.
const COORDINATOR_WAIT: Duration = Duration::from_secs(30);

/// Refuses state that reflects input offsets beyond the input's end: the topic was deleted
/// and created again (or truncated) since, and counting on would skip its new records as
/// already counted. (Right after a re-creation the broker may still report the old topic's
/// end for a moment; this catches the case where the state outlived its topic for longer.)
pub fn check_input_not_behind_state(args: &RunConfig, store: &Store, applied: &BTreeMap<i32, i64>) -> Result<()> {
    if applied.is_empty() {
        return Ok(());
    }
    let ends = changelog::end_positions(&args.kafka, &args.topics.input)?;
    match state_beyond_input(applied, &ends) {
        None => Ok(()),
        Some((partition, next, end)) => anyhow::bail!(
            "state dir {} reflects input `{}` up to offset {next} on partition {partition}, but that \
             partition ends at {end}: the topic was deleted and created again (or truncated) since this \
             state was written, and its new records would be skipped as already counted. Start over with \
             an empty --state-dir (and a new changelog topic), or point --input at the topic this state \
             belongs to",
            store.dir().display(),
            args.topics.input
        ),
    }
}

/// The first partition whose stored next offset is beyond the input's end: (partition, next, end).
fn state_beyond_input(applied: &BTreeMap<i32, i64>, ends: &BTreeMap<i32, i64>) -> Option<(i32, i64, i64)> {
    applied.iter().find_map(|(partition, next)| {
        let end = ends.get(partition).copied().unwrap_or(0);
        (*next > end).then_some((*partition, *next, end))
    })
}

/// Per assigned input partition, records not yet in state: its end offset minus the next
/// offset state reflects (`applied`), or minus the consumer's position when that is further:
/// an input written in transactions ends with a commit marker, which the consumer steps over
/// but no record's offset ever reaches.
pub fn lag(consumer: &HostConsumer, applied: &BTreeMap<i32, i64>) -> BTreeMap<i32, i64> {
    let Ok(assignment) = consumer.assignment() else { return BTreeMap::new() };
    let positions: BTreeMap<i32, i64> = consumer
        .position()
        .map(|p| p.elements().iter().filter_map(|e| e.offset().to_raw().map(|o| (e.partition(), o))).collect())
        .unwrap_or_default();
    let mut lag = BTreeMap::new();
    for element in assignment.elements() {
        let partition = element.partition();
        if let Ok((low, high)) = consumer.fetch_watermarks(element.topic(), partition, Duration::from_secs(1)) {
            let position = positions.get(&partition).copied().unwrap_or(low);
            let next = applied.get(&partition).copied().unwrap_or(low).max(low).max(position);
            lag.insert(partition, (high - next).max(0));
        }
    }
    lag
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_beyond_the_input_end_is_found() {
        let applied = BTreeMap::from([(0, 150), (1, 140)]);
        assert_eq!(state_beyond_input(&applied, &BTreeMap::from([(0, 150), (1, 200)])), None, "at or behind the end");
        assert_eq!(state_beyond_input(&applied, &BTreeMap::from([(0, 150), (1, 5)])), Some((1, 140, 5)), "recreated");
        assert_eq!(state_beyond_input(&applied, &BTreeMap::from([(0, 150)])), Some((1, 140, 0)), "partition gone");
        assert_eq!(state_beyond_input(&BTreeMap::new(), &BTreeMap::new()), None);
    }
}
