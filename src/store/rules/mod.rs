//! The store's rules that do not depend on a database: which moves each state machine
//! allows ([`states`]), what an attempt's end writes, how a job's end settles an
//! assignment, what the operator's cancel and retry change ([`operator`]), what an
//! owner's answer changes ([`manual`]), which events each writes with which data. Both
//! backends read, ask these, and write what they say in their dialect, so the rules live
//! once, as plain functions tested here.

pub mod events;
pub mod gate;
pub mod manual;
pub mod operator;
pub mod states;

use serde_json::{Value, json};

use super::jobs::{AttemptError, Ending, Job, OpRecord};
use super::{Result, StoreError};
use crate::model::{Effect, PlannedItem};
pub use states::{AssignmentState, JobState, Machine, TaskStatus};

/// What an attempt's end (other than a release) writes on the job.
#[derive(Debug, Clone, PartialEq)]
pub struct EndRow {
    /// `succeeded`, `retrying` or `failed`.
    pub state: JobState,
    /// The audit event's kind: `job_` and the state.
    pub kind: &'static str,
    pub next_attempt_at: Option<i64>,
    /// The error history with this attempt's error appended (JSON); None: unchanged.
    pub errors: Option<String>,
    /// Set when the job has ended for good.
    pub finalized_at: Option<i64>,
    /// The audit event's data.
    pub data: Value,
}

/// The `job_released` event's data: the attempt given back, and why: provd's
/// credentials refused (`authentication`) or the connection not trusted (`trust`).
pub fn released_event(job: &Job, error: &AttemptError) -> Value {
    let reason = if error.class == "auth" {
        "authentication"
    } else {
        "trust"
    };
    json!({ "reason": reason, "error": error, "attemptRefunded": job.attempt })
}

/// The row an end writes; None for [`Ending::Released`] (written differently).
pub fn end_row(job: &Job, ending: &Ending, now: i64) -> Result<Option<EndRow>> {
    let errors_with = |e: &AttemptError| {
        let mut errors = job.errors.clone();
        errors.push(e.clone());
        serde_json::to_string(&errors).map_err(|e| StoreError::Corrupt(e.to_string()))
    };
    let (state, kind, next_attempt_at, errors, data) = match ending {
        Ending::Succeeded => (
            JobState::Succeeded,
            "job_succeeded",
            None,
            None,
            json!({ "attempt": job.attempt }),
        ),
        Ending::Retry { at, error } => (
            JobState::Retrying,
            "job_retrying",
            Some(*at),
            Some(errors_with(error)?),
            json!({ "attempt": job.attempt, "error": error, "nextAttemptAt": crate::clock::rfc3339_ms(*at) }),
        ),
        Ending::Failed { error, reason } => (
            JobState::Failed,
            "job_failed",
            None,
            Some(errors_with(error)?),
            json!({ "attempt": job.attempt, "error": error, "reason": reason }),
        ),
        Ending::Released { .. } => return Ok(None),
    };
    Ok(Some(EndRow {
        state,
        kind,
        next_attempt_at,
        errors,
        finalized_at: state.is_final().then_some(now),
        data,
    }))
}

/// How an assignment moves once every job carrying its item has ended: (from, to).
/// None while a job is still open, or for effects that move nothing.
pub fn settled(effect: &str, states: &[JobState]) -> Option<(AssignmentState, AssignmentState)> {
    use AssignmentState::*;
    if !states.iter().all(|s| s.is_final()) {
        return None;
    }
    let all_ok = states.iter().all(|s| *s == JobState::Succeeded);
    let all_canceled = states.iter().all(|s| *s == JobState::Canceled);
    let (from, to) = match (effect, all_ok, all_canceled) {
        ("grant", true, _) => (Pending, Active),
        ("grant", false, true) => (Pending, Canceled),
        ("grant", false, false) => (Pending, Failed),
        ("revoke", true, _) => (Revoking, Removed),
        // The removal did not (fully) happen: the access is still there. (The backends
        // keep one a removeDate fired `revoking`: that removal is still owed.)
        ("revoke", false, _) => (Revoking, Active),
        _ => return None,
    };
    debug_assert!(from.can_move(to));
    Some((from, to))
}

