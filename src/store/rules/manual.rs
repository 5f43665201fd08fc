//! Manual tasks (DESIGN §15): what an owner's answer changes, and how a job waiting on
//! its tasks ends. Both backends read the task and the job, ask these rules, and write
//! what they say under guards on the states they read.

use serde_json::{Value, json};

use super::states::{JobState, Machine, TaskStatus};
use crate::store::events::Event;
use crate::store::jobs::{AttemptError, Job};
use crate::store::{Result, StoreError};

/// A task as an answer finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskRow {
    pub status: TaskStatus,
    pub job_id: i64,
    pub request_id: String,
    pub source: String,
    pub identity: String,
}

/// What an answer does to its task.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// The task already has this answer: nothing is written.
    AlreadySo,
    /// The task (guarded on `open`) takes `status`; a `task_resolved` event with `data`.
    Close { status: TaskStatus, data: Value },
}

/// A manual task's answer: the status it sets (`DONE` → `done`, `FAILED` → `failed`;
/// `VERIFIED`: an account export showed the task's effect, DESIGN §17).
pub fn task_status(resolution: &str) -> Result<TaskStatus> {
    match resolution {
        "DONE" | "VERIFIED" => Ok(TaskStatus::Done),
        "FAILED" => Ok(TaskStatus::Failed),
        other => Err(StoreError::Conflict(format!(
            "resolution must be DONE or FAILED, not `{other}`"
        ))),
    }
}

/// What answering `task` (found as `row`) with `resolution` writes. Answering the same
/// way twice changes nothing; another answer for a closed task is refused.
pub fn answer(
    task: i64,
    row: Option<&TaskRow>,
    resolution: &str,
    resolved_by: &str,
    note: &str,
) -> Result<Answer> {
    let status = task_status(resolution)?;
    let Some(row) = row else {
        return Err(StoreError::NotFound(format!("no task T{task}")));
    };
    if row.status == status {
        return Ok(Answer::AlreadySo);
    }
    if !row.status.can_move(status) {
        return Err(StoreError::Conflict(format!(
            "task T{task} is already {}",
            row.status
        )));
    }
    Ok(Answer::Close {
        status,
        data: json!({ "task": format!("T{task}"), "resolution": resolution, "resolvedBy": resolved_by, "note": note }),
    })
}

/// The `task_resolved` event of an answer that closed `row`'s task ([`Answer::Close`]'s
/// data), written by whoever answered.
pub fn task_resolved<'a>(row: &'a TaskRow, data: Value, actor: &'a str) -> Event<'a> {
    Event {
        kind: "task_resolved",
        request_id: Some(&row.request_id),
        job_id: Some(row.job_id),
        source: Some(&row.source),
        identity: Some(&row.identity),
        data,
        actor,
    }
}

/// What a task lost to a concurrent answer says (its guard on `open` matched nothing).
pub fn answer_raced(task: i64) -> StoreError {
    StoreError::Conflict(format!(
        "task T{task} was answered by someone else meanwhile; look at it again"
    ))
}

/// What ending a manual job answers when its guard on `manual` matched nothing.
pub fn end_raced(job: i64) -> StoreError {
    StoreError::Conflict(format!(
        "job {job} changed while its tasks were being answered; look at it again"
    ))
}

/// Where a manual job goes once its tasks decide it, and the error a failed task gives it.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub to: JobState,
    pub error: Option<AttemptError>,
}

