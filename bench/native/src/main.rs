//! `host-native`: the host pipeline with the drink_count logic compiled in natively instead
//! of loaded as a component. Used only by `make bench`, to measure what the WebAssembly
//! boundary costs end to end. Takes `host run`'s options; `--guest` is required but ignored.

use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;
use host::cli::{LogFormat, RunArgs};
use host::guest::{BatchResult, Counter, Delta, Entry, Records, Rejection};

#[derive(Parser)]
#[command(
    name = "host-native",
    about = "Benchmark baseline: `host run` with drink_count compiled in (--guest is ignored)"
)]
struct Cli {
    #[command(flatten)]
    run: RunArgs,
    #[arg(long, env = "STREAMHOST_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

/// The same logic as guests/drink_count, called directly.
struct NativeDrinkCount;

impl Counter for NativeDrinkCount {
    fn describe(&self) -> String {
        "drink_count compiled natively (benchmark baseline)".into()
    }

    /// The guest's own batch path (the SDK's `sum_batch` over `count_drinks`), on the same
    /// packed records the guest receives; only the boundary is missing.
    fn process_batch(&mut self, records: &Records) -> Result<BatchResult> {
        let (data, ends) = records.packed(0..records.len());
        let result = streamhost_guest_sdk::sum_batch(data, &ends, drinks::count_drinks);
        Ok(BatchResult {
            deltas: result.deltas.into_iter().map(|d| Delta { key: d.key, amount: d.amount }).collect(),
            rejected: result.rejected.into_iter().map(|r| Rejection { index: r.index, reason: r.reason }).collect(),
        })
    }

    fn top_n(&mut self, counts: &[Entry], n: u32) -> Result<Vec<Entry>> {
        let entries =
            counts.iter().map(|e| streamhost_guest_sdk::Entry { key: e.key.clone(), count: e.count }).collect();
        Ok(streamhost_guest_sdk::rank_by_count(entries, n)
            .into_iter()
            .map(|e| Entry { key: e.key, count: e.count })
            .collect())
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    host::init_logging(cli.log_format);
    match host::commands::run::run_with(cli.run, Box::new(NativeDrinkCount)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
