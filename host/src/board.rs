//! The board: every flush interval, the guest ranks the committed counters; the top-N is
//! printed for people and produced as JSON for programs. A snapshot is not transactional:
//! if one is lost, the next one follows an interval later.

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Result;
use serde::Serialize;

use crate::guest::Entry;
use crate::producer::AckedProducer;
use crate::state::{Store, Totals};

#[derive(Serialize, Clone)]
pub struct Snapshot {
    pub generated_at_ms: u64,
    pub records_processed: u64,
    pub records_skipped: u64,
    pub top: Vec<BoardEntry>,
}

#[derive(Serialize, Clone)]
pub struct BoardEntry {
    pub key: String,
    pub count: u64,
}

/// The guest's `top-n`.
pub type TopN<'a> = dyn FnMut(&[Entry], u32) -> Result<Vec<Entry>> + 'a;

/// Ranks the store's counters with the guest, prints the board and produces it to `topic`.
pub fn flush(store: &Store, top_n: &mut TopN<'_>, producer: &AckedProducer, topic: &str, n: u32) -> Result<Snapshot> {
    let started = std::time::Instant::now();
    let counts =
        store.counts().map(|item| item.map(|(key, count)| (String::from_utf8_lossy(&key).into_owned(), count)));
    let (top, keys) = rank(counts, top_n, n)?;
    let totals = store.totals()?;
    let now = SystemTime::now();
    let snapshot = Snapshot {
        generated_at_ms: now.duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0),
        records_processed: totals.records_processed,
        records_skipped: totals.records_skipped,
        top: top.into_iter().map(|e| BoardEntry { key: e.key, count: e.count }).collect(),
    };
    print(&snapshot, &totals, now, keys);
    producer.send(topic, b"board", &serde_json::to_vec(&snapshot)?, None)?;
    producer.poll();
    tracing::debug!(keys, ms = started.elapsed().as_millis() as u64, "board flushed");
    Ok(snapshot)
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

fn print(snapshot: &Snapshot, totals: &Totals, at: SystemTime, keys: usize) {
    let width = snapshot.top.iter().map(|e| e.key.chars().count()).max().unwrap_or(0).clamp(8, 40);
    let mut text = format!(
        "\n── top {} of {keys} keys · {} records counted · {} skipped · {} ──\n",
        snapshot.top.len(),
        totals.records_processed,
        totals.records_skipped,
        humantime::format_rfc3339_seconds(at)
    );
    for (rank, entry) in snapshot.top.iter().enumerate() {
        text.push_str(&format!("{:>4}. {:<width$}  {:>12}\n", rank + 1, entry.key, entry.count));
    }
    if snapshot.top.is_empty() {
        text.push_str("      (nothing counted yet)\n");
    }
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(text.as_bytes());
    let _ = stdout.flush();
}
