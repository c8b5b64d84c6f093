//! `loadgen`: the demo's and the benchmark's traffic.
//! - `seed`: a steady stream of orders at a fixed rate (the demo's trickle, the latency benchmark's load);
//! - `fill`: a fixed, reproducible set of orders as fast as the broker takes them;
//! - `drain`: consume a topic to its end and drop everything (the benchmark's "raw" ceiling);
//! - `keys`: a changelog with N distinct counter keys (the restore benchmark);
//! - `distinct-orders`: N orders of one item each, every one a different drink (a store of
//!   N keys for the peers' restart benchmark);
//! - `menu`: a price per drink (the `shop_revenue` processor's `menu` table);
//! - `delete-topics`: every topic whose name starts with `--topic` (a benchmark's leftovers).
//!
//! Orders are JSON: `{"order_id": "...", "shop_id": N, "items": [{"drink": "latte", "quantity": 2}, ...]}`.
//! With a seed, the same orders come out every time.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Zipf};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Message};

/// Drink names, most popular first when `--zipf` skews the choice.
const DRINKS: [&str; 50] = [
    "latte",
    "cappuccino",
    "espresso",
    "americano",
    "flat white",
    "mocha",
    "macchiato",
    "cortado",
    "cold brew",
    "matcha latte",
    "chai latte",
    "hot chocolate",
    "iced latte",
    "caramel macchiato",
    "ristretto",
    "lungo",
    "doppio",
    "affogato",
    "irish coffee",
    "vienna",
    "piccolo",
    "red eye",
    "café au lait",
    "café con leche",
    "cafe cubano",
    "galão",
    "frappé",
    "nitro cold brew",
    "iced americano",
    "vanilla latte",
    "hazelnut latte",
    "pumpkin spice latte",
    "oat flat white",
    "dirty chai",
    "london fog",
    "earl grey",
    "green tea",
    "sencha",
    "rooibos",
    "peppermint tea",
    "chamomile",
    "turmeric latte",
    "beetroot latte",
    "golden milk",
    "babyccino",
    "iced matcha",
    "yuzu tonic",
    "espresso tonic",
    "cascara fizz",
    "honey oat latte",
];

