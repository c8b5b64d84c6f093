//! A `--scale-out` host crashed at every gap of its write order (fault injection aborts the
//! process at an exact step), with and without its state dir lost, then the job drained:
//! exact under exactly-once; under at-least-once nothing lost and what is counted twice
//! bounded by what was in flight, as the README's scale-out table says.

use std::time::Duration;

use integration_tests::scale_out::{create_topics, spawn, spawn_with_env, state_dir, union_of_dumps};
use integration_tests::{TestEnv, orders};

/// Records per poll here: the bound of what one crash can count twice is two polls' worth.
const MAX_BATCH: u64 = 100;

/// Crashes one scale-out host at the 3rd `step`, optionally deletes its state dir, drains the
/// job with a restarted host, checks nothing is lost (and, under exactly-once, that every
/// count is exact), and returns how many records were counted twice.
fn crash_at(step: &str, mode: &[&str], lose_state: bool) -> u64 {
    let guarantee = if mode.contains(&"exactly-once") { "eos" } else { "alo" };
    let name = format!("scale-crash-{guarantee}-{step}{}", if lose_state { "-lost" } else { "" });
    let env = TestEnv::new(&name);
    create_topics(&env);
    let expected = orders::generate(64, 3_000, 40);
    env.produce(&expected.values);

    // Small polls, a transaction per poll and a board every poll: the 3rd step is mid-stream.
    let batch = MAX_BATCH.to_string();
    let args: Vec<&str> = ["--max-batch", &batch, "--commit-interval", "1ms", "--flush-interval", "1ms"]
        .iter()
        .chain(mode)
        .copied()
        .collect();
    let fault = format!("{step}:3");
    let mut host = spawn_with_env(&env, 0, &args, &[("STREAMHOST_FAULT", &fault)]);
    let status = host.wait_exit(Duration::from_secs(60));
    assert!(!status.success() && host.stderr_text().contains("fault injection: aborting"), "{}", host.stderr_text());
    drop(host);
    if lose_state {
        std::fs::remove_dir_all(state_dir(&env, 0)).unwrap();
    }

    let drain: Vec<&str> = mode.iter().copied().chain(["--stop-at-end"]).collect();
    let mut host = spawn(&env, 0, &drain);
    let status = host.wait_exit(Duration::from_secs(120));
    assert!(status.success(), "the draining host failed ({status}):\n{}", host.stderr_text());

    let dump = union_of_dumps(&env, &[0]);
    for (key, want) in &expected.counts {
        let got = dump.counts.get(key).copied().unwrap_or(0);
        assert!(got >= *want, "{key}: {got} is below the expected {want} after a crash at {step}");
    }
    assert_eq!(dump.counts.len(), expected.counts.len(), "no unexpected keys");
    let counted = dump.records_processed + dump.records_skipped;
    assert!(counted >= expected.valid + expected.malformed, "records lost after a crash at {step}: {counted}");
    if mode.contains(&"exactly-once") {
        assert_eq!(dump.counts, expected.counts, "exact after a crash at {step}");
        assert_eq!((dump.records_processed, dump.records_skipped), (expected.valid, expected.malformed));
    }
    let twice = counted - expected.valid - expected.malformed;
    eprintln!("{name}: {twice} records counted twice");
    twice
}

/// at-least-once: what a crash may count twice is stage A's poll in flight (its input offsets
/// are in no state) and the one before it (its commit is asynchronous).
fn at_least_once(step: &str, lose_state: bool) {
    let twice = crash_at(step, &[], lose_state);
    assert!(twice <= 2 * MAX_BATCH, "records counted twice after a crash at {step}: {twice}");
}

fn exactly_once(step: &str, lose_state: bool) {
    crash_at(step, &["--guarantee", "exactly-once"], lose_state);
}

/// at-least-once, crash after the poll's repartition and changelog records are acknowledged,
/// before the shards are written: nothing lost, at most two polls counted twice.
#[test]
fn after_changelog() {
    at_least_once("after-changelog", false);
}

/// The same with the state dir lost (the shards are restored from their changelog partitions).
#[test]
fn after_changelog_state_lost() {
    at_least_once("after-changelog", true);
}

/// at-least-once, crash after the shards are written, before the offsets are committed.
#[test]
fn after_state() {
    at_least_once("after-state", false);
}

/// The same with the state dir lost.
#[test]
fn after_state_state_lost() {
    at_least_once("after-state", true);
}

/// at-least-once, crash after the offsets are committed.
#[test]
fn after_commit() {
    at_least_once("after-commit", false);
}

/// The same with the state dir lost.
#[test]
fn after_commit_state_lost() {
    at_least_once("after-commit", true);
}

/// exactly-once, crash with polls sent into the open transaction: exact (the restart aborts it).
#[test]
fn mid_transaction_under_exactly_once() {
    exactly_once("mid-transaction", false);
}

/// The same with the state dir lost.
#[test]
fn mid_transaction_state_lost_under_exactly_once() {
    exactly_once("mid-transaction", true);
}

/// exactly-once, crash after the commit, before the shards apply it: exact (the shards replay
/// their changelog partitions' tails when opened).
#[test]
fn after_commit_before_the_shards_under_exactly_once() {
    exactly_once("after-changelog", false);
}

/// The same with the state dir lost.
#[test]
fn after_commit_before_the_shards_state_lost_under_exactly_once() {
    exactly_once("after-changelog", true);
}

