//! Against a real three-broker cluster (`make test-cluster` starts it with `scripts/kafka.sh
//! cluster up`): topics with replication factor 3 and min.insync.replicas 2, and broker faults
//! while orders arrive, under both guarantees. A fault hits the whole cluster, so these tests
//! run one at a time (`--test-threads 1`), each on topics, a group and a state dir of its own.

use std::process::Command;
use std::time::{Duration, Instant};

use integration_tests::cluster::{HealCluster, Via, cluster, cluster_brokers, create_replicated_topics, leader};
use integration_tests::{HostProcess, TestEnv, orders, produce_over_time, repo_root, scale_out};

/// A fault, applied to the running job's cluster (`env` names its topics).
type Fault = fn(&TestEnv);

/// Orders arrive over ~10 s while a host counts them under `guarantee`; once it has committed
/// some, `fault` strikes. The host must ride it out (no restart, no manual step) and end with
/// exact counts, and a restore from the changelog must equal its state.
fn counts_exactly_through(test: &str, guarantee: &str, fault: Fault) {
    counts_exactly_through_via(test, guarantee, Via::External, fault)
}

/// The same, with the host reaching the cluster `via` a listener a network fault can hit.
fn counts_exactly_through_via(test: &str, guarantee: &str, via: Via, fault: Fault) {
    let _heal = HealCluster;
    let env = TestEnv::on_brokers(test, &cluster_brokers()).host_via(&via.brokers());
    create_replicated_topics(&env, 3, false);
    let expected = orders::generate(91, 40_000, 50);
    let producing = produce_over_time(&env.brokers, &env.input, &expected.values, 400, Duration::from_millis(100));
    let args = ["--guarantee", guarantee, "--max-batch", "500"];
    let mut host = env.spawn_host("drink_count", &args);
    integration_tests::wait_until(Duration::from_secs(90), "some progress", || env.committed_total() > 4_000);
    fault(&env);
    producing.join().expect("the producer thread");
    wait_drained(&env, &mut host, expected.values.len() as i64, Duration::from_secs(180));
    assert!(host.is_running(), "the host rode out the fault:\n{}", host.stderr_text());
    assert!(host.terminate().success(), "the host stops cleanly after the fault");

    let dump = env.dump();
    assert_eq!(dump.counts, expected.counts, "counts after the fault ({guarantee})");
    assert_eq!((dump.records_processed, dump.records_skipped), (expected.valid, expected.malformed));
    let restored = env.restore_into(&env.dir.path().join("restored"));
    assert_eq!(restored, dump, "a restore from the replicated changelog equals the state");
}

