use std::process::ExitCode;

use clap::Parser;
use provd::cli::{Cli, execute};

fn main() -> ExitCode {
    // clap exits with 2 on usage errors itself, as the contract wants.
    let cli = Cli::parse();
    match execute(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("provd: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
