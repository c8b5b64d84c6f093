//! Shared by the integration tests. Every test gets its own topics, consumer group and state
//! dir (unique names), so tests run in parallel and can be rerun against the same broker.
//! The host runs as a real child process of the binary under test; nothing is mocked.

pub mod cluster;
pub mod orders;
pub mod scale_out;

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Headers;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

pub fn brokers() -> String {
    std::env::var("STREAMHOST_TEST_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

pub fn repo_root() -> PathBuf {
    // At run time, not compile time: the build cache is shared between clones, and cargo may
    // reuse a test binary built from another clone of the same sources.
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into());
    Path::new(&manifest_dir).parent().expect("repo root").to_owned()
}

/// The host binary built by `make build` (cargo puts test binaries in target/debug/deps).
pub fn host_bin() -> PathBuf {
    if let Ok(path) = std::env::var("STREAMHOST_HOST_BIN") {
        return path.into();
    }
    let exe = std::env::current_exe().expect("current exe");
    let bin = exe.parent().and_then(Path::parent).expect("target dir").join("host");
    assert!(bin.exists(), "host binary not found at {}: run `make build` first", bin.display());
    bin
}

/// A guest component built by `make guests`.
pub fn guest(name: &str) -> PathBuf {
    let dir =
        std::env::var("STREAMHOST_GUEST_DIR").map(PathBuf::from).unwrap_or_else(|_| repo_root().join("build/guests"));
    let path = dir.join(format!("{name}.wasm"));
    assert!(path.exists(), "guest {} not found: run `make guests` first", path.display());
    path
}

/// What `host dump` printed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Dump {
    pub counts: BTreeMap<String, u64>,
    /// Windowed counters: (window start ms, key) -> count.
    pub windows: BTreeMap<(i64, String), u64>,
    /// A processor guest's values (as text): key -> value.
    pub values: BTreeMap<String, Vec<u8>>,
    /// A processor guest's timers: (clock, key) -> due time (ms).
    pub timers: BTreeMap<(String, String), i64>,
    pub stream_time_ms: Option<i64>,
    pub records_processed: u64,
    pub records_skipped: u64,
}

pub struct TestEnv {
    pub brokers: String,
    /// The brokers `host run` is given (the same as `brokers` unless the host reaches the
    /// cluster another way than the test's own clients: see `TestEnv::host_via`).
    pub host_brokers: String,
    pub name: String,
    pub input: String,
    pub changelog: String,
    pub output: String,
    pub dead_letter: String,
    pub group: String,
    pub dir: tempfile::TempDir,
}

impl TestEnv {
    /// Unique names for one test on the shared broker; nothing is created yet.
    pub fn new(test: &str) -> TestEnv {
        Self::on_brokers(test, &brokers())
    }

    /// Unique names for one test on a broker of its own.
    pub fn on_brokers(test: &str, brokers: &str) -> TestEnv {
        let id = uuid::Uuid::new_v4().simple().to_string()[..10].to_owned();
        let name = format!("t-{test}-{id}");
        TestEnv {
            brokers: brokers.to_owned(),
            host_brokers: brokers.to_owned(),
            input: format!("{name}.orders"),
            changelog: format!("{name}.changelog"),
            output: format!("{name}.board"),
            dead_letter: format!("{name}.dead-letter"),
            group: format!("{name}.group"),
            dir: tempfile::Builder::new().prefix(&format!("{name}-")).tempdir().expect("temp dir"),
            name,
        }
    }