#[derive(Parser)]
#[command(name = "loadgen", about = "Produces and consumes Brew orders for the demo and the benchmarks")]
struct Cli {
    /// Kafka bootstrap servers.
    #[arg(long, env = "STREAMHOST_BROKERS", default_value = "127.0.0.1:9092", global = true)]
    brokers: String,
    /// Topic to produce to or drain.
    #[arg(long, env = "STREAMHOST_INPUT", default_value = "brew.orders.v1", global = true)]
    topic: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
struct OrderArgs {
    /// Random seed: the same seed gives the same orders.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// How many drink names to use (at most 50).
    #[arg(long, default_value_t = 12)]
    drinks: usize,
    /// Zipf exponent of drink popularity (0: uniform).
    #[arg(long, default_value_t = 0.0)]
    zipf: f64,
    /// Every N-th order is malformed (0: none), to show skipping and dead letters.
    #[arg(long, default_value_t = 100)]
    malformed_every: u64,
    /// Producer compression (none, lz4, zstd, ...).
    #[arg(long, default_value = "none")]
    compression: String,
    /// Producer linger: how long records wait to fill a batch (adds to measured latency).
    #[arg(long, default_value_t = 20)]
    linger_ms: u64,
}

#[derive(Subcommand)]
enum Command {
    /// A steady stream of orders, until interrupted or for --duration.
    Seed {
        #[command(flatten)]
        orders: OrderArgs,
        /// Orders per second.
        #[arg(long, default_value_t = 12)]
        rate: u64,
        /// Stop after this long (default: never).
        #[arg(long, value_parser = humantime::parse_duration)]
        duration: Option<Duration>,
    },
    /// A fixed number of orders as fast as the broker takes them, then exit.
    Fill {
        #[command(flatten)]
        orders: OrderArgs,
        /// How many orders.
        #[arg(long)]
        count: u64,
        /// Event time: order i gets the record timestamp START + i * STEP (e.g. 10ms) instead
        /// of the time it is produced, START being the whole hour that makes the last order's
        /// time about now (recent, so the topic's retention keeps them). For windowed runs.
        #[arg(long, value_parser = humantime::parse_duration)]
        event_time_step: Option<Duration>,
    },
    /// Consume the topic to its end, dropping every record; commit once at the end.
    /// Prints one JSON line: records, seconds from first to last record, records/s.
    Drain {
        /// Consumer group (use a new one per run).
        #[arg(long)]
        group: String,
    },
    /// Wait until `group` has committed the end offset of every partition of the topic, then
    /// print one JSON line {"done_ms": <epoch ms when that was seen>} (polls every 50 ms).
    WaitCommitted {
        #[arg(long)]
        group: String,
        /// Give up after this long.
        #[arg(long, default_value = "30m", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
    /// A changelog with `count` distinct counter keys (8-byte big-endian values).
    Keys {
        #[arg(long)]
        count: u64,
    },
    /// `count` orders, order i being one `key-<i>` drink: `count` distinct keys once counted.
    DistinctOrders {
        #[arg(long)]
        count: u64,
    },
    /// A menu table: one row per drink name (key) with its price in cents as decimal text
    /// (value), 250 to 525 cents, the same every time.
    Menu,
    /// Deletes every topic whose name starts with `--topic` (used as a prefix here).
    DeleteTopics,
}

struct OrderGen {
    rng: StdRng,
    zipf: Option<Zipf<f64>>,
    drinks: usize,
    malformed_every: u64,
}

/// Orders the drink-count contract rejects, one of each common mistake.
const MALFORMED: [&str; 4] = [
    r#"{"order_id":"bad","items":[]}"#,
    r#"{"order_id":"bad","items":[{"drink":"latte","quantity":0}]}"#,
    r#"{"order_id":"bad","items":[{"drink":"","quantity":1}]}"#,
    "not json",
];

impl OrderGen {
    fn new(args: &OrderArgs) -> Result<OrderGen> {
        if args.drinks == 0 || args.drinks > DRINKS.len() {
            bail!("--drinks must be 1..={}", DRINKS.len());
        }
        let zipf = if args.zipf > 0.0 { Some(Zipf::new(args.drinks as f64, args.zipf)?) } else { None };
        Ok(OrderGen {
            rng: StdRng::seed_from_u64(args.seed),
            zipf,
            drinks: args.drinks,
            malformed_every: args.malformed_every,
        })
    }

    fn drink(&mut self) -> &'static str {
        let i = match &self.zipf {
            Some(z) => z.sample(&mut self.rng) as usize - 1,
            None => self.rng.random_range(0..self.drinks),
        };
        DRINKS[i.min(self.drinks - 1)]
    }

