//! `provd tasks import FILE [--source S]`: an owner's answers (workbook or CSV in any
//! encoding a spreadsheet saves), every valid row applied, every bad row named; a DONE for
//! a task provd had withdrawn is undone through a request of its own (DESIGN §15).

use std::path::Path;

use super::CliError;
use super::commands::failed;
use crate::clock::{Clock, SystemClock, to_ms};
use crate::config::Config;
use crate::store::Store;
use crate::tasks::import::{Undo, import};

pub(super) async fn run(
    config: &Config,
    store: &Store,
    file: &Path,
    source: Option<&str>,
) -> Result<(), CliError> {
    let bytes =
        std::fs::read(file).map_err(|e| CliError::Invalid(format!("{}: {e}", file.display())))?;
    let now = to_ms(SystemClock.now());
    let intake = super::commands::cli_intake(config, store);
    let undo = Undo {
        config,
        intake: &intake,
    };
    let report = import(store, &bytes, now, source, Some(&undo))
        .await
        .map_err(failed)?;
    println!(
        "{}: {} resolved, {} already so, {} left open, {} bad row(s) (read as {})",
        file.display(),
        report.applied,
        report.unchanged,
        report.left_open,
        report.bad.len(),
        report.encoding
    );
    for (task, request) in &report.undone {
        println!(
            "T{task} was done after provd had withdrawn it: undo requested ({request}); its owner gets the task"
        );
    }
    if report.bad.is_empty() {
        Ok(())
    } else {
        let lines: Vec<String> = report
            .bad
            .iter()
            .map(|b| format!("{}: {b}", file.display()))
            .collect();
        Err(CliError::Invalid(format!(
            "{} bad row(s), the other rows were applied:\n{}",
            report.bad.len(),
            lines.join("\n")
        )))
    }
}