    /// `host run` reaches the cluster through `brokers` (another listener of the same
    /// brokers, which a network fault can hit while the test's clients keep theirs).
    pub fn host_via(mut self, brokers: &str) -> TestEnv {
        self.host_brokers = brokers.to_owned();
        self
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// `--brokers` and the topic flags every subcommand that touches topics takes.
    pub fn topic_args(&self) -> Vec<String> {
        [
            "--brokers",
            &self.brokers,
            "--input",
            &self.input,
            "--changelog",
            &self.changelog,
            "--output",
            &self.output,
            "--dead-letter",
            &self.dead_letter,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    /// Creates this test's topics with `host create-topics`.
    pub fn create_topics(&self, partitions: u32) {
        let mut args = vec!["create-topics".to_string(), "--partitions".into(), partitions.to_string()];
        args.extend(self.topic_args());
        let out = self.host(&args);
        assert!(out.status.success(), "create-topics failed: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Runs a host subcommand to completion.
    /// A command that does not finish within 3 minutes fails the test (and is killed), so that
    /// a hang shows as a failure instead of stalling the whole run.
    pub fn host<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Output {
        let mut child = Command::new(host_bin())
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running host");
        // Drain the pipes on threads, so a chatty command cannot block on a full pipe.
        let read = |pipe: Option<Box<dyn std::io::Read + Send>>| {
            std::thread::spawn(move || {
                let mut bytes = Vec::new();
                if let Some(mut pipe) = pipe {
                    let _ = pipe.read_to_end(&mut bytes);
                }
                bytes
            })
        };
        let stdout = read(child.stdout.take().map(|p| Box::new(p) as Box<dyn std::io::Read + Send>));
        let stderr = read(child.stderr.take().map(|p| Box::new(p) as Box<dyn std::io::Read + Send>));
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().expect("waiting for host") {
                break status;
            }
            if started.elapsed() > Duration::from_secs(180) {
                let _ = child.kill();
                let _ = child.wait();
                let err = String::from_utf8_lossy(&stderr.join().unwrap_or_default()).into_owned();
                panic!(
                    "host {:?} did not finish within 3 minutes:\n{err}",
                    args.iter().map(|a| a.as_ref()).collect::<Vec<_>>()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        Output { status, stdout: stdout.join().unwrap_or_default(), stderr: stderr.join().unwrap_or_default() }
    }

    /// Arguments of `host run` for this test's topics, group and state dir.
    pub fn run_args(&self, guest_name: &str) -> Vec<String> {
        let mut args = vec!["run".to_string(), "--guest".into(), guest(guest_name).display().to_string()];
        args.extend(self.topic_args());
        if let Some(at) = args.iter().position(|a| a == "--brokers") {
            args[at + 1] = self.host_brokers.clone();
        }
        args.extend(
            [
                "--group",
                &self.group,
                "--state-dir",
                &self.state_dir().display().to_string(),
                "--flush-interval",
                "500ms",
            ]
            .iter()
            .map(|s| s.to_string()),
        );
        args
    }

    /// Starts `host run` in the background; stdout and stderr go to files in the test dir.
    pub fn spawn_host(&self, guest_name: &str, extra: &[&str]) -> HostProcess {
        self.spawn_host_with_env(guest_name, extra, &[])
    }

    /// `spawn_host` with extra environment variables (e.g. STREAMHOST_FAULT).
    pub fn spawn_host_with_env(&self, guest_name: &str, extra: &[&str], env: &[(&str, &str)]) -> HostProcess {
        let mut args = self.run_args(guest_name);
        args.extend(extra.iter().map(|s| s.to_string()));
        HostProcess::spawn(&self.dir.path().join("logs"), &args, env)
    }

    /// Runs the host with fault injection `fault` (`<step>:<n>`) until the fault aborts it,
    /// and checks that it did.
    pub fn crash_with_fault(&self, guest_name: &str, extra: &[&str], fault: &str) {
        let mut host = self.spawn_host_with_env(guest_name, extra, &[("STREAMHOST_FAULT", fault)]);
        let status = host.wait_exit(Duration::from_secs(60));
        assert!(!status.success(), "the fault must abort the host");
        assert!(host.stderr_text().contains("fault injection: aborting"), "{}", host.stderr_text());
    }

    /// Runs the host until the group has committed the whole input, then stops it cleanly
    /// (SIGTERM, exit 0).
    pub fn run_until_drained(&self, guest_name: &str, extra: &[&str], timeout: Duration) {
        let mut host = self.spawn_host(guest_name, extra);
        host.wait_for_log("host running", timeout.max(Duration::from_secs(60)));
        self.wait_committed(timeout);
        let status = host.terminate();
        assert!(status.success(), "a clean stop exits 0, got {status}");
    }

    /// Arguments of `host restore` of this test's changelog into `dir`, plus `extra`.
    pub fn restore_args(&self, dir: &Path, extra: &[&str]) -> Vec<String> {
        let dir = dir.display().to_string();
        let base = ["restore", "--brokers", &self.brokers, "--changelog", &self.changelog, "--state-dir", &dir];
        base.iter().chain(extra).map(|s| s.to_string()).collect()
    }

    /// `host restore` of this test's changelog into `dir`, then `host dump` of it.
    pub fn restore_into(&self, dir: &Path) -> Dump {
        let out = self.host(&self.restore_args(dir, &[]));
        let dir = dir.display().to_string();
        assert!(out.status.success(), "restore failed: {}", String::from_utf8_lossy(&out.stderr));
        let out = self.host(&["dump", "--state-dir", &dir]);
        assert!(out.status.success(), "dump failed: {}", String::from_utf8_lossy(&out.stderr));
        parse_dump(&String::from_utf8_lossy(&out.stdout))
    }

    /// `host dump` of this test's state dir.
    pub fn dump(&self) -> Dump {
        let out = self.host(&["dump", "--state-dir", &self.state_dir().display().to_string()]);
        assert!(out.status.success(), "dump failed: {}", String::from_utf8_lossy(&out.stderr));
        parse_dump(&String::from_utf8_lossy(&out.stdout))
    }

    /// Produces values to the input topic (keys spread them over partitions) and waits for acks.
    pub fn produce(&self, values: &[String]) {
        let values: Vec<Option<Vec<u8>>> = values.iter().map(|v| Some(v.as_bytes().to_vec())).collect();
        produce(&self.brokers, &self.input, &values);
    }

    /// Produces raw values (`None`: a record with no value at all).
    pub fn produce_raw(&self, values: &[Option<Vec<u8>>]) {
        produce(&self.brokers, &self.input, values);
    }

    /// Produces values with chosen record timestamps (ms), in order, to partition 0.
    pub fn produce_at(&self, records: &[(i64, String)]) {
        self.produce_at_partition(0, records)
    }

    /// `produce_at` to `partition`.
    pub fn produce_at_partition(&self, partition: i32, records: &[(i64, String)]) {
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .set("linger.ms", "5")
            .create()
            .expect("producer");
        for (timestamp, value) in records {
            // One at a time: the order on the partition is the order given.
            let record =
                FutureRecord::to(&self.input).key("k").partition(partition).payload(value).timestamp(*timestamp);
            producer.send_result(record).expect("queue").now_or_never_blocking().expect("delivered");
        }
    }

    /// The group's committed offset per input partition (0 where nothing is committed).
    /// Retries for a while: right after a broker restart the coordinator may not be ready.
    pub fn committed(&self) -> BTreeMap<i32, i64> {
        let consumer = reader(&self.brokers, &self.group);
        let mut tpl = TopicPartitionList::new();
        for p in end_offsets(&consumer, &self.input).keys() {
            tpl.add_partition(&self.input, *p);
        }
        let started = Instant::now();
        let committed = loop {
            match consumer.committed_offsets(tpl.clone(), Duration::from_secs(10)) {
                Ok(c) => break c,
                Err(e) if started.elapsed() < Duration::from_secs(60) => {
                    eprintln!("committed offsets: {e}; asking again");
                    std::thread::sleep(Duration::from_millis(500));
                }
                Err(e) => panic!("committed offsets: {e}"),
            }
        };
        committed
            .elements()
            .iter()
            .map(|e| (e.partition(), if let Offset::Offset(o) = e.offset() { o } else { 0 }))
            .collect()
    }

    /// Input records committed by the group so far.
    pub fn committed_total(&self) -> i64 {
        self.committed().values().sum()
    }

    /// Waits until the group has committed the input topic's end offset on every partition.
    pub fn wait_committed(&self, timeout: Duration) {
        let consumer = reader(&self.brokers, &self.group);
        let started = Instant::now();
        loop {
            let ends = end_offsets(&consumer, &self.input);
            let committed = self.committed();
            let behind: Vec<_> =
                ends.iter().filter(|(p, end)| committed.get(p).copied().unwrap_or(0) != **end).collect();
            if behind.is_empty() {
                return;
            }
            assert!(started.elapsed() < timeout, "group {} still behind after {timeout:?}: {behind:?}", self.group);
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Latest value per counter key in the changelog (metadata records skipped by header).
    pub fn changelog_latest(&self) -> BTreeMap<String, u64> {
        self.changelog_latest_raw()
            .into_iter()
            .map(|(key, count)| (String::from_utf8(key).expect("counter keys are UTF-8"), count))
            .collect()
    }

    /// Latest value per counter key in the changelog, keys as bytes (windowed keys are not
    /// UTF-8); a tombstone removes its key.
    pub fn changelog_latest_raw(&self) -> BTreeMap<Vec<u8>, u64> {
        let mut latest = BTreeMap::new();
        for record in self.read(&self.changelog) {
            if record.header("meta").is_some() {
                continue;
            }
            let key = record.key;
            match record.value.len() {
                0 => {
                    latest.remove(&key);
                }
                8 => {
                    latest.insert(key, u64::from_be_bytes(record.value.try_into().unwrap()));
                }
                n => panic!("changelog value of {n} bytes"),
            }
        }
        latest
    }

    /// Every board snapshot on the output topic, oldest first.
    pub fn boards(&self) -> Vec<serde_json::Value> {
        self.read(&self.output).into_iter().map(|r| serde_json::from_slice(&r.value).expect("board is JSON")).collect()
    }

    /// Every record of one of this test's topics.
    pub fn read(&self, topic: &str) -> Vec<Record> {
        read_topic(&self.brokers, topic)
    }

    /// Every board on the output topic, aborted transactions' included.
    pub fn boards_uncommitted(&self) -> Vec<serde_json::Value> {
        read_topic_with(&self.brokers, &self.output, "read_uncommitted")
            .into_iter()
            .map(|r| serde_json::from_slice(&r.value).expect("board is JSON"))
            .collect()
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // Keep the state and logs of a failed test for a look.
            let path = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap()).keep();
            eprintln!("test dir kept at {}", path.display());
        } else if self.brokers == brokers() {
            // A passed test's topics go, so that the shared broker stays lean run after run
            // (a test's own broker is gone by now).
            // (--scale-out: a scale-out test's repartition topic too; a missing one is fine.)
            let mut args = vec!["delete-topics".to_string(), "--scale-out".to_string()];
            args.extend(self.topic_args());
            let _ = self.host(&args);
        }
    }
}

/// A random source for soaks (xorshift), seeded from the clock; the seed is printed under
/// `what`, so a failing run's kill moments can be told.
pub fn random_source(what: &str) -> impl FnMut(u64) -> u64 {
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
    eprintln!("{what} seed {seed}");
    let mut rng = seed | 1;
    move |bound| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % bound
    }
}

/// Produces `values` to `topic` on a thread of its own, `chunk` at a time, one chunk every
/// `every`: orders that keep arriving while a test kills hosts.
pub fn produce_over_time(
    brokers: &str,
    topic: &str,
    values: &[String],
    chunk: usize,
    every: Duration,
) -> std::thread::JoinHandle<()> {
    let chunks: Vec<Vec<String>> = values.chunks(chunk).map(<[String]>::to_vec).collect();
    let (brokers, topic) = (brokers.to_owned(), topic.to_owned());
    std::thread::spawn(move || {
        for chunk in chunks {
            let values: Vec<Option<Vec<u8>>> = chunk.into_iter().map(|v| Some(v.into_bytes())).collect();
            produce(&brokers, &topic, &values);
            std::thread::sleep(every);
        }
    })
}

pub fn parse_dump(text: &str) -> Dump {
    let mut dump = Dump::default();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("dump line {line}: {e}"));
        assert!(v.get("key_base64").is_none(), "a key that is not text: {line}");
        if let Some(clock) = v.get("timer") {
            let timer = (clock.as_str().unwrap().to_owned(), v["key"].as_str().unwrap().to_owned());
            dump.timers.insert(timer, v["at_ms"].as_i64().unwrap());
        } else if let Some(t) = v.get("stream_time_ms") {
            dump.stream_time_ms = t.as_i64();
        } else if let Some(key) =
            v.get("key").filter(|_| v.get("count").is_none() && v.get("window_start_ms").is_none())
        {
            // A processor's value: JSON as JSON (compared as its compact form), text, or base64.
            let value = match (v.get("value"), v.get("value_text"), v.get("value_base64")) {
                (Some(json), _, _) => serde_json::to_vec(json).unwrap(),
                (_, Some(text), _) => text.as_str().unwrap().as_bytes().to_vec(),
                (_, _, Some(b64)) => {
                    use base64::Engine as _;
                    base64::engine::general_purpose::STANDARD.decode(b64.as_str().unwrap()).unwrap()
                }
                _ => panic!("a dump line with a key and no count or value: {line}"),
            };
            dump.values.insert(key.as_str().unwrap().to_owned(), value);
        } else if let (Some(start), Some(key)) = (v.get("window_start_ms"), v.get("key")) {
            dump.windows
                .insert((start.as_i64().unwrap(), key.as_str().unwrap().to_owned()), v["count"].as_u64().unwrap());
        } else if let Some(key) = v.get("key") {
            dump.counts.insert(key.as_str().unwrap().to_owned(), v["count"].as_u64().unwrap());
        } else {
            dump.records_processed = v["records_processed"].as_u64().unwrap();
            dump.records_skipped = v["records_skipped"].as_u64().unwrap();
        }
    }
    dump
}

pub fn produce(brokers: &str, topic: &str, values: &[Option<Vec<u8>>]) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "5")
        // A retry after a broker fault (the cluster tests) must not write an order twice.
        .set("enable.idempotence", "true")
        // The poison tests send 1 MiB records (the test broker takes up to 4 MiB).
        .set("message.max.bytes", "4000000")
        .create()
        .expect("producer");
    let futures: Vec<_> = values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let key = format!("k{i}");
            let mut record = FutureRecord::to(topic).key(&key);
            if let Some(v) = v {
                record = record.payload(v);
            }
            producer.send_result(record).expect("queue")
        })
        .collect();
    for f in futures {
        f.now_or_never_blocking().expect("delivered");
    }
}

