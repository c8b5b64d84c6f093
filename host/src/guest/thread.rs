//! The guest on a thread of its own, so that its work (most of a batch's CPU time) runs
//! while the pipeline thread polls the next batch and writes the previous one.
//!
//! Requests are served in the order they are submitted. `process-batch` results come back
//! on their own channel, so a board ranked between batches (`top-n`, answered at once after
//! whatever is queued before it) never mixes with them. The guest thread writes nothing:
//! every durable write stays on the engine's thread, in the order `engine/committer.rs` writes.

use std::sync::mpsc::{Receiver, Sender, channel};
use std::thread::JoinHandle;
use std::time::Instant;

use anyhow::{Context, Result, anyhow};

use crate::guest::{BatchResult, Counter, Entry, EventTimes, Records};

enum Request {
    /// Groups of records, each one `process-batch` call (one per window set, with --window).
    Process(Vec<Records>),
    TopN(Vec<Entry>, u32),
    /// `event-times` of a batch, answered at once after whatever is queued before it.
    EventTimes(Records),
    /// From here on, another guest: batches submitted before keep the old one.
    Swap(Box<dyn Counter + Send>),
}

/// The event times of a batch's records (`None`: the guest has no `event-time`).
type TimesAnswer = Result<Option<EventTimes>>;

/// The `process-batch` results of a submission's groups, with the milliseconds the guest
/// spent on them.
pub type Processed = (Result<Vec<BatchResult>>, f64);

pub struct GuestThread {
    describe: String,
    requests: Option<Sender<Request>>,
    processed: Receiver<Processed>,
    ranked: Receiver<Result<Vec<Entry>>>,
    timed: Receiver<TimesAnswer>,
    has_event_time: bool,
    handle: Option<JoinHandle<()>>,
}

impl GuestThread {
    pub fn spawn(mut counter: Box<dyn Counter + Send>) -> Result<GuestThread> {
        let describe = counter.describe();
        let has_event_time = counter.has_event_time();
        let (requests, inbox) = channel::<Request>();
        let (processed_tx, processed) = channel();
        let (ranked_tx, ranked) = channel();
        let (timed_tx, timed) = channel();
        let handle = std::thread::Builder::new()
            .name("guest".into())
            .spawn(move || {
                for request in inbox {
                    // A send fails only when the pipeline is gone; then so is the point.
                    match request {
                        Request::Process(groups) => {
                            let started = Instant::now();
                            let result = groups.iter().map(|records| counter.process_batch(records)).collect();
                            let _ = processed_tx.send((result, started.elapsed().as_secs_f64() * 1000.0));
                        }
                        Request::TopN(entries, n) => {
                            let _ = ranked_tx.send(counter.top_n(&entries, n));
                        }
                        Request::EventTimes(records) => {
                            let _ = timed_tx.send(counter.event_times(&records));
                        }
                        Request::Swap(next) => counter = next,
                    }
                }
            })
            .context("spawning the guest thread")?;
        Ok(GuestThread {
            describe,
            requests: Some(requests),
            processed,
            ranked,
            timed,
            has_event_time,
            handle: Some(handle),
        })
    }

    fn send(&self, request: Request) -> Result<()> {
        self.requests.as_ref().and_then(|r| r.send(request).ok()).ok_or_else(stopped)
    }

    /// Queues a batch (in groups); its results come from [`GuestThread::receive`], in
    /// submission order.
    pub fn submit(&mut self, groups: Vec<Records>) -> Result<()> {
        self.send(Request::Process(groups))
    }

    /// The result of the oldest submitted batch, waiting for it if need be.
    pub fn receive(&mut self) -> Result<Processed> {
        self.processed.recv().map_err(|_| stopped())
    }

    /// Swaps the guest at this point of the request queue: every batch submitted before is
    /// counted by the old guest, every one after by `next`.
    pub fn swap(&mut self, next: Box<dyn Counter + Send>) -> Result<()> {
        self.describe = next.describe();
        self.has_event_time = next.has_event_time();
        self.send(Request::Swap(next))
    }

    /// `top-n`, answered after the batches queued before it.
    pub fn top_n(&mut self, counts: &[Entry], n: u32) -> Result<Vec<Entry>> {
        self.send(Request::TopN(counts.to_vec(), n))?;
        self.ranked.recv().map_err(|_| stopped())?
    }

    /// `event-times` of `records`, answered after the batches queued before it.
    pub fn event_times(&mut self, records: Records) -> TimesAnswer {
        self.send(Request::EventTimes(records))?;
        self.timed.recv().map_err(|_| stopped())?
    }

    /// True when the current guest (the latest swapped in) exports `event-time`.
    pub fn has_event_time(&self) -> bool {
        self.has_event_time
    }

    pub fn describe(&self) -> &str {
        &self.describe
    }
}

fn stopped() -> anyhow::Error {
    anyhow!("the guest thread has stopped (did it panic? see above)")
}

impl Drop for GuestThread {
    fn drop(&mut self) {
        // Closing the request channel ends the thread after its current call (bounded by
        // the guest's deadline).
        self.requests.take();
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}
