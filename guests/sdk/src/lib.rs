//! Guest SDK: the generated bindings of `wit/counter.wit` plus the helpers most guests want.
//! A guest writes one function from a record to its deltas, and the SDK derives both
//! exports from it, so `process` and `process-batch` always agree. In one line:
//! `streamhost_guest_sdk::counting_guest!(MyGuest, count);` — or by hand:
//!
//! ```text
//! use streamhost_guest_sdk::{BatchResult, Delta, Deltas, Entry, Guest, process_one, rank_by_count, sum_batch};
//!
//! fn count<'r>(record: &'r [u8], deltas: &mut Deltas<'r>) -> Result<(), String> {
//!     let key = std::str::from_utf8(record).map_err(|_| "not UTF-8".to_string())?;
//!     deltas.add(key, 1);
//!     Ok(())
//! }
//!
//! struct MyGuest;
//! impl Guest for MyGuest {
//!     fn process(record: Vec<u8>) -> Result<Vec<Delta>, String> { process_one(&record, count) }
//!     fn process_batch(data: Vec<u8>, ends: Vec<u32>) -> BatchResult { sum_batch(&data, &ends, count) }
//!     fn top_n(counts: Vec<Entry>, n: u32) -> Vec<Entry> { rank_by_count(counts, n) }
//! }
//! streamhost_guest_sdk::export_guest!(MyGuest);
//! ```
//!
//! Every guest built with the SDK also exports `event-time` (WIT 0.2.1): by default it
//! knows no event time (the host then uses Kafka timestamps); `counting_guest!(MyGuest,
//! count, event_time = when)` or `export_guest!(MyGuest, event_time = when)` with
//! `fn when(record: &[u8]) -> Option<i64>` (ms since the epoch) says when records happened.

use std::borrow::Cow;
use std::collections::HashMap;

wit_bindgen::generate!({
    path: "../../wit",
    world: "timed-counting-guest",
    pub_export_macro: true,
    export_macro_name: "export_counter",
    default_bindings_module: "streamhost_guest_sdk",
});

pub use exports::streamhost::counter::counter::{BatchResult, Delta, Entry, Guest, Rejection};
pub use exports::streamhost::counter::event_time::Guest as EventTimeGuest;

/// Exports a `Guest` impl as the component's `counter` interface, and `event-time` from an
/// event-time function (default: none known). On a native target (the guest's own `cargo
/// test`) it exports nothing, so guest logic is unit-testable natively.
#[macro_export]
macro_rules! export_guest {
    ($guest:ident) => {
        $crate::export_guest!($guest, event_time = $crate::no_event_time);
    };
    ($guest:ident, event_time = $when:path) => {
        impl $crate::EventTimeGuest for $guest {
            fn event_times(data: Vec<u8>, ends: Vec<u32>) -> Vec<Option<i64>> {
                $crate::event_times(&data, &ends, $when)
            }
        }

        #[cfg(target_family = "wasm")]
        $crate::export_counter!($guest);
    };
}

/// The event-time function of a guest that knows none: the host uses Kafka timestamps.
pub fn no_event_time(_record: &[u8]) -> Option<i64> {
    None
}

/// `event-times` from an event-time function: one entry per record of the batch.
pub fn event_times(data: &[u8], ends: &[u32], mut when: impl FnMut(&[u8]) -> Option<i64>) -> Vec<Option<i64>> {
    let mut start = 0;
    ends.iter()
        .map(|&end| {
            let record = data.get(start..end as usize);
            start = end as usize;
            record.and_then(&mut when)
        })
        .collect()
}

/// The whole component from one counting function: `process` and `process-batch` are
/// derived from it (so they always agree), `top-n` ranks by count then key unless a ranking
/// function is given, and the component is exported. For anything else, write the `impl
/// Guest` by hand (see the crate doc).
///
/// ```text
/// streamhost_guest_sdk::counting_guest!(DrinkCount, count_drinks);
/// streamhost_guest_sdk::counting_guest!(MyGuest, count, rank = my_rank);
/// streamhost_guest_sdk::counting_guest!(MyGuest, count, event_time = when);
/// ```
#[macro_export]
macro_rules! counting_guest {
    ($name:ident, $count:path) => {
        $crate::counting_guest!($name, $count, rank = $crate::rank_by_count, event_time = $crate::no_event_time);
    };
    ($name:ident, $count:path, rank = $rank:path) => {
        $crate::counting_guest!($name, $count, rank = $rank, event_time = $crate::no_event_time);
    };
    ($name:ident, $count:path, event_time = $when:path) => {
        $crate::counting_guest!($name, $count, rank = $crate::rank_by_count, event_time = $when);
    };
    ($name:ident, $count:path, rank = $rank:path, event_time = $when:path) => {
        // Constructed only by the export glue, which exists on wasm targets alone.
        #[cfg_attr(not(target_family = "wasm"), allow(dead_code))]
        struct $name;

        impl $crate::Guest for $name {
            fn process(record: Vec<u8>) -> Result<Vec<$crate::Delta>, String> {
                $crate::process_one(&record, $count)
            }

            fn process_batch(data: Vec<u8>, ends: Vec<u32>) -> $crate::BatchResult {
                $crate::sum_batch(&data, &ends, $count)
            }

            fn top_n(counts: Vec<$crate::Entry>, n: u32) -> Vec<$crate::Entry> {
                $rank(counts, n)
            }
        }

        $crate::export_guest!($name, event_time = $when);
    };
}

