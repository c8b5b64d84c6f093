//! Breaks one rule of its WIT contract on purpose, chosen by a marker record. Counts each
//! record's text once under its own key; a record ending `at=<ms>` happened at `<ms>` (its
//! event time), others at no known time. Once a marker is counted, `top-n` breaks its rule:
//! `too-many` returns every entry given (more than `n`), `invented` returns a key it was not
//! given, `changed` returns the leader with another count, `duplicate` returns the leader
//! twice. A batch holding a record that starts `short-times` gets one event time fewer than
//! it has records. For
//! the host's contract tests: the host must refuse each answer and keep counting exactly.

use streamhost_guest_sdk::{
    BatchResult, Delta, Deltas, Entry, EventTimeGuest, Guest, process_one, rank_by_count, sum_batch,
};

// Called only by the export glue, which exists on wasm targets alone.
#[cfg_attr(not(target_family = "wasm"), allow(dead_code))]
fn count<'r>(value: &'r [u8], deltas: &mut Deltas<'r>) -> Result<(), String> {
    deltas.add(std::str::from_utf8(value).map_err(|_| "not UTF-8".to_string())?, 1);
    Ok(())
}

#[cfg_attr(not(target_family = "wasm"), allow(dead_code))]
fn when(record: &[u8]) -> Option<i64> {
    std::str::from_utf8(record).ok()?.rsplit_once("at=")?.1.parse().ok()
}

/// The ranking with the rule its marker names broken (or kept, without a marker).
#[cfg_attr(not(target_family = "wasm"), allow(dead_code))]
fn rank(given: Vec<Entry>, n: u32) -> Vec<Entry> {
    let marked = |marker: &str| given.iter().any(|e| e.key == marker);
    let keep = (n as usize).saturating_sub(1);
    if marked("too-many") {
        return given;
    }
    let mut ranked = rank_by_count(given.clone(), n);
    if marked("invented") {
        ranked.truncate(keep);
        ranked.push(Entry { key: "invented-0".into(), count: u64::MAX });
    } else if marked("changed") {
        ranked[0].count += 1000;
    } else if marked("duplicate") {
        ranked.truncate(keep);
        ranked.push(ranked[0].clone());
    }
    ranked
}

// Constructed only by the export glue, which exists on wasm targets alone.
#[cfg_attr(not(target_family = "wasm"), allow(dead_code))]
struct Contract;

impl Guest for Contract {
    fn process(record: Vec<u8>) -> Result<Vec<Delta>, String> {
        process_one(&record, count)
    }

    fn process_batch(data: Vec<u8>, ends: Vec<u32>) -> BatchResult {
        sum_batch(&data, &ends, count)
    }

    fn top_n(counts: Vec<Entry>, n: u32) -> Vec<Entry> {
        rank(counts, n)
    }
}

impl EventTimeGuest for Contract {
    fn event_times(data: Vec<u8>, ends: Vec<u32>) -> Vec<Option<i64>> {
        let mut times = streamhost_guest_sdk::event_times(&data, &ends, when);
        let mut start = 0;
        let short = ends.iter().any(|&end| {
            let record = data.get(start..end as usize);
            start = end as usize;
            record.is_some_and(|r| r.starts_with(b"short-times"))
        });
        if short {
            times.pop();
        }
        times
    }
}

#[cfg(target_family = "wasm")]
streamhost_guest_sdk::export_counter!(Contract);
