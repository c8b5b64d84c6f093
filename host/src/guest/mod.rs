//! The guest: loading, validating and calling a WebAssembly component that exports
//! `streamhost:counter/counter` (see `wit/counter.wit`). Nothing here knows about Kafka.
//!
//! Safety rails: the guest may import only WASI, with nothing granted (see `sandbox.rs`),
//! its linear memory is capped, and every call has a deadline (epoch interruption). A call
//! that traps poisons its `Store`, so the instance is re-created from the pre-instantiated
//! component; a batch that traps is retried one record at a time, so only the records that
//! trap are rejected. A batch result that breaks the contract (a rejection index out of
//! range, a key over [`MAX_KEY_BYTES`]) is redone record by record the same way.
//!
//! [`thread`] runs it beside the engine's I/O; [`reload`] swaps in a new component.

pub mod processor;
pub mod reload;
pub mod sandbox;
pub mod thread;

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use wasmtime::component::{Component, InstancePre, types::ComponentItem};
use wasmtime::{Config, Engine, Store, StoreLimitsBuilder};

use crate::{WIT_PACKAGE, WIT_VERSION};
use sandbox::GuestState;

mod bindings {
    // The larger world: `event-time` is looked up separately, and only when a guest has it.
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "timed-counting-guest",
    });
}

use bindings::exports::streamhost::counter::{counter, event_time};
pub use counter::{BatchResult, Delta, Entry, Rejection};

/// How often the deadline clock ticks; call deadlines are whole ticks.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Longest key a guest may count under (`wit/counter.wit`). Keys become changelog record
/// keys, and one the broker refuses would stall the pipeline; a record with a longer key
/// is rejected instead.
pub const MAX_KEY_BYTES: usize = 64 * 1024;

/// What one record became: its deltas, or why it was rejected.
pub type Outcome = Result<Vec<Delta>, String>;

/// Records packed for `process-batch`: their bytes back to back and where each one ends,
/// so a batch crosses into the guest as one copy.
#[derive(Default)]
pub struct Records {
    data: Vec<u8>,
    ends: Vec<usize>,
}

impl Records {
    pub fn push(&mut self, value: &[u8]) {
        self.data.extend_from_slice(value);
        self.ends.push(self.data.len());
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    pub fn get(&self, index: usize) -> &[u8] {
        &self.data[self.start(index)..self.ends[index]]
    }

    fn start(&self, index: usize) -> usize {
        if index == 0 { 0 } else { self.ends[index - 1] }
    }

    /// Consecutive ranges of records of at most `max_bytes` each (a record larger than that
    /// alone): calls that fit the guest's memory however large the batch.
    pub fn parts(&self, max_bytes: usize) -> impl Iterator<Item = Range<usize>> + '_ {
        let mut start = 0;
        std::iter::from_fn(move || {
            if start >= self.len() {
                return None;
            }
            let (mut end, mut bytes) = (start, 0);
            while end < self.len() && (end == start || bytes + self.get(end).len() <= max_bytes) {
                bytes += self.get(end).len();
                end += 1;
            }
            let part = start..end;
            start = end;
            Some(part)
        })
    }

    /// The bytes and the ends (relative to those bytes) of the records in `range`: the
    /// arguments of `process-batch`.
    pub fn packed(&self, range: Range<usize>) -> (&[u8], Vec<u32>) {
        if range.is_empty() {
            return (&[], Vec::new());
        }
        let base = self.start(range.start);
        let bytes = &self.data[base..self.ends[range.end - 1]];
        (bytes, self.ends[range].iter().map(|end| (end - base) as u32).collect())
    }
}

/// `event-times`' answer over a batch: one time per record (`None`: not known).
#[derive(Debug, Default)]
pub struct EventTimes {
    pub times: Vec<Option<i64>>,
    /// (records given, times answered) of each call whose answer broke the contract (one
    /// time per record given); its records have no time in `times`.
    pub wrong_lengths: Vec<(usize, usize)>,
}

