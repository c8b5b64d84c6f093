//! `host run`: loads the guest, checks the flags whose meaning is the same in both modes,
//! serves `--http`, and starts the topology the flags ask for: one host
//! ([`crate::engine::direct`]) or a share of a job spread over several (`--scale-out`,
//! [`crate::engine::repartitioned`]).

use anyhow::{Context, Result, bail};

use crate::cli::{Emit, RunArgs};
use crate::guest::Counter;
use crate::guest::reload::GuestReload;
use crate::process::shutdown::Shutdown;

/// `host run`.
pub fn run(args: RunArgs) -> Result<()> {
    // First, so a signal during start-up (a long guest compile or restore) is handled too.
    let shutdown = handle_stops(&args)?;
    shutdown.starting("loading the guest");
    // Cheap local checks first, so a bad guest or a locked state dir fails before any network.
    let source = args.guest.source();
    let guest = source.load()?;
    args.windows.spec()?;
    let reload = GuestReload::new(source);
    start(args, Box::new(guest), Some(reload), &shutdown)
}

/// `host run` with any [`Counter`] (the benchmark's native baseline uses this); no hot swap.
pub fn run_with(args: RunArgs, guest: Box<dyn Counter + Send>) -> Result<()> {
    let shutdown = handle_stops(&args)?;
    start(args, guest, None, &shutdown)
}

/// The signal handlers, with this run's `--shutdown-timeout`.
fn handle_stops(args: &RunArgs) -> Result<Shutdown> {
    let shutdown = Shutdown::install().context("installing signal handlers")?;
    shutdown.set_bound(args.shutdown_timeout);
    Ok(shutdown)
}

fn start(
    args: RunArgs,
    guest: Box<dyn Counter + Send>,
    reload: Option<GuestReload>,
    shutdown: &Shutdown,
) -> Result<()> {
    shutdown.starting("starting");
    // Up first, so /healthz answers (and /readyz says no) during a long restore.
    let http = crate::serve::http::Shared::default();
    if let Some(addr) = &args.http {
        crate::serve::http::serve(addr, http.clone())?;
    }
    let windows = args.windows.spec()?;
    if windows.is_none() && args.windows.emit == Emit::Final {
        bail!("--emit final needs --window: without windows there is no window to complete");
    }
    if args.topics.scale_out {
        return crate::engine::repartitioned::run(args, guest, reload, shutdown, &http);
    }
    crate::engine::direct::run(args, guest, reload, windows, shutdown, &http)
}
