//! `--http ADDR`: health, readiness, metrics and state queries, on a thread of its own.
//!
//! - `GET /healthz`: 200 while the process runs.
//! - `GET /readyz`: 200 once state is restored or caught up and the consumer has partitions.
//! - `GET /metrics`: Prometheus text format (`metrics.rs`).
//! - `GET /state/{key}`: `{"key": ..., "count": N}` as last committed (404 for a key never counted).
//! - `GET /top?n=N`: the N largest counters as last committed, by count then key.
//! - On a `--scale-out` host both answer from the shards it holds, and say which
//!   (`"shards": [...]`); a key counted in a shard another host holds is a 404 naming it.
//!   With `--window`, both take `window=START_MS` (a window's start, as `host dump` and the
//!   boards show it) and answer for that window's counters.
//! - `GET /`: the live board page (`host/src/board.html`, no build step), which polls
//!   `GET /board.json`: the last published board with each entry's change since the one
//!   before, the totals, and the consumer lag.
//!
//! Reads go straight to RocksDB, whose atomic write batches mean a reader never sees half a
//! batch.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use anyhow::{Context, Result, anyhow};
use tiny_http::{Header, Method, Response, Server};

use crate::board::Snapshot;
use crate::serve::metrics::Metrics;
use crate::state::Store;

/// What the endpoints read; the pipeline fills it in as it starts.
#[derive(Clone, Default)]
pub struct Shared {
    pub metrics: Arc<Metrics>,
    /// State, once restored (a restore rebuilds it from scratch, so readers come after).
    pub store: Arc<OnceLock<Store>>,
    pub ready: Arc<AtomicBool>,
    pub board: Arc<Mutex<BoardView>>,
    /// A --scale-out host's shards, as they open and close.
    pub shards: Arc<Mutex<HeldShards>>,
}

/// The shards a --scale-out host holds, for `/state` and `/top`.
#[derive(Default)]
pub struct HeldShards {
    /// The job's shard count (`None`: not a scale-out host).
    pub count: Option<i32>,
    pub stores: BTreeMap<i32, Store>,
}

/// The last two boards the pipeline published, and the lag when it published the last.
#[derive(Default)]
pub struct BoardView {
    current: Option<Snapshot>,
    previous: BTreeMap<String, u64>,
    lag: BTreeMap<i32, i64>,
}

impl BoardView {
    /// A new board: the current one becomes the one changes are measured against.
    pub fn publish(&mut self, snapshot: Snapshot, lag: BTreeMap<i32, i64>) {
        if let Some(old) = self.current.take() {
            // With --window, changes are within the window in progress: a new one starts afresh.
            let same_window = old.windows.last().map(|w| w.start_ms) == snapshot.windows.last().map(|w| w.start_ms);
            self.previous =
                if same_window { old.top.into_iter().map(|e| (e.key, e.count)).collect() } else { BTreeMap::new() };
        }
        self.current = Some(snapshot);
        self.lag = lag;
    }

    fn to_json(&self) -> serde_json::Value {
        let Some(board) = &self.current else {
            return serde_json::json!({ "top": [], "waiting": true });
        };
        let top: Vec<_> = board
            .top
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let change = self.previous.get(&e.key).map(|before| e.count as i128 - *before as i128);
                serde_json::json!({ "rank": i + 1, "key": e.key, "count": e.count, "change": change })
            })
            .collect();
        serde_json::json!({
            "generated_at_ms": board.generated_at_ms,
            "records_processed": board.records_processed,
            "records_skipped": board.records_skipped,
            "lag": self.lag.values().sum::<i64>(),
            "lag_by_partition": self.lag,
            "top": top,
            // With --window: the window `top` is of (the one in progress).
            "window": board.windows.last().map(|w| serde_json::json!({ "start": w.start, "end": w.end })),
        })
    }
}

/// Starts serving on `addr` (e.g. 127.0.0.1:9464) in the background.
pub fn serve(addr: &str, shared: Shared) -> Result<()> {
    let server = Server::http(addr).map_err(|e| anyhow!("cannot listen on {addr} (--http): {e}"))?;
    tracing::info!(addr, "serving /healthz /readyz /metrics /state/{{key}} /top");
    std::thread::Builder::new()
        .name("http".into())
        .spawn(move || {
            for request in server.incoming_requests() {
                let (status, content_type, body) = respond(&shared, request.method(), request.url());
                let header = Header::from_bytes("Content-Type", content_type).expect("a valid header");
                let mut response = Response::from_string(body).with_status_code(status).with_header(header);
                if status == 405 {
                    response.add_header(Header::from_bytes("Allow", "GET").expect("a valid header"));
                }
                if let Err(e) = request.respond(response) {
                    tracing::debug!(error = %e, "http client went away");
                }
            }
        })
        .context("spawning the http thread")?;
    Ok(())
}

