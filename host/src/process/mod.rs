//! The process itself: how it stops ([`shutdown`]) and how it shows progress of long work
//! ([`progress`]).

pub mod progress;
pub mod shutdown;