/// What the pipeline needs from business logic. [`Guest`] is the implementation; the
/// benchmark also compiles the same logic natively against it, as a baseline.
pub trait Counter {
    /// Names the logic in logs (the guest's path).
    fn describe(&self) -> String;
    /// The deltas of the accepted records, summed per key (a key may appear more than once
    /// here: the caller sums again), and the rejected records by increasing index into
    /// `records`. `Err` only when the logic cannot run at all.
    fn process_batch(&mut self, records: &Records) -> Result<BatchResult>;
    /// Ranks entries for the board, best first; at most `n`.
    fn top_n(&mut self, counts: &[Entry], n: u32) -> Result<Vec<Entry>>;
    /// The event time (ms) of each record, where the logic knows one; `None` when it does
    /// not export `event-time` at all.
    fn event_times(&mut self, _records: &Records) -> Result<Option<EventTimes>> {
        Ok(None)
    }
    /// True when the logic exports `event-time` (WIT 0.2.1).
    fn has_event_time(&self) -> bool {
        false
    }
}

impl Counter for Guest {
    fn describe(&self) -> String {
        self.path.display().to_string()
    }

    fn process_batch(&mut self, records: &Records) -> Result<BatchResult> {
        Guest::process_batch(self, records)
    }

    fn top_n(&mut self, counts: &[Entry], n: u32) -> Result<Vec<Entry>> {
        Guest::top_n(self, counts, n)
    }

    fn event_times(&mut self, records: &Records) -> Result<Option<EventTimes>> {
        Guest::event_times(self, records)
    }

    fn has_event_time(&self) -> bool {
        self.exports.event_time.is_some()
    }
}

#[derive(Debug, Clone)]
pub struct Limits {
    pub memory_bytes: usize,
    pub call_timeout: Duration,
}

/// Where a guest comes from and how it runs: what [`Guest::load`] needs, kept to load it again
/// (hot swap).
#[derive(Debug, Clone)]
pub struct Source {
    pub path: std::path::PathBuf,
    pub limits: Limits,
    /// Where compiled guests are kept (`None`: compile every time).
    pub cache: Option<std::path::PathBuf>,
}

impl Source {
    pub fn load(&self) -> Result<Guest> {
        Guest::load(&self.path, self.limits.clone(), self.cache.as_deref())
    }
}

/// How a guest was loaded, for `host check` and the logs.
#[derive(Debug, Clone)]
pub struct LoadInfo {
    pub bytes: usize,
    /// Milliseconds to compile the component, or to load it from the cache.
    pub load_ms: f64,
    pub from_cache: bool,
    /// Exported interfaces, each with its functions: `name (f, g, ...)`.
    pub exports: Vec<String>,
    /// Imported interfaces (WASI only; nothing is granted through them).
    pub imports: Vec<String>,
}

/// Where the guest's exports are in its instances: `counter` always, `event-time` when the
/// guest has it (WIT 0.2.1; guests built against 0.2.0 do not).
struct Exports {
    counter: counter::GuestIndices,
    event_time: Option<event_time::GuestIndices>,
}

/// The exports of one live instance.
struct Live {
    counter: counter::Guest,
    event_time: Option<event_time::Guest>,
}

pub struct Guest {
    path: PathBuf,
    engine: Engine,
    pre: InstancePre<GuestState>,
    exports: Exports,
    limits: Limits,
    store: Store<GuestState>,
    live: Live,
    /// Traps since load (each one re-created the instance).
    pub traps: u64,
    pub info: LoadInfo,
}

impl Guest {
    /// Loads and validates `path`: it must be a component exporting the host's interface at
    /// the host's WIT version, and import nothing but WASI. With a `cache` dir, the compiled component
    /// is kept there (keyed by the file's SHA-256 and the engine's settings) and reused.
    pub fn load(path: &Path, limits: Limits, cache: Option<&Path>) -> Result<Guest> {
        let Compiled { engine, component, info } = compile(path, cache)?;
        Guest::from_compiled(path, engine, component, info, limits)
    }

