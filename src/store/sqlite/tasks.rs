//! Manual tasks on SQLite: opening, reading and answering them, and mail marks. The
//! rules of an answer are `store::rules::manual`.

use super::Sqlite;
use crate::store::jobs::JobState;
use crate::store::mail::MailMark;
use crate::store::roles::{Fut, OpenTasks, Tasks};
use crate::store::tasks::{
    OPEN_TASK_CONFLICT, Overdue, Resolved, Task, TaskAnswer, TaskBrief, TaskFilter,
};
use crate::store::{Result, StoreError};

use crate::store::rules::manual::{self, TaskRow};
use crate::store::rules::operator::guarded;
use crate::store::rules::states::{TaskStatus, parse_stored};
use rusqlite::{Connection, OptionalExtension, Row, params};

/// The columns a task is read with, with what the owner should know of its request.
pub(crate) const TASK_COLUMNS_SQLITE: &str = "id, source, owner, identity_id, identity_name, operation, account, attribute, value, request_id,
    created_at, due_at, status, resolution, resolved_by, note,
    (SELECT COALESCE(r.requester, r.origin) FROM requests r WHERE r.id = tasks.request_id),
    (SELECT json_extract(ri.client_metadata, '$.ticket') FROM item_jobs ij JOIN request_items ri ON ri.id = ij.item_id
      WHERE ij.job_id = tasks.job_id AND json_extract(ri.client_metadata, '$.ticket') IS NOT NULL LIMIT 1),
    (SELECT a.remove_at FROM item_jobs ij JOIN request_items ri ON ri.id = ij.item_id JOIN assignments a ON a.id = ri.assignment_id
      WHERE ij.job_id = tasks.job_id AND a.remove_at IS NOT NULL LIMIT 1),
    resolved_at, verified_at";

fn row(r: &Row<'_>) -> rusqlite::Result<Task> {
    Ok(Task {
        id: r.get(0)?,
        source: r.get(1)?,
        owner: r.get(2)?,
        identity_id: r.get(3)?,
        identity_name: r.get(4)?,
        operation: r.get(5)?,
        account: r.get(6)?,
        attribute: r.get(7)?,
        value: r.get(8)?,
        request_id: r.get(9)?,
        created_at: r.get(10)?,
        due_at: r.get(11)?,
        status: r.get(12)?,
        resolution: r.get(13)?,
        resolved_by: r.get(14)?,
        note: r.get(15)?,
        requester: r.get(16)?,
        ticket: r.get(17)?,
        remove_at: r.get(18)?,
        resolved_at: r.get(19)?,
        verified_at: r.get(20)?,
    })
}

impl Sqlite {
    /// Moves claimed jobs of a manual source to `manual`, opening one task per operation,
    /// in one transaction, each job in a savepoint of its own. Re-running it after a crash
    /// opens no second task for the same operation.
    pub fn open_tasks_all(&self, batch: &[OpenTasks]) -> Result<Vec<Result<()>>> {
        self.with_redoable(|c| crate::store::sqlite::each_in_savepoint(c, batch, open_in))
    }
}

fn open_in(tx: &Connection, o: &OpenTasks) -> Result<()> {
    let (job, owner, tasks, now) = (&o.job, &o.owner, &o.tasks, o.now);
    let n = tx
        .prepare_cached(
            "UPDATE jobs SET state = 'manual', lease_owner = NULL, lease_expires_at = NULL, updated_at = ?
             WHERE id = ? AND state = 'running' AND lease_owner = ?",
        )?
        .execute(params![now, job.id, owner])?;
    if n == 0 {
        return Err(StoreError::Conflict(format!(
            "job {} is no longer leased to this agent",
            job.id
        )));
    }
    let mut opened = Vec::new();
    for t in tasks {
        let id: Option<i64> = tx
            .prepare_cached(&format!(
                "INSERT INTO tasks (job_id, op_index, source, owner, identity_id, identity_name, operation,
                    account, attribute, value, request_id, created_at, due_at, status, renamed_to)
                 VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,'open',?) {OPEN_TASK_CONFLICT}"
            ))?
            .query_row(params![
                job.id,
                t.op_index as i64,
                job.source,
                t.owner,
                job.identity_id,
                t.identity_name,
                t.operation,
                t.account,
                t.attribute,
                t.value,
                job.request_id,
                now,
                t.due_at,
                t.renamed_to
            ], |r| r.get(0))
            .optional()?;
        opened.extend(id);
    }
    let actor = crate::model::agent_actor(owner);
    let owner = tasks.first().map(|t| t.owner.as_str());
    super::audit::append(tx, now, &manual::tasks_opened(job, &opened, owner, &actor))?;
    Ok(())
}

