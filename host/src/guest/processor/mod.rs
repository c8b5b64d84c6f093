//! A processor guest (`wit/processor/processor.wit`): business logic that keeps any value
//! per key and emits records to named outputs, through host calls ([`view`]). Loading,
//! validating and calling it; nothing here knows about Kafka. The safety rails are the
//! counting guest's (WASI with nothing granted, a memory cap, a deadline per call; a trap
//! re-creates the instance), plus the limits of [`view`].
//!
//! One `process` call per record: a refused or trapping record then leaves no write and no
//! emit behind, whatever the others of its batch did.

pub mod thread;
pub mod view;

use std::path::{Path, PathBuf};

use anyhow::{Result, anyhow, bail};
use wasmtime::component::HasSelf;
use wasmtime::{Engine, Store, StoreLimitsBuilder};
use wasmtime_wasi::{WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtxView, WasiHttpView};

use super::sandbox::{self, GuestState};
use super::{Compiled, Limits, LoadInfo, describe_trap, semver_compatible};
use view::{Emit, View};

mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit/processor",
        world: "processor-guest",
        // Host calls may trap: a record past its state-operation budget.
        imports: { default: trappable },
    });
}

use bindings::streamhost::processor::{output, state, tables, timers, types};
pub use types::{Header, InputRecord, TimeKind};
use view::Clock;

/// The processor WIT package this host speaks.
pub const PACKAGE: &str = "streamhost:processor";
pub const VERSION: &str = "0.1.0";

/// Default most state operations one record may make (`--max-state-ops`).
pub const DEFAULT_STATE_OPS: u64 = 100_000;

/// Most timers one batch fires (the rest fire with the next batch): a timer that sets
/// itself again as due must not hold the batch forever.
const MAX_TIMERS_PER_BATCH: usize = 10_000;

/// True when a compiled component exports the processor interface (of any version).
pub(crate) fn is_processor(info: &LoadInfo) -> bool {
    info.exports.iter().any(|e| e.starts_with(&format!("{PACKAGE}/processor@")))
}

/// A processor's value as people and programs read it (`host dump`, `/state/{key}`): the JSON
/// itself when it is JSON, else text when it is UTF-8, else base64; with the field to put it
/// under (`value`, `value_text`, `value_base64`).
pub fn shown(bytes: &[u8]) -> (&'static str, serde_json::Value) {
    use base64::Engine as _;
    if let Ok(json) = serde_json::from_slice::<serde_json::Value>(bytes) {
        return ("value", json);
    }
    match std::str::from_utf8(bytes) {
        Ok(text) => ("value_text", text.into()),
        Err(_) => ("value_base64", base64::engine::general_purpose::STANDARD.encode(bytes).into()),
    }
}

/// What tables' topics got since the last look: per table name, its rows and the positions
/// they reach.
pub type TableUpdates = Vec<(String, Vec<crate::state::Change>)>;

/// What the guest needs from a run.
#[derive(Debug, Clone, PartialEq)]
pub struct Description {
    pub outputs: Vec<String>,
    pub tables: Vec<String>,
    pub state_version: u32,
}

/// What one batch did: the last write per key (`None`: deleted), the emits in order, the
/// refused records by index with why, and the timers it fired (with why each that failed did).
#[derive(Debug, Default)]
pub struct BatchEffects {
    pub writes: Vec<view::Write>,
    pub emits: Vec<Emit>,
    pub rejected: Vec<(usize, String)>,
    pub timers_fired: u64,
    pub timer_failures: Vec<String>,
}

/// Per-instance state: the sandbox, and what the guest's host calls see.
pub struct ProcessorState {
    sandbox: GuestState,
    view: View,
}

pub struct ProcessorGuest {
    path: PathBuf,
    engine: Engine,
    pre: bindings::ProcessorGuestPre<ProcessorState>,
    limits: Limits,
    store: Store<ProcessorState>,
    live: bindings::ProcessorGuest,
    description: Description,
    /// Traps since load (each one re-created the instance).
    pub traps: u64,
    pub info: LoadInfo,
}