    fn from_compiled(
        path: &Path,
        engine: Engine,
        component: Component,
        info: LoadInfo,
        limits: Limits,
    ) -> Result<Guest> {
        check_interface(path, &engine, &component)?;
        let linker = sandbox::linker(&engine)?;
        let instance_pre = linker.instantiate_pre(&component).map_err(|e| {
            anyhow!(
                "guest {} imports something this host cannot provide ({e:#}); the host offers \
                 WASI 0.2 only",
                path.display()
            )
        })?;
        let mismatch = |e: wasmtime::Error| {
            anyhow!(
                "guest {} exports {} but its functions do not match this host's WIT ({e:#}); \
                 rebuild it against wit/counter.wit of this host",
                path.display(),
                expected_export()
            )
        };
        let exports = Exports {
            counter: counter::GuestIndices::new(&instance_pre).map_err(mismatch)?,
            event_time: if info.exports.iter().any(|e| e.starts_with(&format!("{WIT_PACKAGE}/event-time@"))) {
                Some(event_time::GuestIndices::new(&instance_pre).map_err(mismatch)?)
            } else {
                None
            },
        };
        let (store, live) = instantiate(&engine, &instance_pre, &exports, &limits)?;
        Ok(Guest { path: path.to_owned(), engine, pre: instance_pre, exports, limits, store, live, traps: 0, info })
    }

    /// Runs `process-batch` over `records`, in calls of at most an eighth of the guest's
    /// memory cap in record bytes (a batch of large records must not trap for lack of memory
    /// that each record alone fits in). `Err` only when a new instance cannot be made.
    pub fn process_batch(&mut self, records: &Records) -> Result<BatchResult> {
        let mut total = BatchResult { deltas: Vec::new(), rejected: Vec::new() };
        for Range { start, end } in records.parts(self.limits.memory_bytes / 8) {
            let part = self.process_chunk(records, start..end)?;
            if start == 0 && end == records.len() {
                return Ok(part);
            }
            total.deltas.extend(part.deltas);
            total.rejected.extend(part.rejected.into_iter().map(|r| Rejection { index: r.index + start as u32, ..r }));
        }
        Ok(total)
    }

    /// One `process-batch` call (indexes relative to `range`); if it traps or breaks the
    /// contract, the records are re-run one by one so that only the bad ones are rejected.
    fn process_chunk(&mut self, records: &Records, range: Range<usize>) -> Result<BatchResult> {
        let (data, ends) = records.packed(range.clone());
        self.arm_deadline();
        match self.live.counter.call_process_batch(&mut self.store, data, &ends) {
            Ok(result) => match contract_breach(&result, ends.len()) {
                None => return Ok(result),
                Some(breach) => {
                    tracing::warn!(
                        records = ends.len(),
                        breach,
                        "guest's batch result breaks the contract; retrying record by record"
                    )
                }
            },
            Err(trap) => {
                self.recover(&trap)?;
                tracing::warn!(records = ends.len(), "guest trapped on a batch; retrying record by record");
            }
        }
        let mut result = BatchResult { deltas: Vec::new(), rejected: Vec::new() };
        for (index, record) in range.map(|i| records.get(i)).enumerate() {
            let outcome = self.process(record)?.and_then(|deltas| match long_key(&deltas) {
                Some(reason) => Err(reason),
                None => Ok(deltas),
            });
            match outcome {
                Ok(deltas) => result.deltas.extend(deltas),
                Err(reason) => result.rejected.push(Rejection { index: index as u32, reason }),
            }
        }
        Ok(result)
    }

