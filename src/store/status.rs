//! What the status of access requests is made of: one row per (request, identity, item)
//! with the jobs that carry it. Shaping it like the upstream's `/access-request-status`
//! items is `crate::wire`'s.

use rusqlite::{Connection, params};

use super::jobs::{AttemptError, JobState};
use super::sqlite::Sqlite;
use super::{Result, StoreError};

/// Which status items to list.
#[derive(Debug, Clone, Default)]
pub struct StatusQuery {
    pub request_id: Option<String>,
    pub requested_for: Option<String>,
    pub limit: usize,
    pub offset: usize,
}

/// One (request, identity, item) as stored.
#[derive(Debug, Clone)]
pub struct StatusRow {
    /// The catalog item's id.
    pub item_id: String,
    pub request_id: String,
    pub identity: String,
    pub item_type: String,
    pub name: String,
    /// `new`, or `existing` (a duplicate of an item already held or pending).
    pub disposition: String,
    pub request_type: String,
    pub received_at: i64,
    pub canceled_at: Option<i64>,
    /// The assignment's state (for duplicates, what the item's state is).
    pub assignment_state: Option<String>,
    pub remove_at: Option<i64>,
    /// The item's `clientMetadata`, as JSON text.
    pub client_metadata: String,
    /// Who asked (the request's requester; its origin for requests older than that).
    pub requester: String,
    /// The comment the requester gave the item.
    pub comment: Option<String>,
    /// The request that granted the access this item concerns, when another one did (a
    /// revoke's grant, or what a duplicate found).
    pub grant_request: Option<String>,
    pub jobs: Vec<StatusJob>,
}

/// A job that carries an item.
#[derive(Debug, Clone)]
pub struct StatusJob {
    pub id: i64,
    pub state: Option<JobState>,
    /// The last attempt's error (for failed and retrying jobs).
    pub last_error: Option<String>,
    pub updated_at: i64,
    /// Open manual tasks: (owner, created_at).
    pub open_tasks: Vec<(String, i64)>,
}

fn items(c: &Connection, q: &StatusQuery) -> Result<Vec<StatusRow>> {
    let mut stmt = c.prepare(
        "SELECT ri.id, ri.request_id, ri.identity_id, ri.item_type, ri.item_id, ri.name, ri.disposition, ri.assignment_id,
                ri.client_metadata, r.request_type, r.received_at, r.canceled_at, a.state, a.remove_at,
                COALESCE(r.requester, r.origin), ri.comment,
                CASE WHEN a.request_id <> ri.request_id THEN a.request_id END
         FROM request_items ri JOIN requests r ON r.id = ri.request_id
         LEFT JOIN assignments a ON a.id = ri.assignment_id
         WHERE (?1 IS NULL OR ri.request_id = ?1) AND (?2 IS NULL OR ri.identity_id = ?2)
         ORDER BY r.seq DESC, ri.id LIMIT ?3 OFFSET ?4",
    )?;
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
                ))
            },
        )?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut jobs_of = c.prepare_cached(
        "SELECT j.id, j.state, j.errors, j.updated_at, j.source FROM jobs j JOIN item_jobs ij ON ij.job_id = j.id
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
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let mut carried = Vec::with_capacity(jobs.len());
        for (job_id, st, errs, updated, _source) in jobs {
            let state = JobState::parse(&st);
            let last_error = if matches!(state, Some(JobState::Failed) | Some(JobState::Retrying)) {
                let errs: Vec<AttemptError> =
                    serde_json::from_str(&errs).map_err(|e| StoreError::Corrupt(e.to_string()))?;
                errs.last().map(|e| e.message.clone())
            } else {
                None
            };
            let open_tasks = if state == Some(JobState::Manual) {
                tasks_of
                    .query_map([job_id], |r| {
                        Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
                    })?
                    .collect::<rusqlite::Result<Vec<_>>>()?
            } else {
                Vec::new()
            };
            carried.push(StatusJob {
                id: job_id,
                state,
                last_error,
                updated_at: updated,
                open_tasks,
            });
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
