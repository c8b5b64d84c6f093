//! The topics the host depends on: checked at start-up (exist; changelog compacted), and
//! created or deleted on request (`--create-topics`, `host create-topics|delete-topics`).

use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use futures::executor::block_on;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::RDKafkaErrorCode;

use crate::cli::{CreateTopicsArgs, KafkaArgs, TopicArgs};

/// The changelog's settings: compaction keeps the newest value of every key forever; short
/// segments and a low dirty ratio let compaction run on small volumes too.
const CHANGELOG_CONFIG: [(&str, &str); 3] =
    [("cleanup.policy", "compact"), ("segment.ms", "60000"), ("min.cleanable.dirty.ratio", "0.01")];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Input,
    Changelog,
    Output,
    DeadLetter,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Input => "input",
            Role::Changelog => "changelog",
            Role::Output => "output",
            Role::DeadLetter => "dead-letter",
        }
    }
}

fn roles(args: &TopicArgs) -> Vec<(Role, &str)> {
    let mut topics = vec![(Role::Input, args.input.as_str()), (Role::Changelog, args.changelog.as_str()), (Role::Output, args.output.as_str())];
    if let Some(dlq) = &args.dead_letter {
        topics.push((Role::DeadLetter, dlq.as_str()));
    }
    topics
}

fn admin(kafka: &KafkaArgs) -> Result<AdminClient<DefaultClientContext>> {
    crate::config::admin(kafka).create().context("creating the Kafka admin client")
}

fn options() -> AdminOptions {
    AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))).request_timeout(Some(Duration::from_secs(30)))
}

/// Refuses to start on a missing topic (unless `create`) or a changelog that is not compacted.
pub fn check(args: &TopicArgs, create: bool, partitions: i32) -> Result<()> {
    let admin = admin(&args.kafka)?;
    let topics = roles(args);
    let specifiers: Vec<_> = topics.iter().map(|(_, t)| ResourceSpecifier::Topic(t)).collect();
    let results = block_on(admin.describe_configs(&specifiers, &options()))
        .with_context(|| format!("asking {} for the topics' configs (is the broker up?)", args.kafka.brokers))?;
    let mut missing = Vec::new();
    for ((role, topic), result) in topics.iter().zip(results) {
        match result {
            Ok(config) => {
                if *role == Role::Changelog {
                    let policy = config.get("cleanup.policy").and_then(|e| e.value.clone()).unwrap_or_default();
                    if policy != "compact" {
                        bail!(
                            "changelog topic `{topic}` has cleanup.policy={policy}, but it must be `compact`: \
                             otherwise retention deletes old counter values and a restore loses keys. Fix it with \
                             `kafka-configs.sh --bootstrap-server {} --alter --entity-type topics --entity-name {topic} \
                             --add-config cleanup.policy=compact`, or delete it and run `host create-topics`",
                            args.kafka.brokers
                        );
                    }
                }
            }
            Err(RDKafkaErrorCode::UnknownTopicOrPartition) => missing.push((*role, *topic)),
            Err(e) => return Err(anyhow!("describing {} topic `{topic}`: {e}", role.name())),
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    if !create {
        let list: Vec<String> = missing.iter().map(|(r, t)| format!("{} topic `{t}`", r.name())).collect();
        bail!(
            "{} not exist on {}. Create them with `host create-topics` (or `make topic-create-all`), \
             or start with --create-topics",
            if list.len() == 1 { format!("{} does", list[0]) } else { format!("{} do", list.join(", ")) },
            args.kafka.brokers
        );
    }
    create_topics(&admin, &missing, partitions)
}

fn create_topics(admin: &AdminClient<DefaultClientContext>, topics: &[(Role, &str)], partitions: i32) -> Result<()> {
    let new: Vec<NewTopic> = topics
        .iter()
        .map(|(role, name)| {
            // The board and dead letters need no parallelism; input and changelog share a count
            // (as in Kafka Streams, state is partitioned like its input).
            let count = if matches!(role, Role::Input | Role::Changelog) { partitions } else { 1 };
            // -1: the broker's default replication factor.
            let mut topic = NewTopic::new(name, count, TopicReplication::Fixed(-1));
            if *role == Role::Changelog {
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

/// `host create-topics`.
pub fn create_command(args: CreateTopicsArgs) -> Result<()> {
    let admin = admin(&args.topics.kafka)?;
    create_topics(&admin, &roles(&args.topics), args.partitions)
}

/// `host delete-topics`.
pub fn delete_command(args: TopicArgs) -> Result<()> {
    let admin = admin(&args.kafka)?;
    let names: Vec<&str> = roles(&args).into_iter().map(|(_, t)| t).collect();
    for result in block_on(admin.delete_topics(&names, &options())).context("deleting topics")? {
        match result {
            Ok(name) => tracing::info!(topic = name, "deleted topic"),
            Err((name, RDKafkaErrorCode::UnknownTopicOrPartition)) => tracing::info!(topic = name, "topic did not exist"),
            Err((name, code)) => bail!("deleting topic `{name}`: {code}"),
        }
    }
    Ok(())
}
