//! drink_count, version 2: the same drink counts, plus `(orders)`, the number of valid orders.
//! The hot-swap test swaps it in mid-stream: drinks must stay exact across the swap, and
//! `(orders)` tells how many orders the new version counted.

use streamhost_guest_sdk::{BatchResult, Delta, Deltas, Entry, Guest, process_one, rank_by_count, sum_batch};

/// The key under which version 2 counts valid orders.
pub const ORDERS_KEY: &str = "(orders)";

// Called only by the export glue, which exists on wasm targets alone.
#[cfg_attr(not(target_family = "wasm"), allow(dead_code))]
fn count<'r>(record: &'r [u8], deltas: &mut Deltas<'r>) -> Result<(), String> {
    drinks::count_drinks(record, deltas)?;
    deltas.add(ORDERS_KEY, 1);
    Ok(())
}

// Constructed only by the export glue, which exists on wasm targets alone.
#[cfg_attr(not(target_family = "wasm"), allow(dead_code))]
struct DrinksV2;

impl Guest for DrinksV2 {
    fn process(record: Vec<u8>) -> Result<Vec<Delta>, String> {
        process_one(&record, count)
    }

    fn process_batch(data: Vec<u8>, ends: Vec<u32>) -> BatchResult {
        sum_batch(&data, &ends, count)
    }

    fn top_n(counts: Vec<Entry>, n: u32) -> Vec<Entry> {
        rank_by_count(counts, n)
    }
}

streamhost_guest_sdk::export_guest!(DrinksV2);
