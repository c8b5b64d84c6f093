//! Turns SIGINT/SIGTERM into a flag the pipeline reads between batches, so the batch in
//! flight finishes and commits. A second signal exits at once (the user means it). SIGHUP
//! sets another flag: reload the guest.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Clone, Default)]
pub struct Shutdown {
    requested: Arc<AtomicBool>,
    reload: Arc<AtomicBool>,
}

impl Shutdown {
    /// Installs the signal handlers on a small background thread (once per process; later
    /// calls return the same flag).
    pub fn install() -> std::io::Result<Self> {
        static INSTALLED: std::sync::OnceLock<Shutdown> = std::sync::OnceLock::new();
        if let Some(shutdown) = INSTALLED.get() {
            return Ok(shutdown.clone());
        }
        let shutdown = Self::spawn_handler()?;
        Ok(INSTALLED.get_or_init(|| shutdown).clone())
    }

    fn spawn_handler() -> std::io::Result<Self> {
        let shutdown = Shutdown::default();
        let flag = shutdown.requested.clone();
        let reload = shutdown.reload.clone();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_io().build()?;
        std::thread::Builder::new().name("signals".into()).spawn(move || {
            runtime.block_on(async move {
                use tokio::signal::unix::{SignalKind, signal};
                let (Ok(mut int), Ok(mut term), Ok(mut hup)) =
                    (signal(SignalKind::interrupt()), signal(SignalKind::terminate()), signal(SignalKind::hangup()))
                else {
                    tracing::error!("cannot install signal handlers");
                    return;
                };
                loop {
                    tokio::select! {
                        _ = int.recv() => {}
                        _ = term.recv() => {}
                        _ = hup.recv() => {
                            tracing::info!("SIGHUP: reloading the guest");
                            reload.store(true, Ordering::SeqCst);
                            continue;
                        }
                    }
                    if flag.swap(true, Ordering::SeqCst) {
                        eprintln!("second signal: exiting without finishing the batch");
                        std::process::exit(130);
                    }
                    tracing::info!("shutdown requested: finishing the batch in flight");
                }
            })
        })?;
        Ok(shutdown)
    }

    pub fn requested(&self) -> bool {
        self.requested.load(Ordering::SeqCst)
    }

    /// True once per SIGHUP received since the last call.
    pub fn take_reload(&self) -> bool {
        self.reload.swap(false, Ordering::SeqCst)
    }
}
