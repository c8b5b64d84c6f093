//! `host dump`: prints a state dir as JSON lines (every shard of a scale-out host's), read-only,
//! so it works while a host runs.

use std::io::Write;
use std::path::Path;

use anyhow::{Result, bail};

use crate::cli::DumpArgs;
use base64::Engine as _;

use crate::guest::processor;
use crate::guest::processor::view::{Clock, decode_time, space};
use crate::state::{Store, meta, shard_dirs};
use crate::window;

/// `host dump`: JSON lines `{"key", "count"}` in key order (a processor guest's state:
/// `{"key", "value"}` with the value as JSON, text or base64, then its timers `{"timer", "key", "at_ms"}` and `{"stream_time_ms"}`),
/// then the totals. For a
/// `--scale-out` state dir, every shard's, each line with its `"shard"`, and each shard's
/// totals line with the next repartition offset it reflects (`"next_offset"`): a shard a
/// host no longer owns stays on its disk, behind the current owner's copy.
pub fn dump_command(args: DumpArgs) -> Result<()> {
    let dir = &args.state.state_dir;
    let shards = shard_dirs(dir)?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    if shards.is_empty() || dir.join("CURRENT").exists() {
        dump_store(&mut out, &dumpable(dir)?, None)?;
    }
    for (partition, shard_dir) in shards {
        match dumpable(&shard_dir) {
            Ok(store) => dump_store(&mut out, &store, Some(partition))?,
            // A scale-out host may hold a copy of a shard it was restoring when it stopped (or
            // one it gave up): the shard's owner has the state; the rest of the dump stands.
            Err(e) => tracing::warn!(shard = partition, "shard skipped: {e:#}"),
        }
    }
    out.flush()?;
    Ok(())
}

/// The store in `dir`, when it holds usable state.
fn dumpable(dir: &Path) -> Result<Store> {
    let store = Store::open_read_only(dir)?;
    if store.needs_restore()? && !store.is_empty()? {
        bail!(
            "{} holds an interrupted restore, not usable state: `host run` restores it again by itself, \
             or run `host restore --force`",
            dir.display()
        );
    }
    Ok(store)
}

fn dump_store(out: &mut impl Write, store: &Store, shard: Option<i32>) -> Result<()> {
    let tagged = |mut line: serde_json::Value| {
        if let Some(partition) = shard {
            line["shard"] = partition.into();
        }
        line
    };
    for item in store.counts() {
        let (key, count) = item?;
        let line = serde_json::json!({ "key": String::from_utf8_lossy(&key), "count": count });
        writeln!(out, "{}", tagged(line))?;
    }
    for item in store.windowed_counts() {
        let (start, key, count) = item?;
        let line = serde_json::json!({
            "window_start_ms": start,
            "window_start": window::rfc3339(start),
            "key": String::from_utf8_lossy(&key),
            "count": count,
        });
        writeln!(out, "{}", tagged(line))?;
    }
    // A processor guest's values (JSON as JSON, else text, else base64: `value`,
    // `value_text`, `value_base64`), its timers and its stream time.
    for item in store.values_between(&[], None) {
        let (key, value) = item?;
        // Keys as text, else base64 (`key_base64`).
        let key_field = |line: &mut serde_json::Value, bytes: &[u8]| match std::str::from_utf8(bytes) {
            Ok(t) => line["key"] = t.into(),
            Err(_) => line["key_base64"] = base64::engine::general_purpose::STANDARD.encode(bytes).into(),
        };
        let mut line = serde_json::json!({});
        match key.split_first() {
            Some((&space::VALUE, key)) => {
                key_field(&mut line, key);
                let (field, shown) = processor::shown(&value);
                line[field] = shown;
            }
            Some((&space::TIMER_BY_KEY, [clock, key @ ..])) => {
                line["timer"] = if *clock == Clock::Stream as u8 { "stream-time" } else { "wall-clock" }.into();
                key_field(&mut line, key);
                line["at_ms"] = decode_time(&value).into();
            }
            Some((&space::STREAM_TIME, _)) => line["stream_time_ms"] = decode_time(&value).into(),
            // The timers again, by due time.
            _ => continue,
        }
        writeln!(out, "{}", tagged(line))?;
    }
    let totals = store.totals()?;
    let mut line = serde_json::json!({
        "records_processed": totals.records_processed,
        "records_skipped": totals.records_skipped,
    });
    if let Some(partition) = shard {
        // A shard holds one input offset: that of its repartition partition.
        let next = store.positions_named(meta::parse_input_offset)?.into_iter().find(|(_, p, _)| *p == partition);
        line["next_offset"] = next.map_or(0, |(_, _, next)| next).into();
    }
    writeln!(out, "{}", tagged(line))?;
    Ok(())
}
