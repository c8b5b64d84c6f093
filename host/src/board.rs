//! The board: every flush interval, the guest ranks the committed counters; the top-N is
//! printed for people and produced as JSON for programs. With --window, the boards of the
//! newest complete window and of the one in progress (or, with --emit final, one board per
//! window once it is complete). A snapshot is not transactional:
//! if one is lost, the next one follows an interval later.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::guest::Entry;
use crate::kafka::producer::AckedProducer;
use crate::state::{Store, Totals};
use crate::window::{self, Millis, WindowSpec};

#[derive(Serialize, Deserialize, Clone)]
pub struct Snapshot {
    pub generated_at_ms: u64,
    pub records_processed: u64,
    pub records_skipped: u64,
    /// The cumulative top-N; with --window, the top-N of the window in progress.
    pub top: Vec<BoardEntry>,
    /// With --window: the newest complete window (if it has counts), then the one in progress.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub windows: Vec<WindowBoard>,
}

#[derive(Serialize, Deserialize, Clone)]
pub struct BoardEntry {
    pub key: String,
    pub count: u64,
}

/// One window's board. `complete`: every input partition is past its end plus the grace
/// period, so its counts are final.
#[derive(Serialize, Deserialize, Clone)]
pub struct WindowBoard {
    pub start_ms: Millis,
    pub end_ms: Millis,
    pub start: String,
    pub end: String,
    pub complete: bool,
    pub top: Vec<BoardEntry>,
}

/// The guest's `top-n`.
pub type TopN<'a> = dyn FnMut(&[Entry], u32) -> Result<Vec<Entry>> + 'a;

/// With --window: the windows and where each input partition is in event time.
pub struct Windows<'a> {
    pub spec: &'a WindowSpec,
    pub stream_times: BTreeMap<i32, Millis>,
    /// An input partition that held records at start-up has not delivered yet: no window
    /// is complete (see `pipeline`).
    pub closing_blocked: bool,
}

impl Windows<'_> {
    /// The slowest partition's stream time, which windows complete by; `None` while closing
    /// is blocked or before any record.
    fn slowest(&self) -> Option<Millis> {
        if self.closing_blocked { None } else { self.stream_times.values().min().copied() }
    }

    /// The fastest partition's stream time, which the window in progress follows.
    fn fastest(&self) -> Option<Millis> {
        self.stream_times.values().max().copied()
    }
}

/// Ranks the store's counters with the guest and prints the board (with --window: the
/// newest complete window and the one in progress).
pub fn snapshot(store: &Store, top_n: &mut TopN<'_>, n: u32, windows: Option<&Windows<'_>>) -> Result<Snapshot> {
    let started = std::time::Instant::now();
    let now = SystemTime::now();
    let (snapshot, keys, totals) = build(store, top_n, n, windows, now)?;
    print(&snapshot, &totals, now, keys);
    tracing::debug!(keys, ms = started.elapsed().as_millis() as u64, "board ranked");
    Ok(snapshot)
}

/// The board of `store` (with the number of keys ranked, and the totals), not printed.
fn build(
    store: &Store,
    top_n: &mut TopN<'_>,
    n: u32,
    windows: Option<&Windows<'_>>,
    now: SystemTime,
) -> Result<(Snapshot, usize, Totals)> {
    let totals = store.totals()?;
    let (top, keys, windows) = match windows {
        None => {
            let (top, keys) = rank(as_strings(store.counts()), top_n, n)?;
            (board_entries(top), keys, Vec::new())
        }
        Some(w) => {
            let mut boards = Vec::new();
            let mut keys = 0;
            if let Some(slowest) = w.slowest() {
                let complete = w.spec.newest_complete(slowest);
                if store.window_counts(complete).next().is_some() {
                    let (board, k) = window_board(store, top_n, n, w.spec, complete, Some(slowest))?;
                    boards.push(board);
                    keys += k;
                }
            }
            if let Some(fastest) = w.fastest() {
                let (board, k) = window_board(store, top_n, n, w.spec, w.spec.newest_started(fastest), w.slowest())?;
                boards.push(board);
                keys += k;
            }
            let top = boards.last().map(|b| b.top.clone()).unwrap_or_default();
            (top, keys, boards)
        }
    };
    let snapshot = Snapshot {
        generated_at_ms: now_ms(now),
        records_processed: totals.records_processed,
        records_skipped: totals.records_skipped,
        top,
        windows,
    };
    Ok((snapshot, keys, totals))
}

