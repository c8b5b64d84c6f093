//! `host create-topics` and `host delete-topics`.

use anyhow::{Context, Result, bail};
use futures::executor::block_on;
use rdkafka::error::RDKafkaErrorCode;

use crate::cli::{CreateTopicsArgs, TopicArgs};
use crate::kafka::topics::{Role, admin, check_replication, create_topics, missing, options, partitions_for, roles};

/// `host create-topics`.
pub fn create_command(args: CreateTopicsArgs) -> Result<()> {
    let admin = admin(&args.topics.kafka.connection())?;
    let mut wanted = args.topics.topics();
    // Outputs or tables named: a processor's topics, which have no board topic.
    wanted.boards = wanted.outputs.is_empty() && wanted.tables.is_empty();
    let roles = roles(&wanted);
    let brokers = &args.topics.kafka.brokers;
    let missing = missing(&admin, &roles, brokers)?;
    let replication = args.replication()?;
    // Before anything is created: a changelog weaker than an existing input is refused.
    check_replication(&admin, &wanted, Some((replication, &missing)), brokers)?;
    let partitions = partitions_for(&admin, brokers, &wanted, args.partitions)?;
    let topics: Vec<(Role, &str)> = roles.iter().map(|(r, t)| (*r, t.as_str())).collect();
    create_topics(&admin, &topics, partitions, replication)
}

/// `host delete-topics`.
pub fn delete_command(args: TopicArgs) -> Result<()> {
    let admin = admin(&args.kafka.connection())?;
    let roles = roles(&args.topics());
    let names: Vec<&str> = roles.iter().map(|(_, t)| t.as_str()).collect();
    for result in block_on(admin.delete_topics(&names, &options())).context("deleting topics")? {
        match result {
            Ok(name) => tracing::info!(topic = name, "deleted topic"),
            Err((name, RDKafkaErrorCode::UnknownTopicOrPartition)) => {
                tracing::info!(topic = name, "topic did not exist")
            }
            Err((name, code)) => bail!("deleting topic `{name}`: {code}"),
        }
    }
    Ok(())
}
