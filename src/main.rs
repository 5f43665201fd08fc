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
    if !matches!(cli.command, Command::Run { .. }) {
        // `provd jobs list | head`: a command whose reader went away ends quietly, as
        // Unix tools do, instead of panicking in println! on EPIPE. The agent keeps
        // Rust's default (ignored, writes fail) so a closed stderr cannot kill it.
        // SAFETY: restoring the default disposition of one signal before any thread starts.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    // `provd jobs list > /dev/full`: println! panics when standard output cannot be
    // written (exit 101 and a panic message). A command's output that could not be
    // written is an ordinary failure: a message and exit 1.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if output_failed(info.payload()).is_none() {
            default_hook(info);
        }
    }));
    match std::panic::catch_unwind(move || execute(cli)) {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            eprintln!("provd: {e}");
            ExitCode::from(e.exit_code())
        }
        Err(payload) => match output_failed(payload.as_ref()) {
            Some(why) => {
                eprintln!("provd: cannot write the output: {why}");
                ExitCode::from(1)
            }
            None => std::panic::resume_unwind(payload),
        },
    }
}

/// The reason, when a panic is the standard library failing to print.
fn output_failed(payload: &(dyn std::any::Any + Send)) -> Option<String> {
    let text = payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())?;
    ["failed printing to stdout: ", "failed printing to stderr: "]
        .iter()
        .find_map(|p| text.strip_prefix(p))
        .map(str::to_string)
}
