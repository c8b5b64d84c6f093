//! Processor guests (`wit/processor`): keyed state and emits with the crash guarantees of
//! counters. `order_dedup` forwards each order once per `order_id`; a second job counts
//! drinks on what it forwards, so duplicated orders no longer inflate the board.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use integration_tests::{TestEnv, orders, read_topic, read_topic_with, wait_until};

/// The dedup job's output topic.
fn deduped(env: &TestEnv) -> String {
    format!("{}.deduped", env.name)
}

fn dedup_flags(env: &TestEnv) -> Vec<String> {
    vec!["--output-topic".into(), format!("deduped={}", deduped(env))]
}

/// This test's topics with `partitions` partitions, and those `flags` name (a processor's
/// outputs and tables), with `host create-topics`.
fn create_topics_with(env: &TestEnv, partitions: u32, flags: &[String]) {
    let mut args = vec!["create-topics".to_string(), "--partitions".into(), partitions.to_string()];
    args.extend(env.topic_args());
    args.extend(flags.iter().cloned());
    let out = env.host(&args);
    assert!(out.status.success(), "create-topics failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// The job's topics (the output one too), with `host create-topics`.
fn create_dedup_topics(env: &TestEnv) {
    create_topics_with(env, 3, &dedup_flags(env));
}

/// Orders where one in three comes again later (a retrying producer), and the malformed
/// ones of `orders::generate` (some of which have an `order_id`: for the dedup those are
/// orders, which the drink count downstream refuses).
struct Input {
    values: Vec<String>,
    /// The unique orders, as the drink count must count them.
    unique: orders::Orders,
    /// Every record the dedup accepts, duplicates included, and every one it refuses.
    accepted: u64,
    refused: u64,
    /// The first value seen of each order id: what the output must hold, once each.
    firsts: BTreeMap<String, String>,
}

fn input(seed: u64, n: usize) -> Input {
    let unique = orders::generate(seed, n, 40);
    let mut values = Vec::new();
    for (i, value) in unique.values.iter().enumerate() {
        values.push(value.clone());
        if i % 3 == 1 {
            values.push(unique.values[i / 2].clone());
        }
    }
    let (mut accepted, mut refused, mut firsts) = (0, 0, BTreeMap::new());
    for value in &values {
        let id = serde_json::from_str::<serde_json::Value>(value)
            .ok()
            .and_then(|v| v.get("order_id").and_then(|id| id.as_str()).map(str::to_owned))
            .filter(|id| !id.is_empty());
        match id {
            Some(id) => {
                accepted += 1;
                firsts.entry(id).or_insert_with(|| value.clone());
            }
            None => refused += 1,
        }
    }
    Input { values, unique, accepted, refused, firsts }
}

/// The output as (order id -> values forwarded for it).
fn forwarded(records: &[integration_tests::Record]) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in records {
        let key = String::from_utf8(r.key.clone()).unwrap();
        out.entry(key).or_default().push(String::from_utf8(r.value.clone()).unwrap());
    }
    out
}

/// The dedup's state: every order id seen, once.
fn seen_ids(env: &TestEnv) -> BTreeSet<String> {
    env.dump().values.keys().map(|k| k.strip_prefix("seen/").expect("seen/ keys only").to_owned()).collect()
}

/// Under exactly-once, `kill -9` twice mid-stream: read_committed, every order id is on the
/// output exactly once with its first value; the state holds every id once, the totals are
/// exact, a restore from the changelog equals it; and the drink count run on the output
/// counts every unique order once.
#[test]
fn order_dedup_forwards_each_order_exactly_once_through_kill_9() {
    let env = TestEnv::new("dedup-eos");
    create_dedup_topics(&env);
    let input = input(71, 4_000);
    env.produce(&input.values);
    let mut flags = dedup_flags(&env);
    flags.extend(["--guarantee", "exactly-once", "--max-batch", "50", "--max-rate", "2000"].map(String::from));
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let total = input.values.len() as i64;
    for fraction in [4, 2] {
        let mut host = env.spawn_host("order_dedup", &flags);
        host.wait_for_log("host running", Duration::from_secs(60));
        wait_until(Duration::from_secs(60), "part of the input committed", || {
            env.committed_total() >= total / fraction
        });
        host.kill9();
    }
    env.run_until_drained("order_dedup", &flags, Duration::from_secs(60));

    let out = forwarded(&read_topic_with(&env.brokers, &deduped(&env), "read_committed"));
    let twice: Vec<_> = out.iter().filter(|(_, v)| v.len() != 1).map(|(k, v)| (k, v.len())).collect();
    assert!(twice.is_empty(), "forwarded other than once: {twice:?}");
    let firsts: BTreeMap<String, String> = out.into_iter().map(|(k, mut v)| (k, v.remove(0))).collect();
    assert_eq!(firsts, input.firsts);
    let dump = env.dump();
    assert_eq!(seen_ids(&env), input.firsts.keys().cloned().collect());
    assert_eq!((dump.records_processed, dump.records_skipped), (input.accepted, input.refused));
    assert_eq!(env.restore_into(&env.dir.path().join("restored")), dump, "a restore equals the state");
    let dead = env.read(&env.dead_letter);
    assert_eq!(dead.len() as u64, input.refused, "every refused record dead-lettered");

    // Downstream: the drink count over the deduped orders counts each order once.
    let mut counting = TestEnv::new("dedup-count");
    counting.input = deduped(&env);
    counting.create_topics(3);
    // (Its input ends with a transaction marker, which no committed offset reaches: wait
    // for the counts instead of the group.)
    let mut host = counting.spawn_host("drink_count", &["--guarantee", "exactly-once"]);
    host.wait_for_log("host running", Duration::from_secs(60));
    wait_until(Duration::from_secs(60), "every deduped order counted", || {
        let dump = counting.dump();
        dump.records_processed + dump.records_skipped == input.firsts.len() as u64
    });
    assert!(host.terminate().success());
    let counted = counting.dump();
    assert_eq!(counted.counts, input.unique.counts);
    assert_eq!(counted.records_processed, input.unique.valid);
}

/// A crash (fault injection) at every gap of the write order under at-least-once, with the
/// state dir kept or lost: no order is ever missing from the output (an emit is
/// acknowledged before its batch's changelog), and state ends with every id exactly once.
fn dedup_crash_at(step: &str, lose_state: bool) {
    let env = TestEnv::new(&format!("dedup-{step}{}", if lose_state { "-lost" } else { "" }));
    create_dedup_topics(&env);
    let input = input(72, 2_000);
    env.produce(&input.values);
    let mut flags = dedup_flags(&env);
    flags.extend(["--max-batch", "100"].map(String::from));
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    env.crash_with_fault("order_dedup", &flags, &format!("{step}:3"));
    assert!(env.dump().records_processed < input.accepted, "the crash came after the input was drained");
    if lose_state {
        std::fs::remove_dir_all(env.state_dir()).unwrap();
    }
    env.run_until_drained("order_dedup", &flags, Duration::from_secs(60));

    let out = forwarded(&read_topic(&env.brokers, &deduped(&env)));
    let ids: BTreeSet<String> = out.keys().cloned().collect();
    assert_eq!(ids, input.firsts.keys().cloned().collect::<BTreeSet<_>>(), "no order lost, none invented");
    for (id, values) in &out {
        assert!(values.iter().all(|v| *v == input.firsts[id]), "{id} forwarded with another value");
    }
    assert_eq!(seen_ids(&env), ids);
    assert_eq!(env.restore_into(&env.dir.path().join("restored")).values, env.dump().values);
}

/// Under exactly-once, a crash at every gap of the transaction (fault injection), with the
/// state dir kept or lost: read_committed, every order id on the output exactly once.
fn dedup_crash_under_exactly_once_at(step: &str, lose_state: bool) {
    let env = TestEnv::new(&format!("dedup-eos-{step}{}", if lose_state { "-lost" } else { "" }));
    create_dedup_topics(&env);
    let input = input(76, 2_000);
    env.produce(&input.values);
    let mut flags = dedup_flags(&env);
    flags.extend(["--guarantee", "exactly-once", "--max-batch", "100", "--commit-interval", "1ms"].map(String::from));
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    env.crash_with_fault("order_dedup", &flags, &format!("{step}:3"));
    if lose_state {
        std::fs::remove_dir_all(env.state_dir()).unwrap();
    }
    env.run_until_drained("order_dedup", &flags, Duration::from_secs(60));

    let out = forwarded(&read_topic_with(&env.brokers, &deduped(&env), "read_committed"));
    let twice: Vec<_> = out.iter().filter(|(_, v)| v.len() != 1).map(|(k, v)| (k, v.len())).collect();
    assert!(twice.is_empty(), "forwarded other than once: {twice:?}");
    let ids: BTreeSet<String> = out.keys().cloned().collect();
    assert_eq!(ids, input.firsts.keys().cloned().collect::<BTreeSet<_>>());
    assert_eq!(seen_ids(&env), ids);
    let dump = env.dump();
    assert_eq!((dump.records_processed, dump.records_skipped), (input.accepted, input.refused));
}

#[test]
fn dedup_crash_mid_transaction() {
    dedup_crash_under_exactly_once_at("mid-transaction", false);
}

#[test]
fn dedup_crash_after_commit_before_state() {
    dedup_crash_under_exactly_once_at("after-changelog", false);
}

#[test]
fn dedup_crash_after_commit_before_state_state_lost() {
    dedup_crash_under_exactly_once_at("after-changelog", true);
}

#[test]
fn dedup_crash_after_changelog() {
    dedup_crash_at("after-changelog", false);
}

#[test]
fn dedup_crash_after_changelog_state_lost() {
    dedup_crash_at("after-changelog", true);
}

#[test]
fn dedup_crash_after_state_state_lost() {
    dedup_crash_at("after-state", true);
}

#[test]
fn dedup_crash_after_commit() {
    dedup_crash_at("after-commit", false);
}

/// A run that does not give the guest what it declares is refused at start-up, saying what
/// to add; so is a counting guest's state dir, a flag only counting guests take, and a
/// processor's flag given to a counting guest.
#[test]
fn processor_misconfigurations_are_refused_naming_the_fix() {
    let env = TestEnv::new("dedup-refused");
    create_dedup_topics(&env);
    let refused = |extra: &[&str]| {
        let mut args = env.run_args("order_dedup");
        args.extend(extra.iter().map(|s| s.to_string()));
        let out = env.host(&args);
        assert!(!out.status.success(), "{extra:?} must be refused");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = refused(&[]);
    assert!(err.contains("declares output `deduped`") && err.contains("--output-topic deduped=TOPIC"), "{err}");
    let topic = format!("deduped={}", deduped(&env));
    let err = refused(&["--output-topic", &topic, "--output-topic", "alerts=x"]);
    assert!(err.contains("names output `alerts` that the guest does not declare (it declares: deduped)"), "{err}");
    let err = refused(&["--output-topic", &topic, "--window", "1h"]);
    assert!(err.contains("--window counts a counting guest's deltas"), "{err}");

    // A counting guest's state dir (and its board topic, which a processor's topics lack).
    create_topics_with(&env, 3, &[]);
    env.produce(&orders::generate(73, 10, 0).values);
    env.run_until_drained("drink_count", &[], Duration::from_secs(60));
    let err = refused(&["--output-topic", &topic]);
    assert!(err.contains("holds a counting guest's counters"), "{err}");

    // A processor's flag given to a counting guest.
    let mut args = env.run_args("drink_count");
    args.extend(["--output-topic".to_string(), topic.clone()]);
    let out = env.host(&args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a counting guest with --output-topic must be refused");
    assert!(err.contains("--output-topic deduped=...: guest") && err.contains("is a counting guest"), "{err}");
}

/// `test_processor`'s output topic.
fn out_topic(env: &TestEnv) -> String {
    format!("{}.out", env.name)
}

fn out_flags(env: &TestEnv) -> Vec<String> {
    vec!["--output-topic".into(), format!("out={}", out_topic(env))]
}

fn create_out_topics(env: &TestEnv) {
    create_topics_with(env, 1, &out_flags(env));
}

/// Event time zero of the tests that set their records' timestamps: a whole hour two hours
/// ago (recent, so that the topics' retention, which goes by record timestamps, keeps them).
fn t0() -> i64 {
    static T0: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *T0.get_or_init(|| {
        let start = now_ms() - 2 * 3_600_000;
        start - start.rem_euclid(3_600_000)
    })
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

/// Timers are state: set, then the host is killed (-9) before any is due; after the restart a
/// record that moves stream time past two of them fires them in its batch, and the wall-clock
/// one fires on its own, with no record coming. A timer whose call fails leaves nothing but
/// the log line and the metric. Exactly-once: read_committed, each fired timer's emit once.
#[test]
fn timers_fire_on_stream_time_and_wall_clock_and_survive_kill_9() {
    let env = TestEnv::new("proc-timers");
    create_out_topics(&env);
    let wall_at = now_ms() + 4_000;
    let mut flags = out_flags(&env);
    flags.extend(["--guarantee", "exactly-once"].map(String::from));
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut host = env.spawn_host("test_processor", &flags);
    host.wait_for_log("host running", Duration::from_secs(60));
    let t = |ms: i64| t0() + ms;
    env.produce_at(&[
        (t(1_000), format!("stream a {}", t(5_000))),
        (t(1_000), format!("stream fail-x {}", t(3_000))),
        (t(1_000), format!("wall w {wall_at}")),
    ]);
    env.wait_committed(Duration::from_secs(60));
    let timers = env.dump().timers;
    let timer = |clock: &str, key: &str| (clock.to_string(), key.to_string());
    let expected = BTreeMap::from([
        (timer("stream-time", "a"), t(5_000)),
        (timer("stream-time", "fail-x"), t(3_000)),
        (timer("wall-clock", "w"), wall_at),
    ]);
    assert_eq!(timers, expected);
    assert!(now_ms() < wall_at, "the wall-clock timer came due before the kill: the test ran too slowly");
    host.kill9();

    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr = format!("127.0.0.1:{port}");
    let mut flags = flags.clone();
    flags.extend(["--http", &addr]);
    let mut host = env.spawn_host("test_processor", &flags);
    host.wait_for_log("host running", Duration::from_secs(60));
    env.produce_at(&[(t(6_000), "put k v".to_string())]);
    wait_until(Duration::from_secs(30), "the wall-clock timer fired", || env.dump().values.contains_key("fired/w"));
    assert!(now_ms() >= wall_at, "fired before its time");
    let metrics = integration_tests::http_get(&addr, "/metrics").1;
    // `/state/{key}` answers a processor's values as `host dump` shows them.
    let (status, body) = integration_tests::http_get(&addr, "/state/k");
    assert_eq!((status, body.as_str()), (200, r#"{"key":"k","value_text":"v"}"#));
    let log = host.stderr_text();
    assert!(host.terminate().success());

    let out = forwarded(&read_topic_with(&env.brokers, &out_topic(&env), "read_committed"));
    let expected_out = BTreeMap::from([
        ("fired/a".to_string(), vec![format!("stream-time {}", t(5_000))]),
        ("fired/w".to_string(), vec![format!("wall-clock {wall_at}")]),
    ]);
    assert_eq!(out, expected_out);
    let dump = env.dump();
    let keys: Vec<&str> = dump.values.keys().map(String::as_str).collect();
    assert_eq!(keys, ["fired/a", "fired/w", "k"], "a failed timer leaves nothing");
    assert!(dump.timers.is_empty(), "{:?}", dump.timers);
    assert_eq!(dump.stream_time_ms, Some(t(6_000)));
    assert!(log.contains("a timer's call failed") && log.contains("timer fail-x fails on purpose"), "{log}");
    assert!(metrics.contains("streamhost_timer_failures_total 1"), "{metrics}");
    assert!(metrics.contains("streamhost_timers_fired_total 3"), "{metrics}");
    assert_eq!(env.restore_into(&env.dir.path().join("restored")), dump, "a restore equals the state");
}

/// An emit to an undeclared output and a value over the limit are errors the guest sees (it
/// returns them: the record is refused); a record past `--max-state-ops` and one that traps
/// are trapped. Each is skipped, counted and dead-lettered with why, leaving no write and no
/// emit; the records around them are processed.
#[test]
fn limits_and_undeclared_outputs_refuse_only_the_record() {
    let env = TestEnv::new("proc-limits");
    create_out_topics(&env);
    let records = ["put a 1", "undeclared", "big", "budget", "trap", "put b 2", "emit a"];
    env.produce(&records.map(String::from));
    let mut flags = out_flags(&env);
    flags.extend(["--max-state-ops", "1000"].map(String::from));
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    env.run_until_drained("test_processor", &flags, Duration::from_secs(60));

    let dump = env.dump();
    let values: BTreeMap<&str, &[u8]> = dump.values.iter().map(|(k, v)| (k.as_str(), v.as_slice())).collect();
    assert_eq!(values, BTreeMap::from([("a", b"1".as_slice()), ("b", b"2".as_slice())]));
    assert_eq!((dump.records_processed, dump.records_skipped), (3, 4));
    let dead: Vec<(String, String)> = env
        .read(&env.dead_letter)
        .iter()
        .map(|r| (String::from_utf8_lossy(&r.value).into_owned(), r.header("error").unwrap()))
        .collect();
    let reasons: Vec<&str> = dead.iter().map(|(v, _)| v.as_str()).collect();
    assert_eq!(reasons, ["undeclared", "big", "budget", "trap"]);
    assert!(dead[0].1.contains("output `elsewhere` is not declared (describe declares: out)"), "{dead:?}");
    assert!(dead[1].1.contains("larger than the limit of 524288"), "{dead:?}");
    assert!(dead[2].1.contains("more than 1000 state operations (--max-state-ops)"), "{dead:?}");
    assert!(dead[3].1.starts_with("guest trapped"), "{dead:?}");
    let out = forwarded(&read_topic(&env.brokers, &out_topic(&env)));
    assert_eq!(out, BTreeMap::from([("a".to_string(), vec!["1".to_string()])]));
}

/// The dedup remembers an order id for a day of stream time: a duplicate within it is
/// dropped; once a later order moves stream time past the day, the id is forgotten (its
/// timer fired) and the same id is an order again.
#[test]
fn order_dedup_forgets_an_order_id_after_a_day_of_stream_time() {
    let env = TestEnv::new("dedup-retention");
    create_dedup_topics(&env);
    let hour = 3_600_000;
    let t0 = now_ms() - 48 * hour;
    let order = |id: &str| format!(r#"{{"order_id":"{id}","items":[{{"drink":"tea","quantity":1}}]}}"#);
    env.produce_at(&[
        (t0, order("a")),
        (t0 + hour, order("a")),
        (t0 + 25 * hour, order("b")),
        (t0 + 25 * hour + 1, order("a")),
    ]);
    env.run_until_drained(
        "order_dedup",
        &dedup_flags(&env).iter().map(String::as_str).collect::<Vec<_>>(),
        Duration::from_secs(60),
    );
    let keys: Vec<String> =
        read_topic(&env.brokers, &deduped(&env)).iter().map(|r| String::from_utf8(r.key.clone()).unwrap()).collect();
    assert_eq!(keys, ["a", "b", "a"]);
    let dump = env.dump();
    assert_eq!(seen_ids(&env), BTreeSet::from(["a".to_string(), "b".to_string()]));
    let timer = |id: &str| ("stream-time".to_string(), format!("seen/{id}"));
    assert_eq!(dump.timers, BTreeMap::from([(timer("a"), t0 + 49 * hour + 1), (timer("b"), t0 + 49 * hour)]));
}

/// The revenue job's topics: totals, alerts and the menu table.
fn revenue_flags(env: &TestEnv) -> Vec<String> {
    let mut flags = Vec::new();
    for (flag, name) in [("--output-topic", "totals"), ("--output-topic", "alerts"), ("--table", "menu")] {
        flags.extend([flag.to_string(), format!("{name}={}.{name}", env.name)]);
    }
    flags
}

fn create_revenue_topics(env: &TestEnv) {
    create_topics_with(env, 3, &revenue_flags(env));
}

/// Revenue in cents per (shop, hour start) of `values` priced by `menu`, with the orders
/// counted; orders with a drink off the menu (or malformed) are not.
fn revenue(values: &[String], timestamps: &[i64], menu: &BTreeMap<&str, u64>) -> BTreeMap<(String, i64), (u64, u64)> {
    let mut out: BTreeMap<(String, i64), (u64, u64)> = BTreeMap::new();
    for (value, t) in values.iter().zip(timestamps) {
        let Ok(order) = serde_json::from_str::<serde_json::Value>(value) else { continue };
        let (Some(shop), Some(items)) = (order.get("shop_id").and_then(|s| s.as_u64()), order["items"].as_array())
        else {
            continue;
        };
        let priced: Option<u64> = items
            .iter()
            .map(|i| {
                Some(menu.get(i["drink"].as_str()?)? * i["quantity"].as_u64().filter(|q| (1..=1_000_000).contains(q))?)
            })
            .sum();
        if let Some(cents) = priced.filter(|_| !items.is_empty()) {
            let entry = out.entry((shop.to_string(), t - t.rem_euclid(3_600_000))).or_default();
            entry.0 += cents;
            entry.1 += 1;
        }
    }
    out
}

/// `shop_revenue` joins each order with the `menu` table (read to its end before the first
/// order; a price changed while the host runs applies to the orders after it is read):
/// under exactly-once through `kill -9`, read_committed, the newest total of every shop's
/// hour is exact, the totals of each hour grow by exactly its orders, and each hour past
/// 100.00 raised one alert.
#[test]
fn shop_revenue_joins_orders_with_the_menu_exactly_through_kill_9() {
    let env = TestEnv::new("revenue");
    create_revenue_topics(&env);
    let menu_topic = format!("{}.menu", env.name);
    let mut menu: BTreeMap<&str, u64> = orders::DRINKS.iter().map(|d| (*d, 300 + d.len() as u64 * 10)).collect();
    menu.remove("chai"); // off the menu: orders with chai are refused
    let rows: Vec<(&str, String)> = menu.iter().map(|(d, p)| (*d, p.to_string())).collect();
    integration_tests::produce_rows(
        &env.brokers,
        &menu_topic,
        &rows.iter().map(|(d, p)| (*d, p.as_str())).collect::<Vec<_>>(),
    );

    let hour = 3_600_000;
    let base = now_ms() - now_ms().rem_euclid(hour) - 5 * hour;
    let first = orders::generate(74, 3_000, 50);
    let at = |i: usize| base + (i as i64 % 4) * hour + i as i64;
    let timestamps: Vec<i64> = (0..first.values.len()).map(at).collect();
    env.produce_at(&first.values.iter().cloned().enumerate().map(|(i, v)| (timestamps[i], v)).collect::<Vec<_>>());
    let mut flags = revenue_flags(&env);
    flags.extend(["--guarantee", "exactly-once", "--max-batch", "100", "--max-rate", "2000"].map(String::from));
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let total = first.values.len() as i64;
    let mut host = env.spawn_host("shop_revenue", &flags);
    host.wait_for_log("host running", Duration::from_secs(60));
    wait_until(Duration::from_secs(60), "part of the input committed", || env.committed_total() >= total / 3);
    host.kill9();
    let mut host = env.spawn_host("shop_revenue", &flags);
    host.wait_for_log("host running", Duration::from_secs(60));
    env.wait_committed(Duration::from_secs(60));

    // The latte's price changes while the host runs; once its copy has it, later orders pay it.
    integration_tests::produce_rows(&env.brokers, &menu_topic, &[("latte", "999")]);
    let table_dir = env.state_dir().join("tables").join("menu").display().to_string();
    wait_until(Duration::from_secs(30), "the new price read", || {
        let out = env.host(&["dump", "--state-dir", &table_dir]);
        String::from_utf8_lossy(&out.stdout).contains(r#""key":"latte","value":999"#)
    });
    let second = orders::generate(75, 1_000, 0);
    let later: Vec<i64> = (0..second.values.len()).map(|i| base + 4 * hour + i as i64).collect();
    env.produce_at(&second.values.iter().cloned().enumerate().map(|(i, v)| (later[i], v)).collect::<Vec<_>>());
    env.wait_committed(Duration::from_secs(60));
    assert!(host.terminate().success());

    let mut expected = revenue(&first.values, &timestamps, &menu);
    menu.insert("latte", 999);
    for (key, (cents, orders)) in revenue(&second.values, &later, &menu) {
        let entry = expected.entry(key).or_default();
        entry.0 += cents;
        entry.1 += orders;
    }
    let totals = read_topic_with(&env.brokers, &format!("{}.totals", env.name), "read_committed");
    let mut newest: BTreeMap<(String, i64), (u64, u64)> = BTreeMap::new();
    let mut emitted: BTreeMap<(String, i64), u64> = BTreeMap::new();
    for r in &totals {
        let v: serde_json::Value = serde_json::from_slice(&r.value).unwrap();
        let key = (v["shop"].as_str().unwrap().to_owned(), v["hour_start_ms"].as_i64().unwrap());
        let orders = v["orders"].as_u64().unwrap();
        *emitted.entry(key.clone()).or_default() += 1;
        newest.insert(key, (v["cents"].as_u64().unwrap(), orders));
    }
    assert_eq!(newest, expected, "the newest total of every shop's hour");
    let counted: BTreeMap<(String, i64), u64> = expected.iter().map(|(k, (_, n))| (k.clone(), *n)).collect();
    assert_eq!(emitted, counted, "one total per order, none twice");
    let alerts = read_topic_with(&env.brokers, &format!("{}.alerts", env.name), "read_committed");
    let alerted: BTreeSet<(String, i64)> = alerts
        .iter()
        .map(|r| {
            let v: serde_json::Value = serde_json::from_slice(&r.value).unwrap();
            (v["shop"].as_str().unwrap().to_owned(), v["hour_start_ms"].as_i64().unwrap())
        })
        .collect();
    assert_eq!(alerts.len(), alerted.len(), "one alert per hour");
    let over: BTreeSet<(String, i64)> =
        expected.iter().filter(|(_, (c, _))| *c >= 10_000).map(|(k, _)| k.clone()).collect();
    assert_eq!(alerted, over);
    let dump = env.dump();
    assert_eq!(env.restore_into(&env.dir.path().join("restored")), dump, "a restore equals the state");
}

/// The dedup soak: 30,000 orders (a third of them again later) produced over ~15 s while the
/// host is killed (-9) at random moments and restarted, with random batch sizes. Exactly-once:
/// read_committed, every order id on the output exactly once; at-least-once: every id at
/// least once, none invented. Either way the state holds every id once, and a restore equals it.
fn dedup_soak(name: &str, exactly_once: bool) {
    let mut random = integration_tests::random_source("dedup soak (random kill moments and batch sizes)");
    let env = TestEnv::new(name);
    create_dedup_topics(&env);
    let input = input(77, 22_500);
    let producer = integration_tests::produce_over_time(
        &env.brokers,
        &env.input,
        &input.values,
        2_000,
        Duration::from_millis(1_000),
    );
    let mut mode = dedup_flags(&env);
    if exactly_once {
        mode.extend(["--guarantee", "exactly-once", "--commit-interval", "50ms"].map(String::from));
    }
    let started = std::time::Instant::now();
    let mut kills = 0;
    while kills < 8 || !producer.is_finished() {
        assert!(started.elapsed() < Duration::from_secs(240), "soak took too long");
        let batch = ["20", "200", "2000"][random(3) as usize];
        let args: Vec<&str> = ["--max-batch", batch].into_iter().chain(mode.iter().map(String::as_str)).collect();
        let host = env.spawn_host("order_dedup", &args);
        std::thread::sleep(Duration::from_millis(500 + random(2_000)));
        host.kill9();
        kills += 1;
    }
    producer.join().unwrap();
    eprintln!("dedup soak: {kills} kills in {:?}", started.elapsed());
    let mode: Vec<&str> = mode.iter().map(String::as_str).collect();
    env.run_until_drained("order_dedup", &mode, Duration::from_secs(180));

    let isolation = if exactly_once { "read_committed" } else { "read_uncommitted" };
    let out = forwarded(&read_topic_with(&env.brokers, &deduped(&env), isolation));
    let ids: BTreeSet<String> = out.keys().cloned().collect();
    assert_eq!(ids, input.firsts.keys().cloned().collect::<BTreeSet<_>>(), "no order lost, none invented");
    if exactly_once {
        let twice: Vec<_> = out.iter().filter(|(_, v)| v.len() != 1).map(|(k, v)| (k, v.len())).collect();
        assert!(twice.is_empty(), "forwarded other than once: {twice:?}");
        let dump = env.dump();
        assert_eq!((dump.records_processed, dump.records_skipped), (input.accepted, input.refused));
    }
    assert_eq!(seen_ids(&env), ids);
    assert_eq!(env.restore_into(&env.dir.path().join("restored")), env.dump());
}

#[test]
fn dedup_random_kill_9_soak_under_exactly_once() {
    dedup_soak("dedup-soak-eos", true);
}

#[test]
fn dedup_random_kill_9_soak_under_at_least_once() {
    dedup_soak("dedup-soak", false);
}

/// A timer whose call never returns is trapped at `--guest-timeout`: counted as a failed
/// timer, what it did dropped, and the records after it processed.
#[test]
fn a_timer_that_loops_is_trapped_and_processing_goes_on() {
    let env = TestEnv::new("proc-timer-loop");
    create_out_topics(&env);
    env.produce_at(&[
        (t0() + 1_000, format!("stream loop-a {}", t0() + 2_000)),
        (t0() + 3_000, "put k v".to_string()),
        (t0() + 3_001, "emit k".to_string()),
    ]);
    let mut flags = out_flags(&env);
    flags.extend(["--guest-timeout", "300ms"].map(String::from));
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut host = env.spawn_host("test_processor", &flags);
    host.wait_for_log("host running", Duration::from_secs(60));
    env.wait_committed(Duration::from_secs(60));
    let log = host.stderr_text();
    assert!(host.terminate().success());
    assert!(log.contains("a timer's call failed") && log.contains("deadline exceeded"), "{log}");
    let dump = env.dump();
    let keys: Vec<&str> = dump.values.keys().map(String::as_str).collect();
    assert_eq!(keys, ["k"], "the looping timer left nothing");
    assert!(dump.timers.is_empty(), "{:?}", dump.timers);
    let out = forwarded(&read_topic(&env.brokers, &out_topic(&env)));
    assert_eq!(out, BTreeMap::from([("k".to_string(), vec!["v".to_string()])]));
}

/// A menu row that is no price refuses the orders that need it (dead-lettered, saying which
/// row), and the others are priced: the partition keeps moving.
#[test]
fn a_menu_row_that_is_no_price_refuses_only_the_orders_that_need_it() {
    let env = TestEnv::new("revenue-bad-row");
    create_revenue_topics(&env);
    let menu_topic = format!("{}.menu", env.name);
    integration_tests::produce_rows(&env.brokers, &menu_topic, &[("latte", "450"), ("tea", "three")]);
    let order = |id: &str, drink: &str| {
        format!(r#"{{"order_id":"{id}","shop_id":1,"items":[{{"drink":"{drink}","quantity":1}}]}}"#)
    };
    let t = |ms: i64| t0() + ms;
    env.produce_at(&[(t(1_000), order("1", "latte")), (t(1_001), order("2", "tea")), (t(1_002), order("3", "latte"))]);
    let flags = revenue_flags(&env);
    env.run_until_drained(
        "shop_revenue",
        &flags.iter().map(String::as_str).collect::<Vec<_>>(),
        Duration::from_secs(60),
    );
    let dump = env.dump();
    assert_eq!((dump.records_processed, dump.records_skipped), (2, 1));
    let dead = env.read(&env.dead_letter);
    assert_eq!(dead.len(), 1);
    assert!(
        dead[0].header("error").unwrap().contains("the menu's price of \"tea\" is `three`, not cents"),
        "{:?}",
        dead[0].header("error")
    );
    let hour: serde_json::Value = serde_json::from_slice(&dump.values[&format!("revenue/1/{}", t0())]).unwrap();
    assert_eq!(hour["cents"], 900);
}

/// The Python order dedup (guests/python/order_dedup, componentize-py) on the broker, under
/// exactly-once: read_committed, every order id exactly once with its first value, as the Rust one.
#[test]
fn order_dedup_in_python_forwards_each_order_exactly_once() {
    let env = TestEnv::new("dedup-py");
    create_dedup_topics(&env);
    let input = input(78, 600);
    env.produce(&input.values);
    let mut flags = dedup_flags(&env);
    flags.extend(["--guarantee", "exactly-once"].map(String::from));
    env.run_until_drained(
        "order_dedup_py",
        &flags.iter().map(String::as_str).collect::<Vec<_>>(),
        Duration::from_secs(120),
    );
    let out = forwarded(&read_topic_with(&env.brokers, &deduped(&env), "read_committed"));
    let firsts: BTreeMap<String, String> = out
        .into_iter()
        .map(|(k, mut v)| {
            assert_eq!(v.len(), 1, "{k} forwarded {} times", v.len());
            (k, v.remove(0))
        })
        .collect();
    assert_eq!(firsts, input.firsts);
    assert_eq!(seen_ids(&env), input.firsts.keys().cloned().collect());
}
