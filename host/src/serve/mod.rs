//! `--http`: health, readiness, the Prometheus metrics the engine keeps ([`metrics`]), state
//! queries and the live board page ([`http`]).

pub mod http;
pub mod metrics;
