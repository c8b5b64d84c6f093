//! The topics the host depends on: checked at start-up (exist; changelog compacted), and
//! created or deleted on request (`--create-topics`, `host create-topics|delete-topics`).

use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use futures::executor::block_on;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::RDKafkaErrorCode;

use crate::kafka::Connection;

/// The topics of a job, by role.
#[derive(Clone, Debug)]
pub struct Topics {
    pub input: String,
    /// Compacted: the durable copy of every counter.
    pub changelog: String,
    /// The boards.
    pub output: String,
    pub dead_letter: Option<String>,
    /// With --scale-out: the repartition topic.
    pub repartition: Option<String>,
    /// A processor guest's outputs (`--output-topic NAME=TOPIC`): (name, topic).
    pub outputs: Vec<(String, String)>,
    /// A processor guest's tables (`--table NAME=TOPIC`, compacted topics it reads): (name, topic).
    pub tables: Vec<(String, String)>,
    /// Whether the job publishes boards to `output` (a counting guest's does; a processor's
    /// does not, and its run neither needs nor checks that topic).
    pub boards: bool,
}

/// The changelog's settings: compaction keeps the newest value of every key forever; short
/// segments and a low dirty ratio let compaction run on small volumes too.
const CHANGELOG_CONFIG: [(&str, &str); 3] =
    [("cleanup.policy", "compact"), ("segment.ms", "60000"), ("min.cleanable.dirty.ratio", "0.01")];

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Input,
    Changelog,
    Output,
    DeadLetter,
    Repartition,
    /// A processor's table: read, never written (created compacted).
    Table,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Input => "input",
            Role::Changelog => "changelog",
            Role::Output => "output",
            Role::DeadLetter => "dead-letter",
            Role::Repartition => "repartition",
            Role::Table => "table",
        }
    }
}

pub(crate) fn roles(args: &Topics) -> Vec<(Role, String)> {
    let mut topics = vec![(Role::Input, args.input.clone()), (Role::Changelog, args.changelog.clone())];
    if args.boards {
        topics.push((Role::Output, args.output.clone()));
    }
    topics.extend(args.outputs.iter().map(|(_, topic)| (Role::Output, topic.clone())));
    topics.extend(args.tables.iter().map(|(_, topic)| (Role::Table, topic.clone())));
    if let Some(dlq) = &args.dead_letter {
        topics.push((Role::DeadLetter, dlq.clone()));
    }
    if let Some(repartition) = &args.repartition {
        topics.push((Role::Repartition, repartition.clone()));
    }
    topics
}

pub(crate) fn admin(kafka: &Connection) -> Result<AdminClient<DefaultClientContext>> {
    crate::kafka::clients::admin(kafka).create().context("creating the Kafka admin client")
}

pub(crate) fn options() -> AdminOptions {
    AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))).request_timeout(Some(Duration::from_secs(30)))
}

/// What the start-up check learnt about the topics the host writes.
pub struct Checked {
    /// The smallest `max.message.bytes` of the topics the host produces to: the producer
    /// keeps its batches within it, so a record too large for its topic fails at once,
    /// locally, instead of failing a whole batch (or transaction) at the broker.
    pub max_message_bytes: usize,
    /// With --scale-out: the partitions of the input (and so of the repartition topic and the
    /// changelog): the job's shard count.
    pub shards: Option<i32>,
}

/// Refuses to start on a missing topic (unless `create`), a changelog that is not compacted,
/// or state replicated less than its input.
pub fn check(kafka: &Connection, args: &Topics, create: bool, partitions: i32) -> Result<Checked> {
    let admin = admin(kafka)?;
    let brokers = &kafka.brokers;
    let roles = roles(args);
    let missing = missing(&admin, &roles, brokers)?;
    if !missing.is_empty() {
        if !create {
            let list: Vec<String> = missing.iter().map(|(r, t)| format!("{} topic `{t}`", r.name())).collect();
            bail!(
                "{} not exist on {}. Create them with `host create-topics` (or `make topic-create-all`), \
                 or start with --create-topics",
                if list.len() == 1 { format!("{} does", list[0]) } else { format!("{} do", list.join(", ")) },
                brokers
            );
        }
        let partitions = partitions_for(&admin, brokers, args, partitions)?;
        create_topics(&admin, &missing, partitions, Replication::DEFAULT)?;
    }
    check_compacted(&admin, &args.changelog, brokers)?;
    check_replication(&admin, args, None, brokers)?;
    let shards = match &args.repartition {
        Some(repartition) => Some(check_partitioned_like_input(&admin, args, repartition)?),
        None => None,
    };
    let mut max_message_bytes = usize::MAX;
    for (role, topic) in &roles {
        if !matches!(role, Role::Input | Role::Table) {
            let limit = config_value(&admin, topic, "max.message.bytes", brokers)?;
            // Unknown: Kafka's default (1 MiB + 12 bytes of overhead).
            max_message_bytes = max_message_bytes.min(limit.parse().unwrap_or(1_048_588));
        }
    }
    Ok(Checked { max_message_bytes, shards })
}

