//! What a processor guest's host calls see and do: reads through every write not yet in the
//! store, writes and emits held per record (so a refused or trapping record leaves none),
//! and the limits on each call.
//!
//! Layers, newest first: the record being processed, the accepted records of this batch,
//! the batches computed but not yet written to the store (the engine keeps three batches in
//! motion: a batch is processed while the one before is still on its way to the changelog),
//! and the store. The engine says when a batch is in the store (`applied`) or will never be
//! (`rewind`, after an aborted transaction).
//!
//! The store's keys (and so the changelog's) start with a space byte: the guest's values,
//! its timers (by key, and by due time, so the next due ones are a range read away), and
//! the task's stream time. A guest's keys only ever reach the first.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

use anyhow::Result;

use crate::state::Store;

/// Longest key a processor may write (as counters' keys: it becomes a changelog record key).
pub const MAX_KEY_BYTES: usize = crate::guest::MAX_KEY_BYTES;
/// Largest value a processor may write or emit: with the longest key it still fits the
/// broker's default record size limit (1 MiB).
pub const MAX_VALUE_BYTES: usize = 512 * 1024;

/// A record emitted to a named output.
#[derive(Debug, Clone, PartialEq)]
pub struct Emit {
    pub output: String,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Vec<u8>)>,
}

/// The spaces of the store's keys.
pub mod space {
    /// `[VALUE] ++ key` -> the guest's value.
    pub const VALUE: u8 = 0x00;
    /// `[TIMER_BY_KEY, kind] ++ key` -> due time (8 bytes, see `encode_time`).
    pub const TIMER_BY_KEY: u8 = 0x01;
    /// `[TIMER_BY_TIME, kind] ++ due time ++ key` -> nothing.
    pub const TIMER_BY_TIME: u8 = 0x02;
    /// `[STREAM_TIME]` -> the largest record timestamp seen (8 bytes).
    pub const STREAM_TIME: u8 = 0x03;
}

/// A timer's clock, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clock {
    Stream = 0,
    Wall = 1,
}

/// A due time as 8 bytes that sort as the times do (the sign bit flipped).
pub fn encode_time(at: i64) -> [u8; 8] {
    ((at as u64) ^ (1 << 63)).to_be_bytes()
}

pub fn decode_time(bytes: &[u8]) -> Option<i64> {
    Some((u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?) ^ (1 << 63)) as i64)
}

pub fn value_key(key: &[u8]) -> Vec<u8> {
    [&[space::VALUE], key].concat()
}

fn timer_by_key(clock: Clock, key: &[u8]) -> Vec<u8> {
    [&[space::TIMER_BY_KEY, clock as u8], key].concat()
}

fn timer_by_time(clock: Clock, at: i64, key: &[u8]) -> Vec<u8> {
    [&[space::TIMER_BY_TIME, clock as u8][..], &encode_time(at), key].concat()
}

/// A key and its write (`None`: deleted) in one layer, as a range read meets it.
type LayerEntry<'a> = (&'a [u8], Option<&'a [u8]>);

/// A layer of writes: `None` deletes.
type Writes = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// A key's newest value (`None`: deleted), as a batch wrote it.
pub type Write = (Vec<u8>, Option<Vec<u8>>);

#[derive(Default)]
pub struct View {
    /// The task's store (none: `host test`, which starts from empty state).
    base: Option<Store>,
    /// Writes of batches not yet in `base`, each with the batch that wrote it last.
    pending: BTreeMap<Vec<u8>, (u64, Option<Vec<u8>>)>,
    batch: Writes,
    record: Writes,
    batch_emits: Vec<Emit>,
    record_emits: Vec<Emit>,
    /// State operations the current record made, and the most it may make.
    ops: u64,
    budget: u64,
    /// The outputs the guest declared.
    outputs: BTreeSet<String>,
    /// A store read that failed: the host cannot go on (the guest call is trapped).
    pub failure: Option<anyhow::Error>,
    /// The copies of the tables the guest declared, by name.
    tables: BTreeMap<String, Store>,
    /// Per clock, a lower bound of the earliest timer's due time when known (`Some(None)`:
    /// it has none), through every layer.
    earliest_known: [Option<Option<i64>>; 2],
}