/// Produces counter records (key, 8-byte big-endian value), as the host writes its changelog.
pub fn produce_keyed(brokers: &str, topic: &str, values: &[(String, u64)]) {
    let producer: FutureProducer =
        ClientConfig::new().set("bootstrap.servers", brokers).set("linger.ms", "20").create().expect("producer");
    for chunk in values.chunks(10_000) {
        let futures: Vec<_> = chunk
            .iter()
            .map(|(k, v)| {
                let value = v.to_be_bytes();
                producer.send_result(FutureRecord::to(topic).key(k).payload(&value[..])).expect("queue")
            })
            .collect();
        for f in futures {
            f.now_or_never_blocking().expect("delivered");
        }
    }
}

/// Produces keyed text records (a table's rows: key -> value), waiting for each.
pub fn produce_rows(brokers: &str, topic: &str, rows: &[(&str, &str)]) {
    let producer: FutureProducer =
        ClientConfig::new().set("bootstrap.servers", brokers).set("linger.ms", "5").create().expect("producer");
    let futures: Vec<_> = rows
        .iter()
        .map(|(k, v)| producer.send_result(FutureRecord::to(topic).key(*k).payload(*v)).expect("queue"))
        .collect();
    for f in futures {
        f.now_or_never_blocking().expect("delivered");
    }
}