/// How the job goes after one of its tasks closed as `status`, with `open` tasks left:
/// a failed task fails it (the owner's note its error), the last done task ends it
/// well; None: it waits on the others.
pub fn job_after_answer(
    task: i64,
    status: TaskStatus,
    open: i64,
    resolved_by: &str,
    note: &str,
    now: i64,
) -> Option<Verdict> {
    match status {
        TaskStatus::Failed => Some(Verdict {
            to: JobState::Failed,
            error: Some(task_error(task, resolved_by, note, now)),
        }),
        _ if open == 0 => Some(Verdict {
            to: JobState::Succeeded,
            error: None,
        }),
        _ => None,
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

/// What ending a job that waits on its tasks writes.
#[derive(Debug, Clone, PartialEq)]
pub struct ManualEnd {
    /// `succeeded` or `failed`, guarded on `manual`.
    pub state: JobState,
    /// The error history with the failed task's error appended (JSON).
    pub errors: String,
    pub ops_done: i64,
    /// A failed job's other open tasks are moot: canceled with this note.
    pub cancel_open_tasks: Option<&'static str>,
    /// A job that succeeded made its account: the pending account becomes active, its
    /// native id the one the tasks named.
    pub activate_account: bool,
    /// A job that succeeded deleted its account: provd forgets it (see
    /// [`super::deletes_account`]).
    pub forget_account: bool,
    /// A job that succeeded renamed its account: the native id becomes the key its
    /// UPDATE_ACCOUNT task named (`tasks.renamed_to`).
    pub rename_account: bool,
    /// A job that succeeded disabled (true) or enabled or made (false) its account.
    pub set_disabled: Option<bool>,
    /// The event: its kind (`job_` and the state) and data.
    pub kind: &'static str,
    pub data: Value,
}

/// How `job` ends with its tasks, moving to `to`; None when it no longer waits on them
/// (canceled, or ended by another answer): nothing to write.
pub fn end_manual(job: &Job, verdict: Verdict) -> Result<Option<ManualEnd>> {
    let Verdict { to, error } = verdict;
    if job.state != JobState::Manual {
        return Ok(None);
    }
    if !job.state.can_move(to) {
        return Err(StoreError::Corrupt(format!(
            "job {}: a manual job cannot end as {to}",
            job.id
        )));
    }
    let mut errors = job.errors.clone();
    errors.extend(error.clone());
    let errors = serde_json::to_string(&errors).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let succeeded = to == JobState::Succeeded;
    Ok(Some(ManualEnd {
        state: to,
        errors,
        ops_done: if succeeded {
            job.ops.len()
        } else {
            job.ops_done
        } as i64,
        cancel_open_tasks: (to == JobState::Failed).then_some("the job failed"),
        activate_account: succeeded,
        forget_account: succeeded
            && job
                .ops
                .contains(&provd_connector_core::Operation::DeleteAccount),
        rename_account: succeeded
            && job
                .ops
                .iter()
                .any(|op| matches!(op, provd_connector_core::Operation::UpdateAccount { .. })),
        set_disabled: succeeded
            .then(|| {
                job.ops.iter().rev().find_map(|op| match op {
                    provd_connector_core::Operation::DisableAccount => Some(true),
                    provd_connector_core::Operation::EnableAccount
                    | provd_connector_core::Operation::CreateAccount => Some(false),
                    _ => None,
                })
            })
            .flatten(),
        kind: job_event(to),
        data: json!({ "by": "manual tasks", "error": error }),
    }))
}

/// The event kind of a job reaching `state`.
pub fn job_event(state: JobState) -> &'static str {
    match state {
        JobState::Queued => "job_queued",
        JobState::Running => "job_running",
        JobState::Retrying => "job_retrying",
        JobState::Manual => "job_manual",
        JobState::Succeeded => "job_succeeded",
        JobState::Failed => "job_failed",
        JobState::Canceled => "job_canceled",
    }
}

/// The `job_manual` event of `job` turned into the tasks `opened` (of `owner`'s source)
/// by the agent `actor`.
pub fn tasks_opened<'a>(
    job: &'a Job,
    opened: &[i64],
    owner: Option<&str>,
    actor: &'a str,
) -> Event<'a> {
    let data = json!({ "tasks": opened, "owner": owner });
    Event::of_job(job_event(JobState::Manual), job, actor, data)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(status: TaskStatus) -> TaskRow {
        TaskRow {
            status,
            job_id: 1,
            request_id: "r".into(),
            source: "flat".into(),
            identity: "u".into(),
        }
    }

    #[test]
    fn task_answers_are_done_or_failed() {
        assert_eq!(task_status("DONE").ok(), Some(TaskStatus::Done));
        assert_eq!(task_status("VERIFIED").ok(), Some(TaskStatus::Done));
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

    #[test]
    fn an_answer_closes_an_open_task_once() {
        use TaskStatus::*;
        let open = answer(7, Some(&row(Open)), "DONE", "o", "").ok();
        assert!(matches!(open, Some(Answer::Close { status: Done, .. })));
        let again = answer(7, Some(&row(Done)), "DONE", "o", "").ok();
        assert_eq!(again, Some(Answer::AlreadySo));
        let other = answer(7, Some(&row(Done)), "FAILED", "o", "").err();
        assert_eq!(
            other.map(|e| e.to_string()),
            Some("task T7 is already done".into())
        );
        let canceled = answer(7, Some(&row(Canceled)), "DONE", "o", "").err();
        assert!(matches!(canceled, Some(StoreError::Conflict(_))));
        assert!(matches!(
            answer(7, None, "DONE", "o", ""),
            Err(StoreError::NotFound(_))
        ));
    }

    #[test]
    fn the_last_done_task_or_any_failed_one_ends_the_job() {
        use TaskStatus::*;
        assert_eq!(job_after_answer(1, Done, 1, "o", "", 0), None);
        assert_eq!(
            job_after_answer(1, Done, 0, "o", "", 0),
            Some(Verdict {
                to: JobState::Succeeded,
                error: None
            })
        );
        let failed = job_after_answer(1, Failed, 3, "o", "gone", 0);
        assert_eq!(
            failed.map(|v| (v.to, v.error.map(|e| e.message))),
            Some((JobState::Failed, Some("gone".into())))
        );
    }
}
