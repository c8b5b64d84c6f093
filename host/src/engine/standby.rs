//! Standby replicas (`--standby-replicas N`, scale-out): warm copies of shards this host does
//! not own, as Kafka Streams' standby tasks. A keeper thread tails the changelog partitions of
//! the shards it stands by for (read_committed, so under exactly-once only committed
//! transactions) into the same shard dirs an active shard uses. When the group assigns one of
//! them here, the copy is closed and the shard opens as usual: opening replays the changelog
//! from the position the shard holds, which for a warm copy is only the last moments.
//!
//! Placement: the members of the group in member-id order, and from their assignments the
//! owner of every shard; a shard's copies go to the `N` members after its owner (wrapping
//! around). Every host computes the same placement from the same description, asked again
//! every second. The group's assignor (librdkafka's cooperative-sticky; no other can be
//! plugged into librdkafka) does not know where the copies are, so a dead host's shard lands on
//! a warm copy for certain only when every other host keeps one (`N` = hosts - 1).
//!
//! A copy is a cache of its changelog partition, outside the commit order: a lost or
//! half-written one costs a longer replay (or a restore) when its shard opens, nothing else.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::changelog;
use crate::engine::log_limit::LogLimit;
use crate::kafka::Connection;
use crate::kafka::clients::HostConsumer;
use crate::process::shutdown::Shutdown;
use crate::state::Store;

/// How often the placement is worked out again from the group's description.
const PLACEMENT_EVERY: Duration = Duration::from_secs(1);
/// Most changelog records applied to the copies in one write.
const MAX_RECORDS_PER_WRITE: usize = 10_000;
/// The longest an active shard waits for its copy to be closed.
const RELEASE_WAIT: Duration = Duration::from_secs(30);

/// What the keeper needs to know about the job.
pub struct StandbyConfig {
    pub kafka: Connection,
    pub group: String,
    /// This host's consumer's `client.id`: how it finds itself among the group's members.
    pub client_id: String,
    pub changelog: String,
    pub repartition: String,
    pub state_dir: PathBuf,
    pub replicas: usize,
}

/// The handle the loop keeps: the keeper thread runs until it is dropped.
pub struct Standbys {
    commands: Option<Sender<Command>>,
    held: Arc<Mutex<BTreeSet<i32>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Closes copies for shards about to open (sendable to the thread that opens one).
#[derive(Clone)]
pub struct Releaser(Sender<Command>);

impl Releaser {
    /// Before shard `partition` opens here as an active one: its copy is closed (waited for:
    /// the keeper may be restoring another copy first).
    pub fn release(&self, partition: i32) {
        let (done, answer) = mpsc::channel();
        if self.0.send(Command::Release(partition, done)).is_ok() && answer.recv_timeout(RELEASE_WAIT).is_err() {
            tracing::warn!(shard = partition, "the standby copy was not closed in time");
        }
    }
}

enum Command {
    /// The shard opens here as an active one: its copy is closed first (answered once it is),
    /// and none is kept while it is active here.
    Release(i32, Sender<()>),
    /// The shard is active here no more (revoked or lost): it may be kept as a copy again.
    GaveUp(i32),
}

impl Standbys {
    pub fn start(config: StandbyConfig, shutdown: &Shutdown) -> Result<Standbys> {
        let consumer: HostConsumer = crate::kafka::clients::reader(&config.kafka, &format!("{}.standby", config.group))
            .set("enable.partition.eof", "false")
            .create_with_context(crate::kafka::clients::HostContext::default())
            .context("creating the standby replicas' changelog reader")?;
        let held = Arc::new(Mutex::new(BTreeSet::new()));
        let (commands, inbox) = mpsc::channel();
        let keeper = Keeper {
            config,
            consumer,
            copies: BTreeMap::new(),
            active: BTreeSet::new(),
            held: held.clone(),
            shutdown: shutdown.clone(),
            failures: LogLimit::new(Duration::from_secs(30)),
        };
        let thread = std::thread::Builder::new()
            .name("standby".into())
            .spawn(move || keeper.run(inbox))
            .context("starting the standby replicas' thread")?;
        Ok(Standbys { commands: Some(commands), held, thread: Some(thread) })
    }

    /// What closes a copy before its shard opens here (see [`Releaser::release`]).
    pub fn releaser(&self) -> Option<Releaser> {
        self.commands.clone().map(Releaser)
    }

    /// Shard `partition` is active here no more.
    pub fn gave_up(&self, partition: i32) {
        if let Some(commands) = &self.commands {
            let _ = commands.send(Command::GaveUp(partition));
        }
    }

