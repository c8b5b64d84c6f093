//! The command line. Every option can also be set by an environment variable (shown in
//! `--help`); defaults are the tutorial's topic names and intervals.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use clap::builder::PossibleValue;
use clap::{Args, Parser, Subcommand, ValueEnum};

const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (guest WIT streamhost:counter@0.2.1)");

#[derive(Parser, Debug)]
#[command(
    name = "host",
    version = VERSION,
    about = "A stateful Kafka stream host: durable local state, a compacted changelog and correct \
             commit ordering, with the business logic in a WebAssembly component.",
    after_help = "Each option can also be set by the environment variable shown with it.\n\
                  Logs go to stderr; RUST_LOG filters them (e.g. RUST_LOG=host=debug)."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    /// Log format on stderr.
    #[arg(long, global = true, env = "STREAMHOST_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

pub use crate::engine::config::{Emit, EventTime, Guarantee};

// The engine's plain enums, as clap parses them (with the help each value shows).
impl ValueEnum for Guarantee {
    fn value_variants<'a>() -> &'a [Self] {
        &[Guarantee::AtLeastOnce, Guarantee::ExactlyOnce]
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(match self {
            Guarantee::AtLeastOnce => PossibleValue::new(self.name()).help(
                "Exact after any crash with the state dir intact; with the state dir lost as well, a counter \
                 may exceed the truth by one batch's deltas (README, \"What survives what\")",
            ),
            Guarantee::ExactlyOnce => PossibleValue::new(self.name()).help(
                "Exact after any crash, state dir lost or not: Kafka transactions carry each batch's changelog, \
                 board and input offsets together; a restart replays only the changelog's tail",
            ),
        })
    }
}

impl ValueEnum for EventTime {
    fn value_variants<'a>() -> &'a [Self] {
        &[EventTime::Kafka, EventTime::Guest]
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(match self {
            EventTime::Kafka => PossibleValue::new("kafka"),
            EventTime::Guest => PossibleValue::new("guest"),
        })
    }
}

impl ValueEnum for Emit {
    fn value_variants<'a>() -> &'a [Self] {
        &[Emit::Changes, Emit::Final]
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(match self {
            Emit::Changes => PossibleValue::new("changes").help("Every flush interval"),
            Emit::Final => PossibleValue::new("final").help("Once per window, when it is complete (needs --window)"),
        })
    }
}

#[derive(Copy, Clone, Debug, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Consume the input topic, count with the guest, keep state, print and publish the board.
    // A later flag overrides an earlier one, so wrappers can append to a base command line.
    #[command(args_override_self = true)]
    Run(Box<RunArgs>),
    /// Rebuild the local state from the changelog topic (after losing the state dir).
    Restore(RestoreArgs),
    /// Print the local state as JSON lines sorted by key (works while the host is running).
    Dump(DumpArgs),
    /// Print the board from the output topic: with --scale-out, the global top-N merged
    /// from every shard's latest local board.
    Board(BoardArgs),
    /// Create the input, changelog (compacted) and output topics (with --scale-out, the
    /// repartition topic too, all with the input's partition count).
    CreateTopics(CreateTopicsArgs),
    /// Delete the input, changelog and output topics (with --scale-out, the repartition topic too).
    DeleteTopics(TopicArgs),
    /// Check that a guest fits this host (WIT version, exports, no imports); print what it
    /// exports, its size and its load time, cold and cached.
    Check(CheckArgs),
    /// Run a guest over records from a file, offline (no Kafka, no state): per-record deltas,
    /// the final counts and the board; compare with --expect. A guest author's test driver.
    Test(TestArgs),
    /// Write a new Rust guest crate that builds into a working component with `cargo build
    /// --release`, with an example input and its expected outcome for `host test`.
    NewGuest(NewGuestArgs),
}

#[derive(Args, Debug, Clone)]
pub struct NewGuestArgs {
    /// The crate's name (lowercase letters, digits and `_`; also the .wasm file's name).
    pub name: String,

    /// Where to create it (must not exist yet). Default: ./NAME
    #[arg(long)]
    pub dir: Option<PathBuf>,