impl ProcessorGuest {
    pub(crate) fn from_compiled(path: &Path, compiled: Compiled, limits: Limits) -> Result<ProcessorGuest> {
        let Compiled { engine, component, info } = compiled;
        check_interface(path, &info)?;
        let mut linker = sandbox::linker::<ProcessorState>(&engine)?;
        bindings::ProcessorGuest::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)
            .map_err(|e| anyhow!("linking the processor's host calls: {e:#}"))?;
        let pre = linker
            .instantiate_pre(&component)
            .map_err(|e| anyhow!("guest {} imports something this host cannot provide ({e:#})", path.display()))?;
        let pre = bindings::ProcessorGuestPre::new(pre).map_err(|e| {
            anyhow!(
                "guest {} exports {PACKAGE}/processor but its functions do not match this host's WIT ({e:#}); \
                 rebuild it against wit/processor of this host",
                path.display()
            )
        })?;
        let (mut store, live) = instantiate(&engine, &pre, &limits, View::default())?;
        store.set_epoch_deadline(ticks(&limits));
        let described = live
            .streamhost_processor_processor()
            .call_describe(&mut store)
            .map_err(|trap| anyhow!("guest {} trapped in describe: {}", path.display(), describe_trap(&trap)))?;
        let description = Description {
            outputs: described.outputs,
            tables: described.tables,
            state_version: described.state_version,
        };
        store.data_mut().view = View::new(&description.outputs, DEFAULT_STATE_OPS);
        Ok(ProcessorGuest { path: path.to_owned(), engine, pre, limits, store, live, description, traps: 0, info })
    }

    pub fn describe(&self) -> String {
        self.path.display().to_string()
    }

    pub fn description(&self) -> &Description {
        &self.description
    }

    /// The store the guest's state lives in (until set: empty state, as `host test` has), and
    /// its tables' copies by name.
    pub fn set_state(
        &mut self,
        store: crate::state::Store,
        tables: std::collections::BTreeMap<String, crate::state::Store>,
        max_state_ops: u64,
    ) {
        let view = &mut self.store.data_mut().view;
        *view = View::new(&self.description.outputs, max_state_ops);
        view.set_base(store);
        view.set_tables(tables);
    }

    /// The tables' copies alone (`host test`: state starts empty).
    pub fn set_tables(&mut self, tables: std::collections::BTreeMap<String, crate::state::Store>) {
        self.store.data_mut().view.set_tables(tables);
    }

    /// What the tables' topics got, applied between two batches.
    pub fn update_tables(&mut self, updates: TableUpdates) -> Result<()> {
        for (name, changes) in updates {
            self.store.data_mut().view.update_table(&name, changes)?;
        }
        Ok(())
    }

    /// Runs every record through `process`, then the timers due (stream time as the records
    /// moved it, the wall clock at `now_ms`), as batch `seq`. `Err` only when the host cannot
    /// go on (state unreadable, no new instance).
    pub fn process_batch(&mut self, seq: u64, records: &[InputRecord], now_ms: i64) -> Result<BatchEffects> {
        let mut effects = BatchEffects::default();
        for (index, record) in records.iter().enumerate() {
            let call = |guest: &bindings::ProcessorGuest, store: &mut Store<ProcessorState>| {
                guest.streamhost_processor_processor().call_process(store, record)
            };
            if let Err(reason) = self.call(call)? {
                effects.rejected.push((index, reason));
            }
            // Stream-time timers fire as soon as a record moves stream time to them, before
            // the next record: the same whatever the batches are.
            let view = &mut self.store.data_mut().view;
            if view.advance_stream_time(record.timestamp).map_err(|e| self.fatal(e))? {
                self.fire(Clock::Stream, record.timestamp, &mut effects)?;
            }
        }
        self.fire(Clock::Wall, now_ms, &mut effects)?;
        let view = &mut self.store.data_mut().view;
        (effects.writes, effects.emits) = view.finish_batch(seq);
        Ok(effects)
    }

    /// Calls `on-timer` for every timer on `clock` due at `now`, earliest first (at most
    /// `MAX_TIMERS_PER_BATCH` per batch: the rest with the next).
    fn fire(&mut self, clock: Clock, now: i64, effects: &mut BatchEffects) -> Result<()> {
        while effects.timers_fired < MAX_TIMERS_PER_BATCH as u64 {
            let view = &mut self.store.data_mut().view;
            let Some((key, at)) = view.next_due(clock, now).map_err(|e| self.fatal(e))? else { break };
            self.store.data_mut().view.take_timer(&key, clock).map_err(|e| self.fatal(e))?;
            effects.timers_fired += 1;
            let kind = match clock {
                Clock::Stream => TimeKind::StreamTime,
                Clock::Wall => TimeKind::WallClock,
            };
            let call = |guest: &bindings::ProcessorGuest, store: &mut Store<ProcessorState>| {
                guest.streamhost_processor_processor().call_on_timer(store, &key, at, kind)
            };
            if let Err(reason) = self.call(call)? {
                effects.timer_failures.push(format!("timer {} at {at}: {reason}", String::from_utf8_lossy(&key)));
            }
        }
        Ok(())
    }

    /// One guest call as one unit of effects: kept if it returns `ok`, dropped (with why) if
    /// it returns `err` or traps. `Err` only when the host cannot go on.
    fn call(
        &mut self,
        call: impl FnOnce(&bindings::ProcessorGuest, &mut Store<ProcessorState>) -> wasmtime::Result<Result<(), String>>,
    ) -> Result<Result<(), String>> {
        self.store.data_mut().view.begin_record();
        self.store.set_epoch_deadline(ticks(&self.limits));
        match call(&self.live, &mut self.store) {
            Ok(Ok(())) => {
                self.store.data_mut().view.keep_record();
                Ok(Ok(()))
            }
            Ok(Err(reason)) => {
                self.store.data_mut().view.drop_record();
                Ok(Err(reason))
            }
            Err(trap) => {
                if let Some(failure) = self.store.data_mut().view.failure.take() {
                    return Err(failure);
                }
                self.store.data_mut().view.drop_record();
                let reason = match trap.downcast_ref::<view::OverBudget>() {
                    Some(over) => over.to_string(),
                    None => format!("guest trapped: {}", describe_trap(&trap)),
                };
                self.recover(&trap)?;
                Ok(Err(reason))
            }
        }
    }

    /// A state read that failed outside a guest call: the host cannot go on.
    fn fatal(&mut self, trap: wasmtime::Error) -> anyhow::Error {
        self.store.data_mut().view.failure.take().unwrap_or_else(|| anyhow!("{trap:#}"))
    }

    /// When the earliest wall-clock timer is due (`None`: there is none), as of the batches
    /// processed so far.
    pub fn next_wall_clock_timer(&mut self) -> Result<Option<i64>> {
        self.store.data_mut().view.earliest(Clock::Wall).map_err(|e| self.fatal(e))
    }

    /// Batches up to `seq` are in the store.
    pub fn applied(&mut self, seq: u64) {
        self.store.data_mut().view.applied(seq);
    }

    /// Batches not in the store never will be.
    pub fn rewind(&mut self) {
        self.store.data_mut().view.rewind();
    }

    /// After a trap the store is poisoned: instantiate afresh, keeping what the host calls see.
    fn recover(&mut self, trap: &wasmtime::Error) -> Result<()> {
        self.traps += 1;
        tracing::warn!(guest = %self.path.display(), trap = %describe_trap(trap), "guest trapped; re-creating its instance");
        let view = std::mem::take(&mut self.store.data_mut().view);
        let (store, live) = instantiate(&self.engine, &self.pre, &self.limits, view)?;
        self.store = store;
        self.live = live;
        Ok(())
    }
}

