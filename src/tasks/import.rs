//! Applying a task CSV the owner sent back: every valid row is applied, every bad row is
//! reported with its line and reason. Applying the same file twice changes nothing the
//! second time.

use super::csv_in::{self, BadRow};
use crate::store::tasks::Resolved;
use crate::store::{Store, StoreError};

#[derive(Debug, Default)]
pub struct Report {
    /// Tasks resolved by this import.
    pub applied: usize,
    /// Rows that said what the task already says.
    pub unchanged: usize,
    /// Rows left blank: the task stays open.
    pub left_open: usize,
    pub bad: Vec<BadRow>,
}

pub fn import(store: &Store, bytes: &[u8], now: i64) -> Result<Report, StoreError> {
    let (rows, bad) = csv_in::parse(bytes);
    let mut report = Report {
        bad,
        ..Default::default()
    };
    for row in rows {
        let Some(task) = store.task_brief(row.task)? else {
            report.bad.push(BadRow {
                line: row.line,
                reason: format!("unknown task T{}", row.task),
            });
            continue;
        };
        if let Some(source) = &row.source
            && source != &task.source
        {
            report.bad.push(BadRow {
                line: row.line,
                reason: format!(
                    "task T{} belongs to source `{}`, not `{source}`",
                    row.task, task.source
                ),
            });
            continue;
        }
        let Some(resolution) = row.resolution else {
            report.left_open += 1;
            continue;
        };
        // Who answered: the row says so, else the task's owner (whose file it is).
        let by = if row.resolved_by.is_empty() {
            task.owner.clone()
        } else {
            row.resolved_by.clone()
        };
        match store.resolve_task(row.task, resolution.as_str(), &by, &row.note, now) {
            Ok(Resolved::Applied { .. }) => report.applied += 1,
            Ok(Resolved::AlreadySo) => report.unchanged += 1,
            Err(StoreError::Conflict(m) | StoreError::NotFound(m)) => {
                report.bad.push(BadRow {
                    line: row.line,
                    reason: format!("{m}; the row says {}", resolution.as_str()),
                });
            }
            Err(e) => return Err(e),
        }
    }
    report.bad.sort_by_key(|b| b.line);
    Ok(report)
}
