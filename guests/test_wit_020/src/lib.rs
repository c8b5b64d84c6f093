//! The drink count as a guest built against WIT 0.2.0 (a frozen copy in `wit/`), before the
//! `event-time` interface of 0.2.1: the host must still load and run it.

wit_bindgen::generate!({ path: "wit", world: "counting-guest" });

use exports::streamhost::counter::counter::{BatchResult, Delta, Entry, Guest, Rejection};

struct Old;

fn delta(d: streamhost_guest_sdk::Delta) -> Delta {
    Delta { key: d.key, amount: d.amount }
}

impl Guest for Old {
    fn process(value: Vec<u8>) -> Result<Vec<Delta>, String> {
        Ok(streamhost_guest_sdk::process_one(&value, drinks::count_drinks)?.into_iter().map(delta).collect())
    }

    fn process_batch(data: Vec<u8>, ends: Vec<u32>) -> BatchResult {
        let result = streamhost_guest_sdk::sum_batch(&data, &ends, drinks::count_drinks);
        BatchResult {
            deltas: result.deltas.into_iter().map(delta).collect(),
            rejected: result.rejected.into_iter().map(|r| Rejection { index: r.index, reason: r.reason }).collect(),
        }
    }

    fn top_n(counts: Vec<Entry>, n: u32) -> Vec<Entry> {
        let sdk = counts.into_iter().map(|e| streamhost_guest_sdk::Entry { key: e.key, count: e.count }).collect();
        streamhost_guest_sdk::rank_by_count(sdk, n).into_iter().map(|e| Entry { key: e.key, count: e.count }).collect()
    }
}

export!(Old);
