//! Guest SDK: the generated bindings of `wit/counter.wit` plus the helpers most guests want,
//! so a guest is one `impl Guest` and one `export_counter!` line.
//!
//! ```text
//! use streamhost_guest_sdk::{Delta, Entry, Guest};
//! struct MyGuest;
//! impl Guest for MyGuest { /* process, process_batch, top_n */ }
//! streamhost_guest_sdk::export_guest!(MyGuest);
//! ```

wit_bindgen::generate!({
    path: "../../wit",
    world: "counting-guest",
    pub_export_macro: true,
    export_macro_name: "export_counter",
    default_bindings_module: "streamhost_guest_sdk",
});

pub use exports::streamhost::counter::counter::{Delta, Entry, Guest};

/// Exports a `Guest` impl as the component's `counter` interface. On a native target (the
/// guest's own `cargo test`) it expands to nothing, so guest logic is unit-testable natively.
#[macro_export]
macro_rules! export_guest {
    ($guest:ident) => {
        #[cfg(target_family = "wasm")]
        $crate::export_counter!($guest);
    };
}

/// The WIT package version these bindings were generated from.
pub const WIT_VERSION: &str = "0.1.0";

/// `process-batch` in terms of `process`: what a guest's batch export is unless it
/// has something smarter to do across records.
pub fn process_each(
    records: Vec<Vec<u8>>,
    process: impl Fn(Vec<u8>) -> Result<Vec<Delta>, String>,
) -> Vec<Result<Vec<Delta>, String>> {
    records.into_iter().map(process).collect()
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

/// Adds `amount` to `key` in a small list of deltas, keeping first-seen order
/// (records carry few keys: a linear scan beats hashing).
pub fn add_delta(deltas: &mut Vec<Delta>, key: &str, amount: u64) {
    match deltas.iter_mut().find(|d| d.key == key) {
        Some(d) => d.amount += amount,
        None => deltas.push(Delta { key: key.to_owned(), amount }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(key: &str, count: u64) -> Entry {
        Entry { key: key.into(), count }
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
    fn add_delta_sums_same_key() {
        let mut d = Vec::new();
        add_delta(&mut d, "latte", 2);
        add_delta(&mut d, "mocha", 1);
        add_delta(&mut d, "latte", 3);
        assert_eq!(d.len(), 2);
        assert_eq!((d[0].key.as_str(), d[0].amount), ("latte", 5));
    }
}
