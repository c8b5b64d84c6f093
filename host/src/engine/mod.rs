//! The engine: the loops that move batches through guest -> changelog -> state -> commit, one
//! per topology ([`pipeline`]: one host; [`scaleout`]: a job spread over several hosts), and
//! what they share: polling and skipping records ([`records`]), fault injection, the stall
//! watchdog, pacing, run statistics.

pub mod committer;
pub mod config;
pub mod cycle;
pub mod direct;
pub mod fault;
pub mod log_limit;
pub mod pace;
pub mod records;
pub mod repartitioned;
pub mod stall;
pub mod stats;
pub mod task;
