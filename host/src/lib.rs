//! # streamhost: a stateful Kafka stream host whose business logic is a WebAssembly component
//!
//! The host owns every hard part — Kafka I/O, local state in RocksDB, the compacted changelog,
//! offset commits, restore, the top-N board — and knows nothing about what a record means.
//! A guest (a component exporting `wit/counter.wit`) turns each record into `(key, amount)`
//! deltas and ranks the board.
//!
//! # Layout
//! - [`cli`]: the command line; every flag has an environment variable and `--help` text.
//! - [`commands`]: the subcommands' entry points, one file each (`run` picks the topology;
//!   `guest_tools` is `host check`, `test` and `new-guest`, a guest author's tools).
//! - [`config`]: builds the librdkafka client configurations, one comment per non-default.
//! - [`pipeline`]: the consume -> guest -> changelog -> state -> commit loop and its guarantee.
//! - [`guest`]: loads, validates and calls the component; limits; nothing about Kafka.
//! - [`guest_thread`]: runs the guest on its own thread, beside the pipeline's I/O.
//! - [`reload`]: hot swap of the guest when its file changes or on SIGHUP.
//! - [`state`]: the RocksDB store (counts plus the metadata they reflect); nothing about Kafka.
//! - [`changelog`]: the changelog record format, and restore from the compacted topic.
//! - [`producer`]: a producer whose sends are awaited as one batch of acknowledgements.
//! - [`board`]: the top-N snapshot, printed and produced every flush interval.
//! - [`topics`]: start-up checks of the topics, and creating/deleting them.
//! - [`fault`]: crash injection at exact pipeline steps, for the crash tests.
//! - [`metrics`]: the Prometheus metrics the pipeline keeps.
//! - [`http`]: `--http`: health, readiness, metrics and state queries.
//! - [`progress`]: progress of long work: a bar on a terminal, log lines otherwise.
//! - [`stall`]: the watchdog that ends a host whose input stops delivering while records wait.
//! - [`stats`]: records, rate and latency of a run, logged at its end.
//! - [`shutdown`]: SIGINT/SIGTERM: at once during start-up, after the batch in flight while
//!   counting, and never past `--shutdown-timeout`.
//! - [`log_limit`]: logs repeated events at a bounded rate.

pub mod board;
pub mod changelog;
pub mod cli;
pub mod commands;
pub mod config;
pub mod fault;
pub mod guest;
pub mod guest_thread;
pub mod http;
pub mod log_limit;
pub mod metrics;
pub mod pace;
pub mod pipeline;
pub mod producer;
pub mod progress;
pub mod reload;
pub mod sandbox;
pub mod scaleout;
pub mod shutdown;
pub mod stall;
pub mod state;
pub mod stats;
pub mod topics;
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
