//! The stall watchdog of both loops: notices an input that stops delivering while records
//! wait on it (seen: librdkafka's consumer never got back to its group coordinator after a
//! broker restart, and the host sat idle with lag). Then the host exits with an error, so that
//! its supervisor restarts it: state is intact, and a restart resumes as after a crash.
//! `--stall-timeout 0s` turns it off; fault injection `stall-consumer:<n>` makes the input
//! deliver nothing after the n-th batch, to test it.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use crate::engine::fault::{self, Step};

/// How often a silent input's lag is looked at (a broker round trip per partition).
const CHECK_EVERY: Duration = Duration::from_secs(2);

/// A gap between two polls longer than this is time the loop spent elsewhere (a commit
/// waiting on Kafka, a producer being replaced), which is not the input's silence.
const AWAY: Duration = Duration::from_secs(1);

pub struct Watchdog {
    timeout: Duration,
    /// When records last arrived, or the input was last seen with nothing waiting.
    last_progress: Instant,
    last_check: Instant,
    last_poll: Instant,
    /// Fault injection: the input is treated as delivering nothing from now on.
    stalled_by_fault: bool,
}

impl Watchdog {
    pub fn new(timeout: Duration) -> Self {
        let now = Instant::now();
        Watchdog { timeout, last_progress: now, last_check: now, last_poll: now, stalled_by_fault: false }
    }

    /// True once `stall-consumer` fault injection stopped the input: the loop then polls nothing.
    pub fn input_stopped_by_fault(&self) -> bool {
        self.stalled_by_fault
    }

    /// After each poll: whether to look at how many records wait (the input delivered
    /// nothing for `--stall-timeout`; asked at most every few seconds). If so, the caller
    /// counts them and tells [`Watchdog::looked`].
    pub fn due(&mut self, delivered: bool) -> bool {
        let now = Instant::now();
        let away = now.duration_since(self.last_poll);
        self.last_poll = now;
        if away > AWAY {
            // Not counted: it was never before the previous poll, so this stays in the past.
            self.last_progress += away;
        }
        if delivered {
            self.last_progress = Instant::now();
            self.stalled_by_fault |= fault::due(Step::StallConsumer);
            return false;
        }
        if self.timeout.is_zero()
            || self.last_progress.elapsed() < self.timeout
            || self.last_check.elapsed() < CHECK_EVERY
        {
            return false;
        }
        self.last_check = Instant::now();
        true
    }

    /// An error when records wait on a silent input: count only the partitions whose end can be
    /// read (one that cannot, a broker down, is an outage, which librdkafka rides out, not a
    /// stall), and none that is paused on purpose.
    pub fn looked(&mut self, waiting: i64) -> Result<()> {
        if waiting == 0 {
            self.last_progress = Instant::now();
            return Ok(());
        }
        bail!(
            "the input delivered nothing for {} while {waiting} records wait on it: the Kafka consumer is \
             stuck (seen after a broker restart). Exiting so that a supervisor restarts the host: state is \
             intact and a restart resumes as after a crash (--stall-timeout sets the limit; 0 turns this off)",
            humantime::format_duration(self.timeout)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A loop blocked elsewhere for longer than the timeout (a commit waiting on Kafka) has not
    /// seen a silent input; a loop that kept polling for that long has.
    #[test]
    fn time_away_from_polling_is_not_silence() {
        let long_ago = Instant::now() - Duration::from_secs(70);
        let mut away = Watchdog::new(Duration::from_secs(60));
        (away.last_progress, away.last_poll, away.last_check) = (long_ago, long_ago, long_ago);
        assert!(!away.due(false), "70 s blocked in a commit, then the first poll");

        let mut polling = Watchdog::new(Duration::from_secs(60));
        (polling.last_progress, polling.last_check) = (long_ago, long_ago);
        polling.last_poll = Instant::now() - Duration::from_millis(10);
        assert!(polling.due(false), "70 s of polls that delivered nothing");
    }
}
