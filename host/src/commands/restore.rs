//! `host restore`: rebuilds a state dir (or a scale-out host's shards) from the changelog.
//! A stop mid-way leaves the store marked incomplete and exits non-zero saying so; `host run`
//! restores it again by itself.

use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::changelog::{RestoreReport, end_positions, restore, restore_partitions};
use crate::cli::RestoreArgs;
use crate::process::shutdown::Shutdown;
use crate::state::Store;

/// `host restore`.
pub fn restore_command(args: RestoreArgs) -> Result<()> {
    let shutdown = Shutdown::install().context("installing signal handlers")?;
    // A stop ends the restore between batches, marked incomplete (the next start redoes it).
    shutdown.working("restoring state from the changelog");
    if args.scale_out {
        return restore_shards(&args, &shutdown);
    }
    let dir = &args.state.state_dir;
    let mut store = open_for_restore(dir, args.force)?;
    let report = restore(&args.kafka.connection(), &args.changelog, &mut store, &shutdown)?;
    print_report(&report, dir);
    Ok(())
}

/// `host restore --scale-out [--partition P]`: each changelog partition into its shard dir.
fn restore_shards(args: &RestoreArgs, shutdown: &Shutdown) -> Result<()> {
    let partitions: Vec<i32> = match args.partition {
        Some(partition) => vec![partition],
        None => end_positions(&args.kafka.connection(), &args.changelog)?.into_keys().collect(),
    };
    let started = Instant::now();
    for partition in partitions {
        let dir = crate::state::shard_dir(&args.state.state_dir, partition);
        let mut store = open_for_restore(&dir, args.force)?;
        let report =
            restore_partitions(&args.kafka.connection(), &args.changelog, Some(partition), &mut store, shutdown)?;
        print_report(&report, &dir);
    }
    println!("done in {:.2}s", started.elapsed().as_secs_f64());
    Ok(())
}

/// The store to restore into: refused when it holds anything, unless `force` (then emptied).
fn open_for_restore(dir: &std::path::Path, force: bool) -> Result<Store> {
    if dir_has_entries(dir)? {
        if !force {
            bail!(
                "state dir {} is not empty; restore would overwrite it. Delete it, or pass --force \
                 to replace its contents",
                dir.display()
            );
        }
        // Opening first proves no running host holds the lock before anything is deleted.
        drop(Store::open(dir)?);
        std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    Store::open(dir)
}

fn print_report(report: &RestoreReport, dir: &std::path::Path) {
    println!(
        "restored {}{} keys from {} changelog records into {} in {:.2}s",
        if report.keys_exact { "" } else { "about " },
        report.keys,
        report.records_read,
        dir.display(),
        report.elapsed.as_secs_f64()
    );
}

fn dir_has_entries(dir: &std::path::Path) -> Result<bool> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => Ok(entries.next().is_some()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e).with_context(|| format!("reading {}", dir.display())),
    }
}
