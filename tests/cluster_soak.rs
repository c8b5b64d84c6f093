//! `make soak` (not part of `make test`): random faults against the three-broker cluster for
//! `SOAK_MINUTES` (30) while three `--scale-out` hosts count orders arriving all along under
//! exactly-once: `kill -9` of a host (restarted on its state dir), `kill -9` of a broker
//! (started again 10 s later), the hosts cut off from every broker or from one (10-20 s).
//! Then the input's end is drained and the union of the hosts' shards must equal the expected
//! counts exactly. The fault log and the result go to `SOAK_REPORT` (build/soak-report.md).

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use integration_tests::cluster::{HealCluster, Via, cluster, cluster_brokers, create_replicated_topics};
use integration_tests::scale_out::{self, PARTITIONS, union_of_dumps};
use integration_tests::{HostProcess, TestEnv, orders, produce_over_time, repo_root};

/// Orders per second offered throughout (in chunks of 1,000 every 4 s, each by a producer of
/// its own: about this much).
const RATE: usize = 200;
const HOSTS: usize = 3;
/// How long a killed broker stays down (the fault itself, not a wait for something).
const BROKER_DOWN_FOR: Duration = Duration::from_secs(10);

#[test]
fn random_faults_against_the_cluster_count_exactly_under_exactly_once() {
    let minutes: u64 = std::env::var("SOAK_MINUTES").ok().and_then(|m| m.parse().ok()).unwrap_or(30);
    let report_path = std::env::var("SOAK_REPORT")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| repo_root().join("build").join("soak-report.md"));
    let duration = Duration::from_secs(minutes * 60);
    let _heal = HealCluster;
    let mut random = integration_tests::random_source("cluster-soak");
    let env = TestEnv::on_brokers("soak", &cluster_brokers()).host_via(&Via::Cuttable.brokers());
    create_replicated_topics(&env, PARTITIONS, true);
    let expected = orders::generate(131, RATE * duration.as_secs() as usize, 100);
    let producing = produce_over_time(&env.brokers, &env.input, &expected.values, 1_000, Duration::from_secs(4));
    let mode = ["--guarantee", "exactly-once", "--max-batch", "500"];
    let mut hosts: Vec<HostProcess> = (0..HOSTS).map(|h| scale_out::spawn(&env, h, &mode)).collect();

    let started = Instant::now();
    let mut log = String::new();
    let mut faults = 0;
    let note = |log: &mut String, what: String| {
        let line = format!("{:>7.1} s  {what}", started.elapsed().as_secs_f64());
        eprintln!("soak: {line}");
        let _ = writeln!(log, "{line}");
    };
    note(&mut log, format!("{HOSTS} hosts, {} orders at {RATE}/s over {minutes} min", expected.values.len()));
    while started.elapsed() < duration {
        std::thread::sleep(Duration::from_secs(10 + random(30)));
        for (h, host) in hosts.iter_mut().enumerate() {
            assert!(host.is_running(), "host {h} exited on its own:\n{}\n{log}", host.stderr_text());
        }
        faults += 1;
        match random(4) {
            0 => {
                let h = random(HOSTS as u64) as usize;
                note(&mut log, format!("kill -9 host {h}, restarted at once"));
                hosts.remove(h).kill9();
                hosts.insert(h, scale_out::spawn(&env, h, &mode));
            }
            1 => {
                let node = (1 + random(3)).to_string();
                note(&mut log, format!("kill -9 broker {node}, started again 10 s later"));
                cluster(&["kill", &node]);
                std::thread::sleep(BROKER_DOWN_FOR);
                cluster(&["start", &node]);
            }
            2 => {
                let secs = 10 + random(11);
                note(&mut log, format!("hosts cut off from every broker for {secs} s"));
                cluster(&["cut", "all"]);
                std::thread::sleep(Duration::from_secs(secs));
                cluster(&["heal"]);
            }
            _ => {
                let (node, secs) = ((1 + random(3)).to_string(), 10 + random(11));
                note(&mut log, format!("hosts cut off from broker {node} for {secs} s"));
                cluster(&["cut", &node]);
                std::thread::sleep(Duration::from_secs(secs));
                cluster(&["heal", &node]);
            }
        }
    }
    producing.join().expect("the producer thread");
    note(&mut log, format!("{faults} faults; the input is all produced: draining"));
    for (h, host) in hosts.iter_mut().enumerate() {
        assert!(host.is_running(), "host {h} exited on its own:\n{}\n{log}", host.stderr_text());
    }
    for host in hosts.drain(..) {
        assert!(host.terminate().success(), "a clean stop");
    }
    let drain: Vec<&str> = mode.iter().copied().chain(["--stop-at-end"]).collect();
    let mut hosts: Vec<HostProcess> = (0..HOSTS).map(|h| scale_out::spawn(&env, h, &drain)).collect();
    for host in &mut hosts {
        let status = host.wait_exit(Duration::from_secs(600));
        assert!(status.success(), "a draining host failed ({status}):\n{}", host.stderr_text());
    }
    let dump = union_of_dumps(&env, &(0..HOSTS).collect::<Vec<_>>());
    let exact = dump.counts == expected.counts
        && (dump.records_processed, dump.records_skipped) == (expected.valid, expected.malformed);
    note(
        &mut log,
        format!(
            "result: {} ({} of {} records processed, {} of {} skipped as malformed, {} of {} keys as expected)",
            if exact { "exact" } else { "NOT exact" },
            dump.records_processed,
            expected.valid,
            dump.records_skipped,
            expected.malformed,
            expected.counts.iter().filter(|(k, v)| dump.counts.get(*k) == Some(v)).count(),
            expected.counts.len()
        ),
    );
    let report = format!(
        "# Cluster soak\n\n`make soak` on {} (SOAK_MINUTES={minutes}): three `--scale-out` hosts, exactly-once, \
         topics with replication factor 3 and min.insync.replicas 2 on the three-broker cluster.\n\n```\n{log}```\n",
        chrono_free_date()
    );
    std::fs::create_dir_all(report_path.parent().unwrap()).unwrap();
    std::fs::write(&report_path, report).unwrap();
    eprintln!("soak: report written to {}", report_path.display());
    assert_eq!(dump.counts, expected.counts);
    assert_eq!((dump.records_processed, dump.records_skipped), (expected.valid, expected.malformed));
}

/// Today's date (UTC) from `date`, without a date crate for one line.
fn chrono_free_date() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}
