//! Event-time windows (`host run --window SIZE [--advance STEP] [--grace G]`): which windows
//! a record belongs to, when a record is late, when a window is complete and when it is
//! dropped, and how a windowed counter is keyed. Nothing here touches Kafka or RocksDB.
//!
//! - Windows are aligned to the epoch: window starts are multiples of `advance`, and a window
//!   `[start, start + size)` holds the records whose event time falls in it. Tumbling windows
//!   have `advance == size` (one window per record); hopping windows `advance < size`
//!   (`size / advance` windows per record).
//! - Stream time of an input partition: the largest event time seen on it. A window is
//!   *closed for a partition* once that partition's stream time reaches `end + grace`; a
//!   record whose every window is closed for its partition is late (skipped, counted,
//!   dead-lettered). A record with some windows still open counts in those only.
//! - A window is *complete* once every partition that has delivered records is past
//!   `end + grace` (the minimum of their stream times): no record can change it any more.
//! - A window is *dropped* (its counters deleted from state and tombstoned in the changelog)
//!   once that minimum reaches `end + retention`, so the newest complete window stays in state
//!   until the next one completes (retention defaults to size + grace; it must be at least
//!   the grace, or a window could be dropped while it still takes records).
//!
//! A windowed counter's key (in state and in the changelog) is `0xFE`, the window start as
//! 8 bytes big-endian with the sign bit flipped (so byte order is time order, negative times
//! included), then the guest's key (UTF-8). 0xFE never occurs in UTF-8, so windowed keys
//! never collide with plain counters and sort after all of them, grouped by window.

use std::time::Duration;

use anyhow::{Result, bail};

/// First byte of a windowed counter's key.
pub const WINDOW_KEY_PREFIX: u8 = 0xFE;

/// Milliseconds, as Kafka timestamps are.
pub type Millis = i64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowSpec {
    pub size: Millis,
    pub advance: Millis,
    pub grace: Millis,
    pub retention: Millis,
}

impl WindowSpec {
    /// Checks the flags' values; `advance` defaults to `size`, `retention` to size + grace.
    pub fn new(
        size: Duration,
        advance: Option<Duration>,
        grace: Duration,
        retention: Option<Duration>,
    ) -> Result<Self> {
        let ms = |d: Duration| d.as_millis().min(i64::MAX as u128 / 4) as i64;
        let size = ms(size);
        let advance = advance.map(ms).unwrap_or(size);
        let grace = ms(grace);
        let retention = retention.map(ms).unwrap_or(size + grace);
        if size <= 0 {
            bail!("--window must be at least 1ms");
        }
        if advance <= 0 || advance > size {
            bail!("--advance must be between 1ms and the window size ({size} ms); it is {advance} ms");
        }
        if size % advance != 0 {
            bail!(
                "--window ({size} ms) must be a whole multiple of --advance ({advance} ms), so that every \
                 record is in the same number of windows"
            );
        }
        if retention < grace {
            bail!(
                "--window-retention ({retention} ms) must be at least --grace ({grace} ms): a window must stay \
                 in state for as long as it can take records"
            );
        }
        Ok(WindowSpec { size, advance, grace, retention })
    }

    /// Starts of the windows holding event time `t`, oldest first.
    pub fn starts_of(&self, t: Millis) -> impl Iterator<Item = Millis> + use<> {
        let newest = t.div_euclid(self.advance) * self.advance;
        let count = self.size / self.advance;
        let advance = self.advance;
        (0..count).rev().map(move |i| newest - i * advance)
    }

    pub fn end(&self, start: Millis) -> Millis {
        start.saturating_add(self.size)
    }

    /// True when a partition whose stream time is `stream_time` takes no more records for
    /// the window starting at `start`.
    pub fn is_closed(&self, start: Millis, stream_time: Millis) -> bool {
        stream_time >= self.end(start).saturating_add(self.grace)
    }

    /// Starts of the windows of `t` still open for a partition at `stream_time`, oldest first.
    pub fn open_starts(&self, t: Millis, stream_time: Option<Millis>) -> Vec<Millis> {
        self.starts_of(t).filter(|s| stream_time.is_none_or(|st| !self.is_closed(*s, st))).collect()
    }

    /// The earliest window start still kept when the slowest partition's stream time is
    /// `min_stream_time`: windows starting before it are dropped.
    pub fn keep_from(&self, min_stream_time: Millis) -> Millis {
        // Dropped once min_stream_time >= start + size + retention.
        min_stream_time.saturating_sub(self.size).saturating_sub(self.retention).saturating_add(1)
    }

    /// The newest window complete at `min_stream_time` (every partition past its end + grace).
    pub fn newest_complete(&self, min_stream_time: Millis) -> Millis {
        // Largest aligned start with start + size + grace <= min_stream_time.
        (min_stream_time - self.size - self.grace).div_euclid(self.advance) * self.advance
    }

    /// The newest window that has started at `stream_time` (the one in progress).
    pub fn newest_started(&self, stream_time: Millis) -> Millis {
        stream_time.div_euclid(self.advance) * self.advance
    }

    /// How the spec is recorded in state, so that a restart with other flags is refused.
    pub fn describe(&self) -> String {
        format!("size={}ms advance={}ms grace={}ms", self.size, self.advance, self.grace)
    }
}

/// The state key of `key`'s counter: a plain one, or (`start`) the one of that window.
pub fn counter_key(start: Option<Millis>, key: &[u8]) -> Vec<u8> {
    match start {
        None => key.to_vec(),
        Some(start) => state_key(start, key),
    }
}

