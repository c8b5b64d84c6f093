//! `--guarantee exactly-once`: a crash at every step of a transaction, with and without the
//! state dir, gives exact counts; a restart replays only the changelog's tail; an aborted
//! transaction's board is never seen by read_committed readers; abortable errors rewind and
//! go on; a second host with the same transactional id fences the first.

use std::time::Duration;

use integration_tests::{TestEnv, orders};

const EXACTLY_ONCE: [&str; 2] = ["--guarantee", "exactly-once"];

/// Changelog records one batch can produce here: 8 drinks, 2 totals, 3 input offsets.
const RECORDS_PER_BATCH: u64 = 8 + 2 + 3;

fn exactly_once<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    EXACTLY_ONCE.iter().chain(extra).copied().collect()
}

/// What a crash test leaves for further checks.
struct Crashed {
    env: TestEnv,
    /// The restarted host's log (JSON lines).
    log: String,
    /// Changelog records (read_committed) right after the crash.
    changelog_at_crash: u64,
}

/// Crashes (fault injection) at the 3rd `step` under exactly-once, optionally loses the state
/// dir, restarts, drains, and checks state, changelog and a fresh restore are exact.
fn crash_at(step: &str, lose_state: bool) -> Crashed {
    crash_at_nth(step, 3, lose_state)
}

/// `crash_at` at the `nth` occurrence of `step`.
fn crash_at_nth(step: &str, nth: u32, lose_state: bool) -> Crashed {
    let env = TestEnv::new(&format!("eos-{step}{}", if lose_state { "-lost" } else { "" }));
    env.create_topics(3);
    let expected = orders::generate(61, 3_000, 40);
    env.produce(&expected.values);

    let fault = format!("{step}:{nth}");
    // Small batches, a transaction per batch or two, a board every batch: the 3rd step is mid-stream.
    let args = exactly_once(&["--max-batch", "100", "--commit-interval", "1ms", "--flush-interval", "1ms"]);
    env.crash_with_fault("drink_count", &args, &fault);
    let crashed = env.dump();
    assert!(crashed.records_processed < expected.valid, "crash came after the input was drained");
    let changelog_at_crash = env.read(&env.changelog).len() as u64;

    if lose_state {
        std::fs::remove_dir_all(env.state_dir()).unwrap();
    }
    let mut host = env.spawn_host("drink_count", &exactly_once(&["--log-format", "json"]));
    host.wait_for_log("host running", Duration::from_secs(60));
    env.wait_committed(Duration::from_secs(60));
    let log = host.stderr_text();
    assert!(host.terminate().success(), "a clean stop exits 0");

    let dump = env.dump();
    assert_eq!(dump.counts, expected.counts, "exact after a crash at {step}");
    assert_eq!((dump.records_processed, dump.records_skipped), (expected.valid, expected.malformed));
    assert_eq!(env.changelog_latest(), expected.counts, "read_committed changelog");
    assert_eq!(env.restore_into(&env.dir.path().join("restored")), dump);
    Crashed { env, log, changelog_at_crash }
}

/// Changelog records the restarted host read at start-up (tail replay), from its JSON log.
fn tail_records_read(log: &str) -> Option<u64> {
    log.lines().filter(|l| l.contains("replayed the changelog's tail")).find_map(|l| {
        let v: serde_json::Value = serde_json::from_str(l).ok()?;
        v["fields"]["records_read"].as_u64()
    })
}

/// Crash mid-transaction: the restarted producer aborts it; nothing of it counts. Exact.
#[test]
fn mid_transaction() {
    crash_at("mid-transaction", false);
}

/// Same with the state dir lost: restore reads committed transactions only. Exact.
#[test]
fn mid_transaction_state_lost() {
    crash_at("mid-transaction", true);
}

/// Crash after the commit, before the state write: the group's offsets are past the
/// transaction, state is not. The restart replays only the changelog's tail (that
/// transaction's records), not the changelog. Exact.
#[test]
fn after_commit_before_state_replays_only_the_tail() {
    let crashed = crash_at_nth("after-changelog", 10, false);
    let log = &crashed.log;
    let tail = tail_records_read(log).unwrap_or_else(|| panic!("no tail replay logged:\n{log}"));
    let at_crash = crashed.changelog_at_crash;
    assert!(tail >= 1, "state was behind the committed transaction: the tail is not empty");
    assert!(tail <= 4 * RECORDS_PER_BATCH, "tail of {tail} records is more than the last transaction's");
    assert!(at_crash >= 5 * tail, "the changelog at the crash ({at_crash} records) must dwarf the tail ({tail})");
}

