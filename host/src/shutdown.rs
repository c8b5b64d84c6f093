//! Turns SIGINT/SIGTERM into a flag the pipeline reads between batches, so the batch in
//! flight finishes and commits. A second signal exits at once (the user means it).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Clone, Default)]
pub struct Shutdown {
    requested: Arc<AtomicBool>,
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
        let runtime = tokio::runtime::Builder::new_current_thread().enable_io().build()?;
        std::thread::Builder::new().name("signals".into()).spawn(move || {
            runtime.block_on(async move {
                use tokio::signal::unix::{SignalKind, signal};
                let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate()))
                else {
                    tracing::error!("cannot install signal handlers");
                    return;
                };
                loop {
                    tokio::select! {
                        _ = int.recv() => {}
                        _ = term.recv() => {}
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
}