    /// The language: rust (a crate using the guest SDK), python (componentize-py) or js
    /// (componentize-js).
    #[arg(long, value_enum, default_value_t = GuestLang::Rust)]
    pub lang: GuestLang,

    /// The world: counting (`wit/counter.wit`: counters and a board) or processor
    /// (`wit/processor`: keyed state, emits, timers, tables), in any of the languages.
    #[arg(long, value_enum, default_value_t = GuestWorld::Counting)]
    pub world: GuestWorld,

    /// Rust only: depend on the SDK at this path (a checkout's `guests/sdk` or
    /// `guests/processor-sdk`, for working on the SDK itself). Default: the SDK comes along in
    /// the project's `vendor/`, with the host's WIT in `wit/`: the project builds with only
    /// the Rust toolchain.
    #[arg(long)]
    pub sdk: Option<PathBuf>,
}

#[derive(Args, Debug, Clone)]
pub struct KafkaArgs {
    /// Kafka bootstrap servers.
    #[arg(long, env = "STREAMHOST_BROKERS", default_value = "127.0.0.1:9092")]
    pub brokers: String,

    /// Extra librdkafka property KEY=VALUE for every client (repeatable; e.g. security.protocol=SASL_SSL).
    /// In the environment variable, separate several with commas.
    #[arg(long = "kafka-config", env = "STREAMHOST_KAFKA_CONFIG", value_name = "KEY=VALUE",
          value_parser = parse_key_value, value_delimiter = ',')]
    pub kafka_config: Vec<(String, String)>,
}

#[derive(Args, Debug, Clone)]
pub struct StateArgs {
    /// Directory of the local RocksDB state.
    #[arg(long, env = "STREAMHOST_STATE_DIR", default_value = "./state")]
    pub state_dir: PathBuf,
}

#[derive(Args, Debug, Clone)]
pub struct TopicArgs {
    #[command(flatten)]
    pub kafka: KafkaArgs,

    /// Input topic of records for the guest.
    #[arg(long, env = "STREAMHOST_INPUT", default_value = "brew.orders.v1")]
    pub input: String,

    /// Changelog topic (must be compacted): the durable copy of every counter.
    #[arg(long, env = "STREAMHOST_CHANGELOG", default_value = "brew.drink-count-changelog")]
    pub changelog: String,

    /// Output topic of the top-N board snapshots.
    #[arg(long, env = "STREAMHOST_OUTPUT", default_value = "brew.drink-counts")]
    pub output: String,

    /// Dead-letter topic: malformed records are copied there with the reason, source
    /// partition and offset in headers. Off unless set.
    #[arg(long, visible_alias = "dead-letter-topic", env = "STREAMHOST_DEAD_LETTER")]
    pub dead_letter: Option<String>,

    /// Spread one job over several hosts in one consumer group (README, "Scale-out"): each
    /// host keeps the state of the partitions it is assigned, and the guest's deltas are
    /// re-keyed through a repartition topic so every key is counted in one place.
    #[arg(long, env = "STREAMHOST_SCALE_OUT", help_heading = "Scale-out")]
    pub scale_out: bool,

    /// A processor guest's output NAME (as its `describe` declares it) goes to TOPIC; one
    /// flag per output (the environment variable takes them comma-separated). A counting
    /// guest has no outputs: its boards go to --output.
    #[arg(long = "output-topic", env = "STREAMHOST_OUTPUT_TOPICS", value_name = "NAME=TOPIC",
          value_delimiter = ',', value_parser = parse_output_topic)]
    pub output_topics: Vec<(String, String)>,

    /// A processor guest's table NAME (as its `describe` declares it) is the compacted TOPIC:
    /// the host keeps a whole local copy, read to its end before the first record and kept up
    /// to date while running. One flag per table (the environment variable takes them
    /// comma-separated).
    #[arg(long = "table", env = "STREAMHOST_TABLES", value_name = "NAME=TOPIC", value_delimiter = ',',
          value_parser = parse_output_topic)]
    pub tables: Vec<(String, String)>,

    /// With --scale-out: the repartition topic (as many partitions as the input).
    /// Default: the changelog topic's name plus `.repartition`.
    #[arg(
        long,
        env = "STREAMHOST_REPARTITION",
        value_name = "TOPIC",
        requires = "scale_out",
        help_heading = "Scale-out"
    )]
    pub repartition: Option<String>,
}