/// The state key of `key`'s counter in the window starting at `start`.
pub fn state_key(start: Millis, key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(9 + key.len());
    out.extend_from_slice(&window_prefix(start));
    out.extend_from_slice(key);
    out
}

/// The key prefix shared by every counter of the window starting at `start`.
pub fn window_prefix(start: Millis) -> [u8; 9] {
    let mut out = [0u8; 9];
    out[0] = WINDOW_KEY_PREFIX;
    out[1..].copy_from_slice(&((start as u64) ^ (1 << 63)).to_be_bytes());
    out
}

/// (window start, guest key) of a windowed state key; `None` for a plain counter.
pub fn parse_state_key(key: &[u8]) -> Option<(Millis, &[u8])> {
    let rest = key.strip_prefix(&[WINDOW_KEY_PREFIX])?;
    let (start, key) = rest.split_at_checked(8)?;
    let start = u64::from_be_bytes(start.try_into().ok()?) ^ (1 << 63);
    Some((start as i64, key))
}

/// RFC 3339 (UTC, milliseconds) for people and the board's JSON.
pub fn rfc3339(t: Millis) -> String {
    match u64::try_from(t) {
        Ok(ms) => humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + Duration::from_millis(ms)).to_string(),
        Err(_) => format!("{t} ms"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1000;

    fn spec(size: u64, advance: u64, grace: u64) -> WindowSpec {
        WindowSpec::new(Duration::from_secs(size), Some(Duration::from_secs(advance)), Duration::from_secs(grace), None)
            .unwrap()
    }

    fn starts(spec: &WindowSpec, t: i64) -> Vec<i64> {
        spec.starts_of(t).collect()
    }

    #[test]
    fn tumbling_windows_hold_their_start_but_not_their_end() {
        let w = spec(60, 60, 0);
        assert_eq!(starts(&w, 0), [0]);
        assert_eq!(starts(&w, 59_999), [0]);
        assert_eq!(starts(&w, 60_000), [60_000]);
        assert_eq!(starts(&w, -1), [-60_000], "before the epoch too");
    }

    #[test]
    fn hopping_windows_at_the_boundaries() {
        // 10 s windows every 5 s: each record is in two windows.
        let w = spec(10, 5, 0);
        assert_eq!(starts(&w, 0), [-5_000, 0]);
        assert_eq!(starts(&w, 4_999), [-5_000, 0]);
        assert_eq!(starts(&w, 5_000), [0, 5_000]);
        assert_eq!(starts(&w, 9_999), [0, 5_000]);
        assert_eq!(starts(&w, 10_000), [5_000, 10_000]);
        for t in [-7_001, -1, 0, 1, 4_999, 5_000, 12_345] {
            for s in starts(&w, t) {
                assert!(s <= t && t < w.end(s), "{t} in [{s}, {})", w.end(s));
            }
        }
        // One hour every 5 minutes: 12 windows.
        let w = spec(3600, 300, 0);
        let all = starts(&w, 3_600_000);
        assert_eq!((all.len(), all[0], all[11]), (12, 300_000, 3_600_000));
    }

    #[test]
    fn late_means_every_window_closed_for_the_partition() {
        let w = spec(10, 5, 2); // grace 2 s
        // t = 7 s is in [0, 10) and [5, 15). [0, 10) closes at stream time 12 s.
        assert_eq!(w.open_starts(7 * 1000, None), [0, 5_000]);
        assert_eq!(w.open_starts(7 * 1000, Some(11_999)), [0, 5_000]);
        assert_eq!(w.open_starts(7 * 1000, Some(12_000)), [5_000]);
        assert_eq!(w.open_starts(7 * 1000, Some(17_000)), Vec::<i64>::new(), "late");
    }

    #[test]
    fn complete_and_dropped_windows() {
        let w = spec(60, 60, 10); // retention defaults to 70 s
        assert_eq!(w.retention, 70 * S as i64);
        // [0, 60) is complete at 70 s, the newest complete until [60, 120) is at 130 s.
        assert_eq!(w.newest_complete(70_000), 0);
        assert_eq!(w.newest_complete(129_999), 0);
        assert_eq!(w.newest_complete(130_000), 60_000);
        // Dropped at end + retention = 130 s: then [60, 120) is the newest complete one.
        assert_eq!(w.keep_from(129_999), 0);
        assert!(w.keep_from(130_000) > 0 && w.keep_from(130_000) <= 60_000);
        assert_eq!(w.newest_started(130_000), 120_000);
    }

    #[test]
    fn bad_specs_are_refused_with_the_reason() {
        let d = Duration::from_secs;
        let err = |r: Result<WindowSpec>| r.unwrap_err().to_string();
        assert!(err(WindowSpec::new(d(60), Some(d(7)), d(0), None)).contains("whole multiple"));
        assert!(err(WindowSpec::new(d(60), Some(d(120)), d(0), None)).contains("--advance"));
        assert!(err(WindowSpec::new(d(60), None, d(30), Some(d(10)))).contains("at least --grace"));
        assert!(err(WindowSpec::new(d(0), None, d(0), None)).contains("--window"));
    }

    #[test]
    fn keys_round_trip_and_sort_by_time_then_key() {
        let keys = [state_key(-5, b"z"), state_key(0, b"a"), state_key(0, b"b"), state_key(3_600_000, b"a")];
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(sorted, keys);
        assert_eq!(parse_state_key(&keys[0]), Some((-5, &b"z"[..])));
        assert_eq!(parse_state_key(&keys[3]), Some((3_600_000, &b"a"[..])));
        assert_eq!(parse_state_key("latte".as_bytes()), None);
        assert!(keys.iter().all(|k| k.as_slice() > "\u{10FFFF}".as_bytes()), "after every plain key");
    }
}