impl Sqlite {
    /// Tasks, oldest first.
    pub fn tasks(&self, f: &TaskFilter) -> Result<Vec<Task>> {
        self.with(|c| {
            Ok(c.prepare(
                &format!("SELECT {TASK_COLUMNS_SQLITE}
                 FROM tasks WHERE (?1 IS NULL OR source = ?1) AND (?2 IS NULL OR owner = ?2) AND (?3 = 0 OR status = 'open')
                   AND (?4 IS NULL OR id = ?4)
                   AND (?5 IS NULL OR (status = 'done' AND verified_at IS NULL AND resolved_at <= ?5))
                 ORDER BY created_at, id"),
            )?
            .query_map(params![f.source, f.owner, f.open_only as i64, f.id, f.unverified_before], row)?
            .collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    /// Open tasks of a job, for status `manualWorkItemDetails`.
    pub fn open_task_count(&self) -> Result<i64> {
        self.with(|c| {
            Ok(c.query_row(
                "SELECT COUNT(*) FROM tasks WHERE status = 'open'",
                [],
                |r| r.get(0),
            )?)
        })
    }
}

impl Sqlite {
    /// Records the owner's answer for one task (`DONE` or `FAILED`). When every task of
    /// the job is done the job succeeds; a failed task fails the job with the owner's
    /// note as its error. Resolving the same way twice changes nothing; a different
    /// answer for a closed task is refused.
    pub fn resolve_task(
        &self,
        task: i64,
        resolution: &str,
        resolved_by: &str,
        note: &str,
        now: i64,
    ) -> Result<Resolved> {
        self.with(|c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let r = resolve_in(&tx, task, resolution, resolved_by, note, now)?;
            tx.commit()?;
            Ok(r)
        })
    }

    /// Resolves many tasks (one import), a thousand to a transaction: a row that cannot be
    /// applied (unknown task, already resolved otherwise) is answered in its place and
    /// the others go on.
    pub fn resolve_tasks(&self, rows: &[TaskAnswer], now: i64) -> Result<Vec<Result<Resolved>>> {
        let mut out = Vec::with_capacity(rows.len());
        for chunk in rows.chunks(1000) {
            self.with(|c| {
                let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                for r in chunk {
                    match resolve_in(&tx, r.task, &r.resolution, &r.resolved_by, &r.note, now) {
                        Ok(done) => out.push(Ok(done)),
                        Err(e @ (StoreError::Conflict(_) | StoreError::NotFound(_))) => {
                            out.push(Err(e))
                        }
                        Err(e) => return Err(e),
                    }
                }
                tx.commit()?;
                Ok(())
            })?;
        }
        Ok(out)
    }
}

pub(crate) fn resolve_in(
    tx: &rusqlite::Transaction<'_>,
    task: i64,
    resolution: &str,
    resolved_by: &str,
    note: &str,
    now: i64,
) -> Result<Resolved> {
    manual::task_status(resolution)?;
    let row: Option<(String, TaskRow)> = tx
        .prepare_cached(
            "SELECT status, job_id, request_id, source, identity_id FROM tasks WHERE id = ?",
        )?
        .query_row([task], |r| {
            let row = TaskRow {
                status: TaskStatus::Open,
                job_id: r.get(1)?,
                request_id: r.get(2)?,
                source: r.get(3)?,
                identity: r.get(4)?,
            };
            Ok((r.get(0)?, row))
        })
        .optional()?;
    let row = row
        .map(|(status, row)| {
            let status = parse_stored(&status, format_args!("T{task}"))?;
            Ok::<_, StoreError>(TaskRow { status, ..row })
        })
        .transpose()?;
    let (status, data) = match manual::answer(task, row.as_ref(), resolution, resolved_by, note)? {
        manual::Answer::AlreadySo => return Ok(Resolved::AlreadySo),
        manual::Answer::Close { status, data } => (status, data),
    };
    let Some(row) = row else {
        return Err(StoreError::NotFound(format!("no task T{task}")));
    };
    let n = tx
        .prepare_cached(
            "UPDATE tasks SET status = ?, resolution = ?, resolved_by = ?, note = ?, resolved_at = ? WHERE id = ? AND status = 'open'",
        )?
        .execute(params![status.as_str(), resolution, resolved_by, note, now, task])?;
    guarded(n as u64, || manual::answer_raced(task))?;
    let event = manual::task_resolved(&row, data, resolved_by);
    super::audit::append(tx, now, &event)?;
    let job_id = row.job_id;
    let open: i64 = tx.query_row(
        "SELECT COUNT(*) FROM tasks WHERE job_id = ? AND status = 'open'",
        [job_id],
        |r| r.get(0),
    )?;
    let job_state = match manual::job_after_answer(task, status, open, resolved_by, note, now) {
        Some(v) => super::settle::finish_manual(tx, job_id, v, now, resolved_by)?,
        None => JobState::Manual,
    };
    Ok(Resolved::Applied {
        job: job_id,
        job_state,
    })
}

impl Sqlite {
    pub fn task_brief(&self, task: i64) -> Result<Option<TaskBrief>> {
        self.with(|c| {
            Ok(
                c.prepare_cached("SELECT source, owner FROM tasks WHERE id = ?")?
                    .query_row([task], |r| {
                        Ok(TaskBrief {
                            source: r.get(0)?,
                            owner: r.get(1)?,
                        })
                    })
                    .optional()?,
            )
        })
    }

    /// Open tasks of `source` created at or before `older_than`, counted per owner.
    pub fn overdue_tasks(&self, source: &str, older_than: i64) -> Result<Vec<Overdue>> {
        self.with(|c| {
            Ok(c.prepare_cached(
                "SELECT owner, COUNT(*), MIN(created_at), group_concat(id) FROM
                   (SELECT owner, created_at, id FROM tasks WHERE status = 'open' AND source = ? AND created_at <= ? ORDER BY created_at, id)
                 GROUP BY owner ORDER BY owner",
            )?
            .query_map(params![source, older_than], |r| {
                let ids: String = r.get(3)?;
                Ok(Overdue { source: source.to_string(), owner: r.get(0)?, count: r.get(1)?, oldest_created: r.get(2)?,
                    tasks: ids.split(',').filter_map(|i| i.parse().ok()).collect() })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }
}

// What each owner was last mailed, on SQLite.

impl Sqlite {
    pub fn mail_marks(&self) -> Result<Vec<MailMark>> {
        self.with(|c| {
            Ok(c.prepare_cached(
                "SELECT owner, announced_through, announced_at, digest_on FROM mail_state ORDER BY owner",
            )?
            .query_map([], |r| {
                Ok(MailMark {
                    owner: r.get(0)?,
                    announced_through: r.get(1)?,
                    announced_at: r.get(2)?,
                    digest_on: r.get(3)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    pub fn set_mail_mark(&self, m: &MailMark, now: i64) -> Result<()> {
        self.with(|c| {
            c.prepare_cached(
                "INSERT INTO mail_state (owner, announced_through, announced_at, digest_on, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(owner) DO UPDATE SET announced_through = ?2, announced_at = ?3, digest_on = ?4, updated_at = ?5",
            )?
            .execute(params![m.owner, m.announced_through, m.announced_at, m.digest_on, now])?;
            Ok(())
        })
    }
}

impl Tasks for Sqlite {
    fn open_tasks_all(&self, batch: Vec<OpenTasks>) -> Fut<Vec<Result<()>>> {
        blocking!(self, |s| s.open_tasks_all(&batch))
    }
    fn tasks(&self, filter: TaskFilter) -> Fut<Vec<Task>> {
        blocking!(self, |s| s.tasks(&filter))
    }
    fn open_task_count(&self) -> Fut<i64> {
        blocking!(self, |s| s.open_task_count())
    }
    fn resolve_tasks(&self, rows: Vec<TaskAnswer>, now: i64) -> Fut<Vec<Result<Resolved>>> {
        blocking!(self, |s| s.resolve_tasks(&rows, now))
    }
    fn task_brief(&self, task: i64) -> Fut<Option<TaskBrief>> {
        blocking!(self, |s| s.task_brief(task))
    }
    fn overdue_tasks(&self, source: String, older_than: i64) -> Fut<Vec<Overdue>> {
        blocking!(self, |s| s.overdue_tasks(&source, older_than))
    }
    fn mail_marks(&self) -> Fut<Vec<MailMark>> {
        blocking!(self, |s| s.mail_marks())
    }
    fn set_mail_mark(&self, mark: MailMark, now: i64) -> Fut<()> {
        blocking!(self, |s| s.set_mail_mark(&mark, now))
    }
}
