//! The guest: loading, validating and calling a WebAssembly component that exports
//! `streamhost:counter/counter` (see `wit/counter.wit`). Nothing here knows about Kafka.
//!
//! Safety rails: the guest gets no imports at all (no filesystem, clock, random or network),
//! its linear memory is capped, and every call has a deadline (epoch interruption). A call
//! that traps poisons its `Store`, so the instance is re-created from the pre-instantiated
//! component; a batch that traps is retried one record at a time, so only the records that
//! trap are rejected.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use wasmtime::component::{Component, Linker, types::ComponentItem};
use wasmtime::{Config, Engine, Store, StoreLimits, StoreLimitsBuilder};

use crate::{WIT_PACKAGE, WIT_VERSION};

mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "counting-guest",
    });
}

pub use bindings::exports::streamhost::counter::counter::{Delta, Entry};

/// How often the deadline clock ticks; call deadlines are whole ticks.
const EPOCH_TICK: Duration = Duration::from_millis(10);

/// What one record became: its deltas, or why it was rejected.
pub type Outcome = Result<Vec<Delta>, String>;

/// What the pipeline needs from business logic. [`Guest`] is the implementation; the
/// benchmark also compiles the same logic natively against it, as a baseline.
pub trait Counter {
    /// Names the logic in logs (the guest's path).
    fn describe(&self) -> String;
    /// One outcome per value, in order. `Err` only when the logic cannot run at all.
    fn process_batch(&mut self, values: &[Vec<u8>]) -> Result<Vec<Outcome>>;
    /// Ranks entries for the board, best first; at most `n`.
    fn top_n(&mut self, counts: &[Entry], n: u32) -> Result<Vec<Entry>>;
}

impl Counter for Guest {
    fn describe(&self) -> String {
        self.path.display().to_string()
    }

    fn process_batch(&mut self, values: &[Vec<u8>]) -> Result<Vec<Outcome>> {
        Guest::process_batch(self, values)
    }

    fn top_n(&mut self, counts: &[Entry], n: u32) -> Result<Vec<Entry>> {
        Guest::top_n(self, counts, n)
    }
}

#[derive(Debug, Clone)]
pub struct Limits {
    pub memory_bytes: usize,
    pub call_timeout: Duration,
}

struct GuestState {
    limits: StoreLimits,
}

pub struct Guest {
    path: PathBuf,
    engine: Engine,
    pre: bindings::CountingGuestPre<GuestState>,
    limits: Limits,
    store: Store<GuestState>,
    instance: bindings::CountingGuest,
    /// Traps since load (each one re-created the instance).
    pub traps: u64,
}

impl Guest {
    /// Loads and validates `path`: it must be a component exporting the host's interface at
    /// the host's WIT version, and import nothing.
    pub fn load(path: &Path, limits: Limits) -> Result<Guest> {
        let bytes = std::fs::read(path).with_context(|| format!("reading guest {}", path.display()))?;
        check_is_component(path, &bytes)?;

        let mut config = Config::new();
        config.epoch_interruption(true);
        let engine = Engine::new(&config).map_err(|e| anyhow!("{e}"))?;
        start_epoch_ticker(&engine);

        let started = Instant::now();
        let component = Component::new(&engine, &bytes)
            .map_err(|e| anyhow!("guest {} is not a valid component: {e:#}", path.display()))?;
        tracing::info!(guest = %path.display(), bytes = bytes.len(), compile_ms = started.elapsed().as_millis() as u64, "guest compiled");
        check_interface(path, &engine, &component)?;

        let linker = Linker::new(&engine);
        let instance_pre = linker.instantiate_pre(&component).map_err(|e| anyhow!("{e:#}"))?;
        let pre = bindings::CountingGuestPre::new(instance_pre).map_err(|e| {
            anyhow!(
                "guest {} exports {} but its functions do not match this host's WIT ({e:#}); \
                 rebuild it against wit/counter.wit of this host",
                path.display(),
                expected_export()
            )
        })?;
        let (store, instance) = instantiate(&engine, &pre, &limits)?;
        Ok(Guest { path: path.to_owned(), engine, pre, limits, store, instance, traps: 0 })
    }