/// Produces a board to `topic`, under the key `board`.
pub fn produce(producer: &AckedProducer, topic: &str, snapshot: &Snapshot) -> Result<()> {
    produce_as(producer, topic, BOARD_KEY, snapshot)
}

/// The output topic's key of a single host's board.
pub const BOARD_KEY: &str = "board";

/// The output topic's key of a scale-out shard's local board.
pub fn shard_key(partition: i32) -> String {
    format!("shard/{partition}")
}

/// --emit final with --scale-out: the output topic's key of shard `partition`'s marker,
/// `{"complete_through_ms", "shards"}`: every window starting at or before it whose final
/// board this shard would produce is out.
pub fn final_marker_key(partition: i32) -> String {
    format!("final/shard/{partition}")
}

/// Produces a board to `topic` under `key`.
pub fn produce_as(producer: &AckedProducer, topic: &str, key: &str, snapshot: &Snapshot) -> Result<()> {
    producer.send(topic, key.as_bytes(), &serde_json::to_vec(snapshot)?, None)?;
    producer.poll();
    Ok(())
}

/// A scale-out shard's local board (not printed): its top-N (with --window, of the windows
/// its stream times say) and the totals it holds.
pub fn local_snapshot(store: &Store, top_n: &mut TopN<'_>, n: u32, windows: Option<&Windows<'_>>) -> Result<Snapshot> {
    Ok(build(store, top_n, n, windows, SystemTime::now())?.0)
}

/// The global board of a scale-out job from the shards' latest local boards: totals summed,
/// and the guest's top-N over the union of the local top-Ns (per window, with --window: a
/// window is complete once every shard that has it says so). Exact because each counter is
/// in one shard only, so a key of the global top-N is in its own shard's top-N.
pub fn merge(locals: &[Snapshot], top_n: &mut TopN<'_>, n: u32) -> Result<Snapshot> {
    let entries = locals.iter().flat_map(|s| &s.top).map(|e| Ok((e.key.clone(), e.count)));
    let (top, _) = rank(entries, top_n, n)?;
    let mut by_start: BTreeMap<Millis, Vec<&WindowBoard>> = BTreeMap::new();
    for board in locals.iter().flat_map(|s| &s.windows) {
        by_start.entry(board.start_ms).or_default().push(board);
    }
    let mut windows = Vec::new();
    for boards in by_start.into_values() {
        let entries = boards.iter().flat_map(|b| &b.top).map(|e| Ok((e.key.clone(), e.count)));
        let (top, _) = rank(entries, top_n, n)?;
        windows.push(WindowBoard {
            complete: boards.iter().all(|b| b.complete),
            top: board_entries(top),
            ..boards[0].clone()
        });
    }
    // As on a single host's board: the newest complete window and the newest one.
    let newest_complete = windows.iter().rposition(|w| w.complete);
    let newest = windows.len().checked_sub(1);
    let windows: Vec<WindowBoard> = windows
        .into_iter()
        .enumerate()
        .filter(|(i, _)| Some(*i) == newest_complete || Some(*i) == newest)
        .map(|(_, w)| w)
        .collect();
    Ok(Snapshot {
        generated_at_ms: locals.iter().map(|s| s.generated_at_ms).min().unwrap_or(0),
        records_processed: locals.iter().map(|s| s.records_processed).sum(),
        records_skipped: locals.iter().map(|s| s.records_skipped).sum(),
        // The newest window's top, as a single host's board has it.
        top: match windows.last() {
            Some(newest) => newest.top.clone(),
            None => board_entries(top),
        },
        windows,
    })
}

fn now_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// --emit final: produces the board of every window with counts that completed after
/// `after` (exclusive) and up to the slowest partition's stream time, oldest first, each
/// under the key `window/<start ms>`. Returns the newest window emitted.
pub fn emit_final(
    store: &Store,
    top_n: &mut TopN<'_>,
    producer: &AckedProducer,
    topic: &str,
    n: u32,
    windows: &Windows<'_>,
    after: Option<Millis>,
) -> Result<Option<Millis>> {
    let out = FinalBoards { producer, topic, key: &|start| format!("window/{start}") };
    emit_final_as(store, top_n, &out, n, windows, after)
}