const JSON: &str = "application/json";
const TEXT: &str = "text/plain; charset=utf-8";

/// A request the client got wrong (a malformed number, a bad window start): answered 400
/// with this reason.
#[derive(Debug)]
struct BadRequest(String);

impl std::fmt::Display for BadRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadRequest {}

/// 400 for the client's mistakes, 500 for the host's.
fn error_answer(e: &anyhow::Error) -> (u16, &'static str, String) {
    match e.downcast_ref::<BadRequest>() {
        Some(bad) => (400, TEXT, format!("bad request: {bad}\n")),
        None => (500, TEXT, format!("{e:#}\n")),
    }
}

const NOT_FOUND: &str = "not found: try / /board.json /healthz /readyz /metrics /state/{key} /top?n=10\n";

fn respond(shared: &Shared, method: &Method, url: &str) -> (u16, &'static str, String) {
    if *method != Method::Get {
        return (405, TEXT, format!("method {method} not allowed: every endpoint answers GET only\n"));
    }
    let (path, query) = url.split_once('?').unwrap_or((url, ""));
    match path {
        "/" => (200, "text/html; charset=utf-8", include_str!("board.html").into()),
        "/board.json" => {
            let view = shared.board.lock().unwrap_or_else(|p| p.into_inner());
            (200, JSON, view.to_json().to_string())
        }
        "/healthz" => (200, TEXT, "ok\n".into()),
        "/readyz" if shared.ready.load(Ordering::SeqCst) => (200, TEXT, "ready\n".into()),
        "/readyz" => (503, TEXT, "not ready: restoring state or waiting for partitions\n".into()),
        "/metrics" => {
            let size = |store: &Store| (store.key_count().map_or(0, |(n, _)| n), store.size_bytes().unwrap_or(0));
            let (keys, bytes) = match shared.store.get() {
                Some(store) => size(store),
                // A scale-out host: its shards together.
                None => shared
                    .shards
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .stores
                    .values()
                    .map(size)
                    .fold((0, 0), |(keys, bytes), (k, b)| (keys + k, bytes + b)),
            };
            (200, "text/plain; version=0.0.4; charset=utf-8", shared.metrics.render(keys, bytes))
        }
        _ if !(path.starts_with("/state/") || path == "/top") => (404, TEXT, NOT_FOUND.into()),
        _ => {
            let Some(store) = shared.store.get() else {
                let held = shared.shards.lock().unwrap_or_else(|p| p.into_inner());
                return match held.count {
                    Some(count) => respond_for_shards(&held.stores, count, path, query),
                    None => (503, TEXT, "state is not ready yet\n".into()),
                };
            };
            match query_state(store, path, query) {
                Ok(Some(body)) => (200, JSON, body),
                Ok(None) if path.starts_with("/state/") => {
                    let key = decode_path(&path["/state/".len()..]);
                    (404, JSON, serde_json::json!({ "key": key, "count": 0, "found": false }).to_string())
                }
                Ok(None) => (404, TEXT, NOT_FOUND.into()),
                Err(e) => error_answer(&e),
            }
        }
    }
}