/// exactly-once, crash after the shards applied the transaction: exact.
#[test]
fn after_state_under_exactly_once() {
    exactly_once("after-state", false);
}

/// The same with the state dir lost.
#[test]
fn after_state_state_lost_under_exactly_once() {
    exactly_once("after-state", true);
}

/// exactly-once, the 3rd transaction's commit fails as an abortable error would: the
/// transaction is aborted, the partitions rewound, and the host goes on without a restart.
/// Exact.
#[test]
fn an_abortable_error_rewinds_and_goes_on_under_exactly_once() {
    let log = goes_on_exactly_through("scale-abort", 65, "abort-transaction:3");
    assert!(log.contains("aborting the transaction"), "{log}");
}

/// Under exactly-once, a transaction that committed but whose answer the host takes as lost
/// (the fault stands for a commit whose answer a network cut ate, the producer then fenced
/// by the transaction timeout): the host cannot know how it ended, so it reads it back from
/// Kafka: the shards it touched are opened again from their changelog, the input rewound to
/// the committed offsets. It goes on without a restart, and nothing is counted twice or lost.
#[test]
fn a_commit_in_doubt_is_read_back_from_kafka_under_exactly_once() {
    let log = goes_on_exactly_through("scale-in-doubt", 66, "lost-commit-answer:3");
    assert!(log.contains("committed or aborted, unknown which"), "{log}");
    assert!(log.contains("shard opened again"), "the shards the transaction touched were read back:\n{log}");
}

/// A scale-out host whose consumer fails for good (fault injection stands for librdkafka's
/// FENCED_INSTANCE_ID, seen after a group coordinator's broker was killed: a fatal consumer
/// error) makes a new consumer and goes on, without a restart: its shards open again from
/// their dirs, the input resumes from the group's committed offsets. Exact under
/// exactly-once.
#[test]
fn a_consumer_failed_for_good_is_replaced_without_a_restart_under_exactly_once() {
    let log = goes_on_exactly_through("scale-new-consumer", 67, "fail-consumer:8");
    assert!(log.contains("a new one takes its place"), "{log}");
    assert!(log.matches("partitions assigned").count() >= 2, "the new consumer was given the partitions:\n{log}");
}

/// One scale-out host under exactly-once with `fault` armed counts 3,000 orders (seeded by
/// `seed`) to their end without a restart, exactly; its log, for what the fault must show.
fn goes_on_exactly_through(name: &str, seed: u64, fault: &str) -> String {
    let env = TestEnv::new(name);
    create_topics(&env);
    let expected = orders::generate(seed, 3_000, 40);
    env.produce(&expected.values);
    let args = ["--guarantee", "exactly-once", "--max-batch", "100", "--commit-interval", "1ms", "--stop-at-end"];
    let mut host = spawn_with_env(&env, 0, &args, &[("STREAMHOST_FAULT", fault)]);
    let status = host.wait_exit(Duration::from_secs(120));
    let log = host.stderr_text();
    assert!(status.success(), "the host goes on after {fault} and drains the job ({status}):\n{log}");
    let dump = union_of_dumps(&env, &[0]);
    assert_eq!(dump.counts, expected.counts, "counts after {fault}");
    assert_eq!((dump.records_processed, dump.records_skipped), (expected.valid, expected.malformed));
    log
}

/// A scale-out host whose input stops delivering while records wait on it (a stuck consumer;
/// simulated by fault injection) exits with an error after `--stall-timeout`; restarted, the
/// job drains with nothing lost (at-least-once: at most two polls counted twice).
#[test]
fn a_stuck_input_makes_a_scale_out_host_exit_for_a_restart() {
    stuck_input(&[]);
}

/// The same under exactly-once: exact.
#[test]
fn a_stuck_input_makes_a_scale_out_host_exit_for_a_restart_under_exactly_once() {
    stuck_input(&["--guarantee", "exactly-once"]);
}

fn stuck_input(mode: &[&str]) {
    let env = TestEnv::new("scale-stall");
    create_topics(&env);
    let expected = orders::generate(92, 2_000, 50);
    env.produce(&expected.values);
    let args: Vec<&str> = ["--max-batch", "100", "--stall-timeout", "3s"].iter().chain(mode).copied().collect();
    let mut host = spawn_with_env(&env, 0, &args, &[("STREAMHOST_FAULT", "stall-consumer:2")]);
    let status = host.wait_exit(Duration::from_secs(60));
    let log = host.stderr_text();
    assert!(!status.success(), "a stuck input is an error:\n{log}");
    assert!(log.contains("the input delivered nothing for 3s while") && log.contains("records wait on it"), "{log}");

    let drain: Vec<&str> = mode.iter().copied().chain(["--stop-at-end"]).collect();
    let mut host = spawn(&env, 0, &drain);
    let status = host.wait_exit(Duration::from_secs(120));
    assert!(status.success(), "the draining host failed ({status}):\n{}", host.stderr_text());
    let dump = union_of_dumps(&env, &[0]);
    let counted = dump.records_processed + dump.records_skipped;
    assert!(counted >= expected.valid + expected.malformed, "records lost: {counted}");
    assert!(counted - expected.valid - expected.malformed <= 2 * MAX_BATCH, "records counted twice: {counted}");
    if mode.contains(&"exactly-once") {
        assert_eq!(dump.counts, expected.counts);
        assert_eq!((dump.records_processed, dump.records_skipped), (expected.valid, expected.malformed));
    }
}
