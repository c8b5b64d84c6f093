//! A crash at every gap of the pipeline (fault injection aborts the process at an exact
//! step), with and without losing the state dir: the outcome is what the README's
//! guarantee table says — exact counts in every case here.

use std::time::Duration;

use integration_tests::{TestEnv, orders};

/// Crashes at the 3rd occurrence of `step`, optionally deletes the state dir, restarts,
/// drains the input, and checks state, changelog and a fresh restore all hold the exact counts.
fn crash_at(step: &str, lose_state: bool) {
    let env = TestEnv::new(&format!("crash-{step}{}", if lose_state { "-lost" } else { "" }));
    env.create_topics(3);
    let expected = orders::generate(60, 3_000, 40);
    env.produce(&expected.values);

    let fault = format!("{step}:3");
    // Small batches and a board after every batch, so the 3rd step is mid-stream.
    env.crash_with_fault("drink_count", &["--max-batch", "100", "--flush-interval", "1ms"], &fault);
    let crashed = env.dump();
    assert!(crashed.records_processed < expected.valid, "crash came after the input was drained");

    if lose_state {
        std::fs::remove_dir_all(env.state_dir()).unwrap();
    }
    env.run_until_drained("drink_count", &[], Duration::from_secs(60));

    let dump = env.dump();
    assert_eq!(dump.counts, expected.counts, "exact after a crash {step}");
    assert_eq!((dump.records_processed, dump.records_skipped), (expected.valid, expected.malformed));
    assert_eq!(env.changelog_latest(), expected.counts);
    assert_eq!(env.restore_into(&env.dir.path().join("restored")), dump);
}

/// Crash after the changelog is acknowledged, before the state write: exact.
#[test]
fn after_changelog() {
    crash_at("after-changelog", false);
}

/// Same, and the state dir is lost too: the changelog holds the batch and its offsets. Exact.
#[test]
fn after_changelog_state_lost() {
    crash_at("after-changelog", true);
}

/// Crash after the state write, before the offset commit: exact (already-applied records skipped).
#[test]
fn after_state() {
    crash_at("after-state", false);
}

/// Same, and the state dir is lost: restore brings back the offsets with the counts. Exact.
#[test]
fn after_state_state_lost() {
    crash_at("after-state", true);
}

/// Crash after the offset commit: exact.
#[test]
fn after_commit() {
    crash_at("after-commit", false);
}

/// Crash after the offset commit, state dir lost: exact.
#[test]
fn after_commit_state_lost() {
    crash_at("after-commit", true);
}

/// Crash right after a board is produced: exact.
#[test]
fn after_board() {
    crash_at("after-board", false);
}
