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
    env.run_until_drained("drink_count", &[], Duration::from_secs(60));
    let before = env.dump();
    assert_eq!(before.counts, expected.counts);

    std::fs::remove_dir_all(env.state_dir()).unwrap();
    let out = env.host(&env.restore_args(&env.state_dir(), &[]));
    assert!(out.status.success(), "restore failed: {}", String::from_utf8_lossy(&out.stderr));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains(&format!("restored {} keys", expected.counts.len())), "restore said: {said}");
    assert_eq!(env.dump(), before, "restored state equals the state before the loss");

    // Restore refuses to overwrite a non-empty state dir without --force.
    let again = env.host(&env.restore_args(&env.state_dir(), &[]));
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
    let forced = env.host(&env.restore_args(&env.state_dir(), &["--force"]));
    assert!(forced.status.success(), "{}", String::from_utf8_lossy(&forced.stderr));
    assert_eq!(env.dump(), before);

    let more = orders::generate(31, 300, 10);
    env.produce(&more.values);
    expected.extend(more);
    env.run_until_drained("drink_count", &[], Duration::from_secs(60));
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
    env.run_until_drained("drink_count", &[], Duration::from_secs(60));

    std::fs::remove_dir_all(env.state_dir()).unwrap();
    let more = orders::generate(41, 100, 0);
    env.produce(&more.values);
    expected.extend(more);
    env.run_until_drained("drink_count", &[], Duration::from_secs(60));
    assert_eq!(env.dump().counts, expected.counts);
}

/// Restore terminates and is exact when the changelog ends in a transaction marker (no
/// message is ever delivered at the last offset) and when some partitions are empty.
#[test]
fn restore_ends_on_transaction_markers_and_empty_partitions() {
    use rdkafka::ClientConfig;
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

    let env = TestEnv::new("restore-txn");
    env.create_topics(4);
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", integration_tests::brokers())
        .set("transactional.id", format!("{}-txn", env.name))
        .create()
        .unwrap();
    producer.init_transactions(Duration::from_secs(30)).unwrap();
    producer.begin_transaction().unwrap();
    // Two keys over four partitions: at least two partitions stay empty.
    for (key, count) in [("latte", 7u64), ("mocha", 3), ("latte", 9)] {
        producer.send(BaseRecord::<str, [u8]>::to(&env.changelog).key(key).payload(&count.to_be_bytes())).unwrap();
    }
    producer.commit_transaction(Duration::from_secs(30)).unwrap();

    let dump = env.restore_into(&env.state_dir());
    assert_eq!(dump.counts, [("latte".to_string(), 9), ("mocha".to_string(), 3)].into_iter().collect());
}

/// A restore killed with `kill -9` half-way leaves a state dir marked incomplete: `host dump`
/// refuses it, and `host run` restores it again from scratch instead of counting on top of
/// half the keys.
#[test]
fn interrupted_restore_is_redone_not_trusted() {
    let env = TestEnv::new("restore-killed");
    env.create_topics(2);
    let keys = 500_000u64;
    let values: Vec<(String, u64)> = (0..keys).map(|i| (format!("key-{i:06}"), i + 1)).collect();
    integration_tests::produce_keyed(&env.brokers, &env.changelog, &values);

    let state_dir = env.state_dir().display().to_string();
    let args = env.restore_args(&env.state_dir(), &[]);
    let mut restore = integration_tests::HostProcess::spawn(&env.dir.path().join("logs"), &args, &[]);
    restore.wait_for_log("restoring state from the changelog", Duration::from_secs(60));
    std::thread::sleep(Duration::from_millis(50));
    let log = restore.stderr_text();
    restore.kill9();
    assert!(!log.contains("restore finished"), "the restore finished before it could be interrupted");

    let out = env.host(&["dump", "--state-dir", &state_dir]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("interrupted restore"));

    let mut host = env.spawn_host("drink_count", &[]);
    host.wait_for_log("host running", Duration::from_secs(120));
    assert!(host.terminate().success());
    let dump = env.dump();
    assert_eq!(dump.counts.len() as u64, keys);
    assert!(values.iter().all(|(k, v)| dump.counts.get(k) == Some(v)));
}
