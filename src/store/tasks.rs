//! Manual tasks for sources provd cannot reach (DESIGN §7): one per operation, assigned to
//! the source's owner; the job waits in `manual` until they are resolved.

use super::jobs::JobState;
use super::rules::states::TaskStatus;

/// How both backends open a task: a job retried after its owner answered FAILED already
/// has a task for the operation (failed, or canceled with the job); it is sent again,
/// open, as new work. Without this the retried job waited in `manual` with nothing
/// open for anyone to answer (found by the simulation, issue 33). A done task stays done.
pub(crate) const OPEN_TASK_CONFLICT: &str = "ON CONFLICT (job_id, op_index) DO UPDATE SET
        status = 'open', resolution = NULL, resolved_by = NULL, note = NULL, resolved_at = NULL,
        verified_at = NULL, owner = excluded.owner, identity_name = excluded.identity_name,
        account = excluded.account, created_at = excluded.created_at, due_at = excluded.due_at,
        renamed_to = excluded.renamed_to
     WHERE tasks.status IN ('failed', 'canceled')
     RETURNING id";

/// A task to open for operation `op_index` of a job.
#[derive(Debug, Clone)]
pub struct NewTask {
    pub op_index: usize,
    pub owner: String,
    pub identity_name: String,
    pub operation: String,
    pub account: String,
    pub attribute: String,
    pub value: String,
    pub due_at: Option<i64>,
    /// An UPDATE_ACCOUNT that renames the account (its key is built from an attribute it
    /// changes): the new key, which becomes the account's native id once the job ends
    /// well, so that later tasks and evidence name the account as it is now.
    pub renamed_to: Option<String>,
}

/// One task as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    pub id: i64,
    pub source: String,
    pub owner: String,
    pub identity_id: String,
    pub identity_name: String,
    pub operation: String,
    pub account: String,
    pub attribute: String,
    pub value: String,
    pub request_id: String,
    pub created_at: i64,
    pub due_at: Option<i64>,
    pub status: TaskStatus,
    pub resolution: Option<String>,
    pub resolved_by: Option<String>,
    pub note: Option<String>,
    /// What the owner should know of the request (DESIGN §15): who asked, the ticket
    /// (`clientMetadata.ticket`), and the removeDate of the access the task grants.
    pub requester: Option<String>,
    pub ticket: Option<String>,
    pub remove_at: Option<i64>,
    /// When the owner (or an import) resolved it.
    pub resolved_at: Option<i64>,
    /// When an account export showed its effect (DESIGN §17).
    pub verified_at: Option<i64>,
}

#[cfg(test)]
impl Task {
    /// An open CREATE_ACCOUNT task of `payroll`, for unit tests to change what they test.
    pub(crate) fn sample(id: i64) -> Task {
        Task {
            id,
            source: "payroll".into(),
            owner: "o@example.com".into(),
            identity_id: "u".into(),
            identity_name: "U".into(),
            operation: "CREATE_ACCOUNT".into(),
            account: "u".into(),
            attribute: String::new(),
            value: String::new(),
            request_id: "r".into(),
            created_at: 0,
            due_at: None,
            status: TaskStatus::Open,
            resolution: None,
            resolved_by: None,
            note: None,
            requester: None,
            ticket: None,
            remove_at: None,
            resolved_at: None,
            verified_at: None,
        }
    }
}

/// Which tasks to list.
#[derive(Debug, Clone, Default)]
pub struct TaskFilter {
    pub source: Option<String>,
    pub owner: Option<String>,
    /// Only open tasks (the default of `tasks export`).
    pub open_only: bool,
    /// Only this task.
    pub id: Option<i64>,
    /// Only DONE tasks answered before this (ms) that no export has verified (DESIGN §17).
    pub unverified_before: Option<i64>,
}

/// What resolving a task did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    /// Recorded; the job's state is now this.
    Applied { job: i64, job_state: JobState },
    /// It was already resolved the same way: nothing changed.
    AlreadySo,
}

/// One owner's answer to one task.
#[derive(Debug, Clone)]
pub struct TaskAnswer {
    pub task: i64,
    pub resolution: String,
    pub resolved_by: String,
    pub note: String,
}

/// What the import needs to know about a task.
#[derive(Debug, Clone)]
pub struct TaskBrief {
    pub source: String,
    pub owner: String,
}

/// Open tasks older than a source's `remind_after`, per owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overdue {
    pub source: String,
    pub owner: String,
    pub count: i64,
    pub oldest_created: i64,
    /// The overdue tasks' ids, oldest first.
    pub tasks: Vec<i64>,
}
