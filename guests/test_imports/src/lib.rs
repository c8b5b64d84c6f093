//! A counter that asks the host for randomness (`wasi:random`), which the host never grants.

wit_bindgen::generate!({
    path: ["../../wit", "wit"],
    world: "streamhost:test-imports/counting-with-random",
    generate_all,
});

use exports::streamhost::counter::counter::{BatchResult, Delta, Entry, Guest};

struct Random;

impl Guest for Random {
    fn process(_value: Vec<u8>) -> Result<Vec<Delta>, String> {
        let n = wasi::random::random::get_random_u64();
        Ok(vec![Delta { key: format!("r{}", n % 10), amount: 1 }])
    }

    fn process_batch(_data: Vec<u8>, ends: Vec<u32>) -> BatchResult {
        let n = wasi::random::random::get_random_u64();
        BatchResult { deltas: vec![Delta { key: format!("r{}", n % 10), amount: ends.len() as u64 }], rejected: vec![] }
    }

    fn top_n(counts: Vec<Entry>, _n: u32) -> Vec<Entry> {
        counts
    }
}

export!(Random);
