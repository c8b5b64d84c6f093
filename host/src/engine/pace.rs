//! `--max-rate`: holds the loop back so that input records arrive at most at a given rate.

use std::time::{Duration, Instant};

/// Records since `since`, and the rate they must not exceed (0: no limit).
pub struct Pace {
    per_second: u64,
    since: Instant,
    records: u64,
}

impl Pace {
    pub fn new(per_second: u64) -> Self {
        Pace { per_second, since: Instant::now(), records: 0 }
    }

    /// Counts `records` just consumed and sleeps until they are within the rate.
    pub fn consumed(&mut self, records: usize) {
        if self.per_second == 0 || records == 0 {
            return;
        }
        self.records += records as u64;
        let due = Duration::from_secs_f64(self.records as f64 / self.per_second as f64);
        if let Some(ahead) = due.checked_sub(self.since.elapsed()) {
            std::thread::sleep(ahead);
        }
        // A fresh start now and then, so an idle spell does not bank a burst.
        if self.records >= self.per_second {
            self.since = Instant::now();
            self.records = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_back_to_the_rate() {
        let mut pace = Pace::new(1000);
        let started = Instant::now();
        for _ in 0..5 {
            pace.consumed(100);
        }
        assert!(started.elapsed() >= Duration::from_millis(490), "{:?}", started.elapsed());
        let mut unlimited = Pace::new(0);
        let started = Instant::now();
        unlimited.consumed(1_000_000);
        assert!(started.elapsed() < Duration::from_millis(50));
    }
}
