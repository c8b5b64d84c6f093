//! Stopping: SIGINT/SIGTERM become a flag the loop reads between batches, so the batch in
//! flight finishes and commits; SIGHUP sets another flag (reload the guest).
//!
//! A stop must end the process promptly wherever it lands, so the host tells this module
//! what it is doing:
//! - [`Shutdown::starting`]: start-up (loading the guest, checking topics, restoring or
//!   catching up state, ...). Nothing is under way that a stop must finish, so a stop ends
//!   the process at once, with status 0: the end of the process is then exactly what a
//!   `kill -9` at that moment would be, which every start-up step survives (an interrupted
//!   restore is marked incomplete and redone), without waiting for a guest to finish
//!   compiling or a broker to answer.
//! - [`Shutdown::working`]: counting, or finishing what a stop left under way. The loop ends
//!   after the batch in flight; waits on Kafka give up at [`Shutdown::give_up_at`] (half the
//!   bound), leaving a batch Kafka did not acknowledge to the next start ([`Unfinished`],
//!   still status 0: nothing of it reached state or the group's offsets).
//! - In every case `--shutdown-timeout` bounds the stop: past it the process exits with
//!   status 1, saying what it was still doing. A second signal exits at once (status 130).
//!
//! The process ends with `_exit`, without running exit handlers: another thread may be inside
//! RocksDB or librdkafka, whose static destructors must not run under it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

#[derive(Clone, Default)]
pub struct Shutdown {
    requested: Arc<AtomicBool>,
    reload: Arc<AtomicBool>,
    stop: Arc<Stop>,
}

/// What a stop request meets.
#[derive(Default)]
struct Stop {
    /// What the host is doing, for the log line of a stop (and of one that overruns).
    doing: Mutex<&'static str>,
    /// True while nothing is under way that a stop must finish (see the module doc).
    at_once: AtomicBool,
    /// `--shutdown-timeout` in milliseconds (0: no bound).
    bound_ms: AtomicU64,
    requested_at: OnceLock<Instant>,
}

/// A stop that ended work Kafka did not answer for in time: nothing of it reached state or
/// the group's offsets, so the next start does it again, exactly as after a crash. The
/// process still exits 0: the stop was asked for, and nothing is lost.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Unfinished(pub String);

/// The bound when none is set (`host restore`, the default of `--shutdown-timeout`).
pub const DEFAULT_BOUND: Duration = Duration::from_secs(10);

impl Shutdown {
    /// Installs the signal handlers on a small background thread (once per process; later
    /// calls return the same flag).
    pub fn install() -> std::io::Result<Self> {
        static INSTALLED: OnceLock<Shutdown> = OnceLock::new();
        if let Some(shutdown) = INSTALLED.get() {
            return Ok(shutdown.clone());
        }
        let shutdown = Self::spawn_handler()?;
        Ok(INSTALLED.get_or_init(|| shutdown).clone())
    }

    fn spawn_handler() -> std::io::Result<Self> {
        let shutdown = Shutdown::default();
        shutdown.set_bound(DEFAULT_BOUND);
        let on_signal = shutdown.clone();
        use tokio::signal::unix::{SignalKind, signal};
        let runtime = tokio::runtime::Builder::new_current_thread().enable_io().build()?;
        // Registered here, before `install` returns: from then on a signal is ours.
        let (mut int, mut term, mut hup) = {
            let _context = runtime.enter();
            (signal(SignalKind::interrupt())?, signal(SignalKind::terminate())?, signal(SignalKind::hangup())?)
        };
        std::thread::Builder::new().name("signals".into()).spawn(move || {
            runtime.block_on(async move {
                loop {
                    tokio::select! {
                        _ = int.recv() => {}
                        _ = term.recv() => {}
                        _ = hup.recv() => {
                            tracing::info!("SIGHUP: reloading the guest");
                            on_signal.reload.store(true, Ordering::SeqCst);
                            continue;
                        }
                    }
                    on_signal.stop_requested();
                }
            })
        })?;
        Ok(shutdown)
    }