/// `/state/{key}` and `/top` of a --scale-out host: from the shards it holds, each answer
/// naming them; a key counted in a shard held by another host is a 404 naming that shard.
fn respond_for_shards(
    stores: &BTreeMap<i32, Store>,
    count: i32,
    path: &str,
    query: &str,
) -> (u16, &'static str, String) {
    let held: Vec<i32> = stores.keys().copied().collect();
    let answer = (|| -> Result<Option<(u16, serde_json::Value)>> {
        let window = window_param(query)?;
        if let Some(key) = path.strip_prefix("/state/") {
            let key = decode_path(key);
            // A windowed counter is placed by its windowed key (stage A keys its deltas so).
            let state_key = crate::window::counter_key(window, key.as_bytes());
            let shard = crate::state::shard_of(&state_key, count);
            let Some(store) = stores.get(&shard) else {
                let error = format!("`{key}` is counted in shard {shard}, which another host holds");
                let body =
                    serde_json::json!({ "key": key, "found": false, "shard": shard, "shards": held, "error": error });
                return Ok(Some((404, body)));
            };
            let found = store.count(&state_key)?;
            let body =
                serde_json::json!({ "key": key, "count": found, "found": found > 0, "shard": shard, "shards": held });
            return Ok(Some((if found > 0 { 200 } else { 404 }, body)));
        }
        if path == "/top" {
            let stores: Vec<&Store> = stores.values().collect();
            let top = top_of(&stores, top_n(query)?, window)?;
            return Ok(Some((200, serde_json::json!({ "top": top, "shards": held }))));
        }
        Ok(None)
    })();
    match answer {
        Ok(Some((status, body))) => (status, JSON, body.to_string()),
        Ok(None) => (404, TEXT, NOT_FOUND.into()),
        Err(e) => error_answer(&e),
    }
}

/// A counter as the store yields it: (key, count).
type Counter = (Box<[u8]>, u64);

fn query_state(store: &Store, path: &str, query: &str) -> Result<Option<String>> {
    let window = window_param(query)?;
    if let Some(key) = path.strip_prefix("/state/") {
        let key = decode_path(key);
        // A processor's value (as `host dump` shows it), else a counter.
        if let Some(value) = store.value(&crate::guest::processor::view::value_key(key.as_bytes()))? {
            let (field, shown) = crate::guest::processor::shown(&value);
            let mut answer = serde_json::json!({ "key": key });
            answer[field] = shown;
            return Ok(Some(answer.to_string()));
        }
        let state_key = crate::window::counter_key(window, key.as_bytes());
        return Ok(match store.count(&state_key)? {
            0 => None,
            count => Some(serde_json::json!({ "key": key, "count": count }).to_string()),
        });
    }
    if path == "/top" {
        let top = top_of(&[store], top_n(query)?, window)?;
        return Ok(Some(serde_json::json!({ "top": top }).to_string()));
    }
    Ok(None)
}

/// `window=START_MS`: the window a query is about (with --window).
fn window_param(query: &str) -> Result<Option<i64>> {
    let value = query.split('&').find_map(|pair| pair.strip_prefix("window")?.strip_prefix('='));
    let parse =
        |v: &str| v.parse().map_err(|_| BadRequest(format!("window={v}: a window start in ms, e.g. 1764547200000")));
    Ok(value.map(parse).transpose()?)
}

/// `/top`'s `n` (default 10, at most 10,000).
fn top_n(query: &str) -> Result<usize> {
    let value = query.split('&').find_map(|pair| pair.strip_prefix("n="));
    let parse = |v: &str| v.parse::<usize>().map_err(|_| BadRequest(format!("n={v}: a whole number from 0 to 10000")));
    Ok(value.map(parse).transpose()?.unwrap_or(10).min(10_000))
}

/// The `n` largest counters of `stores` (of the window starting at `window`), by count then key.
fn top_of(stores: &[&Store], n: usize, window: Option<i64>) -> Result<Vec<serde_json::Value>> {
    let mut all: Vec<(String, u64)> = Vec::new();
    for store in stores {
        let counts: Box<dyn Iterator<Item = Result<Counter>>> = match window {
            Some(start) => Box::new(store.window_counts(start)),
            None => Box::new(store.counts()),
        };
        for item in counts {
            let (key, count) = item?;
            all.push((String::from_utf8_lossy(&key).into_owned(), count));
        }
    }
    all.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    all.truncate(n);
    Ok(all.into_iter().map(|(key, count)| serde_json::json!({ "key": key, "count": count })).collect())
}

/// Percent-decodes a URL path segment (keys may hold spaces and any UTF-8).
fn decode_path(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let hex = |b: u8| (b as char).to_digit(16);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(high), Some(low)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push((high * 16 + low) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_are_percent_decoded() {
        assert_eq!(decode_path("flat%20white"), "flat white");
        assert_eq!(decode_path("caf%C3%A9"), "café");
        assert_eq!(decode_path("latte"), "latte");
        assert_eq!(decode_path("100%"), "100%");
        assert_eq!(decode_path("a%2"), "a%2");
    }
}
