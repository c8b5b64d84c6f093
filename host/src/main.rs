//! The `host` binary: logging set-up, CLI parsing, and a call into the library.

use std::process::ExitCode;

use clap::Parser;
use host::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    host::init_logging(cli.log_format);
    if !matches!(cli.command, Command::Run(_)) {
        // A printing command piped into `head` ends quietly when the reader goes, as a Unix
        // tool does (Rust ignores SIGPIPE, so the next print would panic). `run` keeps it
        // ignored: its stdout going away must not kill it mid-batch.
        // SAFETY: at start-up, before any thread exists; SIG_DFL is a valid disposition.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    let result = match cli.command {
        Command::Run(args) => host::commands::run::run(*args),
        Command::Restore(args) => host::commands::restore::restore_command(args),
        Command::Dump(args) => host::commands::dump::dump_command(args),
        Command::Board(args) => host::commands::board::board_command(args),
        Command::CreateTopics(args) => host::commands::topics::create_command(args),
        Command::DeleteTopics(args) => host::commands::topics::delete_command(args),
        Command::Check(args) => host::commands::guest_tools::check_command(args),
        Command::NewGuest(args) => host::commands::guest_tools::new_guest_command(args),
        Command::Test(args) => host::commands::guest_tools::test_command(args)
            .and_then(|passed| if passed { Ok(()) } else { std::process::exit(1) }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // A stop that left work Kafka did not answer for to the next start: nothing is lost.
        Err(e) if e.downcast_ref::<host::process::shutdown::Unfinished>().is_some() => {
            tracing::warn!("{e:#}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            // Logged once, here, where the command ends; `{:#}` keeps the context chain on one line.
            tracing::error!("{e:#}");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
