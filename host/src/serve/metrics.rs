//! The host's metrics, in the Prometheus text format (`GET /metrics` with `--http`). The
//! pipeline updates them as it goes (atomics, no locks on the hot path); gauges that describe
//! state are read from RocksDB when scraped.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// A pipeline step, as a label value.
pub type StepLabel = Vec<(&'static str, &'static str)>;

fn step_histogram() -> Histogram {
    // 0.1 ms .. ~3.3 s
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

pub struct Metrics {
    registry: Registry,
    pub records_consumed: Counter,
    pub records_counted: Counter,
    pub records_skipped: Counter,
    /// By kind: `refused` (the guest said why), `trapped`, `no_value`.
    pub skipped_by_reason: Family<Vec<(&'static str, &'static str)>, Counter>,
    pub records_dead_lettered: Counter,
    pub guest_traps: Counter,
    /// Guest answers that broke their WIT contract, by kind (`board::Violation::kind`).
    pub contract_violations: Family<Vec<(&'static str, &'static str)>, Counter>,
    pub changelog_records: Counter,
    pub transactions_aborted: Counter,
    /// A processor guest's timers: fired, and those whose call failed (its effects dropped).
    pub timers_fired: Counter,
    pub timer_failures: Counter,
    pub batch_records: Histogram,
    /// Seconds per batch and step: guest, changelog (acknowledgement wait), state, commit.
    pub step_seconds: Family<StepLabel, Histogram, fn() -> Histogram>,
    pub board_flush_seconds: Histogram,
    /// Per input partition, records not yet in state (updated with each board, with --http).
    pub consumer_lag: Family<Vec<(&'static str, String)>, Gauge>,
    state_keys: Gauge,
    state_bytes: Gauge,
    changelog_read: Gauge,
    changelog_to_read: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut m = Metrics {
            registry: Registry::with_prefix("streamhost"),
            records_consumed: Counter::default(),
            records_counted: Counter::default(),
            records_skipped: Counter::default(),
            skipped_by_reason: Family::default(),
            records_dead_lettered: Counter::default(),
            guest_traps: Counter::default(),
            contract_violations: Family::default(),
            changelog_records: Counter::default(),
            transactions_aborted: Counter::default(),
            timers_fired: Counter::default(),
            timer_failures: Counter::default(),
            batch_records: Histogram::new(exponential_buckets(1.0, 4.0, 10)),
            step_seconds: Family::new_with_constructor(step_histogram),
            board_flush_seconds: step_histogram(),
            consumer_lag: Family::default(),
            state_keys: Gauge::default(),
            state_bytes: Gauge::default(),
            changelog_read: Gauge::default(),
            changelog_to_read: Gauge::default(),
        };
        let r = &mut m.registry;
        r.register(
            "records_consumed",
            "Input records polled (with those skipped as already counted)",
            m.records_consumed.clone(),
        );
        r.register("records_counted", "Input records the guest counted", m.records_counted.clone());
        r.register("timers_fired", "A processor guest's timers that came due and were called", m.timers_fired.clone());
        r.register(
            "timer_failures",
            "A processor guest's timer calls that returned an error or trapped (their effects dropped)",
            m.timer_failures.clone(),
        );
        r.register(
            "records_skipped",
            "Malformed input records: refused by the guest, or without a value",
            m.records_skipped.clone(),
        );
        r.register(
            "records_skipped_by_reason",
            "Malformed input records by kind: refused, trapped, no_value",
            m.skipped_by_reason.clone(),
        );
        r.register(
            "records_dead_lettered",
            "Malformed records copied to the dead-letter topic",
            m.records_dead_lettered.clone(),
        );
        r.register("guest_traps", "Records rejected because the guest trapped on them", m.guest_traps.clone());
        r.register(
            "guest_contract_violations",
            "Guest answers that broke their WIT contract (refused: that board is skipped), by kind",
            m.contract_violations.clone(),
        );
        r.register(
            "changelog_records",
            "Changelog records produced (counters and metadata)",
            m.changelog_records.clone(),
        );
        r.register(
            "transactions_aborted",
            "exactly-once: transactions aborted and rewound",
            m.transactions_aborted.clone(),
        );
        r.register("batch_records", "Records per polled batch", m.batch_records.clone());
        r.register(
            "batch_step_seconds",
            "Seconds per batch in each step (guest, changelog, state, commit)",
            m.step_seconds.clone(),
        );
        r.register("board_flush_seconds", "Seconds to rank and publish a board", m.board_flush_seconds.clone());
        r.register(
            "consumer_lag",
            "Input records not yet in state, per partition (as of the last board)",
            m.consumer_lag.clone(),
        );
        r.register(
            "state_keys",
            "Counters in local state (counted up to 100k, RocksDB's estimate beyond)",
            m.state_keys.clone(),
        );
        r.register("state_size_bytes", "Local state: SST files on disk plus memtables", m.state_bytes.clone());
        r.register(
            "restore_records_read",
            "Changelog records read by the current or last restore or catch-up",
            m.changelog_read.clone(),
        );
        r.register(
            "restore_records_to_read",
            "Changelog records the current or last restore or catch-up reads",
            m.changelog_to_read.clone(),
        );
        m
    }
}

impl Metrics {
    pub fn step(&self, step: &'static str, seconds: f64) {
        self.step_seconds.get_or_create(&vec![("step", step)]).observe(seconds);
    }

    /// The text exposition, with the state gauges as of now.
    pub fn render(&self, state_keys: u64, state_bytes: u64) -> String {
        self.state_keys.set(state_keys as i64);
        self.state_bytes.set(state_bytes as i64);
        let (read, to_read) = crate::process::progress::changelog_read();
        self.changelog_read.set(read as i64);
        self.changelog_to_read.set(to_read as i64);
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}
