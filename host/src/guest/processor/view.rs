//! What a processor guest's host calls see and do: reads through every write not yet in the
//! store, writes and emits held per record (so a refused or trapping record leaves none),
//! and the limits on each call.
//!
//! Layers, newest first: the record being processed, the accepted records of this batch,
//! the batches computed but not yet written to the store (the engine keeps three batches in
//! motion: a batch is processed while the one before is still on its way to the changelog),
//! and the store. The engine says when a batch is in the store (`applied`) or will never be
//! (`rewind`, after an aborted transaction).

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

    pub fn get(&mut self, key: &[u8]) -> wasmtime::Result<Option<Vec<u8>>> {
        self.spend(1)?;
        if let Some(value) = self.overlay(key) {
            return Ok(value.clone());
        }
        match &self.base {
            None => Ok(None),
            Some(store) => store.value(key).map_err(|e| self.fail(e)),
        }
    }

    pub fn put(&mut self, key: Vec<u8>, value: Vec<u8>) -> wasmtime::Result<Result<(), String>> {
        self.spend(1)?;
        if let Err(why) = check_key(&key).and_then(|()| check_value(Some(&value))) {
            return Ok(Err(why));
        }
        self.record.insert(key, Some(value));
        Ok(Ok(()))
    }

    pub fn delete(&mut self, key: Vec<u8>) -> wasmtime::Result<()> {
        self.spend(1)?;
        if key.len() <= MAX_KEY_BYTES {
            self.record.insert(key, None);
        }
        Ok(())
    }

    /// Entries with `start <= key < end`, in key order, at most `limit`: the store's, with
    /// every newer write laid over them. Each entry returned counts as an operation.
    pub fn range(&mut self, start: &[u8], end: Option<&[u8]>, limit: u32) -> wasmtime::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.spend(1)?;
        let bounds = (Bound::Included(start), end.map_or(Bound::Unbounded, Bound::Excluded));
        let mut merged: Writes = BTreeMap::new();
        // Oldest layer first, so newer ones overwrite.
        for (k, (_, v)) in self.pending.range::<[u8], _>(bounds) {
            merged.insert(k.clone(), v.clone());
        }
        for layer in [&self.batch, &self.record] {
            for (k, v) in layer.range::<[u8], _>(bounds) {
                merged.insert(k.clone(), v.clone());
            }
        }
        // At most `merged.len()` of the store's first entries are hidden by newer writes, so
        // this many are enough for `limit` live ones.
        let wanted = limit as usize + merged.len();
        if let Some(store) = &self.base {
            let read: Result<Vec<crate::state::Entry>> = store.values_between(start, end).take(wanted).collect();
            for (k, v) in read.map_err(|e| self.fail(e))? {
                merged.entry(k.into_vec()).or_insert(Some(v.into_vec()));
            }
        }
        let entries: Vec<(Vec<u8>, Vec<u8>)> =
            merged.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))).take(limit as usize).collect();
        self.spend(entries.len() as u64)?;
        Ok(entries)
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
        self.batch.append(&mut self.record);
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
        let value = |k: &str, v: &str| Change::Value { key: k.into(), value: Some(v.into()) };
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
        store.apply([value("a", "batch1"), Change::Value { key: b"b".to_vec(), value: None }], false).unwrap();
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