impl KafkaArgs {
    pub fn connection(&self) -> crate::kafka::Connection {
        crate::kafka::Connection { brokers: self.brokers.clone(), properties: self.kafka_config.clone() }
    }
}

impl TopicArgs {
    /// The repartition topic of a --scale-out job.
    pub fn repartition_topic(&self) -> String {
        self.repartition.clone().unwrap_or_else(|| format!("{}.repartition", self.changelog))
    }

    pub fn topics(&self) -> crate::kafka::topics::Topics {
        crate::kafka::topics::Topics {
            input: self.input.clone(),
            changelog: self.changelog.clone(),
            output: self.output.clone(),
            dead_letter: self.dead_letter.clone(),
            repartition: self.scale_out.then(|| self.repartition_topic()),
            outputs: self.output_topics.clone(),
            tables: self.tables.clone(),
            boards: true,
        }
    }
}

/// `NAME=TOPIC` of --output-topic and --table.
fn parse_output_topic(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, topic)) if !name.is_empty() && !topic.is_empty() => Ok((name.to_owned(), topic.to_owned())),
        _ => Err(format!(
            "`{text}` is not NAME=TOPIC (e.g. --output-topic deduped=brew.orders.deduped, --table menu=brew.menu)"
        )),
    }
}

#[derive(Args, Debug, Clone)]
pub struct CreateTopicsArgs {
    #[command(flatten)]
    pub topics: TopicArgs,

    /// Partitions of the input and changelog topics when creating them.
    #[arg(long, env = "STREAMHOST_PARTITIONS", default_value_t = 3)]
    pub partitions: i32,

    /// Replicas of every partition of the topics created (e.g. 3 on a three-broker cluster).
    /// Default: the brokers' `default.replication.factor`. A changelog replicated less than
    /// an existing input is refused.
    #[arg(long, env = "STREAMHOST_REPLICATION_FACTOR", value_parser = clap::value_parser!(i32).range(1..))]
    pub replication_factor: Option<i32>,

    /// `min.insync.replicas` of the topics created: how many replicas an `acks=all` write
    /// (every write the host makes) must reach before it is acknowledged. Default, with
    /// --replication-factor N: N - 1 (at least 1), so one broker may be down; else the
    /// brokers' default.
    #[arg(long, env = "STREAMHOST_MIN_INSYNC_REPLICAS", value_parser = clap::value_parser!(i32).range(1..))]
    pub min_insync_replicas: Option<i32>,
}

impl CreateTopicsArgs {
    /// How the topics are to be replicated, refusing a minimum the replicas cannot reach.
    pub fn replication(&self) -> anyhow::Result<crate::kafka::topics::Replication> {
        let min_insync = self.min_insync_replicas.or(self.replication_factor.map(|n| (n - 1).max(1)));
        if let (Some(factor), Some(min)) = (self.replication_factor, min_insync)
            && min > factor
        {
            bail!(
                "--min-insync-replicas {min} is more than --replication-factor {factor}: no write could ever be \
                 acknowledged; use at most {factor}"
            );
        }
        Ok(crate::kafka::topics::Replication { factor: self.replication_factor, min_insync })
    }
}

