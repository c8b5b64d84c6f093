//! A state task: one unit of state (the single host's whole store, or one shard of a
//! `--scale-out` job), the changelog partitions it is the local copy of, and its durability
//! policy, which decides both how it writes and how it is caught up when opened, so that the
//! two cannot disagree.

use std::path::Path;

use anyhow::Result;

use crate::changelog::{self, RestoreReport};
use crate::engine::config::Guarantee;
use crate::kafka::Connection;
use crate::process::shutdown::Shutdown;
use crate::state::{Change, Store};

/// How a task makes its writes durable, and so what opening it must replay.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Durability {
    /// Every write fsynced (the single host): state never loses a write, so it is behind its
    /// changelog only by a committed transaction it had not applied yet (exactly-once: a crash
    /// between the commit and the state write), which opening replays. Under at-least-once it
    /// replays nothing: the changelog's tail may hold part of a batch whose input is consumed
    /// again, and replaying that part would count it twice.
    Fsynced,
    /// Writes not fsynced (a shard: an fsync per shard and poll cost a one-host job ~15% of
    /// its rate, `bench.py --probe scale1`: 299k -> 346k orders/s): opening always replays
    /// the changelog partition from the position the shard holds, which repairs a write lost
    /// with the machine (RocksDB recovers a consistent prefix of its writes) and brings in
    /// what another owner wrote since.
    Replayed,
}

pub struct Task {
    store: Store,
    durability: Durability,
    changelog: String,
    /// The changelog partition it holds (a shard), or every partition (`None`).
    partition: Option<i32>,
}

impl Task {
    /// Opens (or creates) the task's store; nothing is read from Kafka yet.
    pub fn open(dir: &Path, durability: Durability, changelog: &str, partition: Option<i32>) -> Result<Task> {
        Ok(Task { store: Store::open(dir)?, durability, changelog: changelog.to_owned(), partition })
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// One atomic write, made durable as the policy says.
    pub fn write(&self, changes: impl IntoIterator<Item = Change>) -> Result<()> {
        self.store.apply(changes, self.durability == Durability::Fsynced)
    }

    /// A new, lost or half-restored store is rebuilt from its changelog partitions: then the
    /// report, else `None` (and [`Task::catch_up`] is what brings it up to date).
    pub fn restore_if_needed(&mut self, kafka: &Connection, shutdown: &Shutdown) -> Result<Option<RestoreReport>> {
        if !self.store.needs_restore()? {
            return Ok(None);
        }
        changelog::restore_partitions(kafka, &self.changelog, self.partition, &mut self.store, shutdown).map(Some)
    }

    /// Brings a store that needed no restore up to what its changelog holds, as its
    /// durability policy says (see [`Durability`]). `guarantee` is this run's.
    pub fn catch_up(&self, kafka: &Connection, guarantee: Guarantee, shutdown: &Shutdown) -> Result<RestoreReport> {
        if self.durability == Durability::Fsynced {
            if guarantee == Guarantee::AtLeastOnce {
                return Ok(RestoreReport::default());
            }
            // Last written under at-least-once: its changelog tail may hold part of a batch
            // that will be consumed again, so it only records where the changelog ends now.
            if self.store.written_under()?.as_deref() == Some(Guarantee::AtLeastOnce.name()) {
                tracing::info!("state was last written under at-least-once: starting from the changelog's current end");
                let mut ends = changelog::end_positions(kafka, &self.changelog)?;
                ends.retain(|p, _| self.partition.is_none_or(|only| *p == only));
                self.store.apply(changelog::position_changes(&self.changelog, &ends), true)?;
                return Ok(RestoreReport::default());
            }
        }
        changelog::replay_partitions(kafka, &self.changelog, self.partition, &self.store, shutdown)
    }
}