fn ticks(limits: &Limits) -> u64 {
    (limits.call_timeout.as_millis() / super::EPOCH_TICK.as_millis()).max(1) as u64
}

fn instantiate(
    engine: &Engine,
    pre: &bindings::ProcessorGuestPre<ProcessorState>,
    limits: &Limits,
    view: View,
) -> Result<(Store<ProcessorState>, bindings::ProcessorGuest)> {
    let sandbox =
        GuestState::new(StoreLimitsBuilder::new().memory_size(limits.memory_bytes).trap_on_grow_failure(true).build());
    let mut store = Store::new(engine, ProcessorState { sandbox, view });
    store.limiter(|s| &mut s.sandbox.limits);
    store.set_epoch_deadline(u64::MAX / 2);
    let live = pre.instantiate(&mut store).map_err(|e| anyhow!("instantiating the guest: {e:#}"))?;
    Ok((store, live))
}

/// The processor export at a version this host runs, and imports of WASI and this
/// package only.
fn check_interface(path: &Path, info: &LoadInfo) -> Result<()> {
    let prefix = format!("{PACKAGE}/processor@");
    let found = info.exports.iter().find_map(|e| e.strip_prefix(&prefix)).unwrap_or("");
    let version = found.split_whitespace().next().unwrap_or("");
    if !semver_compatible(version, VERSION) {
        bail!(
            "guest {} was built against {PACKAGE}@{version}, but this host runs {VERSION} or an older 0.1.x; \
             rebuild the guest against this host's wit/processor",
            path.display()
        );
    }
    let own = format!("{PACKAGE}/");
    let refused: Vec<&String> =
        info.imports.iter().filter(|name| !sandbox::is_allowed_import(name) && !name.starts_with(&own)).collect();
    if !refused.is_empty() {
        bail!(
            "guest {} imports {}; a processor may import only WASI (wasi:*, with nothing granted) and \
             {PACKAGE}'s own interfaces. Remove the dependency that pulls it in",
            path.display(),
            refused.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
        );
    }
    Ok(())
}