/// Where final boards go: the topic, and each window's key there.
pub struct FinalBoards<'a> {
    pub producer: &'a AckedProducer,
    pub topic: &'a str,
    pub key: &'a dyn Fn(Millis) -> String,
}

/// The newest window complete for `windows` (every input partition past its end + grace).
pub fn complete_through(windows: &Windows<'_>) -> Option<Millis> {
    windows.slowest().map(|slowest| windows.spec.newest_complete(slowest))
}

/// `emit_final`, each board under the key `key(start)` (a scale-out shard's:
/// `window/<start ms>/shard/<p>`).
pub fn emit_final_as(
    store: &Store,
    top_n: &mut TopN<'_>,
    out: &FinalBoards<'_>,
    n: u32,
    windows: &Windows<'_>,
    after: Option<Millis>,
) -> Result<Option<Millis>> {
    let Some(slowest) = windows.slowest() else { return Ok(None) };
    let through = windows.spec.newest_complete(slowest);
    let mut emitted = None;
    let mut next = store.first_window_from(after.map_or(Millis::MIN, |a| a.saturating_add(1)))?;
    while let Some(start) = next.filter(|s| *s <= through) {
        let (board, keys) = window_board(store, top_n, n, windows.spec, start, Some(slowest))?;
        tracing::info!(window = %board.start, keys, "window complete: final board produced");
        let value = serde_json::to_vec(&board)?;
        out.producer.send(out.topic, (out.key)(start).as_bytes(), &value, None)?;
        emitted = Some(start);
        next = store.first_window_from(start.saturating_add(1))?;
    }
    out.producer.poll();
    Ok(emitted)
}

fn window_board(
    store: &Store,
    top_n: &mut TopN<'_>,
    n: u32,
    spec: &WindowSpec,
    start: Millis,
    slowest: Option<Millis>,
) -> Result<(WindowBoard, usize)> {
    let (top, keys) = rank(as_strings(store.window_counts(start)), top_n, n)?;
    let board = WindowBoard {
        start_ms: start,
        end_ms: spec.end(start),
        start: window::rfc3339(start),
        end: window::rfc3339(spec.end(start)),
        complete: slowest.is_some_and(|s| spec.is_closed(start, s)),
        top: board_entries(top),
    };
    Ok((board, keys))
}

fn board_entries(top: Vec<Entry>) -> Vec<BoardEntry> {
    top.into_iter().map(|e| BoardEntry { key: e.key, count: e.count }).collect()
}

fn as_strings(counts: impl Iterator<Item = Result<(Box<[u8]>, u64)>>) -> impl Iterator<Item = Result<(String, u64)>> {
    counts.map(|item| item.map(|(key, count)| (String::from_utf8_lossy(&key).into_owned(), count)))
}

/// How a `top-n` answer breaks the WIT contract: at most `n` entries, each one of those it
/// was given with its count unchanged, no key twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Violation {
    TooMany,
    InventedKey,
    ChangedCount,
    DuplicateKey,
}

impl Violation {
    /// The metric label.
    pub fn kind(self) -> &'static str {
        match self {
            Violation::TooMany => "too_many_entries",
            Violation::InventedKey => "invented_key",
            Violation::ChangedCount => "changed_count",
            Violation::DuplicateKey => "duplicate_key",
        }
    }

    /// The rule broken, as a guest author reads it.
    pub fn rule(self) -> &'static str {
        match self {
            Violation::TooMany => "top-n returns at most n entries",
            Violation::InventedKey => "top-n returns only keys it was given",
            Violation::ChangedCount => "top-n returns each entry with the count it was given",
            Violation::DuplicateKey => "top-n returns no key twice",
        }
    }
}