/// Why a host call traps the guest (the record is skipped with this reason).
#[derive(Debug)]
pub struct OverBudget(pub u64);

impl std::fmt::Display for OverBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the record made more than {} state operations (--max-state-ops)", self.0)
    }
}

impl std::error::Error for OverBudget {}

impl View {
    pub fn new(outputs: &[String], budget: u64) -> View {
        View { outputs: outputs.iter().cloned().collect(), budget, ..View::default() }
    }

    pub fn set_base(&mut self, store: Store) {
        self.base = Some(store);
    }

    pub fn set_tables(&mut self, tables: BTreeMap<String, Store>) {
        self.tables = tables;
    }

    /// The newest value of `key` in table `name`, as its copy holds it now.
    pub fn lookup(&mut self, name: &str, key: &[u8]) -> wasmtime::Result<Result<Option<Vec<u8>>, String>> {
        self.spend(1)?;
        let Some(table) = self.tables.get(name) else {
            let declared: Vec<&str> = self.tables.keys().map(String::as_str).collect();
            return Ok(Err(format!(
                "table `{name}` is not declared (describe declares: {})",
                if declared.is_empty() { "none".to_owned() } else { declared.join(", ") }
            )));
        };
        match table.value(&value_key(key)) {
            Ok(value) => Ok(Ok(value)),
            Err(e) => Err(self.fail(e)),
        }
    }

    /// Applies what a table's topic got (between two batches).
    pub fn update_table(&mut self, name: &str, changes: Vec<crate::state::Change>) -> Result<()> {
        match self.tables.get(name) {
            Some(table) => table.apply(changes, false),
            None => Ok(()),
        }
    }

    /// Counts `n` operations; past the budget, the call traps.
    fn spend(&mut self, n: u64) -> wasmtime::Result<()> {
        self.ops += n;
        if self.ops > self.budget {
            return Err(wasmtime::Error::new(OverBudget(self.budget)));
        }
        Ok(())
    }

    /// A store read's failure ends the call (and the host: see `failure`).
    fn fail(&mut self, e: anyhow::Error) -> wasmtime::Error {
        let trap = wasmtime::Error::msg(format!("reading state failed: {e:#}"));
        self.failure = Some(e);
        trap
    }

    /// The newest write of `key` not yet in the store, if any.
    fn overlay(&self, key: &[u8]) -> Option<&Option<Vec<u8>>> {
        self.record.get(key).or_else(|| self.batch.get(key)).or_else(|| self.pending.get(key).map(|(_, v)| v))
    }

    /// The value of store key `key` through every layer.
    fn read(&mut self, key: &[u8]) -> wasmtime::Result<Option<Vec<u8>>> {
        if let Some(value) = self.overlay(key) {
            return Ok(value.clone());
        }
        match &self.base {
            None => Ok(None),
            Some(store) => store.value(key).map_err(|e| self.fail(e)),
        }
    }