/// Same with the state dir lost: a full restore instead. Exact.
#[test]
fn after_commit_before_state_state_lost() {
    crash_at("after-changelog", true);
}

/// Crash after the state write: nothing to redo. Exact.
#[test]
fn after_state() {
    crash_at("after-state", false);
}

/// Crash with a board in the open transaction: read_committed readers never see that board.
#[test]
fn board_of_an_aborted_transaction_is_never_read_committed() {
    let env = crash_at("after-board", false).env;
    let committed: Vec<u64> = env.boards().iter().map(|b| b["generated_at_ms"].as_u64().unwrap()).collect();
    let all: Vec<u64> = env.boards_uncommitted().iter().map(|b| b["generated_at_ms"].as_u64().unwrap()).collect();
    let aborted: Vec<&u64> = all.iter().filter(|t| !committed.contains(t)).collect();
    assert!(!aborted.is_empty(), "the crash left a board in an aborted transaction");
    assert!(committed.iter().all(|t| all.contains(t)));
}

/// An abortable transaction error (injected at the 3rd commit): the host aborts, rewinds its
/// input to state's offsets, and goes on. Exact, with no restart.
#[test]
fn abortable_error_rewinds_and_goes_on() {
    let env = TestEnv::new("eos-abort");
    env.create_topics(3);
    let expected = orders::generate(62, 3_000, 40);
    env.produce(&expected.values);
    let args = exactly_once(&["--max-batch", "100", "--commit-interval", "1ms"]);
    let mut host = env.spawn_host_with_env("drink_count", &args, &[("STREAMHOST_FAULT", "abort-transaction:3")]);
    host.wait_for_log("host running", Duration::from_secs(60));
    env.wait_committed(Duration::from_secs(60));
    let log = host.stderr_text();
    assert!(host.terminate().success(), "a clean stop exits 0");
    assert!(log.contains("aborting the transaction"), "{log}");

    let dump = env.dump();
    assert_eq!(dump.counts, expected.counts);
    assert_eq!((dump.records_processed, dump.records_skipped), (expected.valid, expected.malformed));
    assert_eq!(env.changelog_latest(), expected.counts);
}

/// A second host with the same transactional id fences the first, which stops with a clear
/// message (not a crash); the second carries on.
#[test]
fn same_transactional_id_fences_the_first_host() {
    let env = TestEnv::new("eos-fence");
    env.create_topics(3);
    let first_orders = orders::generate(63, 500, 0);
    env.produce(&first_orders.values);
    let id = format!("fence-{}", env.group);
    let mut first = env.spawn_host("drink_count", &exactly_once(&["--transactional-id", &id]));
    first.wait_for_log("host running", Duration::from_secs(60));
    env.wait_committed(Duration::from_secs(60));

    // Another state dir and group (a second host in the same group is refused at start-up),
    // the same transactional id: a copy of the first started elsewhere by mistake.
    let other_dir = env.dir.path().join("second-state").display().to_string();
    let other_group = format!("{}-second", env.group);
    let mut second = env.spawn_host(
        "drink_count",
        &exactly_once(&["--transactional-id", &id, "--state-dir", &other_dir, "--group", &other_group]),
    );
    second.wait_for_log("host running", Duration::from_secs(60));
    // Keep records coming so that the first host tries a transaction again.
    for round in 0..60 {
        if !first.is_running() {
            break;
        }
        env.produce(&orders::generate(64 + round, 50, 0).values);
        std::thread::sleep(Duration::from_millis(500));
    }
    let status = first.wait_exit(Duration::from_secs(30));
    let err = first.stderr_text();
    assert!(err.contains("fenced by another host with the same transactional id"), "{err}");
    assert!(status.code().is_some(), "an exit, not a crash: {status}");
    assert!(!status.success());
    assert!(second.is_running(), "the second host carries on:\n{}", second.stderr_text());
    assert!(second.terminate().success());
}
