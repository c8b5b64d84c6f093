//! A counter that imports a non-WASI interface (`streamhost:test-imports/vault`): the host
//! must refuse it at load time, naming the import.

wit_bindgen::generate!({
    path: ["../../wit", "wit"],
    world: "streamhost:test-imports/counting-with-vault",
    generate_all,
});

use exports::streamhost::counter::counter::{BatchResult, Delta, Entry, Guest};
use streamhost::test_imports::vault;

struct Vault;

impl Guest for Vault {
    fn process(_value: Vec<u8>) -> Result<Vec<Delta>, String> {
        Ok(vec![Delta { key: vault::secret("key"), amount: 1 }])
    }

    fn process_batch(_data: Vec<u8>, ends: Vec<u32>) -> BatchResult {
        BatchResult { deltas: vec![Delta { key: vault::secret("key"), amount: ends.len() as u64 }], rejected: vec![] }
    }

    fn top_n(counts: Vec<Entry>, _n: u32) -> Vec<Entry> {
        counts
    }
}

export!(Vault);