impl RunArgs {
    /// The run these flags ask for, refusing flags that do not go together (`requires` in
    /// the flags' attributes refuses the rest).
    pub fn config(&self) -> anyhow::Result<crate::engine::config::RunConfig> {
        use crate::engine::config::{RunConfig, ScaleOut, Windows};
        let windows = self.windows.spec()?.map(|spec| Windows {
            spec,
            event_time: self.windows.event_time,
            emit: self.windows.emit,
        });
        if windows.is_none() && self.windows.emit == Emit::Final {
            bail!("--emit final needs --window: without windows there is no window to complete");
        }
        let scale_out = self.topics.scale_out.then(|| ScaleOut {
            repartition: self.topics.repartition_topic(),
            shard_cleanup_delay: self.shard_cleanup_delay,
            standby_replicas: self.standby_replicas,
        });
        Ok(RunConfig {
            kafka: self.topics.kafka.connection(),
            topics: self.topics.topics(),
            state_dir: self.state.state_dir.clone(),
            group: self.group.clone(),
            instance_id: self.instance_id.clone(),
            transactional_id: self.transactional_id.clone(),
            guarantee: self.guarantee,
            commit_interval: self.commit_interval,
            flush_interval: self.flush_interval,
            top_n: self.top_n,
            create_topics: self.create_topics,
            partitions: self.partitions,
            ack_timeout: self.ack_timeout,
            stall_timeout: self.stall_timeout,
            shutdown_timeout: self.shutdown_timeout,
            stop_at_end: self.stop_at_end,
            max_rate: self.max_rate,
            max_batch: self.max_batch,
            max_state_ops: self.max_state_ops,
            http: self.http.clone(),
            windows,
            scale_out,
        })
    }
}

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    #[command(flatten)]
    pub guest: GuestArgs,

    #[command(flatten)]
    pub topics: TopicArgs,

    #[command(flatten)]
    pub state: StateArgs,

    /// Consumer group id (also the identity of the committed offsets).
    #[arg(long, env = "STREAMHOST_GROUP", default_value = "drink-count")]
    pub group: String,

    /// Static group membership id (Kafka's group.instance.id): a restarted host takes its
    /// partitions back at once instead of waiting out the dead member's session timeout.
    /// Default: derived from the group, this machine's hostname and the state dir (one
    /// state dir is one host). `none` turns static membership off.
    #[arg(long, env = "STREAMHOST_INSTANCE_ID")]
    pub instance_id: Option<String>,

    /// at-least-once: each batch is written to the changelog, then state, then its offsets
    /// are committed. exactly-once: batches go into Kafka transactions (changelog, board and
    /// input offsets committed together, every --commit-interval), state follows each commit.
    #[arg(long, env = "STREAMHOST_GUARANTEE", value_enum, default_value_t = Guarantee::AtLeastOnce)]
    pub guarantee: Guarantee,

    /// exactly-once only: how long a transaction collects batches before it is committed
    /// (sooner when the input is idle). Longer: fewer commits, more to redo after a crash.
    #[arg(long, env = "STREAMHOST_COMMIT_INTERVAL", default_value = "100ms", value_parser = humantime::parse_duration)]
    pub commit_interval: Duration,

    /// Serve /healthz, /readyz, /metrics (Prometheus), /state/{key} and /top on this address
    /// (e.g. 127.0.0.1:9464). Off by default.
    #[arg(long, env = "STREAMHOST_HTTP")]
    pub http: Option<String>,

    /// exactly-once only: Kafka's transactional.id. A second host with the same id fences
    /// (stops) the first. Default: `streamhost-` plus the instance id (one state dir is one
    /// host; with --instance-id none, the id that would have been derived).
    #[arg(long, env = "STREAMHOST_TRANSACTIONAL_ID")]
    pub transactional_id: Option<String>,

    /// How often the board is printed and produced (e.g. 5s, 500ms, 1m).
    #[arg(long, env = "STREAMHOST_FLUSH_INTERVAL", default_value = "5s", value_parser = humantime::parse_duration)]
    pub flush_interval: Duration,

    /// Entries on the board.
    #[arg(long, env = "STREAMHOST_TOP_N", default_value_t = 10)]
    pub top_n: u32,

    /// Create missing topics (changelog compacted) instead of refusing to start.
    #[arg(long, env = "STREAMHOST_CREATE_TOPICS")]
    pub create_topics: bool,

    /// Partitions for topics made by --create-topics.
    #[arg(long, env = "STREAMHOST_PARTITIONS", default_value_t = 3)]
    pub partitions: i32,

    /// Longest wait for Kafka to acknowledge a batch's changelog. Past it the host exits
    /// non-zero without writing state or committing (a restart resumes exactly), rather than
    /// hang. librdkafka itself retries deliveries for message.timeout.ms (5 min).
    #[arg(long, env = "STREAMHOST_ACK_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration)]
    pub ack_timeout: Duration,

    /// Exit with an error when the input delivers nothing for this long while records wait
    /// on it (a stuck Kafka consumer), so that a supervisor restarts the host; 0s turns it off.
    #[arg(long, env = "STREAMHOST_STALL_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration)]
    pub stall_timeout: Duration,

    /// Longest a stop (SIGTERM/SIGINT) may take. A stop during start-up exits at once; one
    /// while counting finishes the batch in flight, commits and publishes a last board, and
    /// gives up on Kafka after half of this (a batch it did not acknowledge is counted by the
    /// next start). Past it the host exits 1 saying what it was still doing; 0s: no bound.
    #[arg(long, env = "STREAMHOST_SHUTDOWN_TIMEOUT", value_name = "DURATION", default_value = "10s",
          value_parser = humantime::parse_duration)]
    pub shutdown_timeout: Duration,

    /// Exit 0 once every assigned input partition is consumed to its end (backfills,
    /// batch jobs, benchmarks), after committing and publishing a last board.
    #[arg(long, env = "STREAMHOST_STOP_AT_END")]
    pub stop_at_end: bool,

    /// With --scale-out: how long the shard of a partition this host gave up (or found on
    /// disk without owning it) is kept; a partition that comes back within it replays only its
    /// changelog tail, later it is restored in full. Then the shard is deleted.
    #[arg(long, env = "STREAMHOST_SHARD_CLEANUP_DELAY", value_name = "DURATION", default_value = "10m",
          value_parser = humantime::parse_duration, requires = "scale_out", help_heading = "Scale-out")]
    pub shard_cleanup_delay: Duration,

    /// With --scale-out: warm copies kept of each shard on other hosts (as Kafka Streams'
    /// num.standby.replicas). A host tails the changelog partitions of the shards it stands by
    /// for into local copies, so when one of them is assigned to it (its owner died or left)
    /// it counts after replaying only the last moments instead of the whole shard. The copies
    /// go to the hosts after the owner in the group's member order; the group's assignor
    /// (librdkafka's cooperative-sticky: no other can be plugged in) does not know where they
    /// are, so a failover lands on a warm copy for certain only when every other host keeps
    /// one (N = hosts - 1). Costs each host the disk and the changelog reading of N shards
    /// per shard it owns.
    #[arg(
        long,
        env = "STREAMHOST_STANDBY_REPLICAS",
        value_name = "N",
        default_value_t = 0,
        requires = "scale_out",
        help_heading = "Scale-out"
    )]
    pub standby_replicas: usize,

    /// Most input records consumed per second (0: no limit), e.g. to backfill without
    /// saturating what reads the board, or to spread a demo out. Per host.
    #[arg(long, env = "STREAMHOST_MAX_RATE", value_name = "RECORDS_PER_S", default_value_t = 0)]
    pub max_rate: u64,

    /// Most records in one batch (one guest call, one changelog flush, one state write, one commit).
    #[arg(long, env = "STREAMHOST_MAX_BATCH", default_value_t = 5000)]
    pub max_batch: usize,

    /// A processor guest: most state operations (get, put, delete, emit, and each entry a
    /// range returns) one record may make; past it the call traps and the record is skipped
    /// and dead-lettered like a malformed one.
    #[arg(long, env = "STREAMHOST_MAX_STATE_OPS", default_value_t = crate::guest::processor::DEFAULT_STATE_OPS)]
    pub max_state_ops: u64,

    #[command(flatten)]
    pub windows: WindowArgs,
}

