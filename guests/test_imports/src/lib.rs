//! A counter that asks the host for randomness (`wasi:random`), which the host never grants.

wit_bindgen::generate!({
    path: ["../../wit", "wit"],
    world: "streamhost:test-imports/counting-with-random",
    generate_all,
});

use exports::streamhost::counter::counter::{Delta, Entry, Guest};

struct Random;

impl Guest for Random {
    fn process(_value: Vec<u8>) -> Result<Vec<Delta>, String> {
        let n = wasi::random::random::get_random_u64();
        Ok(vec![Delta { key: format!("r{}", n % 10), amount: 1 }])
    }

    fn process_batch(values: Vec<Vec<u8>>) -> Vec<Result<Vec<Delta>, String>> {
        values.into_iter().map(Self::process).collect()
    }

    fn top_n(counts: Vec<Entry>, _n: u32) -> Vec<Entry> {
        counts
    }
}

export!(Random);