    /// Runs `event-times` over `records` (in parts, as `process_batch`); `None` when the
    /// guest does not export it. A part whose call traps, or whose answer breaks the
    /// contract (another number of times than records), gives its records no event time
    /// (the host then uses Kafka timestamps); a trap is logged here, a broken answer is
    /// left to the caller ([`EventTimes::wrong_lengths`]).
    pub fn event_times(&mut self, records: &Records) -> Result<Option<EventTimes>> {
        if self.live.event_time.is_none() {
            return Ok(None);
        }
        let mut times = Vec::with_capacity(records.len());
        let mut wrong_lengths = Vec::new();
        for part in records.parts(self.limits.memory_bytes / 8) {
            let (data, ends) = records.packed(part);
            self.arm_deadline();
            let call =
                self.live.event_time.as_ref().expect("checked above").call_event_times(&mut self.store, data, &ends);
            match call {
                Ok(part) if part.len() == ends.len() => times.extend(part),
                Ok(part) => {
                    wrong_lengths.push((ends.len(), part.len()));
                    times.extend(std::iter::repeat_n(None, ends.len()));
                }
                Err(trap) => {
                    self.recover(&trap)?;
                    tracing::warn!(records = ends.len(), "guest trapped in event-times; using Kafka timestamps");
                    times.extend(std::iter::repeat_n(None, ends.len()));
                }
            }
        }
        Ok(Some(EventTimes { times, wrong_lengths }))
    }

    /// Runs `process` on one record; a trap rejects the record (and re-creates the instance).
    pub fn process(&mut self, value: &[u8]) -> Result<Outcome> {
        self.arm_deadline();
        match self.live.counter.call_process(&mut self.store, value) {
            Ok(outcome) => Ok(outcome),
            Err(trap) => {
                self.recover(&trap)?;
                Ok(Err(format!("guest trapped: {}", describe_trap(&trap))))
            }
        }
    }

    /// Runs `top-n`. A trap here is an error for the caller (the board is skipped).
    pub fn top_n(&mut self, counts: &[Entry], n: u32) -> Result<Vec<Entry>> {
        self.arm_deadline();
        match self.live.counter.call_top_n(&mut self.store, counts, n) {
            Ok(top) => Ok(top),
            Err(trap) => {
                self.recover(&trap)?;
                Err(anyhow!("guest trapped in top-n: {}", describe_trap(&trap)))
            }
        }
    }