    fn order(&mut self, id: u64) -> String {
        if self.malformed_every > 0 && id % self.malformed_every == self.malformed_every - 1 {
            return MALFORMED[(id / self.malformed_every) as usize % MALFORMED.len()].to_owned();
        }
        let n = self.rng.random_range(1..=3);
        let items: Vec<_> = (0..n)
            .map(|_| serde_json::json!({ "drink": self.drink(), "quantity": self.rng.random_range(1..=3) }))
            .collect();
        let shop = self.rng.random_range(1..=20);
        serde_json::json!({ "order_id": format!("o-{id}"), "shop_id": shop, "items": items }).to_string()
    }
}

fn producer(brokers: &str, compression: &str, linger_ms: u64) -> Result<ThreadedProducer<DefaultProducerContext>> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        // Throughput settings for a bulk load: bigger batches, a little linger.
        .set("linger.ms", linger_ms.to_string())
        .set("batch.size", "1000000")
        .set("compression.type", compression)
        .create()
        .context("creating the producer")
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Seed { orders, rate, duration } => {
            let producer = producer(&cli.brokers, &orders.compression, orders.linger_ms)?;
            let mut orders_gen = OrderGen::new(&orders)?;
            eprintln!("loadgen: producing {rate} orders/s to {} (Ctrl+C stops)", cli.topic);
            // Paced in 10 ms ticks, so high rates do not need a sleep per record.
            let tick = Duration::from_millis(10);
            let started = Instant::now();
            let mut id = 0u64;
            while duration.is_none_or(|d| started.elapsed() < d) {
                let due = (started.elapsed().as_secs_f64() * rate as f64) as u64 + 1;
                while id < due {
                    send(&producer, &cli.topic, format!("o-{id}").as_bytes(), orders_gen.order(id).as_bytes());
                    id += 1;
                }
                std::thread::sleep(tick);
            }
            producer.flush(Duration::from_secs(60)).context("flushing orders")?;
            eprintln!("loadgen: produced {id} orders in {:.1}s", started.elapsed().as_secs_f64());
        }
        Command::Fill { orders, count, event_time_step } => {
            let producer = producer(&cli.brokers, &orders.compression, orders.linger_ms)?;
            let mut orders_gen = OrderGen::new(&orders)?;
            let started = Instant::now();
            let step_ms = event_time_step.map(|s| s.as_millis() as i64);
            let start_ms = step_ms.map(|step| event_time_start(count as i64 * step));
            for id in 0..count {
                let timestamp = step_ms.zip(start_ms).map(|(step, start)| start + id as i64 * step);
                send_at(
                    &producer,
                    &cli.topic,
                    format!("o-{id}").as_bytes(),
                    orders_gen.order(id).as_bytes(),
                    timestamp,
                );
            }
            producer.flush(Duration::from_secs(120)).context("flushing orders")?;
            eprintln!("loadgen: produced {count} orders to {} in {:.1}s", cli.topic, started.elapsed().as_secs_f64());
        }
        Command::Keys { count } => {
            let producer = producer(&cli.brokers, "lz4", 20)?;
            for i in 0..count {
                send(&producer, &cli.topic, format!("key-{i:08}").as_bytes(), &(i + 1).to_be_bytes());
            }
            producer.flush(Duration::from_secs(120)).context("flushing keys")?;
            eprintln!("loadgen: produced {count} distinct keys to {}", cli.topic);
        }
        Command::DistinctOrders { count } => {
            let producer = producer(&cli.brokers, "lz4", 20)?;
            for i in 0..count {
                let order = format!(r#"{{"order_id":"d-{i}","items":[{{"drink":"key-{i:08}","quantity":1}}]}}"#);
                send(&producer, &cli.topic, format!("d-{i}").as_bytes(), order.as_bytes());
            }
            producer.flush(Duration::from_secs(120)).context("flushing orders")?;
            eprintln!("loadgen: produced {count} orders of distinct drinks to {}", cli.topic);
        }
        Command::Menu => {
            let producer = producer(&cli.brokers, "none", 20)?;
            for (i, drink) in DRINKS.iter().enumerate() {
                send(&producer, &cli.topic, drink.as_bytes(), menu_price(i).to_string().as_bytes());
            }
            producer.flush(Duration::from_secs(60)).context("flushing the menu")?;
            eprintln!("loadgen: priced {} drinks in {}", DRINKS.len(), cli.topic);
        }
        Command::DeleteTopics => delete_topics(&cli.brokers, &cli.topic)?,
        Command::Drain { group } => drain(&cli.brokers, &cli.topic, &group)?,
        Command::WaitCommitted { group, timeout } => wait_committed(&cli.brokers, &cli.topic, &group, timeout)?,
    }
    Ok(())
}

/// The price of the i-th drink, in cents.
fn menu_price(i: usize) -> u64 {
    250 + 25 * (i as u64 % 12)
}

fn delete_topics(brokers: &str, prefix: &str) -> Result<()> {
    use rdkafka::admin::{AdminClient, AdminOptions};
    use rdkafka::client::DefaultClientContext;
    anyhow::ensure!(!prefix.is_empty(), "refusing to delete every topic: give a prefix");
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", brokers).create().context("admin client")?;
    let metadata = admin.inner().fetch_metadata(None, Duration::from_secs(30)).context("listing topics")?;
    let names: Vec<&str> = metadata.topics().iter().map(|t| t.name()).filter(|n| n.starts_with(prefix)).collect();
    for chunk in names.chunks(100) {
        let results =
            futures::executor::block_on(admin.delete_topics(chunk, &AdminOptions::new())).context("deleting topics")?;
        for result in results {
            if let Err((name, code)) = result {
                eprintln!("loadgen: could not delete {name}: {code}");
            }
        }
    }
    eprintln!("loadgen: deleted {} topics starting with {prefix}", names.len());
    Ok(())
}

