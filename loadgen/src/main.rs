//! `loadgen`: produces Brew orders to the input topic — a slow endless trickle for the demo
//! (`seed`), or a fixed, reproducible set as fast as possible (`fill`). Orders are JSON:
//! `{"order_id": "...", "shop_id": N, "items": [{"drink": "latte", "quantity": 2}, ...]}`.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rdkafka::ClientConfig;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

const DRINKS: [&str; 12] = [
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
];

#[derive(Parser)]
#[command(name = "loadgen", about = "Produces Brew orders to Kafka for the demo and benchmarks")]
struct Cli {
    /// Kafka bootstrap servers.
    #[arg(long, env = "STREAMHOST_BROKERS", default_value = "127.0.0.1:9092", global = true)]
    brokers: String,
    /// Topic to produce to.
    #[arg(long, env = "STREAMHOST_INPUT", default_value = "brew.orders.v1", global = true)]
    topic: String,
    /// Random seed: the same seed gives the same orders.
    #[arg(long, default_value_t = 42, global = true)]
    seed: u64,
    /// Every N-th order is malformed (0: none), to show skipping and dead letters.
    #[arg(long, default_value_t = 100, global = true)]
    malformed_every: u64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// A steady trickle of orders until interrupted (the demo's `make seed-orders`).
    Seed {
        /// Orders per second.
        #[arg(long, default_value_t = 12)]
        rate: u32,
    },
    /// A fixed number of orders as fast as the broker takes them, then exit.
    Fill {
        /// How many orders.
        #[arg(long)]
        count: u64,
    },
}

/// Orders the drink-count contract rejects, one of each common mistake.
const MALFORMED: [&str; 4] = [
    r#"{"order_id":"bad","items":[]}"#,
    r#"{"order_id":"bad","items":[{"drink":"latte","quantity":0}]}"#,
    r#"{"order_id":"bad","items":[{"drink":"","quantity":1}]}"#,
    "not json",
];

fn order(rng: &mut StdRng, id: u64, malformed_every: u64) -> String {
    if malformed_every > 0 && id % malformed_every == malformed_every - 1 {
        return MALFORMED[(id / malformed_every) as usize % MALFORMED.len()].to_owned();
    }
    let items: Vec<_> = (0..rng.random_range(1..=3))
        .map(|_| serde_json::json!({ "drink": DRINKS[rng.random_range(0..DRINKS.len())], "quantity": rng.random_range(1..=3) }))
        .collect();
    serde_json::json!({ "order_id": format!("o-{id}"), "shop_id": rng.random_range(1..=20), "items": items })
        .to_string()
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", &cli.brokers)
        .set("linger.ms", "20")
        .create()
        .context("creating the producer")?;
    let mut rng = StdRng::seed_from_u64(cli.seed);
    match cli.command {
        Command::Seed { rate } => {
            let every = Duration::from_secs(1) / rate.max(1);
            let mut next = Instant::now();
            let mut id = 0u64;
            eprintln!("loadgen: producing {rate} orders/s to {} (Ctrl+C stops)", cli.topic);
            loop {
                let value = order(&mut rng, id, cli.malformed_every);
                let key = format!("o-{id}");
                send(&producer, &cli.topic, &key, &value);
                id += 1;
                next += every;
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
            }
        }
        Command::Fill { count } => {
            let started = Instant::now();
            for id in 0..count {
                let value = order(&mut rng, id, cli.malformed_every);
                send(&producer, &cli.topic, &format!("o-{id}"), &value);
            }
            producer.flush(Duration::from_secs(60)).context("flushing orders")?;
            eprintln!("loadgen: produced {count} orders to {} in {:.1}s", cli.topic, started.elapsed().as_secs_f64());
            Ok(())
        }
    }
}

fn send(producer: &ThreadedProducer<DefaultProducerContext>, topic: &str, key: &str, value: &str) {
    let mut record = BaseRecord::to(topic).key(key).payload(value);
    loop {
        match producer.send(record) {
            Ok(()) => return,
            Err((_, back)) => {
                record = back;
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
}