/// The WIT package version these bindings were generated from.
pub const WIT_VERSION: &str = "0.2.1";

/// Longest key the host accepts (`wit/counter.wit`): a record that would count under a
/// longer key is refused by [`process_one`] and [`sum_batch`].
pub const MAX_KEY_BYTES: usize = 64 * 1024;

/// One record's deltas while a guest computes them. Keys may borrow from the record, so
/// the common case allocates nothing per record.
#[derive(Default)]
pub struct Deltas<'r> {
    items: Vec<(Cow<'r, str>, u64)>,
}

impl<'r> Deltas<'r> {
    /// Adds `amount` to `key` (saturating). Records carry few keys: a linear scan beats hashing.
    pub fn add(&mut self, key: impl Into<Cow<'r, str>>, amount: u64) {
        let key = key.into();
        match self.items.iter_mut().find(|(k, _)| *k == key) {
            Some((_, total)) => *total = total.saturating_add(amount),
            None => self.items.push((key, amount)),
        }
    }

    /// The deltas so far, in first-added order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, u64)> {
        self.items.iter().map(|(k, a)| (k.as_ref(), *a))
    }

    fn check_keys(&self) -> Result<(), String> {
        match self.items.iter().find(|(k, _)| k.len() > MAX_KEY_BYTES) {
            Some((k, _)) => Err(format!("key of {} bytes is longer than the limit of {MAX_KEY_BYTES}", k.len())),
            None => Ok(()),
        }
    }
}

/// `process` from a counting function: the record's deltas, or why it is refused.
pub fn process_one<'r>(
    record: &'r [u8],
    count: impl FnOnce(&'r [u8], &mut Deltas<'r>) -> Result<(), String>,
) -> Result<Vec<Delta>, String> {
    let mut deltas = Deltas::default();
    count(record, &mut deltas)?;
    deltas.check_keys()?;
    Ok(deltas.items.into_iter().map(|(key, amount)| Delta { key: key.into_owned(), amount }).collect())
}

/// `process-batch` from the same counting function: every record of the batch counted,
/// the accepted ones summed per key, the refused ones listed with their reasons.
pub fn sum_batch<'d>(
    data: &'d [u8],
    ends: &[u32],
    mut count: impl FnMut(&'d [u8], &mut Deltas<'d>) -> Result<(), String>,
) -> BatchResult {
    let mut totals: HashMap<Cow<'d, str>, u64> = HashMap::new();
    let mut rejected = Vec::new();
    let mut deltas = Deltas::default();
    let mut start = 0;
    for (index, &end) in ends.iter().enumerate() {
        let outcome = match data.get(start..end as usize) {
            Some(record) => count(record, &mut deltas).and_then(|()| deltas.check_keys()),
            None => Err(format!("record bounds {start}..{end} are outside the batch of {} bytes", data.len())),
        };
        start = end as usize;
        match outcome {
            Ok(()) => {
                for (key, amount) in deltas.items.drain(..) {
                    let total = totals.entry(key).or_insert(0);
                    *total = total.saturating_add(amount);
                }
            }
            Err(reason) => {
                deltas.items.clear();
                rejected.push(Rejection { index: index as u32, reason });
            }
        }
    }
    BatchResult {
        deltas: totals.into_iter().map(|(key, amount)| Delta { key: key.into_owned(), amount }).collect(),
        rejected,
    }
}

