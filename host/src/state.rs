//! The local state store (RocksDB): the counters (or a processor guest's values), and in the
//! same database the metadata they reflect (records counted and skipped, and the next input
//! offset per partition). One `apply` is one atomic, fsynced write batch, so state and
//! metadata never disagree.
//! Nothing here knows about Kafka clients or WebAssembly.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use rocksdb::{ColumnFamilyDescriptor, DB, IteratorMode, Options, WriteBatch, WriteOptions};

use crate::window::{self, Millis, WINDOW_KEY_PREFIX};

const COUNTS: &str = "counts";
const META: &str = "meta";
/// A processor guest's keyed state: bytes keys, bytes values.
const VALUES: &str = "values";
const FAMILIES: [&str; 3] = [COUNTS, META, VALUES];

/// Names of metadata entries (in the `meta` column family, and in the changelog after a
/// 0xFF byte; see `changelog`).
pub mod meta {
    pub const RECORDS_PROCESSED: &str = "records_processed";
    pub const RECORDS_SKIPPED: &str = "records_skipped";
    /// Present while a restore is filling the store: such a store is incomplete, and the
    /// next start restores it again from scratch.
    pub const RESTORE_INCOMPLETE: &str = "restore_incomplete";
    /// `offset/<topic>/<partition>`: the next input offset the state reflects.
    pub fn input_offset(topic: &str, partition: i32) -> String {
        format!("offset/{topic}/{partition}")
    }
    pub fn parse_input_offset(name: &str) -> Option<(&str, i32)> {
        parse_position("offset/", name)
    }
    /// `changelog/<topic>/<partition>`: the changelog offset up to which state holds what the
    /// changelog holds (local only: never written to the changelog itself).
    pub fn changelog_position(topic: &str, partition: i32) -> String {
        format!("changelog/{topic}/{partition}")
    }
    pub fn parse_changelog_position(name: &str) -> Option<(&str, i32)> {
        parse_position("changelog/", name)
    }
    fn parse_position<'n>(prefix: &str, name: &'n str) -> Option<(&'n str, i32)> {
        let rest = name.strip_prefix(prefix)?;
        let (topic, partition) = rest.rsplit_once('/')?;
        Some((topic, partition.parse().ok()?))
    }
    /// `stream_time/<topic>/<partition>`: the largest event time (ms) seen on an input
    /// partition, with --window (see `window`).
    pub fn stream_time(topic: &str, partition: i32) -> String {
        format!("stream_time/{topic}/{partition}")
    }
    pub fn parse_stream_time(name: &str) -> Option<(&str, i32)> {
        parse_position("stream_time/", name)
    }
    /// The windows state is counted in (`WindowSpec::describe`; absent for cumulative
    /// counters): a restart with other windows is refused.
    pub const WINDOWS: &str = "windows";
    /// --emit final: the start of the newest window whose final board was produced.
    pub const EMITTED_THROUGH: &str = "emitted_through";
    /// The state version a processor guest declared (absent for counters): state written
    /// by another version is refused until the guest migrates it.
    pub const PROCESSOR_STATE_VERSION: &str = "processor_state_version";
    /// The guarantee (`at-least-once` / `exactly-once`) of the host that last wrote state
    /// (local only). Decides whether the changelog's tail may be replayed at start-up.
    pub const WRITTEN_UNDER: &str = "written_under";
}

/// One change to the store; `None` deletes (a changelog tombstone).
pub enum Change {
    Count {
        key: Vec<u8>,
        value: Option<u64>,
    },
    Meta {
        name: String,
        value: Option<Vec<u8>>,
    },
    /// A processor guest's value.
    Value {
        key: Vec<u8>,
        value: Option<Vec<u8>>,
    },
}

impl Change {
    /// A metadata entry holding a u64 (8 bytes, big-endian).
    pub fn u64(name: &str, value: u64) -> Change {
        Change::Meta { name: name.to_owned(), value: Some(value.to_be_bytes().to_vec()) }
    }

    /// Local only (not sent to the changelog): the guarantee state was last written under.
    pub fn written_under(guarantee: &str) -> Change {
        Change::Meta { name: meta::WRITTEN_UNDER.to_owned(), value: Some(guarantee.as_bytes().to_vec()) }
    }
}

/// A processor guest's key and value, as stored.
pub type Entry = (Box<[u8]>, Box<[u8]>);

/// Records counted and skipped, as stored.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    pub records_processed: u64,
    pub records_skipped: u64,
}

pub struct Store {
    db: std::sync::Arc<DB>,
    dir: PathBuf,
}

