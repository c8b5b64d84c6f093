//! Progress of long work (a restore, a catch-up): a bar on a terminal, a log line every few
//! seconds otherwise (records so far, rate, ETA), and the figures for /metrics.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// The current (or last) changelog read: records read and to read, for /metrics. One read
/// runs at a time in a process.
static READ: AtomicU64 = AtomicU64::new(0);
static TO_READ: AtomicU64 = AtomicU64::new(0);

/// (records read, records to read) of the current or last changelog read.
pub fn changelog_read() -> (u64, u64) {
    (READ.load(Ordering::Relaxed), TO_READ.load(Ordering::Relaxed))
}

pub struct Progress {
    what: &'static str,
    total: u64,
    bar: ProgressBar,
    started: Instant,
    last_log: Instant,
}

impl Progress {
    /// `total` records to go through; the bar shows only when stderr is a terminal.
    pub fn new(what: &'static str, total: u64) -> Self {
        READ.store(0, Ordering::Relaxed);
        TO_READ.store(total, Ordering::Relaxed);
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr_with_hz(5));
        bar.set_style(
            ProgressStyle::with_template("{msg} [{bar:30}] {human_pos}/{human_len} records · {rate} · ETA {eta}")
                .expect("a valid template")
                .with_key("rate", |state: &indicatif::ProgressState, out: &mut dyn std::fmt::Write| {
                    let _ = write!(out, "{:.0}k records/s", state.per_sec() / 1000.0);
                })
                .progress_chars("=> "),
        );
        bar.set_message(what);
        Progress { what, total, bar, started: Instant::now(), last_log: Instant::now() }
    }

    /// `done` records so far.
    pub fn set(&mut self, done: u64) {
        READ.store(done, Ordering::Relaxed);
        self.bar.set_position(done);
        if self.bar.is_hidden() && self.last_log.elapsed() >= Duration::from_secs(2) {
            self.last_log = Instant::now();
            let seconds = self.started.elapsed().as_secs_f64();
            let rate = done as f64 / seconds.max(1e-3);
            let eta = if rate > 0.0 { self.total.saturating_sub(done) as f64 / rate } else { 0.0 };
            tracing::info!(
                records = done,
                of = self.total,
                percent = (100 * done).checked_div(self.total).unwrap_or(100),
                records_per_second = rate as u64,
                eta_seconds = eta.round() as u64,
                "{} progress",
                self.what
            );
        }
    }

    pub fn finish(self) {
        self.bar.finish_and_clear();
    }
}