    fn arm_deadline(&mut self) {
        let ticks = (self.limits.call_timeout.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64;
        self.store.set_epoch_deadline(ticks);
    }

    /// After a trap the store is poisoned: drop it and instantiate afresh.
    fn recover(&mut self, trap: &wasmtime::Error) -> Result<()> {
        self.traps += 1;
        tracing::warn!(guest = %self.path.display(), trap = %describe_trap(trap), "guest trapped; re-creating its instance");
        let (store, live) = instantiate(&self.engine, &self.pre, &self.exports, &self.limits)?;
        self.store = store;
        self.live = live;
        Ok(())
    }
}

/// A component compiled (or loaded from the cache) for its own engine, whichever world it is.
pub(crate) struct Compiled {
    pub engine: Engine,
    pub component: Component,
    pub info: LoadInfo,
}

/// Reads `path`, checks that it is a component, and compiles it (or reuses its compiled form
/// from `cache`) for an engine with call deadlines.
pub(crate) fn compile(path: &Path, cache: Option<&Path>) -> Result<Compiled> {
    let bytes = std::fs::read(path).with_context(|| format!("reading guest {}", path.display()))?;
    check_is_component(path, &bytes)?;

    let mut config = Config::new();
    config.epoch_interruption(true);
    if std::env::var("STREAMHOST_GUEST_PROFILER").is_ok_and(|v| v == "perfmap") {
        // For `perf record`: names the guest's compiled functions in /tmp/perf-<pid>.map.
        config.profiler(wasmtime::ProfilingStrategy::PerfMap);
    }
    let engine = Engine::new(&config).map_err(|e| anyhow!("{e}"))?;
    start_epoch_ticker(&engine);

    let started = Instant::now();
    let (component, from_cache) = compile_or_reuse(path, &engine, &bytes, cache)?;
    let load_ms = started.elapsed().as_secs_f64() * 1000.0;
    tracing::info!(guest = %path.display(), bytes = bytes.len(), load_ms = load_ms as u64, from_cache, "guest loaded");
    let info = LoadInfo {
        bytes: bytes.len(),
        load_ms,
        from_cache,
        exports: describe_exports(&engine, &component),
        imports: component.component_type().imports(&engine).map(|(name, _)| name.to_owned()).collect(),
    };
    Ok(Compiled { engine, component, info })
}

/// A guest of either world: the host tells them apart by what the component exports.
pub enum AnyGuest {
    /// `streamhost:counter`: counters only.
    Counting(Guest),
    /// `streamhost:processor`: keyed state and outputs.
    Processor(processor::ProcessorGuest),
}

impl Source {
    /// Loads the guest, of whichever world it is.
    pub fn load_any(&self) -> Result<AnyGuest> {
        let compiled = compile(&self.path, self.cache.as_deref())?;
        if processor::is_processor(&compiled.info) {
            return Ok(AnyGuest::Processor(processor::ProcessorGuest::from_compiled(
                &self.path,
                compiled,
                self.limits.clone(),
            )?));
        }
        let Compiled { engine, component, info } = compiled;
        Ok(AnyGuest::Counting(Guest::from_compiled(&self.path, engine, component, info, self.limits.clone())?))
    }
}

fn instantiate(
    engine: &Engine,
    pre: &InstancePre<GuestState>,
    exports: &Exports,
    limits: &Limits,
) -> Result<(Store<GuestState>, Live)> {
    let state =
        GuestState::new(StoreLimitsBuilder::new().memory_size(limits.memory_bytes).trap_on_grow_failure(true).build());
    let mut store = Store::new(engine, state);
    store.limiter(|s| &mut s.limits);
    store.set_epoch_deadline(u64::MAX / 2);
    let instance = pre.instantiate(&mut store).map_err(|e| anyhow!("instantiating the guest: {e:#}"))?;
    let counter = exports.counter.load(&mut store, &instance).map_err(|e| anyhow!("{e:#}"))?;
    let event_time = match &exports.event_time {
        Some(indices) => Some(indices.load(&mut store, &instance).map_err(|e| anyhow!("{e:#}"))?),
        None => None,
    };
    Ok((store, Live { counter, event_time }))
}

pub(crate) fn describe_trap(error: &wasmtime::Error) -> String {
    match error.downcast_ref::<wasmtime::Trap>() {
        Some(wasmtime::Trap::Interrupt) => "deadline exceeded (the call ran longer than --guest-timeout)".into(),
        Some(trap) => trap.to_string(),
        None => format!("{error:#}"),
    }
}

/// Ticks the engine's epoch so call deadlines fire; one thread per engine, for the process.
fn start_epoch_ticker(engine: &Engine) {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("guest-deadline".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        })
        .expect("spawning the guest deadline thread");
}

/// The component compiled from `bytes`, or its compiled form from `cache` when the same
/// bytes were compiled there before by an engine with the same settings. Returns whether it
/// came from the cache.
fn compile_or_reuse(path: &Path, engine: &Engine, bytes: &[u8], cache: Option<&Path>) -> Result<(Component, bool)> {
    let compile = || {
        Component::new(engine, bytes).map_err(|e| anyhow!("guest {} is not a valid component: {e:#}", path.display()))
    };
    let Some(dir) = cache else { return Ok((compile()?, false)) };
    let file = dir.join(format!("{}.cwasm", cache_key(engine, bytes)));
    if file.exists() {
        // SAFETY: the file is one this host wrote (below) from these very bytes, for an engine
        // with these settings (both are in its name); wasmtime checks the settings again.
        match unsafe { Component::deserialize_file(engine, &file) } {
            Ok(component) => return Ok((component, true)),
            Err(e) => tracing::warn!(file = %file.display(), error = %e, "ignoring an unusable cached component"),
        }
    }
    let component = compile()?;
    // A cache that cannot be written costs the next start a compile, nothing more.
    let written = component.serialize().map_err(|e| anyhow!("{e}")).and_then(|compiled| {
        std::fs::create_dir_all(dir)?;
        // Written whole under a unique name, then renamed: readers never see a partial file.
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let partial = dir.join(format!(".{}-{nanos}.partial", std::process::id()));
        std::fs::write(&partial, compiled)?;
        std::fs::rename(&partial, &file)?;
        Ok(())
    });
    if let Err(e) = written {
        tracing::warn!(dir = %dir.display(), error = %format!("{e:#}"), "could not cache the compiled guest");
    }
    Ok((component, false))
}