    /// Runs `process-batch` over `values`, in calls of at most an eighth of the guest's
    /// memory cap in record bytes (a batch of large records must not trap for lack of memory
    /// that each record alone fits in). One outcome per value, in order. `Err` only when a
    /// new instance cannot be made.
    pub fn process_batch(&mut self, values: &[Vec<u8>]) -> Result<Vec<Outcome>> {
        let max_bytes = self.limits.memory_bytes / 8;
        let mut outcomes = Vec::with_capacity(values.len());
        let mut rest = values;
        while !rest.is_empty() {
            let mut bytes = 0;
            let take = rest
                .iter()
                .position(|v| {
                    bytes += v.len();
                    bytes > max_bytes
                })
                .unwrap_or(rest.len())
                .max(1);
            let (chunk, tail) = rest.split_at(take);
            outcomes.extend(self.process_chunk(chunk)?);
            rest = tail;
        }
        Ok(outcomes)
    }

    /// One `process-batch` call; if it traps, the chunk is re-run record by record so that
    /// only the records that trap are rejected.
    fn process_chunk(&mut self, values: &[Vec<u8>]) -> Result<Vec<Outcome>> {
        self.arm_deadline();
        let result = self.instance.streamhost_counter_counter().call_process_batch(&mut self.store, values);
        match result {
            Ok(outcomes) if outcomes.len() == values.len() => return Ok(outcomes),
            Ok(outcomes) => {
                tracing::warn!(
                    records = values.len(),
                    results = outcomes.len(),
                    "guest returned the wrong number of results for a batch; retrying record by record"
                );
            }
            Err(trap) => {
                self.recover(&trap)?;
                tracing::warn!(records = values.len(), "guest trapped on a batch; retrying record by record");
            }
        }
        values.iter().map(|v| self.process(v)).collect()
    }

    /// Runs `process` on one record; a trap rejects the record (and re-creates the instance).
    pub fn process(&mut self, value: &[u8]) -> Result<Outcome> {
        self.arm_deadline();
        match self.instance.streamhost_counter_counter().call_process(&mut self.store, value) {
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
        match self.instance.streamhost_counter_counter().call_top_n(&mut self.store, counts, n) {
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
        let (store, instance) = instantiate(&self.engine, &self.pre, &self.limits)?;
        self.store = store;
        self.instance = instance;
        Ok(())
    }
}

fn instantiate(
    engine: &Engine,
    pre: &bindings::CountingGuestPre<GuestState>,
    limits: &Limits,
) -> Result<(Store<GuestState>, bindings::CountingGuest)> {
    let state = GuestState {
        limits: StoreLimitsBuilder::new().memory_size(limits.memory_bytes).trap_on_grow_failure(true).build(),
    };
    let mut store = Store::new(engine, state);
    store.limiter(|s| &mut s.limits);
    store.set_epoch_deadline(u64::MAX / 2);
    let instance = pre.instantiate(&mut store).map_err(|e| anyhow!("instantiating the guest: {e:#}"))?;
    Ok((store, instance))
}

fn describe_trap(error: &wasmtime::Error) -> String {
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
    if !exports.iter().any(|e| *e == expected) {
        let unversioned = format!("{WIT_PACKAGE}/counter");
        if let Some(found) = exports.iter().find(|e| e.starts_with(&format!("{unversioned}@")) || **e == unversioned) {
            let version = found.split_once('@').map(|(_, v)| v).unwrap_or("(none)");
            bail!(
                "guest {} was built against WIT version {version} ({found}), but this host expects \
                 {WIT_VERSION} ({expected}); rebuild the guest against this host's wit/",
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
    if !imports.is_empty() {
        bail!(
            "guest {} imports {}; the host grants guests no capabilities (no filesystem, clocks, \
             random or network). Remove the dependency that pulls it in (for Rust: build for \
             wasm32-unknown-unknown, not wasm32-wasip2)",
            path.display(),
            imports.join(", ")
        );
    }
    Ok(())
}
