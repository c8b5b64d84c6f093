//! `host board`: the newest board on the output topic; for a scale-out job, the global board
//! merged from every shard's newest local board.

use std::collections::BTreeMap;
use std::time::UNIX_EPOCH;

use anyhow::Result;

use crate::board::{BOARD_KEY, Snapshot, merge, print};
use crate::state::Totals;

/// `host board`: the newest board on the output topic; for a scale-out job, the global
/// board merged from every shard's newest local board.
pub fn board_command(args: crate::cli::BoardArgs) -> Result<()> {
    use anyhow::Context;
    let latest = latest_boards(&args.kafka.connection(), &args.output)?;
    let shards: Vec<Snapshot> = latest
        .iter()
        .filter(|(key, _)| key.starts_with("shard/"))
        .map(|(key, value)| serde_json::from_slice(value).with_context(|| format!("board `{key}` is not a board")))
        .collect::<Result<_>>()?;
    let (snapshot, keys) = if shards.is_empty() {
        let Some(value) = latest.get(BOARD_KEY) else {
            anyhow::bail!("no board on `{}` yet: is a host running with --output {0}?", args.output);
        };
        let snapshot: Snapshot = serde_json::from_slice(value).context("the newest board is not a board")?;
        let keys = snapshot.top.len();
        (snapshot, keys)
    } else {
        let mut guest = args.guest.source().load()?;
        let merged = merge(&shards, &mut |counts, n| guest.top_n(counts, n), args.top_n)?;
        (merged, shards.iter().map(|s| s.top.len()).sum())
    };
    if args.json {
        println!("{}", serde_json::to_string(&snapshot)?);
    } else {
        let totals =
            Totals { records_processed: snapshot.records_processed, records_skipped: snapshot.records_skipped };
        let at = UNIX_EPOCH + std::time::Duration::from_millis(snapshot.generated_at_ms);
        print(&snapshot, &totals, at, keys);
        if !shards.is_empty() {
            println!("   (merged from the local boards of {} shards)", shards.len());
        }
    }
    Ok(())
}

/// How long `host board` waits for transactions open on the output topic to end.
const OPEN_TRANSACTION_WAIT: std::time::Duration = std::time::Duration::from_secs(20);

/// Under exactly-once, a host that died with a transaction open holds back every board
/// produced after its own until the transaction times out (10 s for scale-out hosts): waits
/// for that (the read_committed end reaching the end as it is now), for a while.
fn wait_for_open_transactions(
    kafka: &crate::kafka::Connection,
    consumer: &crate::kafka::clients::HostConsumer,
    topic: &str,
) -> Result<()> {
    let watermarks = crate::kafka::clients::watermark_reader(kafka)?;
    let ends = crate::changelog::end_offsets(&watermarks, topic)?;
    let started = std::time::Instant::now();
    let mut said = false;
    loop {
        let stable = crate::changelog::end_offsets(consumer, topic)?;
        let behind: i64 = ends.iter().map(|(p, (_, end))| end - stable.get(p).map_or(0, |(_, s)| *s)).sum();
        if behind <= 0 {
            return Ok(());
        }
        if started.elapsed() > OPEN_TRANSACTION_WAIT {
            eprintln!(
                "note: {behind} newer records on `{topic}` are still in an open transaction; showing what is committed"
            );
            return Ok(());
        }
        if !said {
            eprintln!("waiting for a transaction open on `{topic}` to end (a host died in it?)…");
            said = true;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
}

/// The newest value of every key on `topic` (read_committed), read to its current end.
fn latest_boards(kafka: &crate::kafka::Connection, topic: &str) -> Result<BTreeMap<String, Vec<u8>>> {
    use anyhow::Context;
    use rdkafka::consumer::Consumer;
    use rdkafka::{Message, Offset, TopicPartitionList};
    let consumer = crate::changelog::topic_reader(kafka)?;
    wait_for_open_transactions(kafka, &consumer, topic)?;
    let mut pending: BTreeMap<i32, i64> = crate::changelog::end_offsets(&consumer, topic)?
        .into_iter()
        .filter(|(_, (low, high))| high > low)
        .map(|(p, (_, high))| (p, high))
        .collect();
    let mut assignment = TopicPartitionList::new();
    for partition in pending.keys() {
        assignment.add_partition_offset(topic, *partition, Offset::Beginning)?;
    }
    consumer.assign(&assignment).context("assigning the output topic")?;
    let mut latest = BTreeMap::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !pending.is_empty() {
        anyhow::ensure!(std::time::Instant::now() < deadline, "reading `{topic}` took over a minute");
        match consumer.poll(std::time::Duration::from_millis(200)) {
            None => {}
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(partition))) => {
                pending.remove(&partition);
            }
            Some(Err(e)) => anyhow::bail!("reading `{topic}`: {e}"),
            Some(Ok(message)) => {
                if let (Some(key), Some(value)) = (message.key(), message.payload()) {
                    latest.insert(String::from_utf8_lossy(key).into_owned(), value.to_vec());
                }
                if pending.get(&message.partition()).is_some_and(|end| message.offset() + 1 >= *end) {
                    pending.remove(&message.partition());
                }
            }
        }
    }
    Ok(latest)
}