/// The topics of `roles` that do not exist on the brokers.
pub(crate) fn missing<'r>(
    admin: &AdminClient<DefaultClientContext>,
    roles: &'r [(Role, String)],
    brokers: &str,
) -> Result<Vec<(Role, &'r str)>> {
    let mut missing = Vec::new();
    for (role, topic) in roles {
        if !exists(admin, topic, brokers)? {
            missing.push((*role, topic.as_str()));
        }
    }
    Ok(missing)
}

fn exists(admin: &AdminClient<DefaultClientContext>, topic: &str, brokers: &str) -> Result<bool> {
    let metadata = admin
        .inner()
        .fetch_metadata(Some(topic), Duration::from_secs(30))
        .with_context(|| format!("asking {brokers} about topic `{topic}` (is the broker up?)"))?;
    match metadata.topics().iter().find(|t| t.name() == topic).and_then(|t| t.error()) {
        None => Ok(true),
        Some(e) if RDKafkaErrorCode::from(e) == RDKafkaErrorCode::UnknownTopicOrPartition => Ok(false),
        Some(e) => bail!("topic `{topic}`: {}", RDKafkaErrorCode::from(e)),
    }
}

/// One config value of a topic ("" if it has none, or if the broker does not say within
/// 30 seconds).
fn config_value(admin: &AdminClient<DefaultClientContext>, topic: &str, name: &str, brokers: &str) -> Result<String> {
    // A topic created a moment ago may be described before its configs are known (the
    // value missing altogether): ask again for a while rather than misjudge a good topic,
    // but not for ever.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let options = AdminOptions::new()
        .operation_timeout(Some(Duration::from_secs(10)))
        .request_timeout(Some(Duration::from_secs(10)));
    loop {
        let results = block_on(admin.describe_configs(&[ResourceSpecifier::Topic(topic)], &options))
            .with_context(|| format!("asking {brokers} for the configs of `{topic}`"))?;
        let config = results
            .into_iter()
            .next()
            .ok_or_else(|| anyhow!("no config returned for `{topic}`"))?
            .map_err(|code| anyhow!("describing topic `{topic}`: {code}"))?;
        let value = config.get(name).and_then(|e| e.value.clone()).unwrap_or_default();
        if !value.is_empty() || std::time::Instant::now() > deadline {
            return Ok(value);
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// With --scale-out, shard p is fed by repartition partition p and written to changelog
/// partition p, one shard per input partition: the three topics must agree.
/// Refuses a changelog or repartition topic partitioned unlike the input; returns the count.
fn check_partitioned_like_input(
    admin: &AdminClient<DefaultClientContext>,
    args: &Topics,
    repartition: &str,
) -> Result<i32> {
    let input = partition_count(admin, &args.input)?;
    for (role, topic) in [(Role::Changelog, args.changelog.as_str()), (Role::Repartition, repartition)] {
        let topic = topic.to_owned();
        let count = partition_count(admin, &topic)?;
        if count != input {
            bail!(
                "{} topic `{topic}` has {count} partitions but input `{}` has {input}: with --scale-out, the \
                 state of shard p comes from repartition partition p and is written to changelog partition p, so \
                 both need as many partitions as the input. Create the job's topics afresh with \
                 `host create-topics --scale-out --partitions {input}` (new names, or after `host delete-topics \
                 --scale-out`)",
                role.name(),
                args.input
            );
        }
    }
    Ok(input)
}

/// The number of partitions of an existing topic.
pub(crate) fn partition_count(admin: &AdminClient<DefaultClientContext>, topic: &str) -> Result<i32> {
    let metadata = admin
        .inner()
        .fetch_metadata(Some(topic), Duration::from_secs(30))
        .with_context(|| format!("asking for the partitions of `{topic}`"))?;
    let count = metadata.topics().iter().find(|t| t.name() == topic).map_or(0, |t| t.partitions().len());
    Ok(count as i32)
}

fn check_compacted(admin: &AdminClient<DefaultClientContext>, topic: &str, brokers: &str) -> Result<()> {
    let policy = config_value(admin, topic, "cleanup.policy", brokers)?;
    if policy != "compact" {
        bail!(
            "changelog topic `{topic}` has cleanup.policy={policy}, but it must be `compact`: \
             otherwise retention deletes old counter values and a restore loses keys. Fix it with \
             `kafka-configs.sh --bootstrap-server {brokers} --alter --entity-type topics --entity-name {topic} \
             --add-config cleanup.policy=compact`, or delete it and run `host create-topics`"
        );
    }
    Ok(())
}

/// How new topics are replicated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Replication {
    /// Replicas per partition (`None`: the broker's `default.replication.factor`).
    pub factor: Option<i32>,
    /// `min.insync.replicas`: how many replicas an `acks=all` write must reach (`None`: the
    /// broker's default).
    pub min_insync: Option<i32>,
}

impl Replication {
    /// The brokers' defaults.
    pub const DEFAULT: Replication = Replication { factor: None, min_insync: None };
}

/// How an existing topic is replicated: replicas of its first partition, and its
/// `min.insync.replicas` (1 when the broker does not say).
fn replication_of(admin: &AdminClient<DefaultClientContext>, topic: &str, brokers: &str) -> Result<(i32, i32)> {
    let metadata = admin
        .inner()
        .fetch_metadata(Some(topic), Duration::from_secs(30))
        .with_context(|| format!("asking for the replicas of `{topic}`"))?;
    let replicas = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .and_then(|t| t.partitions().first())
        .map_or(0, |p| p.replicas().len() as i32);
    let min_insync = config_value(admin, topic, "min.insync.replicas", brokers)?.parse().unwrap_or(1);
    Ok((replicas, min_insync))
}

/// Refuses state kept less durably than its input: with `acks=all`, a changelog (or
/// repartition topic) with fewer replicas or a lower `min.insync.replicas` than the input
/// could lose writes it acknowledged to one broker's loss while the input keeps the records
/// they came from, and a restore would then miss them. `planned` is what topics about to be
/// created get (`host create-topics`); existing topics are asked.
pub(crate) fn check_replication(
    admin: &AdminClient<DefaultClientContext>,
    args: &Topics,
    planned: Option<(Replication, &[(Role, &str)])>,
    brokers: &str,
) -> Result<()> {
    let of = |topic: &str| -> Result<Option<(i32, i32)>> {
        if let Some((replication, new)) = planned
            && new.iter().any(|(_, t)| *t == topic)
        {
            // Created with the brokers' defaults: as replicated as any other topic so created.
            let Some(factor) = replication.factor else { return Ok(None) };
            return Ok(Some((factor, replication.min_insync.unwrap_or(1))));
        }
        replication_of(admin, topic, brokers).map(Some)
    };
    let Some((input_replicas, input_isr)) = of(&args.input)? else { return Ok(()) };
    let state = std::iter::once((Role::Changelog, args.changelog.as_str()))
        .chain(args.repartition.as_deref().map(|r| (Role::Repartition, r)));
    for (role, topic) in state {
        let Some((replicas, isr)) = of(topic)? else { continue };
        if replicas < input_replicas || isr < input_isr {
            bail!(
                "{} topic `{topic}` is replicated less than input `{}`: {replicas} replicas with \
                 min.insync.replicas={isr}, against {input_replicas} with {input_isr}. With acks=all, a write it \
                 acknowledged could be lost with one broker while the input still holds the records it came from, \
                 and a restore would miss it. Create the job's topics with `host create-topics \
                 --replication-factor {input_replicas}` (new names, or after `host delete-topics`)",
                role.name(),
                args.input
            );
        }
    }
    Ok(())
}

pub(crate) fn create_topics(
    admin: &AdminClient<DefaultClientContext>,
    topics: &[(Role, &str)],
    partitions: i32,
    replication: Replication,
) -> Result<()> {
    let min_insync = replication.min_insync.map(|n| n.to_string());
    let new: Vec<NewTopic> = topics
        .iter()
        .map(|(role, name)| {
            // The board and dead letters need no parallelism; input and changelog share a count
            // (as in Kafka Streams, state is partitioned like its input).
            let count = if matches!(role, Role::Input | Role::Changelog | Role::Repartition) { partitions } else { 1 };
            // -1: the broker's default replication factor.
            let mut topic = NewTopic::new(name, count, TopicReplication::Fixed(replication.factor.unwrap_or(-1)));
            if let Some(min_insync) = &min_insync {
                topic = topic.set("min.insync.replicas", min_insync);
            }
            if matches!(role, Role::Changelog | Role::Table) {
                for (k, v) in CHANGELOG_CONFIG {
                    topic = topic.set(k, v);
                }
            }
            topic
        })
        .collect();
    for result in block_on(admin.create_topics(&new, &options())).context("creating topics")? {
        match result {
            Ok(name) => tracing::info!(topic = name, "created topic"),
            Err((name, RDKafkaErrorCode::TopicAlreadyExists)) => tracing::info!(topic = name, "topic already exists"),
            Err((name, code)) => bail!("creating topic `{name}`: {code}"),
        }
    }
    Ok(())
}

/// How many partitions new topics get: with --scale-out, as many as an existing input has
/// (a shard per input partition), else `asked`.
pub(crate) fn partitions_for(
    admin: &AdminClient<DefaultClientContext>,
    brokers: &str,
    args: &Topics,
    asked: i32,
) -> Result<i32> {
    if args.repartition.is_none() || !exists(admin, &args.input, brokers)? {
        return Ok(asked);
    }
    let count = partition_count(admin, &args.input)?;
    if count != asked {
        tracing::info!(input = %args.input, partitions = count, "new topics get the existing input's partition count");
    }
    Ok(count)
}