/// Where `fill --event-time-step` starts for a span of `span_ms`: the whole hour at or
/// before now minus the span.
fn event_time_start(span_ms: i64) -> i64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
    let start = now - span_ms;
    start - start.rem_euclid(3_600_000)
}

fn send(producer: &ThreadedProducer<DefaultProducerContext>, topic: &str, key: &[u8], value: &[u8]) {
    send_at(producer, topic, key, value, None)
}

/// `send` with a record timestamp (ms; `None`: the producer's clock).
fn send_at(
    producer: &ThreadedProducer<DefaultProducerContext>,
    topic: &str,
    key: &[u8],
    value: &[u8],
    timestamp: Option<i64>,
) {
    let mut record = BaseRecord::to(topic).key(key).payload(value);
    if let Some(timestamp) = timestamp {
        record = record.timestamp(timestamp);
    }
    loop {
        match producer.send(record) {
            Ok(()) => return,
            Err((_, back)) => {
                record = back;
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
}

/// The raw ceiling: poll every record of the topic and drop it.
fn drain(brokers: &str, topic: &str, group: &str) -> Result<()> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "true")
        // The same prefetch depth as the host's consumer: the ceiling is the best it can do.
        .set("queued.min.messages", "1000000")
        .set("max.partition.fetch.bytes", "8388608")
        .create()
        .context("creating the consumer")?;
    consumer.subscribe(&[topic])?;
    let mut records = 0u64;
    let mut bytes = 0u64;
    let mut first: Option<Instant> = None;
    let mut last = Instant::now();
    let mut at_end = std::collections::BTreeSet::new();
    loop {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                first.get_or_insert_with(Instant::now);
                last = Instant::now();
                records += 1;
                bytes += m.payload_len() as u64;
                at_end.remove(&m.partition());
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                at_end.insert(p);
                let assigned = consumer.assignment()?.count();
                if assigned > 0 && at_end.len() == assigned {
                    break;
                }
            }
            Some(Err(e)) => eprintln!("loadgen: consumer error: {e}"),
            None => {}
        }
    }
    consumer.commit_consumer_state(CommitMode::Sync)?;
    // First to last record: detecting the end costs an empty fetch round trip, which is not work.
    let seconds = first.map(|f| last.duration_since(f).as_secs_f64()).unwrap_or(0.0);
    println!(
        "{}",
        serde_json::json!({ "records": records, "bytes": bytes, "seconds": seconds,
            "records_per_second": if seconds > 0.0 { records as f64 / seconds } else { 0.0 } })
    );
    Ok(())
}

/// Polls the group's committed offsets until they reach the topic's end offsets.
fn wait_committed(brokers: &str, topic: &str, group: &str, timeout: Duration) -> Result<()> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .context("creating the consumer")?;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let partitions: Vec<i32> = metadata.topics()[0].partitions().iter().map(|p| p.id()).collect();
    let mut ends = Vec::new();
    for p in &partitions {
        ends.push(consumer.fetch_watermarks(topic, *p, Duration::from_secs(10))?.1);
    }
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in &partitions {
        tpl.add_partition(topic, *p);
    }
    let started = Instant::now();
    loop {
        if let Ok(committed) = consumer.committed_offsets(tpl.clone(), Duration::from_secs(10)) {
            let done = partitions.iter().zip(&ends).all(|(p, end)| {
                *end == 0
                    || committed.find_partition(topic, *p).map(|e| e.offset()) == Some(rdkafka::Offset::Offset(*end))
            });
            if done {
                let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis();
                println!("{}", serde_json::json!({ "done_ms": now as u64 }));
                return Ok(());
            }
        }
        if started.elapsed() > timeout {
            bail!("group {group} did not commit the end of {topic} within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
