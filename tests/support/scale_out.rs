//! A scale-out job's hosts: topics with one partition count, a state dir per host, and the
//! job's state as the union of the hosts' dumps.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::{Dump, HostProcess, TestEnv};

pub const PARTITIONS: u32 = 6;

/// Flags of every scale-out host here: partitions of a dead host move after 6 s (the
/// broker's minimum session timeout) instead of 45.
pub const SCALE_OUT: [&str; 5] =
    ["--scale-out", "--kafka-config", "session.timeout.ms=6000", "--flush-interval", "300ms"];

pub fn create_topics(env: &TestEnv) {
    let mut args =
        vec!["create-topics".to_string(), "--scale-out".into(), "--partitions".into(), PARTITIONS.to_string()];
    args.extend(env.topic_args());
    let out = env.host(&args);
    assert!(out.status.success(), "create-topics failed: {}", String::from_utf8_lossy(&out.stderr));
}

pub fn state_dir(env: &TestEnv, host: usize) -> PathBuf {
    env.dir.path().join(format!("host-{host}"))
}

/// Host number `host` of the job, with its own state dir.
pub fn spawn(env: &TestEnv, host: usize, extra: &[&str]) -> HostProcess {
    spawn_with_env(env, host, extra, &[])
}

/// `spawn` with extra environment variables (e.g. STREAMHOST_FAULT).
pub fn spawn_with_env(env: &TestEnv, host: usize, extra: &[&str], vars: &[(&str, &str)]) -> HostProcess {
    spawn_guest(env, host, "drink_count", extra, vars)
}

/// `spawn_with_env` with another guest than the drink count.
pub fn spawn_guest(env: &TestEnv, host: usize, guest: &str, extra: &[&str], vars: &[(&str, &str)]) -> HostProcess {
    let dir = state_dir(env, host).display().to_string();
    let mut args: Vec<&str> = SCALE_OUT.to_vec();
    args.extend(["--state-dir", &dir]);
    args.extend(extra);
    env.spawn_host_with_env(guest, &args, vars)
}

/// The job's state from every host's `host dump`: per shard, the copy that reflects the most
/// repartition records (a host keeps the shards it gave up, behind their new owner's copy).
pub fn union_of_dumps(env: &TestEnv, hosts: &[usize]) -> Dump {
    let mut newest: BTreeMap<i64, (i64, Vec<serde_json::Value>)> = BTreeMap::new();
    for &host in hosts {
        if std::fs::read_dir(state_dir(env, host)).map_or(true, |mut dir| dir.next().is_none()) {
            continue; // it holds no shard (never had one, or gave them up and they were deleted)
        }
        let out = env.host(&["dump", "--state-dir", &state_dir(env, host).display().to_string()]);
        assert!(out.status.success(), "dump failed: {}", String::from_utf8_lossy(&out.stderr));
        let mut shards: BTreeMap<i64, (i64, Vec<serde_json::Value>)> = BTreeMap::new();
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let shard = v["shard"].as_i64().expect("scale-out dump lines name their shard");
            let entry = shards.entry(shard).or_default();
            if let Some(next) = v.get("next_offset") {
                entry.0 = next.as_i64().unwrap();
            }
            entry.1.push(v);
        }
        for (shard, copy) in shards {
            if newest.get(&shard).is_none_or(|(next, _)| copy.0 > *next) {
                newest.insert(shard, copy);
            }
        }
    }
    let mut dump = Dump::default();
    for (_, lines) in newest.into_values() {
        for v in lines {
            if let (Some(start), Some(key)) = (v.get("window_start_ms"), v.get("key")) {
                let counter = (start.as_i64().unwrap(), key.as_str().unwrap().to_owned());
                let previous = dump.windows.insert(counter.clone(), v["count"].as_u64().unwrap());
                assert!(previous.is_none(), "window counter {counter:?} is counted in two shards");
            } else if let Some(key) = v.get("key") {
                let previous = dump.counts.insert(key.as_str().unwrap().to_owned(), v["count"].as_u64().unwrap());
                assert!(previous.is_none(), "key {key} is counted in two shards");
            } else {
                dump.records_processed += v["records_processed"].as_u64().unwrap();
                dump.records_skipped += v["records_skipped"].as_u64().unwrap();
            }
        }
    }
    dump
}
