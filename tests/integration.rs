//! Integration tests against the real local broker, one module per behaviour. Each test has
//! its own topics, group and state dir, so they all run in parallel.

mod broken_guests;
mod crash;
mod exactly_once;
mod faults;
mod guest_swap;
mod guest_tools;
mod observability;
mod pipeline;
mod poison;
mod processors;
mod restart;
mod restore;
mod scale_out;
mod scale_out_crash;
mod scale_out_windows;
mod soak;
mod startup;
mod stopping;
mod windows;
