//! Manual tasks for flat-file sources: what the owner is asked to do, and the CSV they do
//! it in (DESIGN §7).

pub mod csv_in;
pub mod csv_out;
pub mod decode;
pub mod import;
pub mod remind;
pub mod row;
pub mod xlsx_in;
pub mod xlsx_out;

use jiff::Timestamp;
use provd_connector_core::{Operation, template};

use crate::clock::to_ms;
use crate::config::Source;
use crate::model::add;
use crate::store::Job;
use crate::store::tasks::NewTask;

/// The key the owner knows `identity`'s account on a manual `source` by, made from its
/// attributes (`[account] native_id`; else the identity's id).
pub fn account_key(source: &Source, identity: &provd_connector_core::Identity) -> String {
    source
        .manual
        .as_ref()
        .and_then(|m| m.account.as_ref())
        .and_then(|a| a.native_id.as_deref())
        .and_then(|t| template::fill(t, identity, template::verbatim).ok())
        .unwrap_or_else(|| identity.id.clone())
}

/// One task per operation of the job, from operation `job.ops_done` on.
pub fn for_job(
    job: &Job,
    source: &Source,
    native_id: Option<&str>,
    now: Timestamp,
) -> Vec<NewTask> {
    let settings = source.manual.clone().unwrap_or_default();
    let account = native_id
        .map(str::to_string)
        .unwrap_or_else(|| account_key(source, &job.identity));
    let due_at = settings.remind_after.map(|d| to_ms(add(now, d.0)));
    job.ops
        .iter()
        .enumerate()
        .skip(job.ops_done)
        .map(|(i, op)| {
            let (attribute, value) = match op {
                Operation::AddEntitlement(e) | Operation::RemoveEntitlement(e) => {
                    (e.attribute.clone(), e.value.clone())
                }
                // The owner sets each attribute named to its value (empty: clear it).
                Operation::UpdateAccount { attributes } => (
                    attributes.keys().cloned().collect::<Vec<_>>().join(", "),
                    attributes
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join("; "),
                ),
                _ => (String::new(), String::new()),
            };
            // A rename: the key the account has once the owner made *this* change — the
            // values the task names, not the identity's newest (a second move queued
            // behind this one made the first record the second's key while the owner
            // made the first's: found by the simulation, issue 33).
            let renamed_to = match op {
                Operation::UpdateAccount { attributes } => {
                    let mut after = job.identity.clone();
                    after.attributes.extend(attributes.clone());
                    settings
                        .account
                        .as_ref()
                        .and_then(|a| a.native_id.as_deref())
                        .and_then(|t| template::fill(t, &after, template::verbatim).ok())
                        .filter(|key| *key != account)
                }
                _ => None,
            };
            NewTask {
                renamed_to,
                op_index: i,
                owner: source.owner.clone(),
                identity_name: job.identity.display_name(),
                operation: op.kind().as_str().to_string(),
                account: account.clone(),
                attribute,
                value,
                due_at,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests;