/// Event-time windows (README, "Windows"). Without --window, counters are cumulative.
#[derive(Args, Debug, Clone)]
pub struct WindowArgs {
    /// Count in event-time windows of this size (e.g. 1h) instead of since the beginning.
    /// Event time is the Kafka record timestamp. Windows start at multiples of --advance.
    #[arg(long = "window", env = "STREAMHOST_WINDOW", value_parser = humantime::parse_duration, help_heading = "Windows")]
    pub size: Option<Duration>,

    /// Hopping windows: a new window every STEP (e.g. 5m; the size must be a multiple of it).
    /// Default: the window size (tumbling windows).
    #[arg(long, env = "STREAMHOST_ADVANCE", value_name = "STEP", value_parser = humantime::parse_duration, requires = "size",
          help_heading = "Windows")]
    pub advance: Option<Duration>,

    /// How long after a window's end records may still arrive for it (measured in event time:
    /// the partition's largest timestamp seen). Older records are late: skipped, counted,
    /// dead-lettered. Default: 0s.
    #[arg(long, env = "STREAMHOST_GRACE", value_name = "DURATION", value_parser = humantime::parse_duration, requires = "size",
          help_heading = "Windows")]
    pub grace: Option<Duration>,

    /// How long after its end a window stays in state (then its counters are deleted and
    /// tombstoned in the changelog). Default: window size + grace, so the newest complete
    /// window stays until the next one completes.
    #[arg(long, env = "STREAMHOST_WINDOW_RETENTION", value_name = "DURATION", value_parser = humantime::parse_duration,
          requires = "size", help_heading = "Windows")]
    pub window_retention: Option<Duration>,

    /// Where a record's event time comes from: kafka (the record timestamp) or guest (the
    /// guest's `event-time` export, WIT 0.2.1, e.g. an order's created_at; records it knows
    /// no time for fall back to their Kafka timestamp).
    #[arg(long, env = "STREAMHOST_EVENT_TIME", value_enum, default_value_t = EventTime::Kafka, requires = "size",
          help_heading = "Windows")]
    pub event_time: EventTime,

    /// changes: every --flush-interval, the boards of the newest complete window and of the
    /// window in progress. final: one board per window, once it is complete.
    #[arg(long, env = "STREAMHOST_EMIT", value_enum, default_value_t = Emit::Changes, help_heading = "Windows")]
    pub emit: Emit,
}

