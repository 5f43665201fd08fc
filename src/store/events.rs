//! The audit trail: every state change and every connector call, appended, never changed.

use rusqlite::{Connection, params};
use serde_json::Value;

use super::Result;

/// One audit event.
#[derive(Debug, Clone, Default)]
pub struct Event<'a> {
    pub kind: &'a str,
    pub request_id: Option<&'a str>,
    pub job_id: Option<i64>,
    pub source: Option<&'a str>,
    pub identity: Option<&'a str>,
    pub data: Value,
}

pub fn append(conn: &Connection, at_ms: i64, e: &Event<'_>) -> Result<()> {
    let data = if e.data.is_null() {
        "{}".to_string()
    } else {
        e.data.to_string()
    };
    conn.prepare_cached(
        "INSERT INTO events (at, kind, request_id, job_id, source, identity_id, data) VALUES (?,?,?,?,?,?,?)",
    )?
    .execute(params![at_ms, e.kind, e.request_id, e.job_id, e.source, e.identity, data])?;
    Ok(())
}

/// Events of a job, oldest first, for `provd jobs show`.
pub fn for_job(conn: &Connection, job_id: i64) -> Result<Vec<(i64, String, String)>> {
    let mut stmt =
        conn.prepare("SELECT at, kind, data FROM events WHERE job_id = ? ORDER BY id")?;
    let rows = stmt
        .query_map([job_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}
