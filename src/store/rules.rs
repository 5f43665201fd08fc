//! The store's rules that do not depend on a database: what an attempt's end writes, how a
//! job's end settles an assignment, how a planned item is recorded. Both backends write
//! what these say, so the rules live once, as plain functions tested here.

use serde_json::{Value, json};

use super::jobs::{AttemptError, Ending, Job, JobState, OpRecord};
use super::{Result, StoreError};
use crate::model::{Effect, PlannedItem};

/// What an attempt's end (other than a release) writes on the job.
#[derive(Debug, Clone, PartialEq)]
pub struct EndRow {
    /// `succeeded`, `retrying` or `failed`.
    pub state: &'static str,
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

/// The `job_released` event's data: the attempt given back, and why.
pub fn released_event(job: &Job, error: &AttemptError) -> Value {
    json!({ "reason": "authentication", "error": error, "attemptRefunded": job.attempt })
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
            "succeeded",
            "job_succeeded",
            None,
            None,
            json!({ "attempt": job.attempt }),
        ),
        Ending::Retry { at, error } => (
            "retrying",
            "job_retrying",
            Some(*at),
            Some(errors_with(error)?),
            json!({ "attempt": job.attempt, "error": error, "nextAttemptAt": crate::clock::rfc3339_ms(*at) }),
        ),
        Ending::Failed { error, reason } => (
            "failed",
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
        finalized_at: (state != "retrying").then_some(now),
        data,
    }))
}

/// How an assignment moves once every job carrying its item has ended: (from, to).
/// None while a job is still open, or for effects that move nothing.
pub fn settled(effect: &str, states: &[JobState]) -> Option<(&'static str, &'static str)> {
    if !states.iter().all(|s| s.is_final()) {
        return None;
    }
    let all_ok = states.iter().all(|s| *s == JobState::Succeeded);
    let all_canceled = states.iter().all(|s| *s == JobState::Canceled);
    match (effect, all_ok, all_canceled) {
        ("grant", true, _) => Some(("pending", "active")),
        ("grant", false, true) => Some(("pending", "canceled")),
        ("grant", false, false) => Some(("pending", "failed")),
        ("revoke", true, _) => Some(("revoking", "removed")),
        // The removal did not (fully) happen: the access is still there.
        ("revoke", false, _) => Some(("revoking", "active")),
        _ => None,
    }
}

/// The effect as recorded on a request item.
pub fn effect_name(effect: &Effect) -> &'static str {
    match effect {
        Effect::Grant => "grant",
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
        Effect::Grant if item.item.remove_at.is_some() => Some("scheduled"),
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
pub fn call_event(job: &Job, op: &OpRecord) -> serde_json::Value {
    let kind = job.ops.get(op.index).map(|o| o.kind().as_str());
    serde_json::json!({ "op": kind, "index": op.index, "outcome": op.outcome,
        "nativeId": op.native_id.as_ref().or(op.account.as_ref()), "detail": op.detail })
}

/// A manual task's answer: the task status it sets (`DONE` → `done`, `FAILED` → `failed`).
pub fn task_status(resolution: &str) -> Result<&'static str> {
    match resolution {
        "DONE" => Ok("done"),
        "FAILED" => Ok("failed"),
        // An account export showed the task's effect (DESIGN §17): done, by evidence.
        "VERIFIED" => Ok("done"),
        other => Err(StoreError::Conflict(format!(
            "resolution must be DONE or FAILED, not `{other}`"
        ))),
    }
}

/// The error a failed task puts in its job's history.
pub fn task_error(task: i64, resolved_by: &str, note: &str, now: i64) -> AttemptError {
    AttemptError {
        at: crate::clock::rfc3339_ms(now),
        attempt: 1,
        class: "manual".into(),
        code: Some(format!("T{task}")),
        message: if note.is_empty() {
            format!("task T{task} failed ({resolved_by})")
        } else {
            note.to_string()
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use JobState::*;

    #[test]
    fn an_item_settles_only_when_all_its_jobs_have_ended() {
        assert_eq!(settled("grant", &[Succeeded, Running]), None);
        assert_eq!(
            settled("grant", &[Succeeded, Succeeded]),
            Some(("pending", "active"))
        );
        assert_eq!(
            settled("grant", &[Canceled, Canceled]),
            Some(("pending", "canceled"))
        );
        assert_eq!(
            settled("grant", &[Succeeded, Failed]),
            Some(("pending", "failed"))
        );
        assert_eq!(
            settled("revoke", &[Succeeded]),
            Some(("revoking", "removed"))
        );
        assert_eq!(
            settled("revoke", &[Failed]),
            Some(("revoking", "active")),
            "still held"
        );
        assert_eq!(settled("set_remove_date", &[Succeeded]), None);
    }

    #[test]
    fn task_answers_are_done_or_failed() {
        assert_eq!(task_status("DONE").ok(), Some("done"));
        assert!(matches!(task_status("done"), Err(StoreError::Conflict(_))));
        let e = task_error(7, "owner@x", "", 0);
        assert_eq!(
            (e.code.as_deref(), e.message.as_str()),
            (Some("T7"), "task T7 failed (owner@x)")
        );
        assert_eq!(
            task_error(7, "o", "no such user", 0).message,
            "no such user"
        );
    }
}