impl WindowArgs {
    /// The windows asked for, checked; `None` without --window.
    pub fn spec(&self) -> anyhow::Result<Option<crate::window::WindowSpec>> {
        self.size
            .map(|size| {
                crate::window::WindowSpec::new(
                    size,
                    self.advance,
                    self.grace.unwrap_or_default(),
                    self.window_retention,
                )
            })
            .transpose()
    }
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum GuestWorld {
    Counting,
    Processor,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum GuestLang {
    Rust,
    Python,
    Js,
}

/// The guest and its limits (run, check, test).
#[derive(Args, Debug, Clone)]
pub struct GuestArgs {
    /// The guest component (.wasm) exporting streamhost:counter/counter.
    #[arg(long = "guest", env = "STREAMHOST_GUEST")]
    pub path: PathBuf,

    /// Linear memory a guest may grow to, in MiB; beyond it the call traps.
    #[arg(long = "guest-memory-mb", env = "STREAMHOST_GUEST_MEMORY_MB", default_value_t = 64)]
    pub memory_mb: u64,

    /// Longest one guest call may run before it is interrupted (a trap).
    #[arg(long = "guest-timeout", env = "STREAMHOST_GUEST_TIMEOUT", default_value = "2s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,

    /// Where compiled guests are kept (named by content and engine settings), so that a
    /// restart loads in a millisecond instead of compiling again. `none`: compile every time.
    #[arg(long = "guest-cache", env = "STREAMHOST_GUEST_CACHE", default_value_os_t = default_guest_cache())]
    pub cache: PathBuf,
}

impl GuestArgs {
    /// The guest these flags name, with its limits and cache.
    pub fn source(&self) -> crate::guest::Source {
        crate::guest::Source { path: self.path.clone(), limits: self.limits(), cache: self.cache_dir().map(Into::into) }
    }

    pub fn limits(&self) -> crate::guest::Limits {
        crate::guest::Limits { memory_bytes: (self.memory_mb * 1024 * 1024) as usize, call_timeout: self.timeout }
    }

    pub fn cache_dir(&self) -> Option<&std::path::Path> {
        (self.cache.as_os_str() != "none").then_some(self.cache.as_path())
    }
}

/// `$XDG_CACHE_HOME/streamhost/guests`, else `~/.cache/streamhost/guests`.
fn default_guest_cache() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"));
    base.join("streamhost").join("guests")
}

#[derive(Args, Debug, Clone)]
pub struct CheckArgs {
    #[command(flatten)]
    pub guest: GuestArgs,
}

#[derive(Args, Debug, Clone)]
pub struct TestArgs {
    #[command(flatten)]
    pub guest: GuestArgs,

