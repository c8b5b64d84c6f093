//! The three-broker cluster of `make test-cluster` and `make soak`: its addresses, how the
//! host under test reaches it, `scripts/kafka.sh cluster` (the faults), and the job's
//! replicated topics.

use std::process::Command;

use crate::{TestEnv, repo_root};

pub fn cluster_brokers() -> String {
    std::env::var("STREAMHOST_CLUSTER_BROKERS")
        .unwrap_or_else(|_| "127.0.0.1:29092,127.0.0.1:29093,127.0.0.1:29094".into())
}

/// How the host under test reaches the cluster (the test's own clients always use
/// `cluster_brokers`, so a network fault leaves them alone).
#[derive(Clone, Copy)]
pub enum Via {
    /// The brokers' EXTERNAL listener, like every other client.
    External,
    /// The CUTTABLE listener on 127.0.0.2, whose packets `kafka.sh cluster cut` drops.
    Cuttable,
    /// toxiproxy in front of the SLOW listener (`kafka.sh cluster latency`).
    Proxy,
}

impl Via {
    pub fn brokers(self) -> String {
        match self {
            Via::External => cluster_brokers(),
            Via::Cuttable => "127.0.0.2:29392,127.0.0.2:29393,127.0.0.2:29394".into(),
            Via::Proxy => "127.0.0.1:29592,127.0.0.1:29593,127.0.0.1:29594".into(),
        }
    }
}

/// `scripts/kafka.sh cluster ARGS...`: its stdout (it must succeed).
pub fn cluster(args: &[&str]) -> String {
    let out = Command::new(repo_root().join("scripts/kafka.sh"))
        .arg("cluster")
        .args(args)
        .output()
        .expect("running scripts/kafka.sh cluster");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "kafka.sh cluster {args:?}: {stdout}{}", String::from_utf8_lossy(&out.stderr));
    eprintln!("cluster {args:?}: {}", stdout.trim());
    stdout
}

/// The node leading `topic`'s `partition`.
pub fn leader(topic: &str, partition: i32) -> String {
    let node = cluster(&["leader", topic, &partition.to_string()]).trim().to_owned();
    assert!(["1", "2", "3"].contains(&node.as_str()), "partition {topic}/{partition} has no leader: {node}");
    node
}

/// Every partition led and fully in sync again: the next test starts from a whole cluster,
/// even when this one failed midway.
pub struct HealCluster;

impl Drop for HealCluster {
    fn drop(&mut self) {
        let kafka =
            |args: &[&str]| Command::new(repo_root().join("scripts/kafka.sh")).arg("cluster").args(args).output();
        let _ = kafka(&["heal"]);
        let _ = kafka(&["latency", "off"]);
        for node in ["1", "2", "3"] {
            let _ = kafka(&["start", node]);
        }
        let _ = kafka(&["ready"]);
    }
}

/// The job's topics, replicated 3 times with min.insync.replicas 2 (`host create-topics`).
pub fn create_replicated_topics(env: &TestEnv, partitions: u32, scale_out: bool) {
    let mut args = vec!["create-topics".to_string(), "--partitions".into(), partitions.to_string()];
    args.extend(["--replication-factor".to_string(), "3".into()]);
    if scale_out {
        args.push("--scale-out".into());
    }
    args.extend(env.topic_args());
    let out = env.host(&args);
    assert!(out.status.success(), "create-topics failed: {}", String::from_utf8_lossy(&out.stderr));
}
