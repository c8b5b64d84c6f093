//! `host run`: turns the flags into a run configuration (refusing those that do not go together),
//! loads the guest, serves `--http`, and starts the topology the guest and flags ask for: a
//! processor guest's ([`crate::engine::processing`]), or a counting guest's on one host
//! ([`crate::engine::direct`]) or as a share of a job spread over several (`--scale-out`,
//! [`crate::engine::repartitioned`]).

use anyhow::{Context, Result};

use crate::cli::RunArgs;
use crate::engine::config::RunConfig;
use crate::guest::reload::GuestReload;
use crate::guest::{AnyGuest, Counter};
use crate::process::shutdown::Shutdown;

/// `host run`.
pub fn run(args: RunArgs) -> Result<()> {
    // Flags that do not go together are refused before anything else.
    let config = args.config()?;
    // Then, so a signal during start-up (a long guest compile or restore) is handled too.
    let shutdown = handle_stops(&config)?;
    shutdown.starting("loading the guest");
    // Cheap local checks first, so a bad guest or a locked state dir fails before any network.
    let source = args.guest.source();
    match source.load_any()? {
        AnyGuest::Counting(guest) => {
            let reload = GuestReload::new(source);
            start(config, Box::new(guest), Some(reload), &shutdown)
        }
        AnyGuest::Processor(guest) => {
            shutdown.starting("starting");
            let http = serve_http(&config)?;
            crate::engine::processing::run(config, guest, &shutdown, &http)
        }
    }
}

/// `host run` with any [`Counter`] (the benchmark's native baseline uses this); no hot swap.
pub fn run_with(args: RunArgs, guest: Box<dyn Counter + Send>) -> Result<()> {
    let config = args.config()?;
    let shutdown = handle_stops(&config)?;
    start(config, guest, None, &shutdown)
}

/// The signal handlers, with this run's `--shutdown-timeout`.
fn handle_stops(config: &RunConfig) -> Result<Shutdown> {
    let shutdown = Shutdown::install().context("installing signal handlers")?;
    shutdown.set_bound(config.shutdown_timeout);
    Ok(shutdown)
}

fn start(
    config: RunConfig,
    guest: Box<dyn Counter + Send>,
    reload: Option<GuestReload>,
    shutdown: &Shutdown,
) -> Result<()> {
    shutdown.starting("starting");
    let http = serve_http(&config)?;
    if config.scale_out.is_some() {
        return crate::engine::repartitioned::run(config, guest, reload, shutdown, &http);
    }
    crate::engine::direct::run(config, guest, reload, shutdown, &http)
}

/// `--http`, up first, so /healthz answers (and /readyz says no) during a long restore.
fn serve_http(config: &RunConfig) -> Result<crate::serve::http::Shared> {
    let http = crate::serve::http::Shared::default();
    if let Some(addr) = &config.http {
        crate::serve::http::serve(addr, http.clone())?;
    }
    Ok(http)
}
