use std::process::ExitCode;

use clap::Parser;
use provd::cli::{Cli, Command, execute};

fn main() -> ExitCode {
    // Every file provd creates (store, WAL, tokens, exports, spool answers) is its user's
    // alone, whatever umask it was started with.
    // SAFETY: umask only sets the process's file-creation mask; it cannot fail.
    unsafe { libc::umask(0o077) };
    // clap exits with 2 on usage errors itself, as the contract wants.
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Run) {
        // `provd jobs list | head`: a command whose reader went away ends quietly, as
        // Unix tools do, instead of panicking in println! on EPIPE. The agent keeps
        // Rust's default (ignored, writes fail) so a closed stderr cannot kill it.
        // SAFETY: restoring the default disposition of one signal before any thread starts.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    match execute(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("provd: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
