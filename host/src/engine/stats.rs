//! What a run did, for the log line at its end (and the benchmark that parses it):
//! records, time from the first consumed record to the last commit, and the latency from
//! each record's timestamp to its changelog write being acknowledged.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;

pub struct RunStats {
    first_record: Option<Instant>,
    last_commit: Option<Instant>,
    pub records: u64,
    pub batches: u64,
    pub changelog_records: u64,
    /// Milliseconds from record timestamp to changelog acknowledgement.
    latency_ms: Histogram<u64>,
}

impl Default for RunStats {
    fn default() -> Self {
        RunStats {
            first_record: None,
            last_commit: None,
            records: 0,
            batches: 0,
            changelog_records: 0,
            latency_ms: Histogram::new(3).expect("histogram"),
        }
    }
}

pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

impl RunStats {
    pub fn batch_polled(&mut self, records: usize) {
        self.first_record.get_or_insert_with(Instant::now);
        self.records += records as u64;
        self.batches += 1;
    }

    /// Records the latency of records whose timestamps (ms) are given, as of now.
    pub fn acknowledged(&mut self, timestamps_ms: impl Iterator<Item = i64>) {
        let now = now_ms();
        for ts in timestamps_ms {
            let _ = self.latency_ms.record((now - ts).max(0) as u64);
        }
    }

    pub fn committed(&mut self) {
        self.last_commit = Some(Instant::now());
    }

    /// Logs the summary line.
    pub fn log(&self) {
        let seconds = match (self.first_record, self.last_commit) {
            (Some(a), Some(b)) => b.duration_since(a).as_secs_f64(),
            _ => 0.0,
        };
        let h = &self.latency_ms;
        tracing::info!(
            records = self.records,
            batches = self.batches,
            changelog_records = self.changelog_records,
            seconds,
            records_per_second = if seconds > 0.0 { self.records as f64 / seconds } else { 0.0 },
            latency_p50_ms = h.value_at_quantile(0.5),
            latency_p99_ms = h.value_at_quantile(0.99),
            latency_max_ms = h.max(),
            "run summary (first record to last commit; latency: record timestamp to changelog acknowledged)"
        );
    }
}