impl WasiView for ProcessorState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        self.sandbox.ctx()
    }
}

impl WasiHttpView for ProcessorState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        self.sandbox.http()
    }
}

impl types::Host for ProcessorState {}

impl state::Host for ProcessorState {
    fn get(&mut self, key: Vec<u8>) -> wasmtime::Result<Option<Vec<u8>>> {
        self.view.get(&key)
    }

    fn put(&mut self, key: Vec<u8>, value: Vec<u8>) -> wasmtime::Result<Result<(), String>> {
        self.view.put(key, value)
    }

    fn delete(&mut self, key: Vec<u8>) -> wasmtime::Result<()> {
        self.view.delete(key)
    }

    fn range(&mut self, start: Vec<u8>, end: Option<Vec<u8>>, limit: u32) -> wasmtime::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.view.range(&start, end.as_deref(), limit)
    }
}

impl tables::Host for ProcessorState {
    fn lookup(&mut self, name: String, key: Vec<u8>) -> wasmtime::Result<Result<Option<Vec<u8>>, String>> {
        self.view.lookup(&name, &key)
    }
}

impl timers::Host for ProcessorState {
    fn set_timer(&mut self, key: Vec<u8>, at: i64, kind: TimeKind) -> wasmtime::Result<Result<(), String>> {
        self.view.set_timer(key, at, clock(kind))
    }

    fn cancel_timer(&mut self, key: Vec<u8>, kind: TimeKind) -> wasmtime::Result<()> {
        self.view.cancel_timer(key, clock(kind))
    }
}

fn clock(kind: TimeKind) -> Clock {
    match kind {
        TimeKind::StreamTime => Clock::Stream,
        TimeKind::WallClock => Clock::Wall,
    }
}

impl output::Host for ProcessorState {
    fn emit(
        &mut self,
        name: String,
        key: Option<Vec<u8>>,
        value: Option<Vec<u8>>,
        headers: Vec<Header>,
    ) -> wasmtime::Result<Result<(), String>> {
        let headers = headers.into_iter().map(|h| (h.key, h.value)).collect();
        self.view.emit(Emit { output: name, key, value, headers })
    }
}
