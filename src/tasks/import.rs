//! Applying a task CSV the owner sent back: every valid row is applied, every bad row is
//! reported with its line and reason. Applying the same file twice changes nothing the
//! second time.
//!
//! A file is one owner's answer for one source. One without a `source` column says
//! nothing of which source it answers for, so it may only close tasks of a single source
//! (or of the one `--source` names): a file that mixes sources is refused whole, since a
//! mistyped task id would otherwise close another owner's task.

use std::collections::BTreeSet;

use super::csv_in::{self, BadRow, Row};
use crate::store::tasks::{Resolved, TaskAnswer};
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
    /// Jobs whose state the import changed: (job id, new state).
    pub jobs: Vec<(i64, String)>,
    /// The encoding the file was read as (see `decode`).
    pub encoding: String,
}

pub async fn import(
    store: &Store,
    bytes: &[u8],
    now: i64,
    only_source: Option<&str>,
) -> Result<Report, StoreError> {
    // A workbook's sheets name their sources; a CSV is decoded first.
    let (rows, bad, has_source, encoding) = if super::xlsx_in::is_xlsx(bytes) {
        let (rows, bad) = super::xlsx_in::parse(bytes);
        (rows, bad, true, "xlsx workbook".to_string())
    } else {
        let decoded = super::decode::decode(bytes);
        let (rows, bad) = csv_in::parse(&decoded.text);
        let has_source = csv_in::header_has(&decoded.text, "source");
        (rows, bad, has_source, decoded.encoding)
    };
    let mut report = Report {
        bad,
        encoding,
        ..Default::default()
    };
    let mut checked: Vec<(Row, String)> = Vec::with_capacity(rows.len());
    let mut sources = BTreeSet::new();
    for row in rows {
        let Some(task) = store.task_brief(row.task).await? else {
            report.bad.push(BadRow::at(
                row.line,
                row.task_cell.clone(),
                format!("unknown task T{}", row.task),
            ));
            continue;
        };
        let claimed = row.source.as_deref().or(only_source);
        if let Some(source) = claimed
            && source != task.source
        {
            report.bad.push(BadRow::at(
                row.line,
                row.task_cell.clone(),
                format!(
                    "task T{} belongs to source `{}`, not `{source}`",
                    row.task, task.source
                ),
            ));
            continue;
        }
        sources.insert(task.source.clone());
        checked.push((row, task.owner));
    }
    if !has_source && only_source.is_none() && sources.len() > 1 {
        let names: Vec<&str> = sources.iter().map(String::as_str).collect();
        report.bad.push(BadRow::new(
            1,
            format!(
                "the file has no `source` column and its rows name tasks of {} sources ({}); nothing was applied: add the source column or give --source",
                names.len(),
                names.join(", ")
            ),
        ));
        report.bad.sort_by_key(|b| b.line);
        return Ok(report);
    }
    let mut answers = Vec::new();
    let mut lines = Vec::new();
    for (row, owner) in checked {
        let Some(resolution) = row.resolution else {
            report.left_open += 1;
            continue;
        };
        // Who answered: the row says so, else the task's owner (whose file it is).
        let by = if row.resolved_by.is_empty() {
            owner
        } else {
            row.resolved_by.clone()
        };
        lines.push((row.line, row.task, resolution));
        answers.push(TaskAnswer {
            task: row.task,
            resolution: resolution.as_str().to_string(),
            resolved_by: by,
            note: row.note,
        });
    }
    let results = store.resolve_tasks(answers, now).await?;
    for ((line, _task, resolution), result) in lines.into_iter().zip(results) {
        match result {
            Ok(Resolved::Applied { job, job_state }) => {
                report.applied += 1;
                if job_state != "manual" {
                    report.jobs.push((job, job_state));
                }
            }
            Ok(Resolved::AlreadySo) => report.unchanged += 1,
            Err(StoreError::Conflict(m) | StoreError::NotFound(m)) => {
                report.bad.push(BadRow::new(
                    line,
                    format!("{m}; the row says {}", resolution.as_str()),
                ));
            }
            Err(e) => return Err(e),
        }
    }
    report.bad.sort_by_key(|b| b.line);
    Ok(report)
}