/// Hex SHA-256 of the component's bytes, the engine's compatibility settings and this host's
/// version.
fn cache_key(engine: &Engine, bytes: &[u8]) -> String {
    use sha2::Digest;
    use std::hash::Hash;
    struct Feed(sha2::Sha256);
    impl std::hash::Hasher for Feed {
        fn write(&mut self, bytes: &[u8]) {
            self.0.update(bytes);
        }
        fn finish(&self) -> u64 {
            0
        }
    }
    let mut feed = Feed(sha2::Sha256::new());
    feed.0.update(bytes);
    engine.precompile_compatibility_hash().hash(&mut feed);
    feed.0.update(env!("CARGO_PKG_VERSION").as_bytes());
    feed.0.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// `interface (function, ...)` for every export of the component.
fn describe_exports(engine: &Engine, component: &Component) -> Vec<String> {
    component
        .component_type()
        .exports(engine)
        .map(|(name, item)| match item.ty {
            ComponentItem::ComponentInstance(instance) => {
                let functions: Vec<&str> = instance
                    .exports(engine)
                    .filter(|(_, item)| matches!(item.ty, ComponentItem::ComponentFunc(_)))
                    .map(|(f, _)| f)
                    .collect();
                format!("{name} ({})", functions.join(", "))
            }
            _ => name.to_owned(),
        })
        .collect()
}

/// Why a `process-batch` result over `records` records cannot be trusted, if it cannot.
fn contract_breach(result: &BatchResult, records: usize) -> Option<String> {
    let mut previous = None;
    for r in &result.rejected {
        if r.index as usize >= records || previous.is_some_and(|p| r.index <= p) {
            return Some(format!("rejection index {} out of order or range (batch of {records})", r.index));
        }
        previous = Some(r.index);
    }
    long_key(&result.deltas)
}

/// Says so when a delta's key is longer than [`MAX_KEY_BYTES`].
fn long_key(deltas: &[Delta]) -> Option<String> {
    deltas
        .iter()
        .find(|d| d.key.len() > MAX_KEY_BYTES)
        .map(|d| format!("key of {} bytes is longer than the limit of {MAX_KEY_BYTES}", d.key.len()))
}

/// Whether a guest built against WIT `version` runs on a host of `host_version`: the same
/// compatibility line (major, or minor for 0.x, as Cargo and the component model read
/// semver) and not newer than the host.
pub(crate) fn semver_compatible(version: &str, host_version: &str) -> bool {
    let parse = |v: &str| -> Option<(u64, u64, u64)> {
        let mut parts = v.split('.').map(|p| p.parse::<u64>().ok());
        Some((parts.next()??, parts.next()??, parts.next()??))
    };
    let (Some(guest), Some(host)) = (parse(version), parse(host_version)) else { return false };
    let line = |(major, minor, _): (u64, u64, u64)| if major == 0 { (0, minor) } else { (major, 0) };
    line(guest) == line(host) && guest <= host
}

fn expected_export() -> String {
    format!("{WIT_PACKAGE}/counter@{WIT_VERSION}")
}

fn check_is_component(path: &Path, bytes: &[u8]) -> Result<()> {
    const MAGIC: &[u8] = b"\0asm";
    if bytes.len() < 8 || &bytes[..4] != MAGIC {
        bail!("guest {} is not a WebAssembly file (no \\0asm header)", path.display());
    }
    // Bytes 4..8: version 1 and layer 0 is a core module; a component has layer 1.
    if bytes[6..8] == [0, 0] {
        bail!(
            "guest {} is a core WebAssembly module, not a component. Build it as a component \
             exporting {} (e.g. target wasm32-unknown-unknown linked by wasm-component-ld, as \
             guests/.cargo/config.toml does, or `wasm-tools component new`)",
            path.display(),
            expected_export()
        );
    }
    Ok(())
}

/// Checks exports and imports by name, to say precisely what does not fit.
fn check_interface(path: &Path, engine: &Engine, component: &Component) -> Result<()> {
    let ty = component.component_type();
    let expected = expected_export();
    let exports: Vec<String> = ty.exports(engine).map(|(name, _)| name.to_owned()).collect();
    let unversioned = format!("{WIT_PACKAGE}/counter");
    let version_of = |export: &str| export.strip_prefix(&format!("{unversioned}@")).map(str::to_owned);
    if !exports.iter().filter_map(|e| version_of(e)).any(|v| semver_compatible(&v, WIT_VERSION)) {
        if let Some(found) = exports.iter().find(|e| e.starts_with(&format!("{unversioned}@")) || **e == unversioned) {
            let version = found.split_once('@').map(|(_, v)| v).unwrap_or("(none)");
            bail!(
                "guest {} was built against WIT version {version} ({found}), but this host expects \
                 {WIT_VERSION} or an older 0.2.x ({expected}); rebuild the guest against this host's wit/",
                path.display()
            );
        }
        bail!(
            "guest {} does not export {expected} (it exports: {}); a guest must implement the world \
             `counting-guest` of wit/counter.wit",
            path.display(),
            if exports.is_empty() { "nothing".to_owned() } else { exports.join(", ") }
        );
    }
    let imports: Vec<String> = ty
        .imports(engine)
        .map(|(name, item)| match item.ty {
            ComponentItem::ComponentInstance(_) => format!("{name} (interface)"),
            _ => name.to_owned(),
        })
        .collect();
    let refused: Vec<&String> = imports.iter().filter(|name| !sandbox::is_allowed_import(name)).collect();
    if !refused.is_empty() {
        bail!(
            "guest {} imports {}; a guest may import only WASI (wasi:*), and the host grants \
             nothing through it (no files, env, network or outgoing HTTP). Remove the dependency \
             that pulls it in",
            path.display(),
            refused.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(values: &[&str]) -> Records {
        let mut records = Records::default();
        values.iter().for_each(|v| records.push(v.as_bytes()));
        records
    }

    #[test]
    fn packed_ranges_are_relative_to_their_first_record() {
        let r = records(&["ab", "", "cde", "f"]);
        assert_eq!(r.packed(0..4), (&b"abcdef"[..], vec![2, 2, 5, 6]));
        assert_eq!(r.packed(2..4), (&b"cdef"[..], vec![3, 4]));
        assert_eq!(r.packed(1..2), (&b""[..], vec![0]));
        assert_eq!(r.packed(3..3), (&b""[..], vec![]));
        assert_eq!(r.get(2), b"cde");
    }

    #[test]
    fn parts_fit_the_byte_limit_and_cover_every_record_once() {
        let r = records(&["ab", "", "cde", "f", "ghijk"]);
        assert_eq!(r.parts(3).collect::<Vec<_>>(), [0..2, 2..3, 3..4, 4..5], "a large record stands alone");
        assert_eq!(r.parts(100).collect::<Vec<_>>(), vec![0..5]);
        assert_eq!(Records::default().parts(3).count(), 0);
    }

    #[test]
    fn batch_results_that_break_the_contract_are_caught() {
        let rejection = |index| Rejection { index, reason: "bad".into() };
        let delta = |key: String| Delta { key, amount: 1 };
        let ok = BatchResult { deltas: vec![delta("a".into())], rejected: vec![rejection(0), rejection(2)] };
        assert_eq!(contract_breach(&ok, 3), None);
        let out_of_range = BatchResult { deltas: vec![], rejected: vec![rejection(3)] };
        assert!(contract_breach(&out_of_range, 3).is_some());
        let repeated = BatchResult { deltas: vec![], rejected: vec![rejection(1), rejection(1)] };
        assert!(contract_breach(&repeated, 3).is_some());
        let long = BatchResult { deltas: vec![delta("k".repeat(MAX_KEY_BYTES + 1))], rejected: vec![] };
        assert!(contract_breach(&long, 3).unwrap().contains("longer than the limit"));
    }
}
