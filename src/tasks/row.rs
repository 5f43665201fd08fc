//! A task as a row of the owner's spreadsheet.

use serde::Serialize;

use crate::clock::rfc3339_ms;
use crate::store::tasks::Task;

/// One task as the owner sees it: the columns of the CSV contract (DESIGN §7), in their
/// order; also the JSON rows of `GET /tasks/v1`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TaskRow {
    pub task_id: String,
    pub source: String,
    pub owner: String,
    pub identity_id: String,
    pub identity_name: String,
    pub operation: String,
    pub account: String,
    pub attribute: String,
    pub value: String,
    pub request_id: String,
    pub created_at: String,
    pub due_at: String,
    pub status: String,
    pub resolution: String,
    pub resolved_by: String,
    pub note: String,
}

/// The header of the task CSV (DESIGN §7 contract).
pub const COLUMNS: [&str; 16] = [
    "task_id",
    "source",
    "owner",
    "identity_id",
    "identity_name",
    "operation",
    "account",
    "attribute",
    "value",
    "request_id",
    "created_at",
    "due_at",
    "status",
    "resolution",
    "resolved_by",
    "note",
];

impl TaskRow {
    pub fn cells(&self) -> [&str; 16] {
        [
            &self.task_id,
            &self.source,
            &self.owner,
            &self.identity_id,
            &self.identity_name,
            &self.operation,
            &self.account,
            &self.attribute,
            &self.value,
            &self.request_id,
            &self.created_at,
            &self.due_at,
            &self.status,
            &self.resolution,
            &self.resolved_by,
            &self.note,
        ]
    }
}

impl From<&Task> for TaskRow {
    fn from(t: &Task) -> Self {
        Self {
            task_id: format!("T{}", t.id),
            source: t.source.clone(),
            owner: t.owner.clone(),
            identity_id: t.identity_id.clone(),
            identity_name: t.identity_name.clone(),
            operation: t.operation.clone(),
            account: t.account.clone(),
            attribute: t.attribute.clone(),
            value: t.value.clone(),
            request_id: t.request_id.clone(),
            created_at: rfc3339_ms(t.created_at),
            due_at: t.due_at.map(rfc3339_ms).unwrap_or_default(),
            // Shown by an account export (DESIGN §17), whoever answered first.
            status: if t.verified_at.is_some() {
                "VERIFIED".into()
            } else {
                t.status.to_string().to_uppercase()
            },
            resolution: t.resolution.clone().unwrap_or_default(),
            resolved_by: t.resolved_by.clone().unwrap_or_default(),
            note: t.note.clone().unwrap_or_default(),
        }
    }
}

/// The rows of `tasks`, in their order.
pub fn rows(tasks: &[Task]) -> Vec<TaskRow> {
    tasks.iter().map(TaskRow::from).collect()
}