/// Checks a `top-n` answer against what it was given: the first rule it breaks, with the
/// entry that breaks it.
pub fn check_top_n(given: &[Entry], answer: &[Entry], n: u32) -> Result<(), (Violation, String)> {
    if answer.len() > n as usize {
        return Err((Violation::TooMany, format!("{} entries for n = {n}", answer.len())));
    }
    let counts: std::collections::HashMap<&str, u64> = given.iter().map(|e| (e.key.as_str(), e.count)).collect();
    let mut seen = std::collections::HashSet::new();
    for entry in answer {
        match counts.get(entry.key.as_str()) {
            None => return Err((Violation::InventedKey, format!("`{}` was not among the entries given", entry.key))),
            Some(count) if *count != entry.count => {
                return Err((
                    Violation::ChangedCount,
                    format!("`{}` has count {} but was given with {count}", entry.key, entry.count),
                ));
            }
            Some(_) => {}
        }
        if !seen.insert(entry.key.as_str()) {
            return Err((Violation::DuplicateKey, format!("`{}` appears more than once", entry.key)));
        }
    }
    Ok(())
}

/// Keys handed to the guest's `top-n` per call: bounds host and guest memory however many
/// keys the state holds.
const RANK_CHUNK: usize = 10_000;

/// The top `n` of the whole state, ranked in chunks: each call ranks the winners so far plus
/// the next chunk of keys. This equals one call over everything whenever `top-n` selects by a
/// total order of entries, which the WIT contract asks of guests. Returns (top, keys seen).
pub fn rank(
    counts: impl Iterator<Item = Result<(String, u64)>>,
    top_n: &mut TopN<'_>,
    n: u32,
) -> Result<(Vec<Entry>, usize)> {
    let mut winners: Vec<Entry> = Vec::new();
    let mut chunk: Vec<Entry> = Vec::with_capacity(RANK_CHUNK);
    let mut keys = 0;
    let mut counts = counts.peekable();
    while counts.peek().is_some() {
        chunk.clear();
        chunk.append(&mut winners);
        while chunk.len() < RANK_CHUNK + n as usize
            && let Some(item) = counts.next()
        {
            let (key, count) = item?;
            chunk.push(Entry { key, count });
            keys += 1;
        }
        winners = top_n(&chunk, n)?;
    }
    Ok((winners, keys))
}

pub(crate) fn print(snapshot: &Snapshot, totals: &Totals, at: SystemTime, keys: usize) {
    let mut text = format!(
        "\n── top {} of {keys} keys · {} records counted · {} skipped · {} ──\n",
        snapshot.top.len(),
        totals.records_processed,
        totals.records_skipped,
        humantime::format_rfc3339_seconds(at)
    );
    if snapshot.windows.is_empty() {
        print_entries(&mut text, &snapshot.top);
    }
    for window in &snapshot.windows {
        let state = if window.complete { "complete" } else { "in progress" };
        text.push_str(&format!("   window {} .. {} ({state})\n", window.start, window.end));
        print_entries(&mut text, &window.top);
    }
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(text.as_bytes());
    let _ = stdout.flush();
}

fn print_entries(text: &mut String, entries: &[BoardEntry]) {
    let width = entries.iter().map(|e| e.key.chars().count()).max().unwrap_or(0).clamp(8, 40);
    for (rank, entry) in entries.iter().enumerate() {
        text.push_str(&format!("{:>4}. {:<width$}  {:>12}\n", rank + 1, entry.key, entry.count));
    }
    if entries.is_empty() {
        text.push_str("      (nothing counted yet)\n");
    }
}

#[cfg(test)]
mod contract_tests {
    use super::*;

    fn entries(list: &[(&str, u64)]) -> Vec<Entry> {
        list.iter().map(|(k, c)| Entry { key: (*k).to_owned(), count: *c }).collect()
    }

    #[test]
    fn a_top_n_answer_is_held_to_its_contract() {
        let given = entries(&[("latte", 5), ("mocha", 3), ("tea", 1)]);
        assert_eq!(check_top_n(&given, &entries(&[("latte", 5), ("mocha", 3)]), 2), Ok(()));
        let broken = |answer: &[(&str, u64)], n| check_top_n(&given, &entries(answer), n).unwrap_err().0;
        assert_eq!(broken(&[("latte", 5), ("mocha", 3), ("tea", 1)], 2), Violation::TooMany);
        assert_eq!(broken(&[("invented-0", u64::MAX)], 2), Violation::InventedKey);
        assert_eq!(broken(&[("latte", 6)], 2), Violation::ChangedCount);
        assert_eq!(broken(&[("latte", 5), ("latte", 5)], 2), Violation::DuplicateKey);
    }
}
