//! `provd tasks send [--owner X]`: every open task to its owner now, by mail.

use super::CliError;
use super::commands::failed;
use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::mail::{MailError, send_now};
use crate::store::Store;

/// Tries per message before the command gives up on that owner.
const ATTEMPTS: u32 = 3;

pub async fn run(config: &Config, store: &Store, owner: Option<&str>) -> Result<(), CliError> {
    if let Some(o) = owner
        && !crate::config::mail::is_address(o)
    {
        return Err(CliError::Invalid(format!(
            "--owner: `{o}` is not a mail address"
        )));
    }
    let sent = send_now(
        &**store,
        config,
        owner.map(str::to_string),
        SystemClock.now(),
        ATTEMPTS,
    )
    .await
    .map_err(|e| match e {
        MailError::NotConfigured => CliError::Invalid(e.to_string()),
        e => failed(e),
    })?;
    if sent.is_empty() {
        println!(
            "no open tasks{}: nothing sent",
            owner.map(|o| format!(" for {o}")).unwrap_or_default()
        );
        return Ok(());
    }
    let mut failures = 0;
    for s in &sent {
        match &s.result {
            Ok(()) => println!("mailed {} open task(s) to {}", s.tasks, s.owner),
            Err(e) => {
                failures += 1;
                eprintln!("mailing {} failed after {ATTEMPTS} tries: {e}", s.owner);
            }
        }
    }
    if failures > 0 {
        return Err(CliError::Failed(format!(
            "{failures} of {} owner(s) not mailed",
            sent.len()
        )));
    }
    Ok(())
}
