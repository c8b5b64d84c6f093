//! The subcommands' entry points, one file each, above everything they use.

pub mod board;
pub mod dump;
pub mod guest_tools;
pub mod restore;
pub mod run;
pub mod topics;
