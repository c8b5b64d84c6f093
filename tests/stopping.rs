//! Stopping a host (SIGTERM) at any moment — loading its guest, restoring, joining its
//! group, in a rebalance, counting — ends it with status 0 within `--shutdown-timeout`, and
//! counting resumes exactly; a stop that cannot finish exits 1 at the bound, saying what it
//! was waiting for.

use std::time::{Duration, Instant};

use integration_tests::scale_out::{self, union_of_dumps};
use integration_tests::{HostProcess, TestEnv, orders};

/// How long after SIGTERM the test waits for an exit before it calls the host hung: past its
/// bound (`--shutdown-timeout`, 10 s by default) the host exits 1 by itself, so this only
/// catches a bound that does not hold.
const HUNG: Duration = Duration::from_secs(25);

/// The moment of the n-th stop after its host was spawned: in turn early in start-up (the
/// guest loading, topics checked, state opened), around the group join (~1 s in), and
/// while counting, at a random point of each range.
fn stop_moment(n: usize, random: &mut impl FnMut(u64) -> u64) -> Duration {
    // From 100 ms: a signal before the handlers are installed (the first 5-10 ms of the
    // process here, longer on a loaded machine) meets the default action, which ends the
    // process by the signal.
    let (from, to) = [(100, 700), (700, 1_800), (1_800, 4_000)][n % 3];
    Duration::from_millis(from + random(to - from))
}

/// Sends SIGTERM, waits for the exit and checks it is a clean one (status 0); returns how the
/// host described the stop: met during start-up, or finished what was under way.
fn stop_cleanly(mut host: HostProcess) -> &'static str {
    let stopped = Instant::now();
    host.send_sigterm();
    let status = host.wait_exit(HUNG);
    let log = host.stderr_text();
    assert!(status.success(), "a stop exits 0 (got {status} after {:?}):\n{log}", stopped.elapsed());
    if log.contains("nothing under way to finish") {
        "in start-up"
    } else {
        assert!(log.contains("stopped cleanly"), "a stop that finished its work says so:\n{log}");
        "while running"
    }
}

/// One host, at-least-once: a dozen SIGTERMs at moments spread over start-up, the group
/// join and counting, while orders arrive; every stop exits 0, and after a drain every
/// counter is exact.
#[test]
fn a_host_stopped_at_any_moment_exits_cleanly_and_counts_exactly() {
    one_host("stop-any", &[]);
}

/// The same under exactly-once (a stop during the changelog catch-up and with a transaction
/// open included).
#[test]
fn a_host_stopped_at_any_moment_exits_cleanly_and_counts_exactly_under_exactly_once() {
    one_host("stop-any-eos", &["--guarantee", "exactly-once", "--commit-interval", "50ms"]);
}

fn one_host(name: &str, mode: &[&str]) {
    let mut random = integration_tests::random_source(name);
    let env = TestEnv::new(name);
    env.create_topics(3);
    let expected = orders::generate(71, 40_000, 61);
    let producer = integration_tests::produce_over_time(
        &env.brokers,
        &env.input,
        &expected.values,
        2_000,
        Duration::from_millis(600),
    );
    let args: Vec<&str> = ["--max-batch", "500"].iter().chain(mode).copied().collect();
    let mut met = Vec::new();
    for n in 0..12 {
        let host = env.spawn_host("drink_count", &args);
        std::thread::sleep(stop_moment(n, &mut random));
        met.push(stop_cleanly(host));
    }
    eprintln!("{name}: stops met {met:?}");
    assert!(met.contains(&"in start-up") && met.contains(&"while running"), "stops in both phases: {met:?}");
    producer.join().unwrap();

    env.run_until_drained("drink_count", mode, Duration::from_secs(120));
    let dump = env.dump();
    assert_eq!(dump.counts, expected.counts);
    assert_eq!((dump.records_processed, dump.records_skipped), (expected.valid, expected.malformed));
    assert_eq!(env.changelog_latest(), expected.counts);
}