    /// A stop signal: the first asks for a stop, the second ends the process.
    fn stop_requested(&self) {
        if self.requested.swap(true, Ordering::SeqCst) {
            eprintln!("second signal: exiting without finishing the batch");
            exit_now(130);
        }
        let _ = self.stop.requested_at.set(Instant::now());
        let doing = self.doing();
        if self.stop.at_once.load(Ordering::SeqCst) {
            tracing::info!("stop requested while {doing}: nothing under way to finish, exiting");
            exit_now(0);
        }
        let bound = self.bound();
        tracing::info!(bound = ?bound, "shutdown requested while {doing}: finishing what is under way");
        if let Some(bound) = bound {
            let watched = self.clone();
            let spawned = std::thread::Builder::new().name("shutdown-bound".into()).spawn(move || {
                std::thread::sleep(bound);
                let doing = watched.doing();
                tracing::error!(
                    "the stop did not finish within {} (--shutdown-timeout): still {doing}. Exiting without \
                     finishing it: state is intact, and a restart resumes as after a crash",
                    humantime::format_duration(bound)
                );
                exit_now(1);
            });
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "cannot bound the stop: it takes as long as it takes");
            }
        }
    }

    /// Sets the longest a stop may take (`--shutdown-timeout`; zero: no bound).
    pub fn set_bound(&self, bound: Duration) {
        self.stop.bound_ms.store(bound.as_millis() as u64, Ordering::SeqCst);
    }

    fn bound(&self) -> Option<Duration> {
        let ms = self.stop.bound_ms.load(Ordering::SeqCst);
        (ms > 0).then(|| Duration::from_millis(ms))
    }

    /// Start-up: a stop from now on ends the process at once (see the module doc); one that
    /// came already does so now.
    pub fn starting(&self, doing: &'static str) {
        self.set_doing(doing);
        self.stop.at_once.store(true, Ordering::SeqCst);
        if self.requested() {
            tracing::info!("stop requested before {doing}: nothing under way to finish, exiting");
            exit_now(0);
        }
    }

    /// Work a stop must finish (or give up on, see [`Shutdown::give_up_at`]).
    pub fn working(&self, doing: &'static str) {
        self.stop.at_once.store(false, Ordering::SeqCst);
        self.set_doing(doing);
    }

    /// Names what the host waits for until the guard is dropped (a stop that overruns says
    /// so); the label before it is back then.
    pub fn waiting_for(&self, what: &'static str) -> Waiting<'_> {
        let before = std::mem::replace(&mut *self.stop.doing.lock().unwrap_or_else(|p| p.into_inner()), what);
        Waiting { shutdown: self, before }
    }

    fn set_doing(&self, doing: &'static str) {
        *self.stop.doing.lock().unwrap_or_else(|p| p.into_inner()) = doing;
        tracing::debug!("{doing}");
    }

    fn doing(&self) -> &'static str {
        let doing = *self.stop.doing.lock().unwrap_or_else(|p| p.into_inner());
        if doing.is_empty() { "starting" } else { doing }
    }

    pub fn requested(&self) -> bool {
        self.requested.load(Ordering::SeqCst)
    }

    /// Once a stop is requested: when waits on Kafka stop waiting (half the bound, so that
    /// what follows a given-up wait still fits in it; never without a bound).
    pub fn give_up_at(&self) -> Option<Instant> {
        let requested_at = *self.stop.requested_at.get()?;
        Some(requested_at + self.bound()? / 2)
    }

    /// How long the last wait of a stop may take now: `limit`, or, once a stop is requested,
    /// until four fifths of its bound (what follows it must not wait on Kafka: every later
    /// wait is over by then, see [`Shutdown::give_up_at`]).
    pub fn last_wait_limit(&self, limit: Duration) -> Duration {
        let (Some(requested_at), Some(bound)) = (self.stop.requested_at.get(), self.bound()) else { return limit };
        limit.min((*requested_at + bound * 4 / 5).saturating_duration_since(Instant::now()))
    }

    /// How long a wait on Kafka may take now: `limit`, or less once a stop is requested.
    pub fn wait_limit(&self, limit: Duration) -> Duration {
        match self.give_up_at() {
            Some(at) => limit.min(at.saturating_duration_since(Instant::now())),
            None => limit,
        }
    }

    /// True once a stop is requested and its waits on Kafka are over.
    pub fn giving_up(&self) -> bool {
        self.give_up_at().is_some_and(|at| Instant::now() >= at)
    }

    /// True once per SIGHUP received since the last call.
    pub fn take_reload(&self) -> bool {
        self.reload.swap(false, Ordering::SeqCst)
    }
}

/// See [`Shutdown::waiting_for`].
pub struct Waiting<'s> {
    shutdown: &'s Shutdown,
    before: &'static str,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        *self.shutdown.stop.doing.lock().unwrap_or_else(|p| p.into_inner()) = self.before;
    }
}

/// Ends the process now with `code`, running no exit handlers (see the module doc).
fn exit_now(code: i32) -> ! {
    // SAFETY: _exit only ends the process; it touches no memory of ours.
    unsafe { libc::_exit(code) }
}
