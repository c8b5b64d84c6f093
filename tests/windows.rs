//! Event-time windows (`--window`): exact per-window counts with out-of-order and late
//! records, the boards with their window bounds, `--emit final`, retention (counters gone
//! from state, tombstoned in the changelog, a restore giving the same state), hopping
//! windows, crashes mid-window under both guarantees, and a restart with other windows
//! refused.

use std::collections::BTreeMap;
use std::time::Duration;

use integration_tests::TestEnv;

/// Event time zero of these tests: a whole minute two hours ago (recent, so that the topic's
/// retention, which goes by record timestamps, keeps the records). Window `w` of 10 s starts
/// at `t0() + w * 10 s`.
fn t0() -> i64 {
    static T0: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *T0.get_or_init(|| {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
        let start = now - 2 * 3_600_000;
        start - start % 60_000
    })
}
const S: i64 = 1000;

fn order(drink: &str, quantity: u64) -> String {
    format!(r#"{{"items":[{{"drink":"{drink}","quantity":{quantity}}}]}}"#)
}

/// Tumbling 10 s windows, grace 2 s, one partition: out-of-order records inside the grace
/// count, older ones are late.
fn tumbling_input() -> Vec<(i64, String)> {
    [
        (1, "latte", 1),  // [0, 10)
        (3, "mocha", 2),  // [0, 10)
        (11, "latte", 1), // [10, 20); stream time 11 s
        (9, "tea", 1),    // out of order, [0, 10) takes records until stream time 12 s: counted
        (13, "latte", 3), // [10, 20); stream time 13 s: [0, 10) is closed
        (8, "mocha", 1),  // late
        (25, "chai", 1),  // [20, 30); stream time 25 s: [10, 20) is closed
        (19, "latte", 1), // late
    ]
    .map(|(at, drink, quantity)| (t0() + at * S, order(drink, quantity)))
    .to_vec()
}

fn window(w: i64, counts: &[(&str, u64)]) -> Vec<((i64, String), u64)> {
    counts.iter().map(|(key, count)| ((t0() + w * 10 * S, key.to_string()), *count)).collect()
}

fn expected(windows: &[Vec<((i64, String), u64)>]) -> BTreeMap<(i64, String), u64> {
    windows.iter().flatten().cloned().collect()
}

/// Runs a host over the input until its group has committed all of it, then stops it.
fn run(env: &TestEnv, extra: &[&str]) -> String {
    let mut host = env.spawn_host("drink_count", extra);
    host.wait_for_log("host running", Duration::from_secs(60));
    env.wait_committed(Duration::from_secs(60));
    // A board (or a final one) after the last batch.
    std::thread::sleep(Duration::from_millis(600));
    let log = host.stderr_text();
    assert!(host.terminate().success(), "a clean stop exits 0");
    log
}

#[test]
fn tumbling_windows_count_exactly_and_skip_late_records() {
    let env = TestEnv::new("win-tumbling");
    env.create_topics(1);
    env.produce_at(&tumbling_input());
    run(&env, &["--window", "10s", "--grace", "2s", "--window-retention", "1h", "--flush-interval", "200ms"]);

    let dump = env.dump();
    let want = expected(&[
        window(0, &[("latte", 1), ("mocha", 2), ("tea", 1)]),
        window(1, &[("latte", 4)]),
        window(2, &[("chai", 1)]),
    ]);
    assert_eq!(dump.windows, want);
    assert!(dump.counts.is_empty(), "no cumulative counters with --window");
    assert_eq!((dump.records_processed, dump.records_skipped), (6, 2));

    let dead = env.read(&env.dead_letter);
    let late: Vec<String> = dead.iter().map(|r| r.header("error").unwrap()).collect();
    assert_eq!(late.len(), 2, "{late:?}");
    assert!(late.iter().all(|e| e.starts_with("late record")), "{late:?}");
    let values: Vec<String> = dead.iter().map(|r| String::from_utf8_lossy(&r.value).into_owned()).collect();
    assert_eq!(values, [order("mocha", 1), order("latte", 1)]);

    // The last board: [10 s, 20 s) complete, [20 s, 30 s) in progress, bounds in the JSON.
    let board = env.boards().pop().expect("a board");
    let windows = board["windows"].as_array().expect("windows on the board");
    assert_eq!(windows.len(), 2, "{board}");
    assert_eq!(windows[0]["start_ms"], t0() + 10 * S);
    assert_eq!(windows[0]["end_ms"], t0() + 20 * S);
    let start = std::time::UNIX_EPOCH + Duration::from_millis((t0() + 10 * S) as u64);
    assert_eq!(windows[0]["start"], humantime::format_rfc3339_millis(start).to_string());
    assert_eq!(windows[0]["complete"], true);
    assert_eq!(windows[0]["top"], serde_json::json!([{"key": "latte", "count": 4}]));
    assert_eq!(windows[1]["start_ms"], t0() + 20 * S);
    assert_eq!(windows[1]["complete"], false);
    assert_eq!(windows[1]["top"], serde_json::json!([{"key": "chai", "count": 1}]));

    // Other windows (or none) on this state are refused at start-up.
    let mut args = env.run_args("drink_count");
    args.extend(["--window", "1h"].map(String::from));
    let out = env.host(&args);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("holds windows size=10000ms") && err.contains("asks for windows size=3600000ms"), "{err}");
    let out = env.host(&env.run_args("drink_count"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("asks for cumulative counters"), "refused without --window");
}

/// Windows past their retention leave state and are tombstoned in the changelog; a restore
/// from the changelog gives the same windowed state.
#[test]
fn expired_windows_leave_state_and_changelog_and_restore_agrees() {
    let env = TestEnv::new("win-retention");
    env.create_topics(1);
    env.produce_at(&tumbling_input());
    // Retention 12 s (size + grace): [0, 10) goes once stream time reaches 10 + 12 = 22 s.
    // A record per batch, so that its counters are in state (and the changelog) by then.
    run(&env, &["--window", "10s", "--grace", "2s", "--max-batch", "1"]);

    let dump = env.dump();
    let want = expected(&[window(1, &[("latte", 4)]), window(2, &[("chai", 1)])]);
    assert_eq!(dump.windows, want, "[0 s, 10 s) dropped");
    let changelog = env.changelog_latest_raw();
    assert_eq!(changelog.len(), 2, "the dropped window's counters are tombstoned");
    let tombstones =
        env.read(&env.changelog).iter().filter(|r| r.header("meta").is_none() && r.value.is_empty()).count();
    assert_eq!(tombstones, 3, "one tombstone per counter of [0 s, 10 s)");

    let restored = env.restore_into(&env.dir.path().join("restored"));
    assert_eq!(restored, dump);
}

/// Hopping windows: 10 s every 5 s, so each record counts in two windows.
#[test]
fn hopping_windows_count_each_record_in_every_window_holding_it() {
    let env = TestEnv::new("win-hopping");
    env.create_topics(1);
    let input = [(0, "a"), (5, "a"), (7, "b"), (12, "a")].map(|(at, drink)| (t0() + at * S, order(drink, 1)));
    env.produce_at(&input);
    run(&env, &["--window", "10s", "--advance", "5s", "--window-retention", "1h"]);
    let at = |s: i64| t0() + s * S;
    let want: BTreeMap<(i64, String), u64> = [
        ((at(-5), "a"), 1),
        ((at(0), "a"), 2),
        ((at(0), "b"), 1),
        ((at(5), "a"), 2),
        ((at(5), "b"), 1),
        ((at(10), "a"), 1),
    ]
    .map(|((start, key), count)| ((start, key.to_string()), count))
    .into();
    assert_eq!(env.dump().windows, want);
}

/// `--emit final`: one board per window, produced once, when the window is complete, under
/// the key `window/<start ms>`; no periodic boards. Under both guarantees (exactly-once: the
/// boards and the record of what was emitted commit together).
#[test]
fn emit_final_produces_each_complete_window_once() {
    for guarantee in ["at-least-once", "exactly-once"] {
        let env = TestEnv::new(&format!("win-final-{guarantee}"));
        env.create_topics(1);
        env.produce_at(&tumbling_input());
        let args = [
            "--window",
            "10s",
            "--grace",
            "2s",
            "--emit",
            "final",
            "--flush-interval",
            "100ms",
            "--guarantee",
            guarantee,
        ];
        run(&env, &args);
        let boards = env.read(&env.output);
        let keys: Vec<String> = boards.iter().map(|r| String::from_utf8_lossy(&r.key).into_owned()).collect();
        assert_eq!(keys, [format!("window/{}", t0()), format!("window/{}", t0() + 10 * S)], "{guarantee}");
        let first: serde_json::Value = serde_json::from_slice(&boards[0].value).unwrap();
        assert_eq!(first["complete"], true);
        assert_eq!(
            first["top"],
            serde_json::json!([{"key": "mocha", "count": 2}, {"key": "latte", "count": 1}, {"key": "tea", "count": 1}])
        );
        // Retention waited for the board: [0 s, 10 s) is still there, past its 12 s.
        assert!(env.dump().windows.keys().any(|(start, _)| *start == t0()), "{guarantee}");

        // A restart with one more record: the next batch drops it; nothing is emitted twice.
        env.produce_at(&[(t0() + 26 * S, order("chai", 1))]);
        run(&env, &args);
        assert!(!env.dump().windows.keys().any(|(start, _)| *start == t0()), "{guarantee}: dropped after its board");
        assert_eq!(env.read(&env.output).len(), 2, "{guarantee}: each window's final board once");
    }
}

/// Many windows over many batches, a crash in the middle of a window under each guarantee:
/// the per-window counts are exact (with the state dir kept under at-least-once, and lost
/// under exactly-once).
#[test]
fn a_crash_mid_window_keeps_window_counts_exact() {
    for (guarantee, fault, lose_state) in
        [("at-least-once", "after-state:4", false), ("exactly-once", "mid-transaction:4", true)]
    {
        let env = TestEnv::new(&format!("win-crash-{guarantee}"));
        env.create_topics(1);
        // 600 orders, one every 100 ms of event time: 60 s, six 10 s windows of 100 orders.
        let drinks = ["latte", "mocha", "tea"];
        let input: Vec<(i64, String)> =
            (0..600).map(|i| (t0() + i * 100, order(drinks[(i % 3) as usize], 1 + (i % 2) as u64))).collect();
        let mut want: BTreeMap<(i64, String), u64> = BTreeMap::new();
        for i in 0..600 {
            *want.entry((t0() + (i / 100) * 10 * S, drinks[(i % 3) as usize].to_string())).or_default() +=
                1 + (i % 2) as u64;
        }
        env.produce_at(&input);
        let args = [
            "--window",
            "10s",
            "--window-retention",
            "1h",
            "--guarantee",
            guarantee,
            "--max-batch",
            "70",
            "--commit-interval",
            "1ms",
        ];
        env.crash_with_fault("drink_count", &args, fault);
        assert!(env.dump().records_processed < 600, "{guarantee}: the crash came before the end");
        if lose_state {
            std::fs::remove_dir_all(env.state_dir()).unwrap();
        }
        run(&env, &args);
        let dump = env.dump();
        assert_eq!(dump.windows, want, "{guarantee}: exact after a crash at {fault}");
        assert_eq!((dump.records_processed, dump.records_skipped), (600, 0));
    }
}

/// `--event-time guest`: the drink count's event time is an order's `created_at`, whatever
/// the record's timestamp (here: when the test produced it); an order without one falls
/// back to its record timestamp. A guest without `event-time` (built against WIT 0.2.0) is
/// refused for it at start-up.
#[test]
fn event_time_can_come_from_the_guest() {
    let env = TestEnv::new("win-guest-time");
    env.create_topics(1);
    let created = |at: i64, drink: &str| {
        format!(r#"{{"created_at":{},"items":[{{"drink":"{drink}","quantity":1}}]}}"#, t0() + at * S)
    };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let input = [
        (now, created(1, "latte")),
        (now, created(12, "mocha")),
        (now, created(14, "latte")),
        (t0() + 3 * S, order("tea", 1)), // no created_at: its record timestamp
    ];
    env.produce_at(&input);

    let mut args = env.run_args("test_wit_020");
    args.extend(["--window", "10s", "--event-time", "guest"].map(String::from));
    let out = env.host(&args);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("does not export streamhost:counter/event-time"), "{err}");

    run(&env, &["--window", "10s", "--grace", "1h", "--window-retention", "2h", "--event-time", "guest"]);
    let want = expected(&[window(0, &[("latte", 1), ("tea", 1)]), window(1, &[("latte", 1), ("mocha", 1)])]);
    assert_eq!(env.dump().windows, want);
}

/// Two partitions over the same hour of event time, the first consumed long before the
/// second (it comes first in the fetched data): no window completes or is dropped until the
/// second has delivered, so none of its records is late, and the windows of the last
/// minutes hold both partitions' counts.
#[test]
fn a_partition_read_ahead_of_another_makes_no_record_late() {
    let env = TestEnv::new("win-skew");
    env.create_topics(2);
    // One order every 3.6 s on each partition: an hour, sixty 1-minute windows.
    let input: Vec<(i64, String)> = (0..1000).map(|i| (t0() + i * 3_600, order("latte", 1))).collect();
    env.produce_at_partition(0, &input);
    env.produce_at_partition(1, &input);
    run(&env, &["--window", "1m", "--max-batch", "50"]);
    let dump = env.dump();
    assert_eq!((dump.records_processed, dump.records_skipped), (2000, 0), "no record late");
    // The newest window, [59 min, 60 min): orders 984..999 of each partition.
    let newest = t0() + 59 * 60 * S;
    assert_eq!(dump.windows.get(&(newest, "latte".to_string())), Some(&(2 * 16)));
    assert!(dump.windows.keys().all(|(start, _)| *start >= newest - 60 * S), "older windows dropped: {dump:?}");
}