    /// Store entries with `start <= key < end` through every layer, in key order, at most `limit`.
    fn read_range(&mut self, start: &[u8], end: &[u8], limit: usize) -> wasmtime::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let bounds = (Bound::Included(start), Bound::Excluded(end));
        // The layers merged lazily in key order (newest first for a key present in several):
        // a read of the first few entries costs a seek per layer, however many writes they hold.
        let mut layers: [Box<dyn Iterator<Item = LayerEntry<'_>> + '_>; 3] = [
            Box::new(self.record.range::<[u8], _>(bounds).map(|(k, v)| (k.as_slice(), v.as_deref()))),
            Box::new(self.batch.range::<[u8], _>(bounds).map(|(k, v)| (k.as_slice(), v.as_deref()))),
            Box::new(self.pending.range::<[u8], _>(bounds).map(|(k, (_, v))| (k.as_slice(), v.as_deref()))),
        ];
        let mut heads: Vec<Option<LayerEntry<'_>>> = layers.iter_mut().map(|l| l.next()).collect();
        let mut store = self.base.as_ref().map(|store| store.values_between(start, Some(end)).peekable());
        let mut out = Vec::new();
        let mut failed = None;
        while out.len() < limit {
            let stored = match store.as_mut().map(|s| s.peek()) {
                Some(Some(Err(_))) => {
                    failed = store.as_mut().and_then(|s| s.next()).and_then(|r| r.err());
                    break;
                }
                Some(Some(Ok((k, _)))) => Some(&k[..]),
                _ => None,
            };
            // The smallest key of any layer or the store.
            let Some(key) = heads.iter().flatten().map(|(k, _)| *k).chain(stored).min() else { break };
            let key = key.to_vec();
            // The newest layer that has it decides; every source holding it moves on.
            let mut value: Option<Option<Vec<u8>>> = None;
            for (head, layer) in heads.iter_mut().zip(layers.iter_mut()) {
                if head.is_some_and(|(k, _)| k == key.as_slice()) {
                    let (_, v) = head.take().expect("checked");
                    value.get_or_insert_with(|| v.map(<[u8]>::to_vec));
                    *head = layer.next();
                }
            }
            if stored.is_some_and(|k| k == key.as_slice())
                && let Some(Some(Ok((_, v)))) = store.as_mut().map(|s| s.next())
            {
                value.get_or_insert_with(|| Some(v.into_vec()));
            }
            if let Some(Some(v)) = value {
                out.push((key, v));
            }
        }
        drop((layers, store));
        if let Some(e) = failed {
            return Err(self.fail(e));
        }
        Ok(out)
    }

    pub fn get(&mut self, key: &[u8]) -> wasmtime::Result<Option<Vec<u8>>> {
        self.spend(1)?;
        self.read(&value_key(key))
    }

    pub fn put(&mut self, key: Vec<u8>, value: Vec<u8>) -> wasmtime::Result<Result<(), String>> {
        self.spend(1)?;
        if let Err(why) = check_key(&key).and_then(|()| check_value(Some(&value))) {
            return Ok(Err(why));
        }
        self.record.insert(value_key(&key), Some(value));
        Ok(Ok(()))
    }

    pub fn delete(&mut self, key: Vec<u8>) -> wasmtime::Result<()> {
        self.spend(1)?;
        if key.len() <= MAX_KEY_BYTES {
            self.record.insert(value_key(&key), None);
        }
        Ok(())
    }

    /// The guest's entries with `start <= key < end`, in key order, at most `limit`. Each
    /// entry returned counts as an operation.
    pub fn range(&mut self, start: &[u8], end: Option<&[u8]>, limit: u32) -> wasmtime::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.spend(1)?;
        let end = end.map_or(vec![space::VALUE + 1], value_key);
        let entries: Vec<(Vec<u8>, Vec<u8>)> = self
            .read_range(&value_key(start), &end, limit as usize)?
            .into_iter()
            .map(|(k, v)| (k[1..].to_vec(), v))
            .collect();
        self.spend(entries.len() as u64)?;
        Ok(entries)
    }

    /// Sets `key`'s timer on `clock` to `at`, replacing the one it had.
    pub fn set_timer(&mut self, key: Vec<u8>, at: i64, clock: Clock) -> wasmtime::Result<Result<(), String>> {
        self.spend(1)?;
        if let Err(why) = check_key(&key) {
            return Ok(Err(why));
        }
        self.clear_timer(&key, clock)?;
        self.record.insert(timer_by_key(clock, &key), Some(encode_time(at).to_vec()));
        self.record.insert(timer_by_time(clock, at, &key), Some(Vec::new()));
        // The bound only moves earlier (if this record is refused, it is merely early).
        if let Some(bound) = &mut self.earliest_known[clock as usize] {
            *bound = Some(bound.map_or(at, |b| b.min(at)));
        }
        Ok(Ok(()))
    }

    pub fn cancel_timer(&mut self, key: Vec<u8>, clock: Clock) -> wasmtime::Result<()> {
        self.spend(1)?;
        self.clear_timer(&key, clock)
    }

    /// Removes `key`'s timer on `clock`, if it has one.
    fn clear_timer(&mut self, key: &[u8], clock: Clock) -> wasmtime::Result<()> {
        let by_key = timer_by_key(clock, key);
        if let Some(at) = self.read(&by_key)?.as_deref().and_then(decode_time) {
            // (A timer gone leaves the lower bound a bound.)
            self.record.insert(by_key, None);
            self.record.insert(timer_by_time(clock, at, key), None);
        }
        Ok(())
    }

    /// The earliest timer on `clock` due at or before `now`: (key, due time).
    pub fn next_due(&mut self, clock: Clock, now: i64) -> wasmtime::Result<Option<(Vec<u8>, i64)>> {
        // Below the cached bound nothing is due: a record that moves stream time reads
        // nothing until the earliest timer's time (a processor without timers, never).
        if self.earliest(clock)?.is_none_or(|bound| bound > now) {
            return Ok(None);
        }
        let found = self.first_timer(clock, now)?;
        if found.is_none() {
            // The bound was early (a timer since refused or gone): read it again next time.
            self.earliest_known[clock as usize] = None;
        }
        Ok(found)
    }

    /// The earliest timer on `clock` due at or before `now`, read through the layers.
    fn first_timer(&mut self, clock: Clock, now: i64) -> wasmtime::Result<Option<(Vec<u8>, i64)>> {
        let start = [space::TIMER_BY_TIME, clock as u8];
        let end = match now.checked_add(1) {
            Some(after) => [&start[..], &encode_time(after)].concat(),
            None => vec![space::TIMER_BY_TIME, clock as u8 + 1],
        };
        let first = self.read_range(&start, &end, 1)?.into_iter().next();
        Ok(first.and_then(|(k, _)| Some((k[10..].to_vec(), decode_time(&k[2..])?))))
    }

    /// No timer on `clock` is due before this (`None`: it has none); exact when read, then
    /// kept as a lower bound as timers come and go (so at worst early).
    pub fn earliest(&mut self, clock: Clock) -> wasmtime::Result<Option<i64>> {
        if let Some(known) = self.earliest_known[clock as usize] {
            return Ok(known);
        }
        let earliest = self.first_timer(clock, i64::MAX)?.map(|(_, at)| at);
        self.earliest_known[clock as usize] = Some(earliest);
        Ok(earliest)
    }

    /// A due timer is about to fire: it is gone, whatever its call does.
    pub fn take_timer(&mut self, key: &[u8], clock: Clock) -> wasmtime::Result<()> {
        self.begin_record();
        self.clear_timer(key, clock)?;
        self.keep_record();
        Ok(())
    }

    /// The task's stream time: the largest record timestamp seen (`None`: none yet).
    pub fn stream_time(&mut self) -> wasmtime::Result<Option<i64>> {
        Ok(self.read(&[space::STREAM_TIME])?.as_deref().and_then(decode_time))
    }

    /// Moves stream time to `t` if that is later (any record moves it, a refused one too);
    /// true if it moved.
    pub fn advance_stream_time(&mut self, t: i64) -> wasmtime::Result<bool> {
        if self.stream_time()?.is_some_and(|now| t <= now) {
            return Ok(false);
        }
        self.batch.insert(vec![space::STREAM_TIME], Some(encode_time(t).to_vec()));
        Ok(true)
    }

    pub fn emit(&mut self, emit: Emit) -> wasmtime::Result<Result<(), String>> {
        self.spend(1)?;
        if !self.outputs.contains(&emit.output) {
            let declared: Vec<&str> = self.outputs.iter().map(String::as_str).collect();
            return Ok(Err(format!(
                "output `{}` is not declared (describe declares: {})",
                emit.output,
                if declared.is_empty() { "none".to_owned() } else { declared.join(", ") }
            )));
        }
        if let Some(key) = &emit.key
            && let Err(why) = check_key(key)
        {
            return Ok(Err(why));
        }
        if let Err(why) = check_value(emit.value.as_deref()) {
            return Ok(Err(why));
        }
        self.record_emits.push(emit);
        Ok(Ok(()))
    }

    /// A new record: nothing written yet, the budget full.
    pub fn begin_record(&mut self) {
        self.record.clear();
        self.record_emits.clear();
        self.ops = 0;
    }

    /// The record was accepted: its writes and emits join the batch.
    pub fn keep_record(&mut self) {
        // (Not `BTreeMap::append`: it rebuilds the whole batch layer, per record.)
        for (key, value) in std::mem::take(&mut self.record) {
            self.batch.insert(key, value);
        }
        self.batch_emits.append(&mut self.record_emits);
    }

    /// The record was refused or trapped: it leaves nothing.
    pub fn drop_record(&mut self) {
        self.record.clear();
        self.record_emits.clear();
    }

    /// The batch `seq` is computed: its writes (the last per key) and emits, for the engine
    /// to make durable; until it says they are in the store, later batches read them here.
    pub fn finish_batch(&mut self, seq: u64) -> (Vec<Write>, Vec<Emit>) {
        let writes: Vec<Write> = std::mem::take(&mut self.batch).into_iter().collect();
        for (key, value) in &writes {
            self.pending.insert(key.clone(), (seq, value.clone()));
        }
        (writes, std::mem::take(&mut self.batch_emits))
    }

    /// Every batch up to `seq` is in the store: their writes are read from there now.
    pub fn applied(&mut self, seq: u64) {
        self.pending.retain(|_, (written_by, _)| *written_by > seq);
    }

    /// The batches not yet in the store never will be (an aborted transaction): reads go to
    /// the store again.
    pub fn rewind(&mut self) {
        self.pending.clear();
        self.earliest_known = [None, None];
    }
}