/// The effect as recorded on a request item.
pub fn effect_name(effect: &Effect) -> &'static str {
    match effect {
        Effect::Grant { .. } => "grant",
        Effect::SetRemoveDate { .. } => "set_remove_date",
        Effect::Revoke { .. } => "revoke",
        Effect::ScheduleRemoval { .. } => "schedule_removal",
        Effect::Nothing => "nothing",
    }
}

/// How an item changed when its access goes: `scheduled`, `moved` or `cleared` (for the
/// log); None when nothing changed (`unchanged`: a duplicate grant keeping its date).
pub fn removal_change(item: &PlannedItem, unchanged: bool) -> Option<&'static str> {
    match item.effect {
        _ if unchanged => None,
        Effect::Grant { .. } if item.item.remove_at.is_some() => Some("scheduled"),
        Effect::ScheduleRemoval { .. } => Some("scheduled"),
        Effect::SetRemoveDate {
            remove_at: Some(_), ..
        } => Some("moved"),
        Effect::SetRemoveDate {
            remove_at: None, ..
        } => Some("cleared"),
        _ => None,
    }
}

/// (`new` or `existing`, the existing request's id).
pub fn disposition(item: &PlannedItem) -> (&'static str, Option<&str>) {
    match &item.existing {
        Some((_, r)) => ("existing", Some(r.as_str())),
        None => ("new", None),
    }
}

/// The audit event of one connector call. `nativeId` names the account the call worked
/// on: the one it created, or the existing account an entitlement went to.
/// Whether an attempt's calls deleted the job's account. provd forgets an account it
/// deleted (its row goes), so that a later grant — a rehire — creates a new one instead
/// of adding to one that is gone, and drift does not report it missing (DESIGN §21;
/// issue 33, finding 2).
pub fn deletes_account(job: &Job, ops: &[OpRecord]) -> bool {
    ops.iter()
        .any(|r| job.ops.get(r.index) == Some(&provd_connector_core::Operation::DeleteAccount))
}

/// What an attempt's calls leave the account's status as (true: disabled), when they say:
/// the last DISABLE or ENABLE among them, or an account made afresh (enabled).
pub fn status_after(job: &Job, ops: &[OpRecord]) -> Option<bool> {
    use provd_connector_core::Operation;
    ops.iter().rev().find_map(|r| match job.ops.get(r.index)? {
        _ if r.disabled.is_some() => r.disabled,
        Operation::DisableAccount => Some(true),
        Operation::EnableAccount => Some(false),
        _ if matches!(r.outcome, "created" | "recreated") => Some(false),
        _ => None,
    })
}

pub fn call_event(job: &Job, op: &OpRecord) -> serde_json::Value {
    let kind = job.ops.get(op.index).map(|o| o.kind().as_str());
    serde_json::json!({ "op": kind, "index": op.index, "outcome": op.outcome,
        "nativeId": op.native_id.as_ref().or(op.account.as_ref()), "detail": op.detail })
}

/// An imported identity's attributes as stored (JSON text).
pub fn identity_attributes(i: &provd_connector_core::Identity) -> Result<String> {
    serde_json::to_string(&i.attributes).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// An imported identity read back from its stored attributes.
pub fn stored_identity(id: String, attributes: &str) -> Result<provd_connector_core::Identity> {
    let attributes = serde_json::from_str(attributes)
        .map_err(|e| StoreError::Corrupt(format!("identity {id}: {e}")))?;
    Ok(provd_connector_core::Identity { id, attributes })
}

#[cfg(test)]
mod tests {
    use super::*;
    use JobState::*;

    #[test]
    fn an_item_settles_only_when_all_its_jobs_have_ended() {
        assert_eq!(settled("grant", &[Succeeded, Running]), None);
        use AssignmentState as A;
        assert_eq!(
            settled("grant", &[Succeeded, Succeeded]),
            Some((A::Pending, A::Active))
        );
        assert_eq!(
            settled("grant", &[Canceled, Canceled]),
            Some((A::Pending, A::Canceled))
        );
        assert_eq!(
            settled("grant", &[Succeeded, Failed]),
            Some((A::Pending, A::Failed))
        );
        assert_eq!(
            settled("revoke", &[Succeeded]),
            Some((A::Revoking, A::Removed))
        );
        assert_eq!(
            settled("revoke", &[Failed]),
            Some((A::Revoking, A::Active)),
            "still held"
        );
        assert_eq!(settled("set_remove_date", &[Succeeded]), None);
    }
}
