//! What the status surfaces read back of requests, on SQLite.

use super::Sqlite;
use crate::model::Snapshot;
use crate::store::accept::{Accepted, Replay};
use crate::store::roles::{Accept, Fut, Requests};
use crate::store::status::{StatusQuery, StatusRow};
use crate::store::{Result, StoreError};

use crate::store::status::*;
use rusqlite::{Connection, params};

fn items(c: &Connection, q: &StatusQuery) -> Result<Vec<StatusRow>> {
    let mut stmt = c.prepare(&format!(
        "SELECT ri.id, ri.request_id, ri.identity_id, ri.item_type, ri.item_id, ri.name, ri.disposition, ri.assignment_id,
                ri.client_metadata, r.request_type, r.received_at, r.canceled_at, a.state, a.remove_at,
                COALESCE(r.requester, r.origin), ri.comment,
                CASE WHEN a.request_id <> ri.request_id THEN a.request_id END, {CANCEL_COLUMNS}
         FROM request_items ri JOIN requests r ON r.id = ri.request_id
         LEFT JOIN assignments a ON a.id = ri.assignment_id
         WHERE (?1 IS NULL OR ri.request_id = ?1) AND (?2 IS NULL OR ri.identity_id = ?2)
         ORDER BY r.seq DESC, ri.id LIMIT ?3 OFFSET ?4"
    ))?;
    type RowT = (
        i64,
        String,
        String,
        String,
        String,
        String,
        String,
        Option<i64>,
        String,
        String,
        i64,
        Option<i64>,
        Option<String>,
        Option<i64>,
        (String, Option<String>, Option<String>),
        (Option<String>, Option<String>, bool),
    );
    let rows: Vec<RowT> = stmt
        .query_map(
            params![
                q.request_id,
                q.requested_for,
                q.limit as i64,
                q.offset as i64
            ],
            |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                    r.get(7)?,
                    r.get(8)?,
                    r.get(9)?,
                    r.get(10)?,
                    r.get(11)?,
                    r.get(12)?,
                    r.get(13)?,
                    (r.get(14)?, r.get(15)?, r.get(16)?),
                    (r.get(17)?, r.get(18)?, r.get(19)?),
                ))
            },
        )?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut jobs_of = c.prepare_cached(
        "SELECT j.id, j.state, j.errors, j.updated_at, j.source,
            COALESCE((SELECT ac.disabled FROM accounts ac WHERE ac.identity_id = j.identity_id AND ac.source = j.source), 0)
         FROM jobs j JOIN item_jobs ij ON ij.job_id = j.id
         WHERE ij.item_id = ? ORDER BY j.id",
    )?;
    let mut tasks_of = c.prepare_cached(
        "SELECT owner, created_at FROM tasks WHERE job_id = ? AND status = 'open' ORDER BY id",
    )?;
    let mut out = Vec::with_capacity(rows.len());
    for (
        item,
        request_id,
        identity,
        ty,
        item_id,
        name,
        disposition,
        _assignment,
        meta,
        req_type,
        received,
        canceled,
        a_state,
        remove_at,
        (requester, comment, grant_request),
        (cancel_comment, canceled_by, cancelable),
    ) in rows
    {
        let jobs = jobs_of
            .query_map([item], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, i64>(5)?,
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let mut carried = Vec::with_capacity(jobs.len());
        for (job_id, st, errs, updated, source, disabled) in jobs {
            let mut job = StatusJob::from_row(job_id, &st, &errs, updated, source, disabled != 0)?;
            if job.waits_on_tasks() {
                job.open_tasks = tasks_of
                    .query_map([job_id], |r| {
                        Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
                    })?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
            }
            carried.push(job);
        }
        out.push(StatusRow {
            item_id,
            request_id,
            identity,
            item_type: ty,
            name,
            disposition,
            request_type: req_type,
            received_at: received,
            canceled_at: canceled,
            cancel: cancel_of(canceled, cancel_comment, canceled_by),
            cancelable,
            assignment_state: a_state,
            remove_at,
            client_metadata: meta,
            requester,
            comment,
            grant_request,
            jobs: carried,
        });
    }
    Ok(out)
}

impl Sqlite {
    pub fn status(&self, q: &StatusQuery) -> Result<Vec<StatusRow>> {
        self.with(|c| items(c, q))
    }

    /// Where a request came from (`api`, `cli`, `spool`, `upstream:NAME`, `schedule`).
    pub fn request_origin(&self, id: &str) -> Result<Option<String>> {
        use rusqlite::OptionalExtension;
        self.with(|c| {
            Ok(
                c.query_row("SELECT origin FROM requests WHERE id = ?", [id], |r| {
                    r.get(0)
                })
                .optional()?,
            )
        })
    }

    pub fn request_exists(&self, id: &str) -> Result<bool> {
        self.with(|c| {
            Ok(
                c.query_row("SELECT COUNT(*) FROM requests WHERE id = ?", [id], |r| {
                    r.get::<_, i64>(0)
                })? > 0,
            )
        })
    }
}

impl Requests for Sqlite {
    fn by_idempotency_key(&self, key: String) -> Fut<Option<Accepted>> {
        blocking!(self, |s| s.by_idempotency_key(&key))
    }
    fn accept_all(&self, batch: Vec<Accept>) -> Fut<Vec<Result<Replay>>> {
        blocking!(self, |s| s.accept_all(&batch))
    }
    fn snapshot(&self, identities: Vec<String>) -> Fut<Snapshot> {
        blocking!(self, |s| s.snapshot(&identities))
    }
    fn status(&self, q: StatusQuery) -> Fut<Vec<StatusRow>> {
        blocking!(self, |s| s.status(&q))
    }
    fn request_origin(&self, id: String) -> Fut<Option<String>> {
        blocking!(self, |s| s.request_origin(&id))
    }
    fn request_exists(&self, id: String) -> Fut<bool> {
        blocking!(self, |s| s.request_exists(&id))
    }
}