trait BlockOn {
    fn now_or_never_blocking(self) -> Result<(), String>;
}

impl BlockOn for rdkafka::producer::DeliveryFuture {
    fn now_or_never_blocking(self) -> Result<(), String> {
        match futures_lite_block_on(self) {
            Ok(Ok(_)) => Ok(()),
            Ok(Err((e, _))) => Err(e.to_string()),
            Err(_) => Err("canceled".into()),
        }
    }
}

/// A minimal executor for one future (the delivery future is woken by librdkafka's thread).
fn futures_lite_block_on<F: std::future::Future>(future: F) -> F::Output {
    use std::sync::Arc;
    use std::task::{Context, Poll, Wake, Waker};
    struct ThreadWaker(std::thread::Thread);
    impl Wake for ThreadWaker {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        if let Poll::Ready(v) = future.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park_timeout(Duration::from_millis(50));
    }
}

fn reader(brokers: &str, group: &str) -> BaseConsumer {
    reader_with(brokers, group, "read_committed")
}

fn reader_with(brokers: &str, group: &str, isolation: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", isolation)
        .create()
        .expect("consumer")
}

fn end_offsets(consumer: &BaseConsumer, topic: &str) -> BTreeMap<i32, i64> {
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).expect("metadata");
    let t = &metadata.topics()[0];
    t.partitions()
        .iter()
        .map(|p| (p.id(), consumer.fetch_watermarks(topic, p.id(), Duration::from_secs(10)).expect("watermarks").1))
        .collect()
}