/// Two `--scale-out` hosts, at-least-once: one with static membership, one dynamic (its every
/// start and stop is a rebalance for both). Ten SIGTERMs, each to one of the two at a moment
/// spread over start-up, joins, rebalances (shards opening, revocations) and counting, the
/// stopped host started again at once, while orders arrive; every stop exits 0, and after a
/// drain the union of the shards is exact (clean stops finish and commit what they hold).
#[test]
fn scale_out_hosts_stopped_at_any_moment_exit_cleanly_and_count_exactly() {
    two_scale_out_hosts("stop-scale", &[]);
}

/// The same under exactly-once.
#[test]
fn scale_out_hosts_stopped_at_any_moment_exit_cleanly_and_count_exactly_under_exactly_once() {
    two_scale_out_hosts("stop-scale-eos", &["--guarantee", "exactly-once", "--commit-interval", "50ms"]);
}

fn two_scale_out_hosts(name: &str, mode: &[&str]) {
    let mut random = integration_tests::random_source(name);
    let env = TestEnv::new(name);
    scale_out::create_topics(&env);
    let expected = orders::generate(72, 30_000, 61);
    let producer = integration_tests::produce_over_time(
        &env.brokers,
        &env.input,
        &expected.values,
        2_000,
        Duration::from_millis(700),
    );
    let flags = |host: usize| -> Vec<&str> {
        let membership: &[&str] = if host == 1 { &["--instance-id", "none"] } else { &[] };
        ["--max-batch", "500"].iter().chain(mode).chain(membership).copied().collect()
    };
    let mut hosts: Vec<HostProcess> = (0..2).map(|h| scale_out::spawn(&env, h, &flags(h))).collect();
    let mut met = Vec::new();
    for n in 0..10 {
        let victim = random(2) as usize;
        std::thread::sleep(stop_moment(n, &mut random));
        // Stopped before its successor starts: the same static member id would fence it.
        met.push(stop_cleanly(hosts.remove(victim)));
        hosts.insert(victim, scale_out::spawn(&env, victim, &flags(victim)));
    }
    producer.join().unwrap();
    for mut host in hosts.drain(..) {
        // (The host started last may be only a moment old: past its signal set-up first.)
        host.wait_for_log("guest loaded", Duration::from_secs(60));
        met.push(stop_cleanly(host));
    }
    eprintln!("{name}: stops met {met:?}");
    assert!(met.contains(&"while running"), "stops while running: {met:?}");

    let drain: Vec<&str> = mode.iter().copied().chain(["--stop-at-end"]).collect();
    let mut hosts: Vec<HostProcess> = (0..2).map(|h| scale_out::spawn(&env, h, &drain)).collect();
    for host in &mut hosts {
        let status = host.wait_exit(Duration::from_secs(150));
        assert!(status.success(), "a draining host failed ({status}):\n{}", host.stderr_text());
    }
    let dump = union_of_dumps(&env, &[0, 1]);
    assert_eq!(dump.counts, expected.counts);
    assert_eq!((dump.records_processed, dump.records_skipped), (expected.valid, expected.malformed));
}

/// A stop that cannot finish within `--shutdown-timeout` (here the guest is in an endless
/// loop that only its 60 s deadline would end) exits 1 at the bound, naming what it was
/// waiting for; the record is still there for the next start.
#[test]
fn a_stop_that_cannot_finish_exits_1_at_its_bound_saying_what_it_waited_for() {
    let env = TestEnv::new("stop-bound");
    env.create_topics(1);
    env.produce(&["a".to_string(), "loop".to_string()]);
    let mut host = env.spawn_host("test_faulty", &["--guest-timeout", "60s", "--shutdown-timeout", "2s"]);
    host.wait_for_log("ready: partitions assigned", Duration::from_secs(60));
    // The poll that holds both records is with the guest by now (it never answers).
    std::thread::sleep(Duration::from_secs(2));
    host.send_sigterm();
    let status = host.wait_exit(HUNG);
    let log = host.stderr_text();
    assert_eq!(status.code(), Some(1), "exits 1 at the bound:\n{log}");
    assert!(
        log.contains("did not finish within 2s (--shutdown-timeout): still waiting for the guest's answer"),
        "{log}"
    );
    assert!(env.dump().records_processed < 2, "the record the guest never answered for is not counted");
}
