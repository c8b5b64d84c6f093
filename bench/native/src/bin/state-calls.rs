//! `state-calls`: what one processor host call costs, in nanoseconds, for `make bench`.
//!
//! The command-driven test guest (`guests/test_processor`) makes the same host call N times
//! inside one `process` call, over a store holding `--keys` values in RocksDB (what the
//! order dedup's state holds after that many orders); the time of a `noop` record (one
//! `process` call and nothing else) is taken off, and what is left, divided by N, is one
//! call across the boundary and through the host's layers. Each case runs `--rounds` times;
//! the median is printed, one JSON line.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use host::guest::processor::view::value_key;
use host::guest::processor::{InputRecord, ProcessorGuest};
use host::guest::{AnyGuest, Limits, Source};
use host::state::{Change, Store};

#[derive(Parser)]
#[command(name = "state-calls", about = "Benchmark: ns per processor state call across the WebAssembly boundary")]
struct Cli {
    /// The command-driven test processor (build/guests/test_processor.wasm).
    #[arg(long)]
    guest: PathBuf,
    /// Values in the store before measuring.
    #[arg(long, default_value_t = 1_000_000)]
    keys: u64,
    /// Host calls per measured `process` call.
    #[arg(long, default_value_t = 100_000)]
    calls: u64,
    #[arg(long, default_value_t = 7)]
    rounds: usize,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let dir = tempfile::tempdir().context("a scratch state dir")?;
    fill(&dir.path().join("state"), cli.keys)?;
    // Reopened: RocksDB writes what it recovers to files, so reads go to tables on disk (and
    // the block cache), not to the memtable the fill left.
    let store = Store::open(&dir.path().join("state"))?;
    let source = Source {
        path: cli.guest.clone(),
        limits: Limits { memory_bytes: 64 << 20, call_timeout: Duration::from_secs(60) },
        cache: None,
    };
    let AnyGuest::Processor(mut guest) = source.load_any()? else {
        bail!("{} is not a processor guest", cli.guest.display());
    };
    guest.set_state(store, BTreeMap::new(), u64::MAX);
    let mut bench = Bench { guest, seq: 0 };

    let n = cli.calls;
    let stored = format!("seen/o-{}", cli.keys / 2);
    let cases: [(&str, Vec<String>); 4] = [
        ("get_stored_ns", vec![format!("gets {n} {stored}")]),
        ("get_absent_ns", vec![format!("gets {n} absent/o-1")]),
        // The batch's first record wrote the key: found in the batch's own writes.
        ("get_own_write_ns", vec!["puts 1 mine".into(), format!("gets {n} mine")]),
        ("put_ns", vec![format!("puts {n} mine")]),
    ];
    let noop = bench.median(cli.rounds, &["noop".into()])?;
    let mut out = serde_json::Map::new();
    out.insert("process_call_ns".into(), (noop.as_nanos() as u64).into());
    for (name, batch) in &cases {
        let took = bench.median(cli.rounds, batch)?;
        let per_call = took.saturating_sub(noop * batch.len() as u32).as_nanos() as f64 / n as f64;
        out.insert((*name).into(), ((per_call * 10.0).round() / 10.0).into());
    }
    out.insert("keys".into(), cli.keys.into());
    out.insert("calls".into(), n.into());
    println!("{}", serde_json::Value::Object(out));
    Ok(())
}

/// `keys` values `seen/o-<i>` -> 8 bytes, as the order dedup keeps them.
fn fill(dir: &std::path::Path, keys: u64) -> Result<()> {
    let store = Store::open(dir)?;
    let mut start = 0;
    while start < keys {
        let end = (start + 100_000).min(keys);
        let changes = (start..end).map(|i| Change::Value {
            key: value_key(format!("seen/o-{i}").as_bytes()),
            value: Some(i.to_be_bytes().into()),
        });
        store.apply(changes, false)?;
        start = end;
    }
    Ok(())
}

struct Bench {
    guest: ProcessorGuest,
    seq: u64,
}

impl Bench {
    /// The median time of `rounds` batches of these commands, one record each.
    fn median(&mut self, rounds: usize, commands: &[String]) -> Result<Duration> {
        let records: Vec<InputRecord> = commands
            .iter()
            .enumerate()
            .map(|(offset, command)| InputRecord {
                key: None,
                value: Some(command.clone().into_bytes()),
                headers: Vec::new(),
                timestamp: 0,
                partition: 0,
                offset: offset as i64,
            })
            .collect();
        let mut times = Vec::with_capacity(rounds);
        // One round more than measured: the first warms the instance and the block cache.
        for round in 0..=rounds {
            self.seq += 1;
            let started = Instant::now();
            let effects = self.guest.process_batch(self.seq, &records, 0)?;
            let took = started.elapsed();
            if let Some((_, reason)) = effects.rejected.first() {
                bail!("the guest refused `{}`: {reason}", commands.join(" | "));
            }
            // Nothing goes to a store: the batch's writes are dropped as if applied.
            self.guest.applied(self.seq);
            if round > 0 {
                times.push(took);
            }
        }
        times.sort();
        Ok(times[times.len() / 2])
    }
}
