//! A processor's tables (`--table NAME=TOPIC`): each a whole local copy of a compacted topic
//! (as Kafka Streams' GlobalKTable), in a store of its own under `<state-dir>/tables/<name>`
//! with the topic positions it reflects. Read to the topic's end at start-up, before the
//! first record is processed; while running, what the topic gets is read between batches and
//! handed to the guest thread, which applies it between two batches (so a batch sees one
//! version of the table throughout).
//!
//! A copy is a cache of its topic, not state of the job: it is outside the commit order, and
//! a lost one is read again from the topic.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::changelog;
use crate::kafka::Connection;
use crate::kafka::clients::HostConsumer;
use crate::process::shutdown::Shutdown;
use crate::state::Store;

/// Most table records read between two batches (the rest with the next).
const MAX_UPDATES_PER_POLL: usize = 10_000;

pub use crate::guest::processor::TableUpdates as Updates;

pub struct Tables {
    tables: Vec<Table>,
}

struct Table {
    name: String,
    topic: String,
    store: Store,
    consumer: HostConsumer,
}

impl Tables {
    /// Opens every table's copy under `state_dir` and reads its topic to the end.
    pub fn open(
        state_dir: &Path,
        kafka: &Connection,
        specs: &[(String, String)],
        shutdown: &Shutdown,
    ) -> Result<Tables> {
        let mut tables = Vec::new();
        for (name, topic) in specs {
            let store = Store::open(&state_dir.join("tables").join(name))?;
            shutdown.starting("reading the tables");
            let report = changelog::replay_table(kafka, topic, &store, shutdown)
                .with_context(|| format!("reading table `{name}` from {topic}"))?;
            tracing::info!(
                table = %name,
                topic = %topic,
                records_read = report.records_read,
                seconds = report.elapsed.as_secs_f64(),
                "table read to its end"
            );
            // From here on, what the topic gets next.
            let consumer: HostConsumer = crate::kafka::clients::reader(kafka, &format!("streamhost-table-{name}"))
                .set("enable.partition.eof", "false")
                .create_with_context(crate::kafka::clients::HostContext::default())
                .context("creating a table reader")?;
            let positions = store.changelog_positions(topic)?;
            let mut assignment = TopicPartitionList::new();
            for (partition, _) in changelog::end_offsets(&consumer, topic)? {
                let offset = positions.get(&partition).map_or(Offset::Beginning, |next| Offset::Offset(*next));
                assignment.add_partition_offset(topic, partition, offset)?;
            }
            consumer.assign(&assignment).with_context(|| format!("assigning table topic {topic}"))?;
            tables.push(Table { name: name.clone(), topic: topic.clone(), store, consumer });
        }
        Ok(Tables { tables })
    }

    /// Read-only handles on the copies, by table name, for the guest's lookups.
    pub fn stores(&self) -> BTreeMap<String, Store> {
        self.tables.iter().map(|t| (t.name.clone(), t.store.shared())).collect()
    }

    /// What the tables' topics got since the last poll (without waiting).
    pub fn poll(&mut self) -> Result<Updates> {
        let mut updates = Vec::new();
        for table in &mut self.tables {
            let mut changes = Vec::new();
            let mut positions = BTreeMap::new();
            while changes.len() < MAX_UPDATES_PER_POLL {
                match table.consumer.poll(Duration::ZERO) {
                    None => break,
                    Some(Err(KafkaError::PartitionEOF(_))) => {}
                    Some(Err(e)) => {
                        tracing::warn!(table = %table.name, error = %e, "reading a table's topic failed; trying again")
                    }
                    Some(Ok(message)) => {
                        positions.insert(message.partition(), message.offset() + 1);
                        match changelog::decode_table_row(&message) {
                            Some(change) => changes.push(change),
                            None => tracing::warn!(
                                table = %table.name,
                                partition = message.partition(),
                                offset = message.offset(),
                                "table record without a key: ignored"
                            ),
                        }
                    }
                }
            }
            if !positions.is_empty() {
                changes.extend(changelog::position_changes(&table.topic, &positions));
                updates.push((table.name.clone(), changes));
            }
        }
        Ok(updates)
    }
}