/// Waits until the group has committed `total` input records, failing early if the host exits.
fn wait_drained(env: &TestEnv, host: &mut HostProcess, total: i64, timeout: Duration) {
    let started = Instant::now();
    while env.committed_total() < total {
        assert!(host.is_running(), "the host exited during the fault:\n{}", host.stderr_text());
        assert!(
            started.elapsed() < timeout,
            "{} of {total} committed after {timeout:?}:\n{}",
            env.committed_total(),
            host.stderr_text()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// `kill -9` of the broker leading changelog partition 0; started again 10 s later.
fn kill_changelog_leader(env: &TestEnv) {
    kill_and_restart(&leader(&env.changelog, 0));
}

/// `kill -9` of the broker leading input partition 0; started again 10 s later.
fn kill_input_leader(env: &TestEnv) {
    kill_and_restart(&leader(&env.input, 0));
}

/// `kill -9` of the broker coordinating the host's consumer group (under exactly-once, the
/// one `send_offsets_to_transaction` needs); started again 10 s later.
fn kill_group_coordinator(env: &TestEnv) {
    let node = cluster(&["coordinator", &env.group]).trim().to_owned();
    kill_and_restart(&node);
}

/// `kill -9` of the active controller; started again 10 s later.
fn kill_controller(_env: &TestEnv) {
    let node = cluster(&["controller"]).trim().to_owned();
    kill_and_restart(&node);
}

/// How long a killed broker stays down: the fault itself, not a wait for something (the
/// cluster moves its leaderships after `broker.session.timeout.ms`, 6 s on the test cluster).
const BROKER_DOWN_FOR: Duration = Duration::from_secs(10);

fn kill_and_restart(node: &str) {
    cluster(&["kill", node]);
    std::thread::sleep(BROKER_DOWN_FOR);
    cluster(&["start", node]);
}

/// Each broker stopped and started in turn, the next only once every partition is in sync.
fn rolling_restart(_env: &TestEnv) {
    cluster(&["rolling-restart"]);
}

/// How long a network fault lasts.
const NETWORK_FAULT_FOR: Duration = Duration::from_secs(20);

/// The host cut off from every broker (its packets dropped, connections left hanging) for
/// 20 s, then healed.
fn cut_from_every_broker(_env: &TestEnv) {
    cluster(&["cut", "all"]);
    std::thread::sleep(NETWORK_FAULT_FOR);
    cluster(&["heal"]);
}

/// The host cut off for 20 s from the broker leading changelog partition 0 (which stays in
/// the cluster, leader still: its writes wait), then healed.
fn cut_from_the_changelog_leader(env: &TestEnv) {
    let node = leader(&env.changelog, 0);
    cluster(&["cut", &node]);
    std::thread::sleep(NETWORK_FAULT_FOR);
    cluster(&["heal", &node]);
}

/// 100 ms more each way on every link between the host and the brokers for 20 s (the rest of
/// the orders arrive and are counted over it), then back to normal.
fn slow_links(_env: &TestEnv) {
    cluster(&["latency", "100"]);
    std::thread::sleep(NETWORK_FAULT_FOR);
    cluster(&["latency", "off"]);
}

#[test]
fn changelog_leader_killed_under_exactly_once() {
    counts_exactly_through("cl-leader-eos", "exactly-once", kill_changelog_leader);
}

#[test]
fn changelog_leader_killed_under_at_least_once() {
    counts_exactly_through("cl-leader-alo", "at-least-once", kill_changelog_leader);
}

#[test]
fn input_leader_killed_under_exactly_once() {
    counts_exactly_through("in-leader-eos", "exactly-once", kill_input_leader);
}

#[test]
fn input_leader_killed_under_at_least_once() {
    counts_exactly_through("in-leader-alo", "at-least-once", kill_input_leader);
}

#[test]
fn group_coordinator_killed_under_exactly_once() {
    counts_exactly_through("coord-eos", "exactly-once", kill_group_coordinator);
}

#[test]
fn group_coordinator_killed_under_at_least_once() {
    counts_exactly_through("coord-alo", "at-least-once", kill_group_coordinator);
}

#[test]
fn controller_killed_under_exactly_once() {
    counts_exactly_through("controller-eos", "exactly-once", kill_controller);
}

#[test]
fn controller_killed_under_at_least_once() {
    counts_exactly_through("controller-alo", "at-least-once", kill_controller);
}

#[test]
fn rolling_restart_under_exactly_once() {
    counts_exactly_through("rolling-eos", "exactly-once", rolling_restart);
}

#[test]
fn rolling_restart_under_at_least_once() {
    counts_exactly_through("rolling-alo", "at-least-once", rolling_restart);
}

#[test]
fn cut_from_every_broker_under_exactly_once() {
    counts_exactly_through_via("cut-all-eos", "exactly-once", Via::Cuttable, cut_from_every_broker);
}

#[test]
fn cut_from_every_broker_under_at_least_once() {
    counts_exactly_through_via("cut-all-alo", "at-least-once", Via::Cuttable, cut_from_every_broker);
}

#[test]
fn cut_from_one_broker_under_exactly_once() {
    counts_exactly_through_via("cut-one-eos", "exactly-once", Via::Cuttable, cut_from_the_changelog_leader);
}

#[test]
fn cut_from_one_broker_under_at_least_once() {
    counts_exactly_through_via("cut-one-alo", "at-least-once", Via::Cuttable, cut_from_the_changelog_leader);
}

#[test]
fn slow_links_under_exactly_once() {
    counts_exactly_through_via("slow-eos", "exactly-once", Via::Proxy, slow_links);
}

#[test]
fn slow_links_under_at_least_once() {
    counts_exactly_through_via("slow-alo", "at-least-once", Via::Proxy, slow_links);
}

/// Two `--scale-out` hosts under exactly-once cut off from every broker for longer than their
/// transaction timeout (10 s) and their session timeout (6 s): the coordinators abort the
/// transactions open meanwhile and fence those producers, and the group rebalances. Each host
/// gives a fenced producer up for a new one, rewinds (or, when the commit was asked for, reads
/// its shards and offsets back from Kafka) and goes on, never restarted; the job ends exact.
#[test]
fn scale_out_hosts_cut_longer_than_their_transaction_timeout_count_exactly() {
    let _heal = HealCluster;
    let env = TestEnv::on_brokers("cut-txn-timeout", &cluster_brokers()).host_via(&Via::Cuttable.brokers());
    create_replicated_topics(&env, scale_out::PARTITIONS, true);
    let expected = orders::generate(97, 30_000, 50);
    let producing = produce_over_time(&env.brokers, &env.input, &expected.values, 300, Duration::from_millis(100));
    let mode = ["--guarantee", "exactly-once", "--max-batch", "500"];
    let mut hosts: Vec<HostProcess> = (0..2).map(|h| scale_out::spawn(&env, h, &mode)).collect();
    integration_tests::wait_until(Duration::from_secs(90), "some progress", || env.committed_total() > 3_000);
    cluster(&["cut", "all"]);
    std::thread::sleep(CUT_PAST_THE_TRANSACTION_TIMEOUT);
    cluster(&["heal"]);
    producing.join().expect("the producer thread");

    let started = Instant::now();
    while board_processed(&env) < expected.valid {
        for host in &mut hosts {
            assert!(host.is_running(), "a host exited after the cut:\n{}", host.stderr_text());
        }
        assert!(started.elapsed() < Duration::from_secs(180), "not drained after the cut");
        std::thread::sleep(Duration::from_millis(500));
    }
    // How each host met the timeout varies with where its transaction was when the cut came
    // (a fence, a fatal error, an in-doubt commit, or an abort librdkafka finished itself).
    let replaced = hosts.iter().filter(|h| h.stderr_text().contains("replacing the transactional producer")).count();
    let in_doubt = hosts.iter().filter(|h| h.stderr_text().contains("unknown which")).count();
    eprintln!("hosts that replaced their producer: {replaced}; that met an in-doubt commit: {in_doubt}");
    for host in hosts {
        assert!(host.terminate().success(), "a clean stop after the cut");
    }
    let dump = scale_out::union_of_dumps(&env, &[0, 1]);
    assert_eq!(dump.counts, expected.counts, "counts after the cut");
    assert_eq!((dump.records_processed, dump.records_skipped), (expected.valid, expected.malformed));
}

/// How long the scale-out hosts are cut off: the fault itself (longer than their
/// transaction timeout, 10 s, and their session timeout, 6 s), not a wait for something.
const CUT_PAST_THE_TRANSACTION_TIMEOUT: Duration = Duration::from_secs(15);

/// Records processed on the job's merged board (0 before one is published).
fn board_processed(env: &TestEnv) -> u64 {
    let guest = integration_tests::guest("drink_count").display().to_string();
    let out = env.host(&["board", "--guest", &guest, "--brokers", &env.brokers, "--output", &env.output, "--json"]);
    let board: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    board["records_processed"].as_u64().unwrap_or(0)
}

/// `host create-topics --replication-factor 3` makes min.insync.replicas 2; a changelog
/// replicated less than its input is refused before anything is created, naming the fix.
#[test]
fn a_changelog_replicated_less_than_its_input_is_refused() {
    let env = TestEnv::on_brokers("weak-changelog", &cluster_brokers());
    create_replicated_topics(&env, 1, false);
    assert_eq!(cluster(&["isr", &env.changelog, "0"]).trim().split(',').count(), 3, "3 replicas, all in sync");
    assert_eq!(cluster(&["config", &env.changelog, "min.insync.replicas"]).trim(), "2");

    let weak = format!("{}.changelog-rf1", env.name);
    let args = ["create-topics", "--partitions", "1", "--replication-factor", "1", "--brokers", &env.brokers];
    let topics = ["--input", &env.input, "--changelog", &weak, "--output", &env.output];
    let out = env.host(&[&args[..], &topics[..]].concat());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a changelog with 1 replica next to an input with 3 must be refused");
    assert!(err.contains("is replicated less than input") && err.contains("--replication-factor 3"), "{err}");
    let exists = Command::new(repo_root().join("scripts/kafka.sh"))
        .args(["cluster", "config", &weak, "min.insync.replicas"])
        .output()
        .unwrap();
    assert!(!exists.status.success(), "nothing was created");

    let out = env.host(&["create-topics", "--replication-factor", "2", "--min-insync-replicas", "3"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("is more than --replication-factor 2"));
}
