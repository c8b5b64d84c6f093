//! `--window` with `--scale-out`: stage A assigns each order to its windows by the stream
//! time of its input partition (which travels with the partition's committed offset), the
//! shards count windowed counters and drop windows past their retention by the stream times
//! stage A reports to every shard. Exact per window through a `kill -9` and a host added;
//! retention leaves the shards and their changelog alike.

use std::collections::BTreeMap;
use std::time::Duration;

use integration_tests::scale_out::{PARTITIONS, create_topics, spawn, union_of_dumps};
use integration_tests::{HostProcess, TestEnv, orders};

const SIZE_MS: i64 = 10_000;

/// Event time zero: a whole minute two hours ago (the topic's retention goes by timestamps).
fn t0() -> i64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let start = now - 2 * 3_600_000;
    start - start % 60_000
}

/// Orders with event times `step_ms` apart, dealt round-robin to the six partitions (so each
/// partition's times only grow: no order is late), and the expected count of every
/// (window start, drink).
fn produce_windowed(env: &TestEnv, n: usize, step_ms: i64) -> (BTreeMap<(i64, String), u64>, BTreeMap<i32, i64>) {
    let base = t0();
    let generated = orders::generate(71, n, 0);
    let mut by_partition: BTreeMap<i32, Vec<(i64, String)>> = BTreeMap::new();
    let mut expected: BTreeMap<(i64, String), u64> = BTreeMap::new();
    let mut last: BTreeMap<i32, i64> = BTreeMap::new();
    for (i, value) in generated.values.iter().enumerate() {
        let at = base + i as i64 * step_ms;
        let partition = (i % PARTITIONS as usize) as i32;
        by_partition.entry(partition).or_default().push((at, value.clone()));
        last.insert(partition, at);
        let order: serde_json::Value = serde_json::from_str(value).unwrap();
        let start = at - at.rem_euclid(SIZE_MS);
        for item in order["items"].as_array().unwrap() {
            let drink = item["drink"].as_str().unwrap().to_owned();
            *expected.entry((start, drink)).or_default() += item["quantity"].as_u64().unwrap();
        }
    }
    for (partition, records) in &by_partition {
        env.produce_at_partition(*partition, records);
    }
    (expected, last)
}

fn wait_all(hosts: &mut [HostProcess]) {
    for host in hosts.iter_mut() {
        let status = host.wait_exit(Duration::from_secs(150));
        assert!(status.success(), "a host failed ({status}):\n{}", host.stderr_text());
    }
}

