//! Losing the state dir: `host restore` rebuilds it from the changelog, exactly.

use std::time::Duration;

use integration_tests::{TestEnv, orders};

/// Delete the state dir, `host restore`, and `host dump` equals the dump from before the
/// deletion; `host run` then continues counting correctly on top of the restored state.
#[test]
fn restore_rebuilds_state_and_counting_continues() {
    let env = TestEnv::new("restore");
    env.create_topics(3);
    let mut expected = orders::generate(30, 400, 10);
    env.produce(&expected.values);
    let host = env.spawn_host("drink_count", &[]);
    env.wait_committed(Duration::from_secs(60));
    assert!(host.terminate().success());
    let before = env.dump();
    assert_eq!(before.counts, expected.counts);

    std::fs::remove_dir_all(env.state_dir()).unwrap();
    let state_dir = env.state_dir().display().to_string();
    let out = env.host(&["restore", "--brokers", &integration_tests::brokers(), "--changelog", &env.changelog, "--state-dir", &state_dir]);
    assert!(out.status.success(), "restore failed: {}", String::from_utf8_lossy(&out.stderr));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains(&format!("restored {} keys", expected.counts.len())), "restore said: {said}");
    assert_eq!(env.dump(), before, "restored state equals the state before the loss");

    // Restore refuses to overwrite a non-empty state dir without --force.
    let again = env.host(&["restore", "--brokers", &integration_tests::brokers(), "--changelog", &env.changelog, "--state-dir", &state_dir]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
    let forced = env.host(&["restore", "--force", "--brokers", &integration_tests::brokers(), "--changelog", &env.changelog, "--state-dir", &state_dir]);
    assert!(forced.status.success(), "{}", String::from_utf8_lossy(&forced.stderr));
    assert_eq!(env.dump(), before);

    let more = orders::generate(31, 300, 10);
    env.produce(&more.values);
    expected.extend(more);
    let host = env.spawn_host("drink_count", &[]);
    env.wait_committed(Duration::from_secs(60));
    assert!(host.terminate().success());
    let dump = env.dump();
    assert_eq!(dump.counts, expected.counts);
    assert_eq!((dump.records_processed, dump.records_skipped), (expected.valid, expected.malformed));
}

/// `host run` on an empty state dir restores from the changelog by itself before counting.
#[test]
fn run_on_a_lost_state_dir_restores_first() {
    let env = TestEnv::new("auto-restore");
    env.create_topics(2);
    let mut expected = orders::generate(40, 300, 0);
    env.produce(&expected.values);
    let host = env.spawn_host("drink_count", &[]);
    env.wait_committed(Duration::from_secs(60));
    assert!(host.terminate().success());

    std::fs::remove_dir_all(env.state_dir()).unwrap();
    let more = orders::generate(41, 100, 0);
    env.produce(&more.values);
    expected.extend(more);
    let host = env.spawn_host("drink_count", &[]);
    env.wait_committed(Duration::from_secs(60));
    assert!(host.terminate().success());
    assert_eq!(env.dump().counts, expected.counts);
}
