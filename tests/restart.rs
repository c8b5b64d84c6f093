//! Stopping and crashing the host: counting resumes where it stopped, nothing is lost and
//! nothing is counted twice.

use std::time::Duration;

use integration_tests::{TestEnv, orders, wait_until};

/// A clean stop (SIGTERM) and a restart: the second run counts only the new orders.
#[test]
fn clean_restart_continues_without_double_counting() {
    let env = TestEnv::new("clean-restart");
    env.create_topics(2);
    let mut expected = orders::generate(10, 300, 25);
    env.produce(&expected.values);
    env.run_until_drained("drink_count", &[], Duration::from_secs(60));
    let first = env.dump();
    assert_eq!(first.counts, expected.counts);

    let more = orders::generate(11, 200, 25);
    env.produce(&more.values);
    expected.extend(more);
    env.run_until_drained("drink_count", &[], Duration::from_secs(60));

    let dump = env.dump();
    assert_eq!(dump.counts, expected.counts);
    assert_eq!((dump.records_processed, dump.records_skipped), (expected.valid, expected.malformed));
    assert_eq!(env.changelog_latest(), expected.counts);
}

/// `kill -9` mid-stream, twice, then a restart drains the input: every counter equals its
/// expected value (state holds the input offsets it reflects, so nothing is re-applied).
#[test]
fn kill_9_mid_stream_loses_nothing_and_counts_exactly() {
    let env = TestEnv::new("kill9");
    env.create_topics(3);
    let expected = orders::generate(20, 30_000, 100);
    env.produce(&expected.values);

    for round in 0..2 {
        // Small batches: many commits, so the kill lands mid-stream.
        let host = env.spawn_host("drink_count", &["--max-batch", "200"]);
        let target = (round + 1) * 3_000;
        wait_until(Duration::from_secs(60), "some progress before the kill", || env.committed_total() > target);
        host.kill9();
    }
    let partial = env.dump();
    assert!(partial.records_processed < expected.valid, "the kills came too late to test anything");

    env.run_until_drained("drink_count", &[], Duration::from_secs(120));
    let dump = env.dump();
    for (key, want) in &expected.counts {
        let got = dump.counts.get(key).copied().unwrap_or(0);
        assert!(got >= *want, "{key}: {got} is below the expected {want}");
    }
    assert_eq!(dump.counts, expected.counts, "no inflation either: state skips what it already applied");
    assert_eq!((dump.records_processed, dump.records_skipped), (expected.valid, expected.malformed));
    assert_eq!(env.changelog_latest(), expected.counts);
}
