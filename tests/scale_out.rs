//! `host run --scale-out`: several host processes in one group share a job over six
//! partitions; each key is counted in one shard, the global board is merged from the
//! shards' local boards. Killed and added hosts: partitions move, counts stay as promised.

use std::collections::BTreeSet;
use std::time::Duration;

use integration_tests::scale_out::{PARTITIONS, create_topics, spawn, state_dir, union_of_dumps};
use integration_tests::{HostProcess, TestEnv, orders};

/// `host board --json`: the global board merged from the shards' local boards.
fn global_board(env: &TestEnv) -> serde_json::Value {
    let guest = integration_tests::guest("drink_count").display().to_string();
    let out = env.host(&["board", "--guest", &guest, "--brokers", &env.brokers, "--output", &env.output, "--json"]);
    assert!(out.status.success(), "board failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn board_top(board: &serde_json::Value) -> Vec<(String, u64)> {
    let top = board["top"].as_array().unwrap();
    top.iter().map(|e| (e["key"].as_str().unwrap().to_owned(), e["count"].as_u64().unwrap())).collect()
}

/// Shards a host opened (from its log), in order.
fn shards_opened(host: &HostProcess) -> Vec<String> {
    host.stderr_text().lines().filter(|l| l.contains("shard open")).map(str::to_owned).collect()
}

/// The timestamp a log line starts with (RFC 3339 in UTC: ordered as text).
fn log_time(line: &str) -> String {
    line.split_whitespace().next().unwrap_or_default().to_owned()
}

/// What a host logs when it is given partitions (not an empty assignment).
const GIVEN_PARTITIONS: &str = "partitions assigned partitions=[(";

fn wait_all(hosts: &mut [HostProcess]) {
    for host in hosts.iter_mut() {
        let status = host.wait_exit(Duration::from_secs(150));
        assert!(status.success(), "a host failed ({status}):\n{}", host.stderr_text());
    }
}

/// Three hosts, six partitions, a known input (malformed orders too): the union of the
/// hosts' dumps and the merged board equal the expected counts, each key in one shard.
#[test]
fn three_hosts_count_six_partitions_exactly() {
    let env = TestEnv::new("scale-three");
    create_topics(&env);
    let expected = orders::generate(31, 12_000, 50);
    env.produce(&expected.values);
    let mut hosts: Vec<HostProcess> =
        (0..3).map(|h| spawn(&env, h, &["--stop-at-end", "--max-rate", "3000"])).collect();
    wait_all(&mut hosts);
    let working = hosts.iter().filter(|h| h.stderr_text().contains(GIVEN_PARTITIONS)).count();
    assert!(working >= 2, "the partitions were shared: {working} of 3 hosts had some");
    // The run summaries count the changelog records written: each key's value at least once.
    let changelog_records: u64 = hosts
        .iter()
        .filter_map(|h| {
            let log = h.stderr_text();
            let summary = log.lines().find(|l| l.contains("run summary"))?;
            summary.split_once("changelog_records=")?.1.split_whitespace().next()?.parse::<u64>().ok()
        })
        .sum();
    assert!(
        changelog_records >= expected.counts.len() as u64,
        "changelog records in the summaries: {changelog_records}"
    );
    let dump = union_of_dumps(&env, &[0, 1, 2]);
    assert_eq!(dump.counts, expected.counts);
    assert_eq!((dump.records_processed, dump.records_skipped), (expected.valid, expected.malformed));
    let board = global_board(&env);
    assert_eq!(board_top(&board), expected.top(10));
    assert_eq!(board["records_processed"].as_u64(), Some(expected.valid));
    assert_eq!(board["records_skipped"].as_u64(), Some(expected.malformed));
    // Dead letters: every malformed order, once.
    assert_eq!(env.read(&env.dead_letter).len() as u64, expected.malformed);
    // Every shard is whole in its changelog partition: `host restore --scale-out` into a new
    // dir (as a new machine would) gives the same state.
    let restored = state_dir(&env, 9);
    let dir = restored.display().to_string();
    let out = env.host(&[
        "restore",
        "--brokers",
        &env.brokers,
        "--changelog",
        &env.changelog,
        "--state-dir",
        &dir,
        "--scale-out",
    ]);
    assert!(out.status.success(), "restore failed: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(union_of_dumps(&env, &[9]), dump);
}

/// Under exactly-once, one of three hosts is killed with `kill -9` mid-stream: its
/// partitions move to the other two, which restore its shards from the changelog and
/// finish. Every count is exact.
#[test]
fn a_killed_host_s_partitions_move_and_counts_stay_exact_under_exactly_once() {
    let counts = killed_host(
        "scale-kill-eos",
        &["--guarantee", "exactly-once", "--commit-interval", "100ms", "--max-batch", "200"],
    );
    assert_eq!(counts.inflation, 0, "exactly-once is exact");
}

/// The same under at-least-once: nothing is lost; what is counted twice is bounded by the
/// records the killed host had in flight (one poll of input, and one of repartitioned deltas).
#[test]
fn a_killed_host_s_partitions_move_and_nothing_is_lost_under_at_least_once() {
    let counts = killed_host("scale-kill-alo", &["--max-batch", "200"]);
    assert!(counts.records_inflation <= 2 * 200, "records counted twice: {}", counts.records_inflation);
}

struct Inflation {
    inflation: u64,
    records_inflation: u64,
}

fn killed_host(name: &str, mode: &[&str]) -> Inflation {
    let env = TestEnv::new(name);
    create_topics(&env);
    let expected = orders::generate(47, 40_000, 97);
    env.produce(&expected.values);
    let args: Vec<&str> = ["--stop-at-end", "--max-rate", "2000"].iter().chain(mode).copied().collect();
    let mut hosts: Vec<HostProcess> = (0..3).map(|h| spawn(&env, h, &args)).collect();
    // Mid-stream: every host has partitions and counted for a while (the input lasts ~7 s at
    // this rate). The victim is a host with shards (some only get input partitions).
    for host in &mut hosts {
        host.wait_for_log(GIVEN_PARTITIONS, Duration::from_secs(60));
    }
    std::thread::sleep(Duration::from_secs(2));
    let most_shards = (0..hosts.len()).max_by_key(|h| shards_opened(&hosts[*h]).len()).unwrap();
    let victim = hosts.remove(most_shards);
    let victim_shards = shards_opened(&victim);
    assert!(!victim_shards.is_empty(), "the victim owned shards");
    victim.kill9();
    wait_all(&mut hosts);
    // The survivors took the victim's partitions over: more shards opened than at the start.
    let reopened: usize = hosts.iter().map(|h| shards_opened(h).len()).sum();
    assert!(reopened > PARTITIONS as usize - victim_shards.len(), "the survivors opened the victim's shards too");

    let dump = union_of_dumps(&env, &[0, 1, 2]);
    let mut inflation = 0;
    for (key, want) in &expected.counts {
        let got = dump.counts.get(key).copied().unwrap_or(0);
        assert!(got >= *want, "{key}: {got} is below the expected {want}");
        inflation += got - want;
    }
    assert_eq!(dump.counts.len(), expected.counts.len(), "no unexpected keys");
    let counted = dump.records_processed + dump.records_skipped;
    assert!(counted >= expected.valid + expected.malformed, "records lost: {counted}");
    let records_inflation = counted - expected.valid - expected.malformed;
    let board = global_board(&env);
    let board_total = board["records_processed"].as_u64().unwrap() + board["records_skipped"].as_u64().unwrap();
    assert_eq!(board_total, counted, "the merged board shows the shards' totals");
    if inflation == 0 {
        assert_eq!(board_top(&board), expected.top(10));
    }
    eprintln!("{name}: inflation {inflation} (counts), {records_inflation} (records)");
    if mode.contains(&"exactly-once") {
        assert_eq!((dump.records_processed, dump.records_skipped), (expected.valid, expected.malformed));
    }
    Inflation { inflation, records_inflation }
}

/// The shards a host holds now, from its log: opened and not closed since.
fn shards_held(host: &HostProcess) -> BTreeSet<String> {
    let shard = |line: &str| line.split_once(" shard=")?.1.split_whitespace().next().map(str::to_owned);
    let mut held = BTreeSet::new();
    for line in host.stderr_text().lines() {
        if line.contains("shard open shard=") {
            held.extend(shard(line));
        } else if line.contains("shard closed") {
            shard(line).map(|s| held.remove(&s));
        }
    }
    held
}

/// `--standby-replicas 1` on two hosts: each keeps warm copies of the other's shards (tailing
/// their changelog partitions); after `kill -9` of one, the survivor opens the dead host's
/// shards from its copies, replaying only the changelog's last records (no restore), and the
/// counts are exact under exactly-once.
#[test]
fn a_standby_copy_takes_over_a_killed_host_s_shards_without_a_restore() {
    let env = TestEnv::new("scale-standby");
    create_topics(&env);
    // ~20 s of input at the hosts' --max-rate: the kill comes mid-stream.
    let expected = orders::generate(59, 80_000, 0);
    env.produce(&expected.values);
    // Small transactions, so that a shard's changelog grows far past what a warm copy lacks.
    let mode = ["--stop-at-end", "--max-rate", "2000", "--max-batch", "50", "--guarantee", "exactly-once"];
    let mode: Vec<&str> =
        mode.iter().chain(&["--commit-interval", "20ms", "--standby-replicas", "1"]).copied().collect();
    let mut hosts: Vec<HostProcess> = (0..2).map(|h| spawn(&env, h, &mode)).collect();
    for host in &mut hosts {
        host.wait_for_log(GIVEN_PARTITIONS, Duration::from_secs(60));
    }
    // Settled: every shard open on exactly one host (the assignor may give one host every
    // shard and the other every input partition); the victim is a host holding shards now.
    integration_tests::wait_until(Duration::from_secs(60), "every shard held by one host", || {
        let (a, b) = (shards_held(&hosts[0]), shards_held(&hosts[1]));
        a.is_disjoint(&b) && a.len() + b.len() == PARTITIONS as usize
    });
    let victim = (0..2).max_by_key(|h| shards_held(&hosts[*h]).len()).unwrap();
    let survivor = 1 - victim;
    hosts[survivor].wait_for_log("standby copy kept warm", Duration::from_secs(30));
    let victim_shards = shards_held(&hosts[victim]);
    // The victim's shards have counted for a while: changelogs to speak of.
    let changelog_of = |shard: &str| {
        let all = integration_tests::read_topic_with(&env.brokers, &env.changelog, "read_uncommitted");
        all.iter().filter(|r| r.partition.to_string() == shard).count()
    };
    integration_tests::wait_until(Duration::from_secs(60), "the victim's shards counting", || {
        victim_shards.iter().any(|s| changelog_of(s) >= 50)
    });
    assert!(hosts[victim].is_running(), "the victim is killed mid-stream");
    assert!(!victim_shards.is_empty(), "the victim owned shards");
    // The keeper starts its copies one after another: the kill comes once all have started.
    let all_warm = |log: &str| {
        victim_shards.iter().all(|s| log.contains(&format!("standby copy kept warm from here on shard={s} ")))
    };
    integration_tests::wait_until(Duration::from_secs(30), "a warm copy of every victim shard", || {
        all_warm(&hosts[survivor].stderr_text())
    });
    let warm = hosts[survivor].stderr_text();
    for shard in &victim_shards {
        assert!(
            warm.contains(&format!("standby copy kept warm from here on shard={shard} ")),
            "copy of {shard}:\n{warm}"
        );
    }
    hosts.remove(victim).kill9();
    // What a restore of each of the victim's shards would read (the survivor notices the
    // kill only after its session timeout).
    let changelog = integration_tests::read_topic_with(&env.brokers, &env.changelog, "read_uncommitted");
    let held = |shard: &str| changelog.iter().filter(|r| r.partition.to_string() == shard).count() as u64;
    let mut survivor = hosts.remove(0);
    let status = survivor.wait_exit(Duration::from_secs(150));
    assert!(status.success(), "the survivor failed ({status}):\n{}", survivor.stderr_text());

    let log = survivor.stderr_text();
    for shard in &victim_shards {
        let promoted = format!("standby copy promoted: the shard opens from it shard={shard}");
        let after: Vec<&str> = log.lines().skip_while(|l| !l.contains(&promoted)).collect();
        assert!(!after.is_empty(), "shard {shard} opened from its copy:\n{log}");
        assert!(
            !after.iter().any(|l| l.contains("restoring state from the changelog") && l.ends_with(&format!("partition={shard}"))),
            "shard {shard} was not restored after the kill:\n{log}"
        );
        let opened = after.iter().find(|l| l.contains(&format!("shard open shard={shard} "))).expect("opened");
        let replayed: u64 =
            opened.split_once("changelog_records_read=").unwrap().1.split_whitespace().next().unwrap().parse().unwrap();
        // Only what the victim wrote in its last moments, not the shard's whole changelog (a
        // shard none of the drinks hash to has none).
        assert!(
            held(shard) == 0 || replayed * 4 < held(shard),
            "shard {shard} replayed {replayed} of {}: {opened}",
            held(shard)
        );
    }
    assert!(victim_shards.iter().any(|s| held(s) >= 50), "some shard had a changelog to speak of");
    let dump = union_of_dumps(&env, &[0, 1]);
    assert_eq!(dump.counts, expected.counts);
    assert_eq!((dump.records_processed, dump.records_skipped), (expected.valid, expected.malformed));
}

/// A third host joins two that are counting: some partitions move to it (it opens the
/// shards of those it gets of the repartition topic), the two others only give partitions up
/// (they restore nothing), and the counts are exact.
#[test]
fn an_added_host_takes_partitions_without_the_others_restoring() {
    let env = TestEnv::new("scale-add");
    create_topics(&env);
    let expected = orders::generate(53, 45_000, 0);
    env.produce(&expected.values);
    // The shards a host gives up are deleted a second later (default: 10 minutes).
    let mode = ["--stop-at-end", "--max-rate", "2000", "--guarantee", "exactly-once", "--shard-cleanup-delay", "1s"];
    let mut hosts: Vec<HostProcess> = (0..2).map(|h| spawn(&env, h, &mode)).collect();
    for host in &mut hosts {
        host.wait_for_log(GIVEN_PARTITIONS, Duration::from_secs(60));
    }
    // Both are counting; let their own rebalance settle.
    std::thread::sleep(Duration::from_secs(1));
    let mut added = spawn(&env, 2, &mode);
    added.wait_for_log(GIVEN_PARTITIONS, Duration::from_secs(60));
    // The group's rebalance for the newcomer starts when it first joins (its first,
    // empty, assignment).
    let joined = log_time(added.stderr_text().lines().find(|l| l.contains("partitions assigned")).unwrap());
    hosts.push(added);
    wait_all(&mut hosts);
    for (h, host) in hosts[..2].iter().enumerate() {
        let restored_since: Vec<String> = shards_opened(host).into_iter().filter(|l| log_time(l) > joined).collect();
        assert!(restored_since.is_empty(), "a host already running restored nothing: {restored_since:?}");
        assert!(host.stderr_text().contains("partitions revoked"), "it gave partitions to the new host");
        // It keeps only the state of the partitions it holds: the shards it gave up are gone.
        let held =
            host.stderr_text().lines().find_map(|l| l.split("stopped cleanly shards=").nth(1).map(str::to_owned));
        let held: Vec<String> = held
            .expect("a clean stop")
            .trim_matches(['[', ']'])
            .split(", ")
            .filter(|p| !p.is_empty())
            .map(|p| format!("shard-{p}"))
            .collect();
        let mut on_disk: Vec<String> = std::fs::read_dir(state_dir(&env, h))
            .map(|dir| dir.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        on_disk.sort();
        let mut held = held;
        held.sort();
        assert_eq!(on_disk, held, "host {h} keeps only its shards");
    }
    let dump = union_of_dumps(&env, &[0, 1, 2]);
    assert_eq!(dump.counts, expected.counts);
    assert_eq!((dump.records_processed, dump.records_skipped), (expected.valid, expected.malformed));
    assert_eq!(board_top(&global_board(&env)), expected.top(10));
}

/// A changelog or repartition topic with another partition count than the input's is refused
/// at start-up, naming both counts and how to fix it; so are a single host's state dir,
/// windows, which scale-out does not do, `--emit final` without windows, and scale-out flags
/// without --scale-out.
#[test]
fn scale_out_misconfigurations_are_refused() {
    let env = TestEnv::new("scale-refuse");
    // Input and changelog with 3 partitions, then a repartition topic of 6 (made beside
    // another input: create-topics --scale-out gives new topics an existing input's count).
    env.create_topics(3);
    let repartition = format!("{}.repartition", env.changelog);
    let other_input = format!("{}.other", env.input);
    let create = [
        "create-topics",
        "--scale-out",
        "--partitions",
        "6",
        "--brokers",
        &env.brokers,
        "--input",
        &other_input,
        "--changelog",
        &env.changelog,
        "--output",
        &env.output,
        "--repartition",
        &repartition,
    ];
    let out = env.host(&create);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let run = |extra: &[&str]| {
        let mut args = env.run_args("drink_count");
        args.extend(["--scale-out", "--stop-at-end"].iter().chain(extra).map(|s| s.to_string()));
        let out = env.host(&args);
        assert!(!out.status.success(), "must be refused");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = run(&[]);
    assert!(err.contains("repartition topic") && err.contains("has 6 partitions but input"), "{err}");
    assert!(err.contains("has 3") && err.contains("host create-topics --scale-out --partitions 3"), "{err}");
    // (Windows work with --scale-out: tests/scale_out_windows.rs.)
    let err = run(&["--emit", "final"]);
    assert!(err.contains("--emit final needs --window"), "{err}");
    // A scale-out flag on a single host.
    let mut args = env.run_args("drink_count");
    args.extend(["--shard-cleanup-delay", "1s"].map(String::from));
    let out = env.host(&args);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("--scale-out"), "must be refused");
    // A single host's state dir.
    let single = env.state_dir();
    std::fs::create_dir_all(&single).unwrap();
    std::fs::write(single.join("CURRENT"), "MANIFEST-000001\n").unwrap();
    let err = run(&[]);
    assert!(err.contains("holds a single host's state"), "{err}");
    // (Every topic flag given: a default would name the demo's topics.)
    let args = [
        "delete-topics",
        "--brokers",
        &env.brokers,
        "--input",
        &other_input,
        "--changelog",
        &env.changelog,
        "--output",
        &env.output,
    ];
    assert!(env.host(&args).status.success(), "the other input topic is deleted");
}

/// Soak under exactly-once: orders arrive for ~20 s while one of three hosts after another is
/// killed with `kill -9` at random moments and started again on its state dir (at least 6
/// kills); then the job is drained. Every count is exact.
#[test]
fn random_kill_9_soak_of_three_hosts_counts_exactly_under_exactly_once() {
    let mut random = integration_tests::random_source("scale-out soak");
    let env = TestEnv::new("scale-soak");
    create_topics(&env);
    let expected = orders::generate(61, 60_000, 97);
    let producer =
        integration_tests::produce_over_time(&env.brokers, &env.input, &expected.values, 3_000, Duration::from_secs(1));
    let mode = ["--guarantee", "exactly-once", "--commit-interval", "50ms", "--max-batch", "500"];
    let mut hosts: Vec<HostProcess> = (0..3).map(|h| spawn(&env, h, &mode)).collect();
    let started = std::time::Instant::now();
    let mut kills = 0;
    while kills < 6 || !producer.is_finished() {
        assert!(started.elapsed() < Duration::from_secs(120), "soak took too long");
        std::thread::sleep(Duration::from_millis(1_000 + random(3_000)));
        let victim = random(3) as usize;
        let host = std::mem::replace(&mut hosts[victim], spawn(&env, victim, &mode));
        host.kill9();
        kills += 1;
    }
    producer.join().unwrap();
    eprintln!("scale-out soak: {kills} kills in {:?}", started.elapsed());
    for mut host in hosts.drain(..) {
        // (A host started a moment ago may not handle signals yet.)
        host.wait_for_log("host running", Duration::from_secs(60));
        assert!(host.terminate().success(), "a clean stop exits 0");
    }
    let mut hosts: Vec<HostProcess> =
        (0..3).map(|h| spawn(&env, h, &[&mode[..], &["--stop-at-end"]].concat())).collect();
    wait_all(&mut hosts);
    let dump = union_of_dumps(&env, &[0, 1, 2]);
    assert_eq!(dump.counts, expected.counts);
    assert_eq!((dump.records_processed, dump.records_skipped), (expected.valid, expected.malformed));
    assert_eq!(board_top(&global_board(&env)), expected.top(10));
}
