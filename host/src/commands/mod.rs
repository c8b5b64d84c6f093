//! The subcommands' entry points, above everything they use.

pub mod run;
