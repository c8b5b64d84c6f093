//! What `host run` is asked to do, in plain types. Built once from the command line
//! (`cli::RunArgs::config`), which refuses every combination of flags that does not make
//! sense, so the engine below neither sees clap nor has flag rules of its own.

use std::path::PathBuf;
use std::time::Duration;

use crate::guest::Counter;
use crate::kafka::Connection;
use crate::kafka::topics::Topics;
use crate::window::WindowSpec;

/// What a crash may cost in counts (README, "What survives what").
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Guarantee {
    /// Exact after any crash with the state dir intact; with it lost as well, a counter may
    /// exceed the truth by one batch's deltas.
    AtLeastOnce,
    /// Exact after any crash, state dir lost or not: Kafka transactions carry each batch's
    /// changelog, board and input offsets together.
    ExactlyOnce,
}

impl Guarantee {
    pub fn name(self) -> &'static str {
        match self {
            Guarantee::AtLeastOnce => "at-least-once",
            Guarantee::ExactlyOnce => "exactly-once",
        }
    }
}

/// Where a record's event time comes from (with windows).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum EventTime {
    /// The Kafka record timestamp.
    Kafka,
    /// The guest's `event-time` export (records it knows no time for fall back to Kafka's).
    Guest,
}

/// When a window's board is produced.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Emit {
    /// Every flush interval.
    Changes,
    /// Once per window, when it is complete.
    Final,
}

/// `--window` and its companions.
#[derive(Clone, Debug)]
pub struct Windows {
    pub spec: WindowSpec,
    pub event_time: EventTime,
    pub emit: Emit,
}

/// `--scale-out` and its companions.
#[derive(Clone, Debug)]
pub struct ScaleOut {
    pub repartition: String,
    /// How long a shard no longer owned is kept on disk.
    pub shard_cleanup_delay: Duration,
    /// Warm copies of each shard kept on other hosts (`engine::standby`).
    pub standby_replicas: usize,
}

#[derive(Clone, Debug)]
pub struct RunConfig {
    pub kafka: Connection,
    pub topics: Topics,
    pub state_dir: PathBuf,
    pub group: String,
    /// Static membership: as given (`None`: derived from the group and state dir; `none`: off).
    pub instance_id: Option<String>,
    /// exactly-once: as given (`None`: derived from the instance).
    pub transactional_id: Option<String>,
    pub guarantee: Guarantee,
    pub commit_interval: Duration,
    pub flush_interval: Duration,
    pub top_n: u32,
    /// Create missing topics, with `partitions` partitions, instead of refusing to start.
    pub create_topics: bool,
    pub partitions: i32,
    pub ack_timeout: Duration,
    pub stall_timeout: Duration,
    pub shutdown_timeout: Duration,
    pub stop_at_end: bool,
    pub max_rate: u64,
    pub max_batch: usize,
    /// A processor guest: most state operations per record.
    pub max_state_ops: u64,
    /// `--http`'s address (the loop then also looks up the lag for the board page).
    pub http: Option<String>,
    pub windows: Option<Windows>,
    pub scale_out: Option<ScaleOut>,
}

impl RunConfig {
    pub fn exactly_once(&self) -> bool {
        self.guarantee == Guarantee::ExactlyOnce
    }

    /// exactly-once: the producer's transactional id (`--transactional-id`, else derived
    /// from the host's instance: one state dir is one host); `None` under at-least-once.
    pub fn transactional_id(&self) -> Option<String> {
        self.exactly_once().then(|| {
            self.transactional_id.clone().unwrap_or_else(|| {
                format!("streamhost-{}", crate::kafka::clients::default_instance_id(&self.group, &self.state_dir))
            })
        })
    }

    /// `--emit` (only meaningful with windows).
    pub fn emit(&self) -> Emit {
        self.windows.as_ref().map_or(Emit::Changes, |w| w.emit)
    }

    /// `--event-time guest` with windows: the guest must export `event-time`.
    pub fn needs_guest_event_time(&self) -> bool {
        self.windows.as_ref().is_some_and(|w| w.event_time == EventTime::Guest)
    }

    /// Refuses a guest this run cannot count with: `--event-time guest` needs its `event-time`;
    /// outputs and tables are a processor's.
    pub fn check_guest(&self, guest: &dyn Counter) -> anyhow::Result<()> {
        if let Some((flag, (name, _))) = (self.topics.outputs.first().map(|o| ("--output-topic", o)))
            .or_else(|| self.topics.tables.first().map(|t| ("--table", t)))
        {
            anyhow::bail!(
                "{flag} {name}=...: guest {} is a counting guest, which has no outputs or tables (its boards go \
                 to --output); drop {flag}, or run a processor guest (wit/processor)",
                guest.describe()
            );
        }
        if self.needs_guest_event_time() && !guest.has_event_time() {
            anyhow::bail!(
                "--event-time guest: guest {} does not export {}/event-time (WIT 0.2.1). Rebuild it with the \
                 guest SDK and an event-time function (counting_guest!(Name, count, event_time = when)), or use \
                 --event-time kafka",
                guest.describe(),
                crate::WIT_PACKAGE
            );
        }
        Ok(())
    }

    /// Refuses a run that does not give a processor guest what it declares, or asks for what
    /// only counting guests do.
    pub fn check_processor(&self, description: &crate::guest::processor::Description) -> anyhow::Result<()> {
        if self.windows.is_some() {
            anyhow::bail!(
                "--window counts a counting guest's deltas in windows; a processor guest keeps its own state (drop --window and its companions)"
            );
        }
        if self.scale_out.is_some() {
            anyhow::bail!("--scale-out does not run processor guests yet: run one host per job");
        }
        check_mapped("output", "--output-topic", &description.outputs, &self.topics.outputs)?;
        check_mapped("table", "--table", &description.tables, &self.topics.tables)
    }

    /// Whether a guest swapped in (SIGHUP, a new file) may take over; if not, says why.
    pub fn accepts_swap(&self, guest: &dyn Counter) -> bool {
        match self.check_guest(guest) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(guest = %guest.describe(), reason = %e, "new guest refused; the running guest stays");
                false
            }
        }
    }
}

/// Refuses a run whose `flag NAME=TOPIC` mappings do not name exactly the `what`s (outputs,
/// tables) the guest declares.
fn check_mapped(what: &str, flag: &str, declared: &[String], mapped: &[(String, String)]) -> anyhow::Result<()> {
    let declared: std::collections::BTreeSet<&str> = declared.iter().map(String::as_str).collect();
    let mapped: std::collections::BTreeSet<&str> = mapped.iter().map(|(n, _)| n.as_str()).collect();
    let plural = |n: usize| if n == 1 { "" } else { "s" };
    let names = |v: &[&str]| v.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ");
    let missing: Vec<&str> = declared.difference(&mapped).copied().collect();
    if !missing.is_empty() {
        anyhow::bail!(
            "the guest declares {what}{} {} but the run maps no topic to {}: add {}",
            plural(missing.len()),
            names(&missing),
            if missing.len() == 1 { "it" } else { "them" },
            missing.iter().map(|n| format!("{flag} {n}=TOPIC")).collect::<Vec<_>>().join(" ")
        );
    }
    let unknown: Vec<&str> = mapped.difference(&declared).copied().collect();
    if !unknown.is_empty() {
        anyhow::bail!(
            "{flag} names {what}{} {} that the guest does not declare (it declares: {})",
            plural(unknown.len()),
            names(&unknown),
            if declared.is_empty() {
                "none".to_owned()
            } else {
                declared.iter().copied().collect::<Vec<_>>().join(", ")
            }
        );
    }
    Ok(())
}
