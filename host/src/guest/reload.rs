//! Hot swap of the guest: when its file changes (checked once a second) or on SIGHUP, the
//! new component is loaded and validated on a thread of its own, off the hot path; the
//! pipeline swaps it in between batches (`GuestThread::swap`), so every batch is counted by
//! exactly one guest and state carries on. A component that fails validation is refused with
//! a log line, and the running guest stays.

use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Result;

use crate::guest::{Guest, Source};

/// How often the guest file is looked at.
const CHECK_EVERY: Duration = Duration::from_secs(1);

pub struct GuestReload {
    source: Source,
    /// The file's modification time and length when it was last loaded (or tried).
    seen: Option<(SystemTime, u64)>,
    last_check: Instant,
    loading: Option<Receiver<Result<Guest>>>,
}

impl GuestReload {
    /// Watches the file of the guest just loaded from `source`.
    pub fn new(source: Source) -> Self {
        let seen = stamp(&source);
        GuestReload { source, seen, last_check: Instant::now(), loading: None }
    }

    /// Called between batches: starts loading a new version when the file changed or a
    /// reload was `requested`, and returns it once it is loaded and valid.
    pub fn poll(&mut self, requested: bool) -> Option<Guest> {
        if let Some(loading) = &self.loading {
            return match loading.try_recv() {
                Err(TryRecvError::Empty) => None,
                Err(TryRecvError::Disconnected) => {
                    self.loading = None;
                    None
                }
                Ok(loaded) => {
                    self.loading = None;
                    match loaded {
                        Ok(guest) => Some(guest),
                        Err(e) => {
                            tracing::warn!(guest = %self.source.path.display(), error = %format!("{e:#}"), "new guest refused; the running guest stays");
                            None
                        }
                    }
                }
            };
        }
        let changed = self.last_check.elapsed() >= CHECK_EVERY && {
            self.last_check = Instant::now();
            stamp(&self.source) != self.seen
        };
        if requested || changed {
            self.seen = stamp(&self.source);
            tracing::info!(guest = %self.source.path.display(), "loading a new version of the guest");
            let (done, loading) = std::sync::mpsc::channel();
            let source = self.source.clone();
            let spawned = std::thread::Builder::new().name("guest-reload".into()).spawn(move || {
                let _ = done.send(source.load());
            });
            match spawned {
                Ok(_) => self.loading = Some(loading),
                Err(e) => tracing::warn!(error = %e, "cannot start loading the new guest"),
            }
        }
        None
    }
}

fn stamp(source: &Source) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(&source.path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}