/// One record read back from a topic.
#[derive(Debug, Clone)]
pub struct Record {
    pub partition: i32,
    pub offset: i64,
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub headers: Vec<(String, Vec<u8>)>,
    /// The record timestamp (ms), if it has one.
    pub timestamp: Option<i64>,
}

impl Record {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }
}

/// Every record of `topic` from the beginning to its current end.
/// Every record of `topic` that read_committed readers see (records of aborted transactions
/// left out).
pub fn read_topic(brokers: &str, topic: &str) -> Vec<Record> {
    read_topic_with(brokers, topic, "read_committed")
}

/// Every record of `topic` under `isolation` (`read_committed` or `read_uncommitted`).
pub fn read_topic_with(brokers: &str, topic: &str, isolation: &str) -> Vec<Record> {
    let consumer = reader_with(brokers, &format!("reader-{}", uuid::Uuid::new_v4()), isolation);
    let ends = end_offsets(&consumer, topic);
    let mut pending: BTreeMap<i32, i64> = ends.into_iter().filter(|(_, end)| *end > 0).collect();
    let mut tpl = TopicPartitionList::new();
    for p in pending.keys() {
        tpl.add_partition_offset(topic, *p, Offset::Beginning).unwrap();
    }
    consumer.assign(&tpl).expect("assign");
    let mut records = Vec::new();
    let started = Instant::now();
    while !pending.is_empty() {
        assert!(started.elapsed() < Duration::from_secs(60), "reading {topic} timed out");
        match consumer.poll(Duration::from_millis(200)) {
            None => {}
            Some(Err(KafkaError::PartitionEOF(p))) => {
                pending.remove(&p);
            }
            Some(Err(e)) => panic!("reading {topic}: {e}"),
            Some(Ok(m)) => {
                let headers = m
                    .headers()
                    .map(|h| h.iter().map(|x| (x.key.to_owned(), x.value.unwrap_or_default().to_vec())).collect())
                    .unwrap_or_default();
                records.push(Record {
                    partition: m.partition(),
                    offset: m.offset(),
                    key: m.key().unwrap_or_default().to_vec(),
                    value: m.payload().unwrap_or_default().to_vec(),
                    timestamp: m.timestamp().to_millis(),
                    headers,
                });
                if pending.get(&m.partition()).is_some_and(|end| m.offset() + 1 >= *end) {
                    pending.remove(&m.partition());
                }
            }
        }
    }
    records
}

