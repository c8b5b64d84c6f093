//! The processor guest on its own thread, beside the engine's I/O: batches are processed in
//! the order submitted, and the engine's word that a batch is in the store (or never will be)
//! arrives in the same queue, so it always lands between whole batches.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use anyhow::{Context, Result, anyhow};

use super::{BatchEffects, InputRecord, ProcessorGuest, TableUpdates};

enum Request {
    Process(u64, Vec<InputRecord>),
    /// What the tables' topics got: applied between two batches.
    Tables(TableUpdates),
    Applied(u64),
    Rewind,
}

/// A batch's effects, with the milliseconds the guest spent on it.
pub type Processed = (Result<BatchEffects>, f64);

pub struct ProcessorThread {
    describe: String,
    /// Shared with the state task's notices, and taken from both at drop, which closes the
    /// queue and so ends the thread.
    requests: Arc<Mutex<Option<Sender<Request>>>>,
    processed: Receiver<Processed>,
    /// When the earliest wall-clock timer is due (ms; `i64::MAX`: none), after the batches
    /// processed so far: the engine submits a batch without records for it when idle.
    next_wall_clock_timer: Arc<AtomicI64>,
    handle: Option<JoinHandle<()>>,
}

/// The state task's line to the guest thread: which batches are in the store.
#[derive(Clone)]
pub struct StateNotices(Arc<Mutex<Option<Sender<Request>>>>);

impl StateNotices {
    /// Every batch up to `seq` is in the store.
    pub fn applied(&self, seq: u64) {
        send(&self.0, Request::Applied(seq));
    }

    /// No batch submitted so far that is not in the store will ever be.
    pub fn rewind(&self) {
        send(&self.0, Request::Rewind);
    }
}

/// Queues `request`; false when the thread is gone (the engine is stopping then anyway).
fn send(requests: &Mutex<Option<Sender<Request>>>, request: Request) -> bool {
    let requests = requests.lock().unwrap_or_else(|p| p.into_inner());
    requests.as_ref().is_some_and(|r| r.send(request).is_ok())
}

impl ProcessorThread {
    pub fn spawn(mut guest: ProcessorGuest) -> Result<ProcessorThread> {
        let describe = guest.describe();
        let (requests, inbox) = channel::<Request>();
        let (processed_tx, processed) = channel();
        let next_wall_clock_timer = Arc::new(AtomicI64::new(guest.next_wall_clock_timer()?.unwrap_or(i64::MAX)));
        let next_timer = next_wall_clock_timer.clone();
        let handle = std::thread::Builder::new()
            .name("guest".into())
            .spawn(move || {
                for request in inbox {
                    match request {
                        Request::Process(seq, records) => {
                            let started = Instant::now();
                            let effects = guest.process_batch(seq, &records, now_ms());
                            let next = effects.as_ref().ok().and_then(|_| guest.next_wall_clock_timer().ok().flatten());
                            next_timer.store(next.unwrap_or(i64::MAX), Ordering::Relaxed);
                            let _ = processed_tx.send((effects, started.elapsed().as_secs_f64() * 1000.0));
                        }
                        Request::Tables(updates) => {
                            if let Err(e) = guest.update_tables(updates) {
                                // The copy is a cache of its topic: the next start reads it again.
                                tracing::error!(error = %format!("{e:#}"), "updating a table's copy failed");
                            }
                        }
                        Request::Applied(seq) => guest.applied(seq),
                        Request::Rewind => guest.rewind(),
                    }
                }
            })
            .context("spawning the guest thread")?;
        let requests = Arc::new(Mutex::new(Some(requests)));
        Ok(ProcessorThread { describe, requests, processed, next_wall_clock_timer, handle: Some(handle) })
    }

    pub fn notices(&self) -> StateNotices {
        StateNotices(self.requests.clone())
    }

    /// Queues batch `seq`; its effects come from [`ProcessorThread::receive`], in order.
    pub fn submit(&mut self, seq: u64, records: Vec<InputRecord>) -> Result<()> {
        if send(&self.requests, Request::Process(seq, records)) { Ok(()) } else { Err(stopped()) }
    }

    /// Hands what the tables' topics got to the guest thread: applied before the next batch.
    pub fn update_tables(&mut self, updates: TableUpdates) -> Result<()> {
        if send(&self.requests, Request::Tables(updates)) { Ok(()) } else { Err(stopped()) }
    }

    /// The effects of the oldest submitted batch, waiting for them if need be.
    pub fn receive(&mut self) -> Result<Processed> {
        self.processed.recv().map_err(|_| stopped())
    }

    pub fn describe(&self) -> &str {
        &self.describe
    }

    /// True when a wall-clock timer is due now (as of the batches processed so far).
    pub fn wall_clock_timer_due(&self) -> bool {
        self.next_wall_clock_timer.load(Ordering::Relaxed) <= now_ms()
    }
}

/// The wall clock, in ms since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

fn stopped() -> anyhow::Error {
    anyhow!("the guest thread has stopped (did it panic? see above)")
}

impl Drop for ProcessorThread {
    fn drop(&mut self) {
        // Closing the request channel ends the thread after its current call (bounded by the
        // guest's deadline).
        self.requests.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}
