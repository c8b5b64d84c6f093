//! Broken guests: traps, endless loops, unbounded allocation, counter overflow and forbidden
//! imports. The host contains each one and keeps counting the good records; WASI guests run
//! with nothing granted.

use std::collections::BTreeMap;
use std::time::Duration;

use integration_tests::{TestEnv, scale_out};

/// Records that make the guest panic, loop forever or allocate without bound are skipped
/// as failed and dead-lettered with the reason; the instance is re-created and the good
/// records around them are counted exactly.
#[test]
fn traps_deadlines_and_memory_caps_skip_only_the_bad_records() {
    let env = TestEnv::new("broken-guest");
    env.create_topics(1);
    let records = ["a", "panic", "b", "loop", "c", "alloc", "a", "panic", "d"];
    env.produce(&records.iter().map(|s| s.to_string()).collect::<Vec<_>>());

    let host = env.spawn_host("test_faulty", &["--guest-timeout", "300ms", "--guest-memory-mb", "16"]);
    env.wait_committed(Duration::from_secs(60));
    let log = host.stderr_text();
    assert!(host.terminate().success());

    let dump = env.dump();
    let expected: BTreeMap<String, u64> =
        [("a", 2), ("b", 1), ("c", 1), ("d", 1)].map(|(k, v)| (k.to_string(), v)).into();
    assert_eq!(dump.counts, expected);
    assert_eq!((dump.records_processed, dump.records_skipped), (5, 4));

    let dead = env.read(&env.dead_letter);
    let reasons: Vec<(String, String)> =
        dead.iter().map(|r| (String::from_utf8_lossy(&r.value).into_owned(), r.header("error").unwrap())).collect();
    assert_eq!(reasons.iter().map(|(v, _)| v.as_str()).collect::<Vec<_>>(), ["panic", "loop", "alloc", "panic"]);
    assert!(reasons.iter().all(|(_, e)| e.starts_with("guest trapped")), "{reasons:?}");
    assert!(reasons[1].1.contains("deadline exceeded"), "{reasons:?}");
    assert!(log.contains("re-creating its instance"), "{log}");
}

/// A counter that would overflow u64 saturates at u64::MAX instead of wrapping.
#[test]
fn counter_overflow_saturates() {
    let env = TestEnv::new("overflow");
    env.create_topics(1);
    // Each "big" adds 2^63: the second reaches 2^64 - 1 + 1, the third stays saturated.
    env.produce(&["big", "big", "big"].map(String::from));
    let host = env.spawn_host("test_faulty", &["--max-batch", "1"]);
    env.wait_committed(Duration::from_secs(60));
    let log = host.stderr_text();
    assert!(host.terminate().success());
    assert_eq!(env.dump().counts.get("big"), Some(&u64::MAX));
    assert_eq!(env.changelog_latest().get("big"), Some(&u64::MAX));
    assert!(log.contains("saturated"), "{log}");
}

/// A guest that imports anything outside WASI (here `streamhost:test-imports/vault`) is
/// refused at load, with the import named.
#[test]
fn guests_importing_more_than_wasi_are_refused() {
    let env = TestEnv::new("imports");
    let mut args = env.run_args("drink_count");
    args[2] = integration_tests::guest("test_imports").display().to_string();
    let out = env.host(&args);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("imports streamhost:test-imports/vault") && err.contains("may import only WASI"), "{err}");
}

/// A guest that imports WASI runs, but is granted nothing: no environment, arguments,
/// working directory or preopened directories, no TCP connection (not even to the broker);
/// stdout takes writes and discards them; random numbers work. It counts one key that
/// describes what it found.
#[test]
fn wasi_guests_run_with_nothing_granted() {
    let env = TestEnv::new("sandbox");
    env.create_topics(1);
    env.produce(&["a", "b", "c"].map(String::from));
    let host = env.spawn_host("test_sandbox", &[]);
    env.wait_committed(Duration::from_secs(60));
    let log = host.stderr_text();
    assert!(host.terminate().success());
    let found = "env=0 args=0 cwd=none dirs=0 stdout=ok tcp=denied random=ok";
    assert_eq!(env.dump().counts, BTreeMap::from([(found.to_string(), 3)]));
    assert!(!log.contains("hello from the sandbox"), "guest stdout reached the host's output: {log}");
}

/// The counts of the contract tests' input: each record's text once under its own key.
fn text_counts(records: &[&str]) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for r in records {
        *counts.entry(r.to_string()).or_insert(0) += 1;
    }
    counts
}

/// A board (`{"top": [{"key", "count"}, ...]}`, from the output topic or `/board.json`) that
/// holds only what the state could have: at most `n` entries, no key twice, each key counted
/// with no more than its final count.
fn assert_honest(board: &serde_json::Value, counts: &BTreeMap<String, u64>, n: usize) {
    let top = board["top"].as_array().unwrap_or_else(|| panic!("a board has a top: {board}"));
    assert!(top.len() <= n, "more than {n} entries: {board}");
    let mut seen = std::collections::BTreeSet::new();
    for entry in top {
        let key = entry["key"].as_str().unwrap();
        assert!(seen.insert(key), "{key} twice: {board}");
        let count = entry["count"].as_u64().unwrap();
        assert!(counts.get(key).is_some_and(|c| count <= *c), "{key} = {count} is not from the state: {board}");
    }
}

/// `host test` over `records` with `--top-n 2` fails (exit 1) with `rule` on stderr.
fn assert_host_test_fails(env: &TestEnv, records: &[&str], rule: &str) {
    let input = env.dir.path().join("contract-records.txt");
    std::fs::write(&input, records.join("\n") + "\n").unwrap();
    let guest = integration_tests::guest("test_contract").display().to_string();
    let out = env.host(&["test", "--guest", &guest, "--input", &input.display().to_string(), "--top-n", "2"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("CONTRACT: {rule}")), "{stderr}");
}

