//! The audit trail: every state change and every connector call, appended, never changed.

use std::sync::LazyLock;

use rusqlite::{Connection, params};
use serde_json::Value;

use super::{Result, sqlite::Sqlite};

/// This process, as recorded in every event it writes: `HOST:PID`.
static WRITER: LazyLock<String> =
    LazyLock::new(|| format!("{}:{}", hostname(), std::process::id()));

/// The name events written by this process carry.
pub fn writer() -> &'static str {
    &WRITER
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it
    // or truncates.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "localhost".into();
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// One audit event.
#[derive(Debug, Clone, Default)]
pub struct Event<'a> {
    pub kind: &'a str,
    pub request_id: Option<&'a str>,
    pub job_id: Option<i64>,
    pub source: Option<&'a str>,
    pub identity: Option<&'a str>,
    pub data: Value,
    /// Who did it (DESIGN §14): a requester's name, `cli:USER`, `agent:NAME`, a task's
    /// owner, `schedule`, `upstream:NAME`.
    pub actor: &'a str,
}

impl<'a> Event<'a> {
    /// An event about `job` (its request, source and identity filled in).
    pub fn of_job(kind: &'a str, job: &'a super::Job, actor: &'a str, data: Value) -> Self {
        Event {
            kind,
            request_id: Some(&job.request_id),
            job_id: Some(job.id),
            source: Some(&job.source),
            identity: Some(&job.identity_id),
            data,
            actor,
        }
    }

    /// A request stored: the first event of every accept, on either store.
    pub fn request_accepted(
        request_id: &'a str,
        from: &'a crate::model::Requester,
        request_type: &str,
        jobs: usize,
    ) -> Self {
        Event {
            kind: "request_accepted",
            request_id: Some(request_id),
            data: serde_json::json!({ "origin": from.origin, "requestType": request_type, "jobs": jobs }),
            actor: &from.name,
            ..Default::default()
        }
    }

    /// A job queued by an accept, stored under `job_id`.
    pub fn job_queued(
        request_id: &'a str,
        job_id: i64,
        job: &'a crate::model::PlannedJob,
        actor: &'a str,
    ) -> Self {
        Event {
            kind: "job_queued",
            request_id: Some(request_id),
            job_id: Some(job_id),
            source: Some(&job.source),
            identity: Some(&job.identity),
            data: serde_json::json!({ "kind": job.kind.as_str(), "operations": job.ops, "notBefore": job.not_before.map(|t| t.to_string()) }),
            actor,
        }
    }

    /// An assignment's removeDate set (or cleared: None), in ms.
    pub fn remove_date_set(
        request_id: &'a str,
        identity: &'a str,
        assignment: i64,
        remove_at: Option<i64>,
        actor: &'a str,
    ) -> Self {
        Event {
            kind: "remove_date_set",
            request_id: Some(request_id),
            identity: Some(identity),
            data: serde_json::json!({ "assignment": assignment, "removeDate": remove_at.map(crate::clock::rfc3339_ms) }),
            actor,
            ..Default::default()
        }
    }

    /// The data column's text: an event without data stores `{}`.
    pub fn data_text(&self) -> String {
        if self.data.is_null() {
            "{}".to_string()
        } else {
            self.data.to_string()
        }
    }
}

pub fn append(conn: &Connection, at_ms: i64, e: &Event<'_>) -> Result<()> {
    let data = e.data_text();
    conn.prepare_cached(
        "INSERT INTO events (at, kind, request_id, job_id, source, identity_id, data, writer, actor) VALUES (?,?,?,?,?,?,?,?,?)",
    )?
    .execute(params![at_ms, e.kind, e.request_id, e.job_id, e.source, e.identity, data, writer(), actor(e)])?;
    Ok(())
}

/// The actor column: None when a writer left it empty (older rows have none either).
pub fn actor<'a>(e: &Event<'a>) -> Option<&'a str> {
    (!e.actor.is_empty()).then_some(e.actor)
}

/// An event as stored, for whoever follows the trail.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub id: i64,
    pub at: i64,
    pub kind: String,
    pub request_id: Option<String>,
    pub job_id: Option<i64>,
    pub source: Option<String>,
    pub identity: Option<String>,
    pub data: Value,
    /// The process that wrote it (`HOST:PID`); None for events older than the column.
    pub writer: Option<String>,
    /// Who did it; None for events older than the column.
    pub actor: Option<String>,
}

impl Sqlite {
    /// The newest event's id (0 when there is none): where a follower starts.
    pub fn last_event_id(&self) -> Result<i64> {
        self.with(|c| Ok(c.query_row("SELECT COALESCE(MAX(id), 0) FROM events", [], |r| r.get(0))?))
    }

    /// Up to `limit` events after `after`, oldest first.
    pub fn events_after(&self, after: i64, limit: usize) -> Result<Vec<StoredEvent>> {
        self.events_between(after, i64::MAX, None, limit)
    }

    /// Up to `limit` events with `after < id <= upto` that `writer` did not write, oldest
    /// first (what the running agent must log for other processes).
    pub fn events_between(
        &self,
        after: i64,
        upto: i64,
        not_by: Option<&str>,
        limit: usize,
    ) -> Result<Vec<StoredEvent>> {
        self.with(|c| {
            let mut st = c.prepare_cached(
                "SELECT id, at, kind, request_id, job_id, source, identity_id, data, writer, actor
                 FROM events WHERE id > ?1 AND id <= ?2 AND (?3 IS NULL OR writer IS NULL OR writer <> ?3)
                 ORDER BY id LIMIT ?4",
            )?;
            let rows = st
                .query_map(params![after, upto, not_by, limit as i64], stored)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
    }
}

/// An event read back; columns: id, at, kind, request_id, job_id, source, identity_id,
/// data, writer, actor.
pub(super) fn stored(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredEvent> {
    let data: String = r.get(7)?;
    Ok(StoredEvent {
        id: r.get(0)?,
        at: r.get(1)?,
        kind: r.get(2)?,
        request_id: r.get(3)?,
        job_id: r.get(4)?,
        source: r.get(5)?,
        identity: r.get(6)?,
        data: serde_json::from_str(&data).unwrap_or(Value::Null),
        writer: r.get(8)?,
        actor: r.get(9)?,
    })
}
