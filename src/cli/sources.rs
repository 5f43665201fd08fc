//! `provd sources`: what the agent keeps about a direct source itself.

use super::CliError;
use super::commands::{failed, open};
use crate::clock::{Clock, SystemClock, to_ms};
use crate::config::Config;
use crate::store::Stamp;

/// Clears the source's credential gate record, so that the agent (and `check --connect`)
/// try its credentials once more; an audit event says who did it.
pub(super) async fn unblock(
    config: &Config,
    name: &str,
    clock: &SystemClock,
) -> Result<(), CliError> {
    if !config.sources.contains_key(name) {
        return Err(CliError::Invalid(format!(
            "`{name}`: no such source in {}",
            config.path.display()
        )));
    }
    let store = open(config).await?;
    let actor = crate::model::Requester::cli(&super::user()).name;
    let by = Stamp::new(actor.clone(), to_ms(clock.now()));
    let was = store
        .gate_clear(name.to_string(), Some(by))
        .await
        .map_err(failed)?;
    if was {
        println!("{name}: unblocked by {actor}; its credentials will be tried once more");
    } else {
        println!("{name}: not blocked");
    }
    Ok(())
}
