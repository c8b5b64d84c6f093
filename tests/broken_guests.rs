//! Broken guests: traps, endless loops, unbounded allocation, counter overflow and forbidden
//! imports. The host contains each one and keeps counting the good records; WASI guests run
//! with nothing granted.

use std::collections::BTreeMap;
use std::time::Duration;

use integration_tests::TestEnv;

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