    /// Does this host keep a copy of `partition` (so its dir is not to be cleaned up)?
    pub fn holds(&self, partition: i32) -> bool {
        self.held.lock().unwrap_or_else(|p| p.into_inner()).contains(&partition)
    }
}

impl Drop for Standbys {
    fn drop(&mut self) {
        drop(self.commands.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A warm copy: the shard's store and the next changelog offset it lacks.
struct Copy {
    store: Store,
    next: i64,
}

struct Keeper {
    config: StandbyConfig,
    consumer: HostConsumer,
    copies: BTreeMap<i32, Copy>,
    /// Shards active on this host: never kept as copies.
    active: BTreeSet<i32>,
    held: Arc<Mutex<BTreeSet<i32>>>,
    shutdown: Shutdown,
    /// A copy that cannot be opened is tried again every second (a shard just given up may
    /// still be closing): logged at most this often.
    failures: LogLimit,
}

impl Keeper {
    fn run(mut self, inbox: Receiver<Command>) {
        let mut placed = Instant::now() - PLACEMENT_EVERY;
        loop {
            match inbox.recv_timeout(Duration::ZERO) {
                Ok(command) => {
                    self.handle(command);
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {}
            }
            if self.shutdown.requested() {
                break;
            }
            if placed.elapsed() >= PLACEMENT_EVERY {
                placed = Instant::now();
                match self.placement() {
                    Ok((wanted, owned, stable)) => self.keep(&wanted, &owned, stable),
                    Err(e) => tracing::debug!(error = %format!("{e:#}"), "standby placement not known this time"),
                }
            }
            if let Err(e) = self.tail() {
                tracing::warn!(error = %format!("{e:#}"), "keeping the standby copies warm failed; trying again");
                std::thread::sleep(Duration::from_millis(500));
            }
        }
        tracing::debug!(copies = ?self.copies.keys().collect::<Vec<_>>(), "standby copies closed");
    }

    fn handle(&mut self, command: Command) {
        match command {
            Command::Release(partition, done) => {
                self.active.insert(partition);
                if self.copies.contains_key(&partition) {
                    self.close_copies(&[partition]);
                    self.copies_changed();
                    tracing::info!(shard = partition, "standby copy promoted: the shard opens from it");
                }
                let _ = done.send(());
            }
            Command::GaveUp(partition) => {
                self.active.remove(&partition);
            }
        }
    }

    /// The shards this host is to keep copies of, from the group's description; the shards
    /// some member owns; and whether the group is stable. (While it rebalances, the
    /// description may lack a member that died: its shards' copies are the ones about to be
    /// needed.)
    fn placement(&self) -> Result<(BTreeSet<i32>, BTreeSet<i32>, bool)> {
        let groups = self
            .consumer
            .fetch_group_list(Some(&self.config.group), Duration::from_secs(2))
            .context("describing the group")?;
        let group =
            groups.groups().iter().find(|g| g.name() == self.config.group).context("the group is not listed")?;
        let members: Vec<Member> = group
            .members()
            .iter()
            .map(|m| Member {
                id: m.id().to_owned(),
                client_id: m.client_id().to_owned(),
                shards: m.assignment().map(|a| assigned_partitions(a, &self.config.repartition)).unwrap_or_default(),
            })
            .collect();
        // A shard between two owners (a cooperative rebalance takes it from one before it
        // gives it to the other, and the group is stable in between) is owned by nobody: its
        // copies stay. So does the copy of a shard the group gives to this host: it is about
        // to open here, and its opening promotes the copy (`Command::Release`).
        let owned: BTreeSet<i32> = members
            .iter()
            .filter(|m| m.client_id != self.config.client_id)
            .flat_map(|m| m.shards.iter().copied())
            .collect();
        let stable = group.state() == "Stable";
        Ok((standby_shards(&members, &self.config.client_id, &self.active, self.config.replicas), owned, stable))
    }

    /// Opens the copies newly wanted and, once the group is stable, closes the ones no longer
    /// wanted of shards that have an owner.
    fn keep(&mut self, wanted: &BTreeSet<i32>, owned: &BTreeSet<i32>, stable: bool) {
        let wanted: BTreeSet<i32> = wanted.difference(&self.active).copied().collect();
        let unwanted: Vec<i32> =
            self.copies.keys().filter(|p| stable && owned.contains(p) && !wanted.contains(p)).copied().collect();
        let mut changed = !unwanted.is_empty();
        self.close_copies(&unwanted);
        for partition in wanted {
            if self.copies.contains_key(&partition) {
                continue;
            }
            match self.open_copy(partition) {
                Ok(copy) => {
                    tracing::info!(shard = partition, next_offset = copy.next, "standby copy kept warm from here on");
                    self.copies.insert(partition, copy);
                    changed = true;
                }
                Err(e) => {
                    if let Some(suppressed) = self.failures.allow() {
                        tracing::warn!(shard = partition, error = %format!("{e:#}"), suppressed, "cannot keep a standby copy yet; trying again");
                    }
                }
            }
        }
        if changed {
            self.copies_changed();
        }
    }

    /// A copy in the shard's dir: a new (or half-restored) one is restored from its changelog
    /// partition first; one with state reads on from the position it holds.
    fn open_copy(&self, partition: i32) -> Result<Copy> {
        let dir = crate::state::shard_dir(&self.config.state_dir, partition);
        let mut store = Store::open(&dir)?;
        if store.needs_restore()? {
            changelog::restore_partitions(
                &self.config.kafka,
                &self.config.changelog,
                Some(partition),
                &mut store,
                &self.shutdown,
            )?;
        }
        let next = store.changelog_positions(&self.config.changelog)?.get(&partition).copied().unwrap_or(0);
        Ok(Copy { store, next })
    }

    fn close_copies(&mut self, partitions: &[i32]) {
        for partition in partitions {
            if let Some(copy) = self.copies.remove(partition) {
                // Its last records' positions are written with them: nothing left to flush.
                drop(copy.store);
                tracing::info!(shard = partition, "standby copy closed");
            }
        }
    }

    /// After copies were opened or closed: what the loop sees as held, and the changelog
    /// partitions read (each from where its copy is).
    fn copies_changed(&self) {
        *self.held.lock().unwrap_or_else(|p| p.into_inner()) = self.copies.keys().copied().collect();
        let mut assignment = TopicPartitionList::new();
        for (partition, copy) in &self.copies {
            if let Err(e) =
                assignment.add_partition_offset(&self.config.changelog, *partition, Offset::Offset(copy.next))
            {
                tracing::warn!(shard = partition, error = %e, "cannot read a standby copy's changelog partition");
            }
        }
        if let Err(e) = self.consumer.assign(&assignment) {
            tracing::warn!(error = %e, "cannot read the standby copies' changelog partitions");
        }
    }

    /// What the copies' changelog partitions got since: applied to each copy, with the
    /// position it reflects, one write per copy.
    fn tail(&mut self) -> Result<()> {
        if self.copies.is_empty() {
            std::thread::sleep(Duration::from_millis(100));
            return Ok(());
        }
        let mut changes: BTreeMap<i32, Vec<crate::state::Change>> = BTreeMap::new();
        let mut positions: BTreeMap<i32, i64> = BTreeMap::new();
        let mut read = 0;
        let mut wait = Duration::from_millis(100);
        while read < MAX_RECORDS_PER_WRITE {
            let message = match self.consumer.poll(wait) {
                None => break,
                Some(Err(KafkaError::PartitionEOF(_))) => continue,
                Some(Err(e)) => return Err(e).context("reading a standby copy's changelog partition"),
                Some(Ok(message)) => message,
            };
            wait = Duration::ZERO;
            read += 1;
            let partition = message.partition();
            positions.insert(partition, message.offset() + 1);
            if let Some(change) = changelog::decode_changelog(&message) {
                changes.entry(partition).or_default().push(change);
            }
        }
        for (partition, next) in positions {
            let Some(copy) = self.copies.get_mut(&partition) else { continue };
            let position = BTreeMap::from([(partition, next)]);
            let batch = changes.remove(&partition).unwrap_or_default();
            let written = changelog::position_changes(&self.config.changelog, &position).collect::<Vec<_>>();
            copy.store.apply(batch.into_iter().chain(written), false)?;
            copy.next = next;
        }
        Ok(())
    }
}

/// A member of the group, as the placement sees it.
#[derive(Debug, Clone)]
struct Member {
    id: String,
    client_id: String,
    /// Its partitions of the repartition topic: the shards it owns.
    shards: BTreeSet<i32>,
}

/// The shards whose copies `me` keeps: each shard's copies go to the `replicas` members after
/// its owner in member-id order (never to the owner, never more than the other members).
/// `me` is the member with this host's client id, or else the one whose shards are exactly
/// the ones active here; when neither tells, none.
fn standby_shards(members: &[Member], client_id: &str, active: &BTreeSet<i32>, replicas: usize) -> BTreeSet<i32> {
    let mut members = members.to_vec();
    members.sort_by(|a, b| a.id.cmp(&b.id));
    let by_client: Vec<usize> = (0..members.len()).filter(|i| members[*i].client_id == client_id).collect();
    let me = match by_client.as_slice() {
        [one] => Some(*one),
        _ => (!active.is_empty()).then(|| members.iter().position(|m| m.shards == *active)).flatten(),
    };
    let Some(me) = me else { return BTreeSet::new() };
    let count = members.len();
    let mut kept = BTreeSet::new();
    for (owner, member) in members.iter().enumerate() {
        if owner == me {
            continue;
        }
        let behind = (me + count - owner) % count;
        if behind <= replicas.min(count - 1) {
            kept.extend(member.shards.iter().copied());
        }
    }
    kept
}

/// The partitions of `topic` in a member's assignment (Kafka's ConsumerProtocol Assignment:
/// a version, then per topic its name and partitions, then user data we do not need). An
/// assignment that cannot be read gives none.
fn assigned_partitions(assignment: &[u8], topic: &str) -> BTreeSet<i32> {
    fn read(bytes: &[u8], topic: &str) -> Option<BTreeSet<i32>> {
        let mut at = 2; // version (int16)
        let take = |at: &mut usize, n: usize| -> Option<&[u8]> {
            let slice = bytes.get(*at..*at + n)?;
            *at += n;
            Some(slice)
        };
        let int32 = |at: &mut usize| -> Option<i32> { Some(i32::from_be_bytes(take(at, 4)?.try_into().ok()?)) };
        let topics = int32(&mut at)?;
        let mut found = BTreeSet::new();
        for _ in 0..topics.max(0) {
            let len = i16::from_be_bytes(take(&mut at, 2)?.try_into().ok()?).max(0) as usize;
            let name = take(&mut at, len)?;
            let partitions = int32(&mut at)?;
            for _ in 0..partitions.max(0) {
                let partition = int32(&mut at)?;
                if name == topic.as_bytes() {
                    found.insert(partition);
                }
            }
        }
        Some(found)
    }
    read(assignment, topic).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str, client_id: &str, shards: &[i32]) -> Member {
        Member { id: id.into(), client_id: client_id.into(), shards: shards.iter().copied().collect() }
    }

    fn set(items: &[i32]) -> BTreeSet<i32> {
        items.iter().copied().collect()
    }

    #[test]
    fn copies_go_to_the_members_after_the_owner() {
        // Listed out of order: the placement sorts by member id.
        let members = [member("c", "host-c", &[4, 5]), member("a", "host-a", &[0, 1]), member("b", "host-b", &[2, 3])];
        let none = BTreeSet::new();
        // One copy each: a keeps the shards of the member before it (c), b of a, c of b.
        assert_eq!(standby_shards(&members, "host-a", &none, 1), set(&[4, 5]));
        assert_eq!(standby_shards(&members, "host-b", &none, 1), set(&[0, 1]));
        assert_eq!(standby_shards(&members, "host-c", &none, 1), set(&[2, 3]));
        // Two copies (every other host): all shards but its own; more than that changes nothing.
        assert_eq!(standby_shards(&members, "host-a", &none, 2), set(&[2, 3, 4, 5]));
        assert_eq!(standby_shards(&members, "host-a", &none, 5), set(&[2, 3, 4, 5]));
        assert_eq!(standby_shards(&members, "host-a", &none, 0), set(&[]));
        // Alone in the group: nothing to stand by for.
        assert_eq!(standby_shards(&members[1..2], "host-a", &none, 1), set(&[]));
    }

    #[test]
    fn a_host_finds_itself_by_its_shards_when_client_ids_do_not_tell() {
        let members = [member("a", "same", &[0, 1]), member("b", "same", &[2, 3]), member("c", "same", &[4, 5])];
        assert_eq!(standby_shards(&members, "same", &set(&[2, 3]), 1), set(&[0, 1]));
        // Not found at all: no copies rather than someone else's.
        assert_eq!(standby_shards(&members, "same", &set(&[]), 1), set(&[]));
        assert_eq!(standby_shards(&members, "other", &set(&[9]), 1), set(&[]));
    }

    #[test]
    fn an_assignment_s_partitions_of_one_topic_are_read() {
        let mut bytes = vec![0, 1]; // version 1
        bytes.extend(2i32.to_be_bytes());
        for (topic, partitions) in [("job.orders", &[0i32, 3][..]), ("job.repartition", &[1i32, 4, 5][..])] {
            bytes.extend((topic.len() as i16).to_be_bytes());
            bytes.extend(topic.as_bytes());
            bytes.extend((partitions.len() as i32).to_be_bytes());
            for p in partitions {
                bytes.extend(p.to_be_bytes());
            }
        }
        bytes.extend((-1i32).to_be_bytes()); // no user data
        assert_eq!(assigned_partitions(&bytes, "job.repartition"), set(&[1, 4, 5]));
        assert_eq!(assigned_partitions(&bytes, "job.orders"), set(&[0, 3]));
        assert_eq!(assigned_partitions(&bytes, "other"), set(&[]));
        assert_eq!(assigned_partitions(&bytes[..9], "job.orders"), set(&[]), "cut short: none");
        assert_eq!(assigned_partitions(&[], "job.orders"), set(&[]));
    }
}
