//! # streamhost: a stateful Kafka stream host whose business logic is a WebAssembly component
//!
//! The host owns every hard part — Kafka I/O, local state in RocksDB, the compacted changelog,
//! offset commits, restore, the top-N board — and knows nothing about what a record means.
//! A counting guest (a component exporting `wit/counter.wit`) turns each record into
//! `(key, amount)` deltas and ranks the board; a processor guest (`wit/processor`) keeps any
//! value per key and emits records, through host calls.
//!
//! # Layout
//! Folders by concern; each module uses only those listed below it (no import circle).
//! - [`cli`]: the command line; every flag has an environment variable and `--help` text.
//! - [`commands`]: the subcommands' entry points, one file each (`run` picks the topology;
//!   `guest_tools` is `host check`, `test` and `new-guest`, a guest author's tools).
//! - [`engine`]: one engine, two topologies: `config` (the typed run configuration),
//!   `cycle` (the one loop), `committer` (the write order and the exactly-once transaction),
//!   `task` (a unit of state and its durability policy), `direct` (one host: input -> guest ->
//!   one task), `repartitioned` (`--scale-out`: repartition topic, shards, rebalances),
//!   `processing` (a processor guest: input -> keyed state and emits -> one task);
//!   `records` (polling, skipping, window assignment), fault injection, the stall watchdog,
//!   pacing and run statistics.
//! - [`serve`]: `--http`: health, readiness, metrics, state queries, the board page.
//! - [`board`]: the top-N snapshot, printed and produced every flush interval, and merged.
//! - [`changelog`]: the changelog record format, and restore from the compacted topic.
//! - [`kafka`]: client configurations and contexts, the acknowledged producer, topic checks.
//! - [`state`]: the RocksDB store (counts plus the metadata they reflect) and its layout.
//! - [`guest`]: loads, validates and calls the component of either world, on its own thread;
//!   the sandbox; hot swap; `processor` (a processor guest and what its host calls see);
//!   nothing about Kafka.
//! - [`window`]: event-time windows: assignment, the clock, windowed keys.
//! - [`process`]: stopping at any moment, and progress of long work.

pub mod board;
pub mod changelog;
pub mod cli;
pub mod commands;
pub mod engine;
pub mod guest;
pub mod kafka;
pub mod process;
pub mod serve;
pub mod state;
pub mod window;

/// The WIT package this host speaks; a guest must export its `counter` interface at exactly
/// this version.
pub const WIT_PACKAGE: &str = "streamhost:counter";
pub const WIT_VERSION: &str = "0.2.1";

/// Logs to stderr, as text or JSON lines; `RUST_LOG` filters (librdkafka's chatter is
/// held to warnings unless asked for).
pub fn init_logging(format: cli::LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,rdkafka=warn"));
    // Colours only on a terminal: a log file or a collector gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    match format {
        cli::LogFormat::Text => builder.init(),
        cli::LogFormat::Json => builder.json().init(),
    }
}