    /// Records to count, one per line (each line is one record's value, as the input topic
    /// would carry it; an empty line is an empty record).
    #[arg(long)]
    pub input: PathBuf,

    /// Expected outcome (JSON: any of "counts", "records_processed", "records_skipped",
    /// "top", and for a processor guest "state" and "emits"); a difference is shown and the
    /// exit code is 1. `--json` prints this format.
    #[arg(long)]
    pub expect: Option<PathBuf>,

    /// A processor guest: the wall clock (ms since the epoch) its wall-clock timers see.
    /// Default: each record's timestamp (a line `@<ms> <value>` gives a record its timestamp;
    /// the others keep the one before, 0 at first).
    #[arg(long, value_name = "MS")]
    pub now: Option<i64>,

    /// A processor guest's table NAME, from FILE: one row per line, the key, a tab, the value.
    #[arg(long = "table", value_name = "NAME=FILE", value_parser = parse_output_topic)]
    pub tables: Vec<(String, String)>,

    /// Entries on the board.
    #[arg(long, default_value_t = 10)]
    pub top_n: u32,

    /// Print the outcome as JSON (the `--expect` format) instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug, Clone)]
pub struct RestoreArgs {
    #[command(flatten)]
    pub kafka: KafkaArgs,

    #[command(flatten)]
    pub state: StateArgs,

    /// Changelog topic to restore from.
    #[arg(long, env = "STREAMHOST_CHANGELOG", default_value = "brew.drink-count-changelog")]
    pub changelog: String,

    /// Replace a non-empty state dir (its contents are deleted first).
    #[arg(long)]
    pub force: bool,

    /// Restore the shards of a --scale-out host: changelog partition p into
    /// `<state-dir>/shard-<p>`, every partition or the one given with --partition (e.g. to
    /// prepare a machine before its host joins; a host restores its shards by itself too).
    /// A scale-out job's changelog needs this flag: each partition holds its own shard's totals.
    #[arg(long)]
    pub scale_out: bool,

    /// With --scale-out: only this partition's shard.
    #[arg(long, requires = "scale_out")]
    pub partition: Option<i32>,
}

#[derive(Args, Debug, Clone)]
pub struct BoardArgs {
    #[command(flatten)]
    pub guest: GuestArgs,

    #[command(flatten)]
    pub kafka: KafkaArgs,

    /// Output topic of the board snapshots.
    #[arg(long, env = "STREAMHOST_OUTPUT", default_value = "brew.drink-counts")]
    pub output: String,

    /// Entries on the board. For a scale-out job at most the hosts' --top-n: each shard
    /// publishes its own top-N only.
    #[arg(long, env = "STREAMHOST_TOP_N", default_value_t = 10)]
    pub top_n: u32,

    /// Print the board as JSON (the output topic's format) instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug, Clone)]
pub struct DumpArgs {
    #[command(flatten)]
    pub state: StateArgs,
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.to_owned())),
        _ => Err(format!("expected KEY=VALUE, got `{s}`")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn kafka_config_pairs() {
        assert_eq!(parse_key_value("a.b=c=d").unwrap(), ("a.b".into(), "c=d".into()));
        assert!(parse_key_value("novalue").is_err());
        assert!(parse_key_value("=x").is_err());
    }
}