impl Store {
    /// Opens (creating if needed) the store for writing. RocksDB's lock file makes a second
    /// writer on the same directory fail here, with a message saying so.
    pub fn open(dir: &Path) -> Result<Store> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating state dir {}", dir.display()))?;
        let started = std::time::Instant::now();
        let mut options = Options::default();
        options.create_if_missing(true);
        options.create_missing_column_families(true);
        let db = DB::open_cf_descriptors(&options, dir, Self::families()).map_err(|e| {
            let message = e.to_string();
            if message.contains("lock") || message.contains("Resource temporarily unavailable") {
                anyhow::anyhow!(
                    "state dir {} is in use by another host process (its RocksDB lock is held); \
                     stop that process or give this one another --state-dir ({message})",
                    dir.display()
                )
            } else {
                anyhow::anyhow!("opening state dir {}: {message}", dir.display())
            }
        })?;
        tracing::debug!(dir = %dir.display(), ms = started.elapsed().as_millis() as u64, "state opened");
        Ok(Store { db: std::sync::Arc::new(db), dir: dir.to_owned() })
    }

    /// Opens an existing store read-only, without taking its lock, so it can be read while
    /// a host is running (it sees what was written when it opened).
    pub fn open_read_only(dir: &Path) -> Result<Store> {
        if !dir.join("CURRENT").exists() {
            bail!("{} holds no state (no RocksDB database there)", dir.display());
        }
        let families = DB::list_cf(&Options::default(), dir).with_context(|| format!("reading {}", dir.display()))?;
        if !families.iter().any(|f| f == COUNTS) {
            bail!("{} is a RocksDB database but not a host state dir", dir.display());
        }
        if !families.iter().any(|f| f == META) {
            // Column families are made one after another when a store is created: a process
            // that ended in between left one that has never been written to.
            bail!("{} holds no state yet: its creation was interrupted (`host run` completes it)", dir.display());
        }
        let present: Vec<&str> = FAMILIES.into_iter().filter(|f| families.iter().any(|g| g == f)).collect();
        let db = DB::open_cf_for_read_only(&Options::default(), dir, present, false)
            .with_context(|| format!("opening state dir {} read-only", dir.display()))?;
        Ok(Store { db: std::sync::Arc::new(db), dir: dir.to_owned() })
    }

    fn families() -> Vec<ColumnFamilyDescriptor> {
        FAMILIES.into_iter().map(|n| ColumnFamilyDescriptor::new(n, Options::default())).collect()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The current count of `key` (0 when absent).
    pub fn count(&self, key: &[u8]) -> Result<u64> {
        let cf = self.db.cf_handle(COUNTS).expect("counts column family");
        Ok(self.db.get_pinned_cf(&cf, key)?.map(|v| decode_u64(&v)).unwrap_or(0))
    }

    pub fn totals(&self) -> Result<Totals> {
        Ok(Totals {
            records_processed: self.meta_u64(meta::RECORDS_PROCESSED)?,
            records_skipped: self.meta_u64(meta::RECORDS_SKIPPED)?,
        })
    }

    fn meta_u64(&self, name: &str) -> Result<u64> {
        Ok(self.meta_i64(name)?.map_or(0, |v| v as u64))
    }

    /// A metadata entry's bytes, decoded by `decode`, if present.
    fn meta<T>(&self, name: &str, decode: impl FnOnce(&[u8]) -> T) -> Result<Option<T>> {
        let cf = self.db.cf_handle(META).expect("meta column family");
        Ok(self.db.get_pinned_cf(&cf, name)?.map(|v| decode(&v)))
    }

    /// Next input offset per partition of `topic` that the state already reflects.
    pub fn input_offsets(&self, topic: &str) -> Result<BTreeMap<i32, i64>> {
        self.positions(topic, meta::parse_input_offset)
    }

    /// Per partition of changelog `topic`, the offset up to which state holds its records.
    pub fn changelog_positions(&self, topic: &str) -> Result<BTreeMap<i32, i64>> {
        self.positions(topic, meta::parse_changelog_position)
    }

    fn positions(&self, topic: &str, parse: fn(&str) -> Option<(&str, i32)>) -> Result<BTreeMap<i32, i64>> {
        let named = self.positions_named(parse)?;
        Ok(named.into_iter().filter(|(t, _, _)| t == topic).map(|(_, p, at)| (p, at)).collect())
    }

    /// Every position entry `parse` recognises: (topic, partition, offset).
    pub(crate) fn positions_named(&self, parse: fn(&str) -> Option<(&str, i32)>) -> Result<Vec<(String, i32, i64)>> {
        let cf = self.db.cf_handle(META).expect("meta column family");
        let mut out = Vec::new();
        for item in self.db.iterator_cf(&cf, IteratorMode::Start) {
            let (key, value) = item?;
            let name = String::from_utf8_lossy(&key);
            if let Some((topic, partition)) = parse(&name) {
                out.push((topic.to_owned(), partition, decode_u64(&value) as i64));
            }
        }
        Ok(out)
    }

    /// The number of counters, windowed ones included: counted when RocksDB's estimate is
    /// small, else the estimate (counting means reading every key). Returns (count, exact).
    pub fn key_count(&self) -> Result<(u64, bool)> {
        /// Up to this many keys (estimated), they are counted exactly.
        const EXACT_UP_TO: u64 = 100_000;
        let estimate = self.estimated_keys()?;
        if estimate <= EXACT_UP_TO {
            Ok(((self.counts_between(&[], &[]).count() + self.values_between(&[], None).count()) as u64, true))
        } else {
            Ok((estimate, false))
        }
    }

    /// RocksDB's estimate of the number of counters and values (it counts overwritten values too until
    /// they are compacted away).
    pub fn estimated_keys(&self) -> Result<u64> {
        let mut keys = 0;
        for cf in [COUNTS, VALUES] {
            if let Some(handle) = self.db.cf_handle(cf) {
                keys += self.db.property_int_value_cf(&handle, "rocksdb.estimate-num-keys")?.unwrap_or(0);
            }
        }
        Ok(keys)
    }

    /// The guarantee the last writer ran under, if recorded.
    pub fn written_under(&self) -> Result<Option<String>> {
        self.meta_text(meta::WRITTEN_UNDER)
    }

    /// Applies changes in one atomic write batch; `durable` fsyncs the WAL before returning.
    pub fn apply(&self, changes: impl IntoIterator<Item = Change>, durable: bool) -> Result<()> {
        let mut options = WriteOptions::default();
        options.set_sync(durable);
        self.write(changes, &options)
    }

    fn write(&self, changes: impl IntoIterator<Item = Change>, options: &WriteOptions) -> Result<()> {
        let counts = self.db.cf_handle(COUNTS).expect("counts column family");
        let meta = self.db.cf_handle(META).expect("meta column family");
        let values = self.db.cf_handle(VALUES).expect("values column family");
        let mut batch = WriteBatch::default();
        for change in changes {
            match change {
                Change::Count { key, value: Some(v) } => batch.put_cf(&counts, key, v.to_be_bytes()),
                Change::Count { key, value: None } => batch.delete_cf(&counts, key),
                Change::Meta { name, value: Some(v) } => batch.put_cf(&meta, name, v),
                Change::Meta { name, value: None } => batch.delete_cf(&meta, name),
                Change::Value { key, value: Some(v) } => batch.put_cf(&values, key, v),
                Change::Value { key, value: None } => batch.delete_cf(&values, key),
            }
        }
        self.db.write_opt(batch, options).with_context(|| format!("writing state to {}", self.dir.display()))
    }

    /// The column families this store has (a store opened read-only from a host before
    /// processors has no `values`).
    fn families_present(&self) -> impl Iterator<Item = &'static str> + '_ {
        FAMILIES.into_iter().filter(|f| self.db.cf_handle(f).is_some())
    }

    /// A processor guest's value of `key`.
    pub fn value(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let Some(cf) = self.db.cf_handle(VALUES) else { return Ok(None) };
        Ok(self.db.get_cf(&cf, key)?)
    }

    /// A processor guest's values with `from <= key < to` (`to` none: no bound), in key order.
    pub fn values_between<'s>(
        &'s self,
        from: &[u8],
        to: Option<&[u8]>,
    ) -> Box<dyn Iterator<Item = Result<Entry>> + 's> {
        let Some(cf) = self.db.cf_handle(VALUES) else { return Box::new(std::iter::empty()) };
        let mut options = rocksdb::ReadOptions::default();
        if let Some(to) = to {
            options.set_iterate_upper_bound(to.to_vec());
        }
        Box::new(
            self.db
                .iterator_cf_opt(&cf, options, IteratorMode::From(from, rocksdb::Direction::Forward))
                .map(|item| item.map_err(Into::into)),
        )
    }

    /// True when a processor guest wrote this state.
    pub fn has_values(&self) -> Result<bool> {
        Ok(self.values_between(&[], None).next().transpose()?.is_some())
    }

    /// Every plain (not windowed) counter, in key order.
    pub fn counts(&self) -> impl Iterator<Item = Result<(Box<[u8]>, u64)>> + '_ {
        self.counts_between(&[], &[WINDOW_KEY_PREFIX])
    }

    /// Counters with `from <= key < to` (an empty `to`: no upper bound), in key order.
    fn counts_between<'s>(
        &'s self,
        from: &[u8],
        to: &[u8],
    ) -> impl Iterator<Item = Result<(Box<[u8]>, u64)>> + use<'s> {
        let cf = self.db.cf_handle(COUNTS).expect("counts column family");
        let mut options = rocksdb::ReadOptions::default();
        if !to.is_empty() {
            options.set_iterate_upper_bound(to.to_vec());
        }
        self.db
            .iterator_cf_opt(&cf, options, IteratorMode::From(from, rocksdb::Direction::Forward))
            .map(|item| item.map(|(k, v)| (k, decode_u64(&v))).map_err(Into::into))
    }

    /// The counters of the window starting at `start`: (guest key, count), in key order.
    pub fn window_counts(&self, start: Millis) -> impl Iterator<Item = Result<(Box<[u8]>, u64)>> + '_ {
        let from = window::window_prefix(start);
        let to = window::window_prefix(start.saturating_add(1));
        self.counts_between(&from, &to).map(move |item| item.map(|(key, count)| (key[from.len()..].into(), count)))
    }

    /// The start of the first window with counters starting at or after `from`.
    pub fn first_window_from(&self, from: Millis) -> Result<Option<Millis>> {
        match self.counts_between(&window::window_prefix(from), &[]).next().transpose()? {
            Some((key, _)) => Ok(window::parse_state_key(&key).map(|(start, _)| start)),
            None => Ok(None),
        }
    }

    /// Every windowed counter's state key in windows starting at or after `from` (`None`:
    /// the first) and before `before`. Give `from` when the windows before it are deleted
    /// already: the scan then starts past their deletion markers instead of reading them.
    pub fn windowed_keys_between(
        &self,
        from: Option<Millis>,
        before: Millis,
    ) -> impl Iterator<Item = Result<Box<[u8]>>> + '_ {
        let from = from.map_or(vec![WINDOW_KEY_PREFIX], |f| window::window_prefix(f).to_vec());
        self.counts_between(&from, &window::window_prefix(before)).map(|item| item.map(|(k, _)| k))
    }

    /// Every windowed counter: (window start, guest key, count), by window then key.
    pub fn windowed_counts(&self) -> impl Iterator<Item = Result<(Millis, Box<[u8]>, u64)>> + '_ {
        self.counts_between(&[WINDOW_KEY_PREFIX], &[]).map(|item| {
            let (key, count) = item?;
            let (start, key) = window::parse_state_key(&key).context("a windowed key shorter than its prefix")?;
            Ok((start, key.into(), count))
        })
    }

    /// The largest event time seen per partition of input `topic` (with --window).
    pub fn stream_times(&self, topic: &str) -> Result<BTreeMap<i32, Millis>> {
        self.positions(topic, meta::parse_stream_time)
    }

    /// A metadata entry as text, if present.
    pub fn meta_text(&self, name: &str) -> Result<Option<String>> {
        self.meta(name, |v| String::from_utf8_lossy(v).into_owned())
    }

    /// A metadata entry as a big-endian i64, if present.
    pub fn meta_i64(&self, name: &str) -> Result<Option<i64>> {
        self.meta(name, |v| decode_u64(v) as i64)
    }

    /// True when the store must be (re)built from the changelog before use: it is new or
    /// was deleted, or a restore into it was interrupted.
    pub fn needs_restore(&self) -> Result<bool> {
        let meta = self.db.cf_handle(META).expect("meta column family");
        Ok(self.is_empty()? || self.db.get_pinned_cf(&meta, meta::RESTORE_INCOMPLETE)?.is_some())
    }

    /// Deletes every counter and every metadata entry.
    pub fn clear(&mut self) -> Result<()> {
        let db = std::sync::Arc::get_mut(&mut self.db).context("state is shared with a reader; cannot clear it")?;
        for name in FAMILIES {
            db.drop_cf(name).with_context(|| format!("clearing {}", self.dir.display()))?;
            db.create_cf(name, &Options::default()).with_context(|| format!("clearing {}", self.dir.display()))?;
        }
        Ok(())
    }

    /// Another handle on the same open store, for readers on other threads (`--http`).
    pub fn shared(&self) -> Store {
        Store { db: self.db.clone(), dir: self.dir.clone() }
    }

    /// Bytes of state: SST files plus memtables, both column families.
    pub fn size_bytes(&self) -> Result<u64> {
        let mut total = 0;
        for cf in self.families_present() {
            let handle = self.db.cf_handle(cf).expect("column family");
            for property in ["rocksdb.total-sst-files-size", "rocksdb.cur-size-all-mem-tables"] {
                total += self.db.property_int_value_cf(&handle, property)?.unwrap_or(0);
            }
        }
        Ok(total)
    }

    /// True when nothing was ever written (a new or deleted state dir).
    pub fn is_empty(&self) -> Result<bool> {
        for cf in self.families_present() {
            let handle = self.db.cf_handle(cf).expect("column family");
            if self.db.iterator_cf(&handle, IteratorMode::Start).next().transpose()?.is_some() {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

pub fn decode_u64(bytes: &[u8]) -> u64 {
    let mut buf = [0u8; 8];
    let n = bytes.len().min(8);
    buf[8 - n..].copy_from_slice(&bytes[bytes.len() - n..]);
    u64::from_be_bytes(buf)
}

// On-disk layout of a --scale-out host: a store per shard under its state dir.

/// The shard (repartition partition) that counts `key` in a job of `shards` partitions: where
/// the repartition stage's producer places it (librdkafka's `murmur2_random`, as Java clients:
/// murmur2 of the key, made positive, modulo the partition count).
pub fn shard_of(key: &[u8], shards: i32) -> i32 {
    ((murmur2::murmur2(key, murmur2::KAFKA_SEED) & 0x7fff_ffff) % shards.max(1) as u32) as i32
}

/// A shard's directory under the state dir.
pub fn shard_dir(state_dir: &Path, partition: i32) -> PathBuf {
    state_dir.join(format!("shard-{partition}"))
}

/// The shards found under a state dir, by partition.
pub fn shard_dirs(state_dir: &Path) -> Result<BTreeMap<i32, PathBuf>> {
    let mut shards = BTreeMap::new();
    let entries = match std::fs::read_dir(state_dir) {
        Ok(entries) => entries,
        // Not there (or not a directory: opening the store says so, naming the path).
        Err(e) if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory) => {
            return Ok(shards);
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", state_dir.display())),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        if let Some(partition) = name.to_str().and_then(|n| n.strip_prefix("shard-")).and_then(|p| p.parse().ok()) {
            shards.insert(partition, entry.path());
        }
    }
    Ok(shards)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apply_is_read_back_and_deletes_work() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert!(store.is_empty().unwrap());
        store
            .apply(
                [
                    Change::Count { key: b"latte".to_vec(), value: Some(5) },
                    Change::Count { key: b"mocha".to_vec(), value: Some(2) },
                    Change::Meta { name: meta::RECORDS_PROCESSED.into(), value: Some(7u64.to_be_bytes().to_vec()) },
                    Change::Meta { name: meta::input_offset("in.t", 2), value: Some(42u64.to_be_bytes().to_vec()) },
                ],
                true,
            )
            .unwrap();
        assert_eq!(store.count(b"latte").unwrap(), 5);
        assert_eq!(store.count(b"tea").unwrap(), 0);
        assert_eq!(store.totals().unwrap().records_processed, 7);
        assert_eq!(store.input_offsets("in.t").unwrap(), BTreeMap::from([(2, 42)]));
        assert!(store.input_offsets("other").unwrap().is_empty());
        store.apply([Change::Count { key: b"mocha".to_vec(), value: None }], false).unwrap();
        let all: Vec<_> = store.counts().map(|r| r.unwrap()).collect();
        assert_eq!(all, vec![(b"latte".to_vec().into_boxed_slice(), 5)]);
    }

    #[test]
    fn a_second_writer_is_refused_with_a_message() {
        let dir = tempfile::tempdir().unwrap();
        let _first = Store::open(dir.path()).unwrap();
        let err = Store::open(dir.path()).err().expect("second open must fail").to_string();
        assert!(err.contains("in use by another host process"), "{err}");
    }

    #[test]
    fn offset_names_round_trip_with_slashes_in_topics() {
        let name = meta::input_offset("a/b.c", 11);
        assert_eq!(meta::parse_input_offset(&name), Some(("a/b.c", 11)));
        assert_eq!(meta::parse_changelog_position(&name), None);
        let name = meta::changelog_position("x/y", 3);
        assert_eq!(meta::parse_changelog_position(&name), Some(("x/y", 3)));
        assert_eq!(meta::parse_input_offset(&name), None);
    }
}