/// `host board --json`: merged from the shards' local (windowed) boards.
fn global_board(env: &TestEnv) -> serde_json::Value {
    let guest = integration_tests::guest("drink_count").display().to_string();
    let out = env.host(&["board", "--guest", &guest, "--brokers", &env.brokers, "--output", &env.output, "--json"]);
    assert!(out.status.success(), "board failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Three hosts under exactly-once count 10 s windows over six partitions: one is killed
/// (`kill -9`) mid-stream and started again, a third joins; every window's counts are exact,
/// each window counter in one shard, and the merged board shows every window it has exactly.
#[test]
fn windowed_counts_across_hosts_are_exact_through_a_kill_and_a_host_added() {
    let env = TestEnv::new("scale-win");
    create_topics(&env);
    let (expected, _) = produce_windowed(&env, 12_000, 10);
    let mode = [
        "--guarantee",
        "exactly-once",
        "--commit-interval",
        "100ms",
        "--window",
        "10s",
        "--grace",
        "5s",
        "--window-retention",
        "1h",
    ];
    let flags = |extra: &[&'static str]| -> Vec<&'static str> {
        mode.iter().chain(&["--max-rate", "1500", "--max-batch", "200"]).chain(extra).copied().collect()
    };
    let mut hosts: Vec<HostProcess> = (0..2).map(|h| spawn(&env, h, &flags(&[]))).collect();
    for host in &mut hosts {
        host.wait_for_log("host running", Duration::from_secs(60));
    }
    std::thread::sleep(Duration::from_secs(2));
    hosts.remove(0).kill9();
    hosts.insert(0, spawn(&env, 0, &flags(&[])));
    std::thread::sleep(Duration::from_secs(1));
    hosts.push(spawn(&env, 2, &flags(&[])));
    std::thread::sleep(Duration::from_secs(2));
    for host in hosts.drain(..) {
        assert!(host.terminate().success(), "a clean stop exits 0");
    }
    // Drained to the end by the three.
    let mut hosts: Vec<HostProcess> = (0..3).map(|h| spawn(&env, h, &flags(&["--stop-at-end"]))).collect();
    wait_all(&mut hosts);

    let dump = union_of_dumps(&env, &[0, 1, 2]);
    assert!(dump.counts.is_empty(), "no cumulative counters with --window");
    assert_eq!(dump.windows, expected);
    assert_eq!((dump.records_processed, dump.records_skipped), (12_000, 0));

    let board = global_board(&env);
    let windows = board["windows"].as_array().expect("the merged board has windows");
    assert!(!windows.is_empty(), "{board}");
    for window in windows {
        let start = window["start_ms"].as_i64().unwrap();
        let mut want: Vec<(String, u64)> =
            expected.iter().filter(|((s, _), _)| *s == start).map(|((_, k), c)| (k.clone(), *c)).collect();
        want.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        want.truncate(10);
        let got: Vec<(String, u64)> = window["top"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["key"].as_str().unwrap().to_owned(), e["count"].as_u64().unwrap()))
            .collect();
        assert_eq!(got, want, "window {start}");
    }
}

/// Two hosts, 10 s windows kept 10 s past their end: at the end only the windows the slowest
/// input partition has not left behind by more than the retention are in the shards, and a
/// restore of every shard from its changelog partition holds exactly the same (the dropped
/// windows' counters are tombstoned there).
#[test]
fn windows_past_their_retention_leave_the_shards_and_their_changelog() {
    let env = TestEnv::new("scale-win-retention");
    create_topics(&env);
    let (expected, last) = produce_windowed(&env, 3_000, 20);
    let flags = ["--window", "10s", "--window-retention", "10s", "--stop-at-end", "--max-batch", "300"];
    let mut hosts: Vec<HostProcess> = (0..2).map(|h| spawn(&env, h, &flags)).collect();
    wait_all(&mut hosts);

    // What the single host's rule keeps: windows whose end plus retention is past the slowest
    // partition's stream time.
    let slowest = *last.values().min().unwrap();
    let kept: BTreeMap<(i64, String), u64> = expected
        .iter()
        .filter(|((start, _), _)| start + SIZE_MS + 10_000 > slowest)
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    assert!(kept.len() < expected.len(), "some windows expired");
    let dump = union_of_dumps(&env, &[0, 1]);
    assert_eq!(dump.windows, kept);

    let restored = env.dir.path().join("restored");
    let out = env.host(&[
        "restore",
        "--scale-out",
        "--brokers",
        &env.brokers,
        "--changelog",
        &env.changelog,
        "--state-dir",
        &restored.display().to_string(),
    ]);
    assert!(out.status.success(), "restore failed: {}", String::from_utf8_lossy(&out.stderr));
    let out = env.host(&["dump", "--state-dir", &restored.display().to_string()]);
    assert!(out.status.success());
    let mut restored_windows = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        if let (Some(start), Some(key)) = (v.get("window_start_ms"), v.get("key")) {
            restored_windows
                .insert((start.as_i64().unwrap(), key.as_str().unwrap().to_owned()), v["count"].as_u64().unwrap());
        }
    }
    assert_eq!(restored_windows, kept, "the changelog holds what the shards hold");
}

/// `--emit final` on two hosts under exactly-once: each shard produces its board of every
/// window it has counts in once, when the window is complete for it (`window/<start>/shard/<p>`),
/// and a marker of how far its final boards go (`final/shard/<p>`); merged per window (the
/// union of the shards' boards), they are each complete window's exact top.
#[test]
fn emit_final_gives_each_complete_window_s_board_once_per_shard() {
    let env = TestEnv::new("scale-win-final");
    create_topics(&env);
    let (expected, last) = produce_windowed(&env, 3_000, 20);
    let flags = [
        "--window",
        "10s",
        "--emit",
        "final",
        "--guarantee",
        "exactly-once",
        "--stop-at-end",
        "--max-batch",
        "300",
        "--flush-interval",
        "200ms",
    ];
    let mut hosts: Vec<HostProcess> = (0..2).map(|h| spawn(&env, h, &flags)).collect();
    wait_all(&mut hosts);

    let slowest = *last.values().min().unwrap();
    // Complete: every input partition is past the window's end (grace 0).
    let complete: Vec<i64> =
        expected.keys().map(|(start, _)| *start).filter(|start| start + SIZE_MS <= slowest).collect();
    assert!(complete.len() >= 4, "windows complete: {complete:?}");
    let mut finals: BTreeMap<i64, Vec<(String, u64)>> = BTreeMap::new();
    let mut seen = std::collections::BTreeSet::new();
    let mut markers: BTreeMap<String, i64> = BTreeMap::new();
    for record in integration_tests::read_topic(&env.brokers, &env.output) {
        let key = String::from_utf8_lossy(&record.key).into_owned();
        let value: serde_json::Value = serde_json::from_slice(&record.value).unwrap();
        if let Some(rest) = key.strip_prefix("window/") {
            assert!(seen.insert(key.clone()), "{key}: produced once");
            assert_eq!(value["complete"], true, "{key}");
            let start: i64 = rest.split('/').next().unwrap().parse().unwrap();
            for e in value["top"].as_array().unwrap() {
                finals
                    .entry(start)
                    .or_default()
                    .push((e["key"].as_str().unwrap().to_owned(), e["count"].as_u64().unwrap()));
            }
        } else if key.starts_with("final/shard/") {
            markers.insert(key, value["complete_through_ms"].as_i64().unwrap());
        }
    }
    let newest_complete = *complete.iter().max().unwrap();
    assert_eq!(markers.len(), PARTITIONS as usize, "a marker per shard: {markers:?}");
    assert!(markers.values().all(|through| *through >= newest_complete), "{markers:?}");
    for start in complete.iter().collect::<std::collections::BTreeSet<_>>() {
        let mut want: Vec<(String, u64)> =
            expected.iter().filter(|((s, _), _)| s == start).map(|((_, k), c)| (k.clone(), *c)).collect();
        want.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let mut got = finals.remove(start).unwrap_or_default();
        got.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        assert_eq!(got, want, "window {start}");
    }
}

/// `--http` on a `--scale-out` host with `--window`: `/state/{key}?window=START` finds each
/// window counter in the shard its windowed key is placed in, exactly, and `/top?window=START`
/// ranks that window.
#[test]
fn state_queries_of_a_scale_out_host_answer_per_window() {
    let env = TestEnv::new("scale-win-http");
    create_topics(&env);
    let (expected, _) = produce_windowed(&env, 1_200, 50);
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr = format!("127.0.0.1:{port}");
    let mut host = spawn(&env, 0, &["--window", "10s", "--window-retention", "1h", "--http", &addr]);
    host.wait_for_log("serving /healthz", Duration::from_secs(60));
    let encode = |key: &str| -> String {
        key.bytes()
            .map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") })
            .collect()
    };
    let started = std::time::Instant::now();
    loop {
        assert!(started.elapsed() < Duration::from_secs(90), "the host never answered every window counter exactly");
        let exact = expected.iter().all(|((start, key), want)| {
            let (status, body) = integration_tests::http_get(&addr, &format!("/state/{}?window={start}", encode(key)));
            let body: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            status == 200 && body["count"].as_u64() == Some(*want) && body["shard"].is_i64()
        });
        if exact {
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    let (start, _) = expected.keys().next().unwrap().clone();
    let (status, body) = integration_tests::http_get(&addr, &format!("/top?window={start}&n=1"));
    assert_eq!(status, 200, "{body}");
    let top: serde_json::Value = serde_json::from_str(&body).unwrap();
    let best = expected.iter().filter(|((s, _), _)| *s == start).map(|(_, c)| *c).max().unwrap();
    assert_eq!(top["top"][0]["count"].as_u64(), Some(best), "{top}");
    assert!(host.terminate().success(), "a clean stop exits 0");
}