/// The usual board order: count descending, ties by key ascending (byte order); at most `n`.
pub fn rank_by_count(mut entries: Vec<Entry>, n: u32) -> Vec<Entry> {
    let n = n as usize;
    let order = |a: &Entry, b: &Entry| b.count.cmp(&a.count).then_with(|| a.key.cmp(&b.key));
    if n == 0 {
        return Vec::new();
    }
    if entries.len() > n {
        // Partition first: the board is small, the state may be large.
        entries.select_nth_unstable_by(n - 1, order);
        entries.truncate(n);
    }
    entries.sort_unstable_by(order);
    entries
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(key: &str, count: u64) -> Entry {
        Entry { key: key.into(), count }
    }

    /// Counts each comma-separated word of a UTF-8 record; refuses "bad" records.
    fn words<'r>(record: &'r [u8], deltas: &mut Deltas<'r>) -> Result<(), String> {
        let text = std::str::from_utf8(record).map_err(|_| "not UTF-8".to_string())?;
        for word in text.split(',') {
            deltas.add(word, 1);
        }
        if text.contains("bad") { Err(format!("{text} is bad")) } else { Ok(()) }
    }

    fn batch(records: &[&str]) -> (Vec<u8>, Vec<u32>) {
        let mut data = Vec::new();
        let mut ends = Vec::new();
        for r in records {
            data.extend_from_slice(r.as_bytes());
            ends.push(data.len() as u32);
        }
        (data, ends)
    }

    fn sorted(deltas: Vec<Delta>) -> Vec<(String, u64)> {
        let mut v: Vec<_> = deltas.into_iter().map(|d| (d.key, d.amount)).collect();
        v.sort();
        v
    }

    #[test]
    fn ranks_by_count_then_key_bytes() {
        let ranked = rank_by_count(vec![e("b", 2), e("a", 2), e("C", 2), e("z", 9), e("y", 1)], 4);
        let keys: Vec<_> = ranked.iter().map(|x| x.key.as_str()).collect();
        assert_eq!(keys, ["z", "C", "a", "b"]);
    }

    #[test]
    fn rank_handles_n_zero_and_n_larger_than_input() {
        assert!(rank_by_count(vec![e("a", 1)], 0).is_empty());
        assert_eq!(rank_by_count(vec![e("a", 1), e("b", 3)], 10).len(), 2);
    }

    #[test]
    fn deltas_sum_the_same_key_in_first_seen_order() {
        let mut d = Deltas::default();
        d.add("latte", 2);
        d.add("mocha", 1);
        d.add(String::from("latte"), 3);
        assert_eq!(d.iter().collect::<Vec<_>>(), [("latte", 5), ("mocha", 1)]);
    }

    #[test]
    fn sum_batch_agrees_with_process_one() {
        let records = ["a,b", "bad,a", "b,b", "", "c"];
        let (data, ends) = batch(&records);
        let result = sum_batch(&data, &ends, words);
        let mut expected = Deltas::default();
        let mut expected_rejected = Vec::new();
        for (i, r) in records.iter().enumerate() {
            match process_one(r.as_bytes(), words) {
                Ok(deltas) => deltas.into_iter().for_each(|d| expected.add(d.key, d.amount)),
                Err(reason) => expected_rejected.push((i as u32, reason)),
            }
        }
        let expected: Vec<Delta> = expected.iter().map(|(k, a)| Delta { key: k.into(), amount: a }).collect();
        assert_eq!(sorted(result.deltas), sorted(expected));
        let rejected: Vec<_> = result.rejected.into_iter().map(|r| (r.index, r.reason)).collect();
        assert_eq!(rejected, expected_rejected);
        assert_eq!(rejected.len(), 1);
    }

    #[test]
    fn sums_saturate_and_long_keys_are_refused() {
        let long = "k".repeat(MAX_KEY_BYTES + 1);
        let big = |record: &[u8], deltas: &mut Deltas<'_>| -> Result<(), String> {
            deltas.add(if record == b"long" { long.clone() } else { "big".to_string() }, u64::MAX / 2 + 1);
            Ok(())
        };
        let (data, ends) = batch(&["x", "long", "y", "z"]);
        let result = sum_batch(&data, &ends, big);
        assert_eq!(sorted(result.deltas), [("big".to_string(), u64::MAX)]);
        assert_eq!(result.rejected.len(), 1);
        assert_eq!(result.rejected[0].index, 1);
        assert!(result.rejected[0].reason.contains("longer than the limit"), "{}", result.rejected[0].reason);
        assert!(process_one(b"long", big).is_err());
    }

    #[test]
    fn bad_bounds_refuse_the_record_not_the_batch() {
        let result = sum_batch(b"abc", &[1, 9], words);
        assert_eq!(sorted(result.deltas), [("a".to_string(), 1)]);
        assert_eq!(result.rejected.iter().map(|r| r.index).collect::<Vec<_>>(), [1]);
    }
}
