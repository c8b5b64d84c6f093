//! The engine: one loop ([`cycle`]) drives every topology ([`direct`]: input -> counting
//! guest -> one state task; [`repartitioned`]: `--scale-out`, input -> guest -> repartition
//! topic -> a task per partition, with warm copies of other hosts' shards kept by [`standby`];
//! [`processing`]: input -> processor guest, with keyed state
//! and emits -> one state task); the [`committer`] makes every batch durable in one order (and runs
//! the exactly-once transaction); a [`task`] is a unit of state with its durability policy;
//! [`config`] is the run as the command line asked for it. Shared by both: polling, skipping
//! and window assignment ([`records`]), fault injection, the stall watchdog, pacing, run
//! statistics.

pub mod committer;
pub mod config;
pub mod cycle;
pub mod direct;
pub mod fault;
pub mod log_limit;
pub mod one_host;
pub mod pace;
pub mod processing;
pub mod records;
pub mod repartitioned;
pub mod stall;
pub mod standby;
pub mod stats;
pub mod tables;
pub mod task;