/// `test_contract`'s `top-n` breaks `rule` once `marker` is counted: the host counts every
/// record exactly, no board on the output topic or `/board.json` holds what the state does
/// not, the violation is counted under `kind` and the skipped board logged with the rule;
/// `host test` fails naming it. On one host, or with `--scale-out` (where each shard's board
/// is ranked by the guest).
fn a_broken_top_n_never_reaches_a_board(marker: &str, kind: &str, rule: &str, scale_out: bool) {
    let env = TestEnv::new(&format!("contract-{marker}{}", if scale_out { "-so" } else { "" }));
    let records = ["a", "b", "b", "c", "c", "c", marker];
    assert_host_test_fails(&env, &records, rule);
    if scale_out {
        scale_out::create_topics(&env);
    } else {
        env.create_topics(1);
    }
    env.produce(&records.map(String::from));
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr = format!("127.0.0.1:{port}");
    // (After SCALE_OUT's flush interval: the last one given counts.)
    let flags = ["--top-n", "2", "--flush-interval", "200ms", "--http", addr.as_str()];
    let mut host = if scale_out {
        scale_out::spawn_guest(&env, 0, "test_contract", &flags, &[])
    } else {
        env.spawn_host("test_contract", &flags)
    };
    host.wait_for_log("host running", Duration::from_secs(60));
    env.wait_committed(Duration::from_secs(60));
    let counted = format!(r#"streamhost_guest_contract_violations_total{{kind="{kind}"}}"#);
    integration_tests::wait_until(Duration::from_secs(30), "the violation counted", || {
        let metrics = integration_tests::http_get(&addr, "/metrics").1;
        metrics.lines().any(|l| l.strip_prefix(&counted).is_some_and(|v| v.trim().parse::<f64>().unwrap() >= 1.0))
    });
    let page = integration_tests::http_get(&addr, "/board.json").1;
    // A few more intervals, all of them refused.
    std::thread::sleep(Duration::from_millis(600));
    let log = host.stderr_text();
    assert!(host.terminate().success());

    let counts = text_counts(&records);
    let dump = if scale_out { scale_out::union_of_dumps(&env, &[0]) } else { env.dump() };
    assert_eq!(dump.counts, counts);
    assert_eq!((dump.records_processed, dump.records_skipped), (records.len() as u64, 0));
    assert_honest(&serde_json::from_str(&page).unwrap(), &counts, 2);
    for board in env.boards() {
        assert_honest(&board, &counts, 2);
    }
    assert!(log.contains(&format!("the guest's top-n broke its contract ({rule})")), "{log}");
    assert!(log.contains("board not published this interval"), "{log}");
}

#[test]
fn a_top_n_with_too_many_entries_is_refused() {
    a_broken_top_n_never_reaches_a_board("too-many", "too_many_entries", "top-n returns at most n entries", false);
}

#[test]
fn a_top_n_with_an_invented_key_is_refused() {
    a_broken_top_n_never_reaches_a_board("invented", "invented_key", "top-n returns only keys it was given", false);
}

#[test]
fn a_top_n_with_a_changed_count_is_refused() {
    let rule = "top-n returns each entry with the count it was given";
    a_broken_top_n_never_reaches_a_board("changed", "changed_count", rule, false);
}

#[test]
fn a_top_n_with_a_key_twice_is_refused() {
    a_broken_top_n_never_reaches_a_board("duplicate", "duplicate_key", "top-n returns no key twice", false);
}

#[test]
fn a_scale_out_shard_board_from_a_broken_top_n_is_refused() {
    a_broken_top_n_never_reaches_a_board("invented", "invented_key", "top-n returns only keys it was given", true);
}

/// `test_contract`'s `event-time` answers one time fewer for a batch holding a record that
/// starts `short-times`: that call's records keep their Kafka timestamps (so the marker,
/// whose own text names a time in the next hour, counts in the hour of its record
/// timestamp), counted under `kind="event_time_count"` and logged; a batch before it keeps
/// the guest's times; `host test` fails naming the rule.
#[test]
fn an_event_time_answer_of_the_wrong_length_keeps_kafka_timestamps() {
    let env = TestEnv::new("contract-event-time");
    assert_host_test_fails(&env, &["a", "short-times"], "event-time returns one time per record given");
    env.create_topics(1);
    let hour = 3_600_000;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let kafka_hour = now - now % hour - 2 * hour;
    let guest_hour = kafka_hour + hour;
    let on_time = format!("at={}", guest_hour + 60_000);
    let marker = format!("short-times at={}", guest_hour + 60_000);
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr = format!("127.0.0.1:{port}");
    let flags = ["--window", "1h", "--grace", "3h", "--event-time", "guest", "--http", &addr];
    let mut host = env.spawn_host("test_contract", &flags);
    host.wait_for_log("host running", Duration::from_secs(60));
    env.produce_at(&[(kafka_hour + 1000, on_time.clone())]);
    env.wait_committed(Duration::from_secs(60));
    env.produce_at(&[(kafka_hour + 2000, marker.clone())]);
    integration_tests::wait_until(Duration::from_secs(60), "every record committed", || env.committed_total() == 2);
    let metrics = integration_tests::http_get(&addr, "/metrics").1;
    let log = host.stderr_text();
    assert!(host.terminate().success());

    assert!(metrics.contains(r#"streamhost_guest_contract_violations_total{kind="event_time_count"} 1"#), "{metrics}");
    assert!(log.contains("the guest's event-time broke its contract"), "{log}");
    let expected = BTreeMap::from([((guest_hour, on_time), 1), ((kafka_hour, marker), 1)]);
    assert_eq!(env.dump().windows, expected);
}
