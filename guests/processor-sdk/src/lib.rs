//! Processor guest SDK: the generated bindings of `wit/processor` (world `processor-guest`)
//! and the helpers most processors want. A processor keeps any value per key and emits
//! records to named outputs; the host makes both durable with the same crash guarantees as
//! counters. In one line:
//!
//! ```text
//! use streamhost_processor_sdk::{InputRecord, emit, state};
//!
//! fn process(input: InputRecord) -> Result<(), String> {
//!     let value = input.value.ok_or("no value")?;
//!     if state::get(&value).is_none() {
//!         state::put(&value, b"")?;
//!         emit("firsts", input.key.as_deref(), Some(&value))?;
//!     }
//!     Ok(())
//! }
//!
//! streamhost_processor_sdk::processor_guest!(Firsts, outputs = ["firsts"], state_version = 1, process = process);
//! ```
//!
//! `state::get` sees every earlier record's writes (this record's own included); a record
//! whose `process` returns `Err` (or traps) leaves no write and no emit behind: the host
//! skips it, counts it and dead-letters it.

wit_bindgen::generate!({
    path: "../../wit/processor",
    world: "processor-guest",
    pub_export_macro: true,
    export_macro_name: "export_processor",
    default_bindings_module: "streamhost_processor_sdk",
});

pub use exports::streamhost::processor::processor::{Description, Guest, InputRecord, TimeKind};
pub use streamhost::processor::types::Header;

/// Timers (host calls): `on-timer` is called once a timer's clock reaches its time. Timers
/// are state: they survive crashes and restores.
pub mod timers {
    pub use super::TimeKind;
    use super::streamhost::processor::timers as host;

    /// Calls `on-timer(key, at, kind)` once `kind`'s clock reaches `at` (ms since the epoch);
    /// replaces `key`'s timer of that kind.
    pub fn set(key: &[u8], at: i64, kind: TimeKind) -> Result<(), String> {
        host::set_timer(key, at, kind)
    }

    /// Removes `key`'s timer of that kind.
    pub fn cancel(key: &[u8], kind: TimeKind) {
        host::cancel_timer(key, kind)
    }
}

/// Tables (host calls): look keys up in the compacted topics the run maps to the tables the
/// guest declared (`host run --table NAME=TOPIC`).
pub mod tables {
    /// The newest value of `key` in table `name`; refused for an undeclared table.
    pub fn lookup(name: &str, key: &[u8]) -> Result<Option<Vec<u8>>, String> {
        super::streamhost::processor::tables::lookup(name, key)
    }
}

/// The `on-timer` of a processor that sets no timers.
pub fn no_timers(_key: Vec<u8>, _at: i64, _kind: TimeKind) -> Result<(), String> {
    Ok(())
}

/// The keyed state (host calls): bytes keys, bytes values.
pub mod state {
    use super::streamhost::processor::state as host;

    /// The value of `key`, if it has one.
    pub fn get(key: &[u8]) -> Option<Vec<u8>> {
        host::get(key)
    }

    /// Sets `key` to `value`; refused for a key over 64 KiB or a value over 512 KiB.
    pub fn put(key: &[u8], value: &[u8]) -> Result<(), String> {
        host::put(key, value)
    }

    /// Removes `key`.
    pub fn delete(key: &[u8]) {
        host::delete(key)
    }

    /// Entries with `start <= key < end` (`None`: no upper bound), in key order, at most `limit`.
    pub fn range(start: &[u8], end: Option<&[u8]>, limit: u32) -> Vec<(Vec<u8>, Vec<u8>)> {
        host::range(start, end, limit)
    }

    /// Entries whose key starts with `prefix`, in key order, at most `limit`.
    pub fn prefix(prefix: &[u8], limit: u32) -> Vec<(Vec<u8>, Vec<u8>)> {
        host::range(prefix, prefix_end(prefix).as_deref(), limit)
    }

    /// The first key after every key that starts with `prefix` (`None`: there is none).
    pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
        let mut end = prefix.to_vec();
        while let Some(last) = end.pop() {
            if last < u8::MAX {
                end.push(last + 1);
                return Some(end);
            }
        }
        None
    }
}

/// Emits a record with no headers to output `name` (declared in `describe`).
pub fn emit(name: &str, key: Option<&[u8]>, value: Option<&[u8]>) -> Result<(), String> {
    streamhost::processor::output::emit(name, key, value, &[])
}

/// Emits a record with headers to output `name`.
pub fn emit_with_headers(
    name: &str,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    headers: &[Header],
) -> Result<(), String> {
    streamhost::processor::output::emit(name, key, value, headers)
}

/// The processor WIT package version these bindings were generated from.
pub const WIT_VERSION: &str = "0.1.0";

/// The whole component from a `process` function (and an `on_timer` one, if it sets timers)
/// and what it declares: `describe` answers with the outputs and state version given. On a
/// native target (the guest's own `cargo test`) it exports nothing.
///
/// ```text
/// streamhost_processor_sdk::processor_guest!(Dedup, outputs = ["deduped"], state_version = 1, process = process);
/// streamhost_processor_sdk::processor_guest!(Dedup, outputs = ["deduped"], state_version = 1, process = process,
///     on_timer = expire);
/// streamhost_processor_sdk::processor_guest!(Revenue, outputs = ["totals"], tables = ["menu"], state_version = 1,
///     process = process, on_timer = expire);
/// ```
#[macro_export]
macro_rules! processor_guest {
    ($name:ident, outputs = [$($output:expr),* $(,)?], state_version = $version:expr, process = $process:path) => {
        $crate::processor_guest!($name, outputs = [$($output),*], tables = [], state_version = $version,
            process = $process, on_timer = $crate::no_timers);
    };
    ($name:ident, outputs = [$($output:expr),* $(,)?], state_version = $version:expr, process = $process:path,
     on_timer = $on_timer:path) => {
        $crate::processor_guest!($name, outputs = [$($output),*], tables = [], state_version = $version,
            process = $process, on_timer = $on_timer);
    };
    ($name:ident, outputs = [$($output:expr),* $(,)?], tables = [$($table:expr),* $(,)?], state_version = $version:expr,
     process = $process:path, on_timer = $on_timer:path) => {
        // Constructed only by the export glue, which exists on wasm targets alone.
        #[cfg_attr(not(target_family = "wasm"), allow(dead_code))]
        struct $name;

        impl $crate::Guest for $name {
            fn describe() -> $crate::Description {
                $crate::Description {
                    outputs: vec![$($output.to_string()),*],
                    tables: vec![$($table.to_string()),*],
                    state_version: $version,
                }
            }

            fn process(input: $crate::InputRecord) -> Result<(), String> {
                $process(input)
            }

            fn on_timer(key: Vec<u8>, at: i64, kind: $crate::TimeKind) -> Result<(), String> {
                $on_timer(key, at, kind)
            }
        }

        #[cfg(target_family = "wasm")]
        $crate::export_processor!($name);
    };
}

#[cfg(test)]
mod tests {
    use super::state::prefix_end;

    #[test]
    fn a_prefix_ends_after_its_last_key() {
        assert_eq!(prefix_end(b"seen/"), Some(b"seen0".to_vec()));
        assert_eq!(prefix_end(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b"\xff\xff"), None);
    }
}