/// Polls `check` until it returns true or `timeout` passes.
pub fn wait_until(timeout: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < timeout, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A broker of a test's own (for tests that stop it), on its own ports and data dir, run
/// by the same script as the shared one. Stopped when dropped.
pub struct OwnBroker {
    env: Vec<(String, String)>,
    pub brokers: String,
}

impl OwnBroker {
    pub fn start(port: u16, data: &Path) -> OwnBroker {
        let broker = OwnBroker {
            env: vec![
                ("KAFKA_PORT".into(), port.to_string()),
                ("KAFKA_CONTROLLER_PORT".into(), (port + 1).to_string()),
                ("KAFKA_DATA".into(), data.display().to_string()),
                ("KAFKA_HEAP".into(), "-Xmx512m".into()),
            ],
            brokers: format!("127.0.0.1:{port}"),
        };
        broker.script("up");
        broker
    }

    pub fn script(&self, action: &str) {
        let out = Command::new(repo_root().join("scripts/kafka.sh"))
            .arg(action)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .output()
            .expect("running scripts/kafka.sh");
        assert!(
            out.status.success(),
            "kafka.sh {action}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        let _ = Command::new(repo_root().join("scripts/kafka.sh"))
            .arg("down")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .output();
    }
}

/// A running `host run` process.
pub struct HostProcess {
    child: Child,
    pub stdout: PathBuf,
    pub stderr: PathBuf,
}

impl HostProcess {
    pub fn spawn(log_dir: &Path, args: &[String], env: &[(&str, &str)]) -> HostProcess {
        std::fs::create_dir_all(log_dir).unwrap();
        let n = std::fs::read_dir(log_dir).unwrap().count();
        let stdout = log_dir.join(format!("host-{n}.out"));
        let stderr = log_dir.join(format!("host-{n}.err"));
        let child = Command::new(host_bin())
            .args(args)
            .env("RUST_LOG", "info,rdkafka=warn")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(File::create(&stdout).unwrap())
            .stderr(File::create(&stderr).unwrap())
            .spawn()
            .expect("spawning host");
        HostProcess { child, stdout, stderr }
    }

    /// SIGKILL: no chance to finish anything.
    pub fn kill9(mut self) {
        self.child.kill().expect("kill -9");
        self.child.wait().expect("reap");
    }

    /// SIGTERM, and no wait.
    pub fn send_sigterm(&self) {
        let status = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status().unwrap();
        assert!(status.success());
    }

    /// SIGTERM, then wait for the exit (the host finishes its batch first).
    pub fn terminate(mut self) -> ExitStatus {
        self.send_sigterm();
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(started.elapsed() < Duration::from_secs(60), "host did not stop within 60 s of SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for the process to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(started.elapsed() < timeout, "host still running after {timeout:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until stderr contains `text`; fails early if the host exits first.
    pub fn wait_for_log(&mut self, text: &str, timeout: Duration) {
        let started = Instant::now();
        while !self.stderr_text().contains(text) {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("host exited ({status}) before logging `{text}`:\n{}", self.stderr_text());
            }
            assert!(started.elapsed() < timeout, "host did not log `{text}` within {timeout:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    pub fn stdout_text(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    pub fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

impl Drop for HostProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            let err = self.stderr_text();
            let tail: Vec<_> = err.lines().rev().take(30).collect();
            eprintln!("--- host stderr (last lines) ---");
            for line in tail.into_iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

/// (status, body) of a plain HTTP/1.0 GET of `path` on `addr` (the host's `--http`).
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("a status line");
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}
