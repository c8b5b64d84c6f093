//! Breaks the contract on purpose: `process` counts each record's text once, but
//! `process-batch` counts every record twice and refuses none. `host test` must say so.

use streamhost_guest_sdk::{BatchResult, Delta, Deltas, Entry, Guest, process_one, rank_by_count, sum_batch};

// Called only by the export glue, which exists on wasm targets alone.
#[cfg_attr(not(target_family = "wasm"), allow(dead_code))]
fn count<'r>(value: &'r [u8], deltas: &mut Deltas<'r>) -> Result<(), String> {
    let text = std::str::from_utf8(value).map_err(|_| "not UTF-8".to_string())?;
    if text.is_empty() {
        return Err("empty".into());
    }
    deltas.add(text, 1);
    Ok(())
}

#[cfg_attr(not(target_family = "wasm"), allow(dead_code))]
fn count_twice<'r>(value: &'r [u8], deltas: &mut Deltas<'r>) -> Result<(), String> {
    let text = std::str::from_utf8(value).unwrap_or("?");
    deltas.add(text, 2);
    Ok(())
}

// Constructed only by the export glue, which exists on wasm targets alone.
#[cfg_attr(not(target_family = "wasm"), allow(dead_code))]
struct SplitBrain;

impl Guest for SplitBrain {
    fn process(value: Vec<u8>) -> Result<Vec<Delta>, String> {
        process_one(&value, count)
    }

    fn process_batch(data: Vec<u8>, ends: Vec<u32>) -> BatchResult {
        sum_batch(&data, &ends, count_twice)
    }

    fn top_n(counts: Vec<Entry>, n: u32) -> Vec<Entry> {
        rank_by_count(counts, n)
    }
}

streamhost_guest_sdk::export_guest!(SplitBrain);
