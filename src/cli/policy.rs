//! `provd policy check FILE|- [--trigger NAME]`: what provd would answer an "Access
//! Request Submitted" invocation with this body, decided against the store as it is now;
//! nothing is stored and no callback is made.

use super::CliError;
use super::commands::{failed, print_json};
use crate::config::Config;
use crate::store::Store;
use crate::triggers::body;

pub async fn check(
    config: &Config,
    store: &Store,
    bytes: &[u8],
    trigger: Option<&str>,
) -> Result<(), CliError> {
    let value = crate::intake::json::parse_strict(bytes)
        .map_err(|e| CliError::Invalid(format!("body: not JSON: {e}")))?;
    let sub = body::submitted(&value).map_err(|e| CliError::Invalid(e.to_string()))?;
    let empty = Default::default();
    let (attribute, items) = match trigger {
        Some(name) => {
            let t = config.triggers.get(name).ok_or_else(|| {
                CliError::Invalid(format!("--trigger: no [[trigger]] named `{name}`"))
            })?;
            (t.identity_attribute.as_str(), &t.items)
        }
        // One trigger: its mapping; none: ids as they are.
        None if config.triggers.len() == 1 => config
            .triggers
            .values()
            .next()
            .map(|t| (t.identity_attribute.as_str(), &t.items))
            .unwrap_or(("id", &empty)),
        None => ("id", &empty),
    };
    let v = crate::triggers::pre_approve(store, config, attribute, items, &sub)
        .await
        .map_err(failed)?;
    print_json(&serde_json::json!({
        "approved": v.approved, "comment": v.comment, "approver": v.approver, "rule": v.rule,
    }))
}