fn check_key(key: &[u8]) -> Result<(), String> {
    if key.len() > MAX_KEY_BYTES {
        return Err(format!("key of {} bytes is longer than the limit of {MAX_KEY_BYTES}", key.len()));
    }
    Ok(())
}

fn check_value(value: Option<&[u8]>) -> Result<(), String> {
    match value {
        Some(v) if v.len() > MAX_VALUE_BYTES => {
            Err(format!("value of {} bytes is larger than the limit of {MAX_VALUE_BYTES}", v.len()))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Change;

    fn put(view: &mut View, key: &str, value: &str) {
        view.put(key.into(), value.into()).unwrap().unwrap();
    }

    fn got(view: &mut View, key: &str) -> Option<String> {
        view.get(key.as_bytes()).unwrap().map(|v| String::from_utf8(v).unwrap())
    }

    fn keys(entries: &[(Vec<u8>, Vec<u8>)]) -> Vec<String> {
        entries.iter().map(|(k, _)| String::from_utf8(k.clone()).unwrap()).collect()
    }

    #[test]
    fn reads_see_every_newer_layer_and_a_dropped_record_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let value = |k: &str, v: &str| Change::Value { key: value_key(k.as_bytes()), value: Some(v.into()) };
        store
            .apply([value("a", "store"), value("b", "store"), value("c", "store"), value("d", "store")], false)
            .unwrap();
        let mut view = View::new(&[], 1000);
        view.set_base(store.shared());

        view.begin_record();
        put(&mut view, "a", "batch1");
        view.delete(b"b".to_vec()).unwrap();
        view.keep_record();
        let (writes, _) = view.finish_batch(1);
        assert_eq!(writes.len(), 2);

        view.begin_record();
        assert_eq!(got(&mut view, "a").as_deref(), Some("batch1"), "a batch not yet in the store");
        assert_eq!(got(&mut view, "b"), None, "deleted by a batch not yet in the store");
        put(&mut view, "c", "record");
        put(&mut view, "e", "record");
        assert_eq!(got(&mut view, "c").as_deref(), Some("record"), "a record reads its own writes");
        assert_eq!(keys(&view.range(b"a", None, 10).unwrap()), ["a", "c", "d", "e"]);
        assert_eq!(keys(&view.range(b"a", Some(b"d"), 2).unwrap()), ["a", "c"]);
        view.drop_record();
        assert_eq!(got(&mut view, "c").as_deref(), Some("store"), "a dropped record leaves nothing");

        // Batch 1 reaches the store; the view reads it from there.
        store.apply([value("a", "batch1"), Change::Value { key: value_key(b"b"), value: None }], false).unwrap();
        view.applied(1);
        assert_eq!(got(&mut view, "a").as_deref(), Some("batch1"));
        assert_eq!(got(&mut view, "b"), None);

        view.begin_record();
        put(&mut view, "a", "batch2");
        view.keep_record();
        view.finish_batch(2);
        view.rewind();
        assert_eq!(got(&mut view, "a").as_deref(), Some("batch1"), "an aborted batch is forgotten");
    }

    #[test]
    fn timers_come_due_in_time_order_and_are_replaced_per_key() {
        let mut view = View::new(&[], 1000);
        assert!(encode_time(-1) < encode_time(0), "negative times sort first");
        assert_eq!(decode_time(&encode_time(-5)), Some(-5));
        view.begin_record();
        view.set_timer(b"a".to_vec(), 300, Clock::Stream).unwrap().unwrap();
        view.set_timer(b"b".to_vec(), 100, Clock::Stream).unwrap().unwrap();
        view.set_timer(b"c".to_vec(), 50, Clock::Wall).unwrap().unwrap();
        view.set_timer(b"a".to_vec(), 200, Clock::Stream).unwrap().unwrap();
        view.keep_record();
        assert_eq!(view.next_due(Clock::Stream, 99).unwrap(), None);
        assert_eq!(view.next_due(Clock::Stream, 250).unwrap(), Some((b"b".to_vec(), 100)));
        view.take_timer(b"b", Clock::Stream).unwrap();
        assert_eq!(view.next_due(Clock::Stream, 250).unwrap(), Some((b"a".to_vec(), 200)), "a was moved to 200");
        view.take_timer(b"a", Clock::Stream).unwrap();
        assert_eq!(view.next_due(Clock::Stream, i64::MAX).unwrap(), None, "a's first time is gone too");
        assert_eq!(view.earliest(Clock::Wall).unwrap(), Some(50));
        view.begin_record();
        view.cancel_timer(b"c".to_vec(), Clock::Wall).unwrap();
        view.keep_record();
        assert_eq!(view.earliest(Clock::Wall).unwrap(), Some(50), "a bound: at worst early");
        assert_eq!(view.next_due(Clock::Wall, i64::MAX).unwrap(), None);
        assert_eq!(view.earliest(Clock::Wall).unwrap(), None, "exact again after a look");
        assert!(view.range(b"", None, 10).unwrap().is_empty(), "timers are not the guest's values");
        view.advance_stream_time(10).unwrap();
        view.advance_stream_time(5).unwrap();
        assert_eq!(view.stream_time().unwrap(), Some(10), "stream time never goes back");
    }

    #[test]
    fn limits_are_refused_or_trapped() {
        let mut view = View::new(&["out".to_string()], 3);
        view.begin_record();
        assert!(view.put(vec![b'k'; MAX_KEY_BYTES + 1], vec![]).unwrap().unwrap_err().contains("longer than"));
        assert!(view.put(b"k".to_vec(), vec![0; MAX_VALUE_BYTES + 1]).unwrap().unwrap_err().contains("larger than"));
        let emit =
            |output: &str| Emit { output: output.into(), key: None, value: Some(b"v".to_vec()), headers: vec![] };
        assert!(view.emit(emit("elsewhere")).unwrap().unwrap_err().contains("not declared (describe declares: out)"));
        let trap = view.get(b"k").unwrap_err();
        assert!(trap.downcast_ref::<OverBudget>().is_some(), "{trap}");
        view.begin_record();
        assert_eq!(view.emit(emit("out")).unwrap(), Ok(()));
    }
}
