//! The audit log and the auditors' questions on SQLite: events appended and read, holdings
//! and removals.

use super::Sqlite;
use crate::store::audit::{AccessQuery, AuditQuery, EventWindow, Holding, RemovalRow};
use crate::store::events::StoredEvent;
use crate::store::roles::{Audit, Fut, Stamp};
use crate::store::rules::events::Note;
use crate::store::{Result, StoreError};

use rusqlite::{Connection, params};
use serde_json::Value;

use crate::store::audit::*;

pub(crate) const HOLDINGS_SQLITE: &str = "SELECT a.id, a.identity_id, a.item_type, a.item_id, a.state, a.request_id,
        COALESCE(r.requester, r.origin, ''), a.created_at, a.active_at, a.remove_at, a.entitlements,
        (SELECT json_group_object(source, native_id) FROM accounts WHERE identity_id = a.identity_id AND native_id IS NOT NULL),
        (SELECT json_group_object(j.source, j.state) FROM request_items ri
            JOIN item_jobs ij ON ij.item_id = ri.id JOIN jobs j ON j.id = ij.job_id
            WHERE ri.assignment_id = a.id AND ri.request_id = a.request_id),
        (SELECT json_group_object(source, state) FROM (SELECT j.source, j.state FROM request_items ri
            JOIN item_jobs ij ON ij.item_id = ri.id JOIN jobs j ON j.id = ij.job_id
            WHERE a.state = 'revoking' AND ri.assignment_id = a.id AND ri.request_id <> a.request_id
            ORDER BY j.id)),
        (SELECT json_group_object(source, disabled) FROM accounts WHERE identity_id = a.identity_id AND native_id IS NOT NULL),
        (SELECT json_group_object(j.source, json_array(j.id, j.finalized_at)) FROM request_items ri
            JOIN item_jobs ij ON ij.item_id = ri.id JOIN jobs j ON j.id = ij.job_id
            WHERE ri.assignment_id = a.id AND ri.request_id = a.request_id AND j.state = 'succeeded'),
        (SELECT json_group_object(j.source, json((SELECT json_group_array(json(l.operations))
                FROM jobs l WHERE l.identity_id = j.identity_id AND l.source = j.source AND l.id > j.id AND l.state <> 'canceled')))
            FROM request_items ri JOIN item_jobs ij ON ij.item_id = ri.id JOIN jobs j ON j.id = ij.job_id
            WHERE a.state = 'revoking' AND ri.assignment_id = a.id AND ri.request_id <> a.request_id AND j.state = 'failed')
     FROM assignments a LEFT JOIN requests r ON r.id = a.request_id
     WHERE a.state IN ('pending','active','revoking','failed') AND (?1 IS NULL OR a.identity_id = ?1)
       AND (?2 IS NULL OR (a.identity_id, a.id) > ((SELECT identity_id FROM assignments WHERE id = ?2), ?2))
     ORDER BY a.identity_id, a.id LIMIT ?3";

impl Sqlite {
    pub fn holdings(&self, q: &AccessQuery) -> Result<Vec<Holding>> {
        self.with(|c| {
            let mut st = c.prepare_cached(HOLDINGS_SQLITE)?;
            let rows = st
                .query_map(params![q.identity, q.after, q.sql_limit()], |r| {
                    holding_from(r).map_err(super::cells::driver_error)
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
    }

    pub fn removals(&self, since: i64, until: i64, limit: usize) -> Result<Vec<RemovalRow>> {
        self.with(|c| {
            let mut st = c.prepare_cached(&removals_sql(sqlite_param))?;
            let rows = st
                .query_map(params![since, until, limit as i64], |r| {
                    Ok(RemovalRow {
                        assignment: r.get(0)?,
                        identity: r.get(1)?,
                        item_type: r.get(2)?,
                        item_id: r.get(3)?,
                        due_at: r.get(4)?,
                        fired_at: r.get(5)?,
                        grant_request: r.get(6)?,
                        revoke_request: r.get(7)?,
                        jobs: r.get(8)?,
                        jobs_ended: r.get(9)?,
                        jobs_failed: r.get(10)?,
                        done_at: r.get(11)?,
                        state: r.get(12)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
    }

    pub fn audit(&self, q: &AuditQuery) -> Result<Vec<StoredEvent>> {
        let (sql, params) = audit_sql(q, sqlite_param);
        let values: Vec<rusqlite::types::Value> = params
            .into_iter()
            .map(|p| match p {
                Param::Int(i) => rusqlite::types::Value::Integer(i),
                Param::Text(t) => rusqlite::types::Value::Text(t),
            })
            .collect();
        self.with(|c| {
            let mut st = c.prepare_cached(&sql)?;
            let rows = st
                .query_map(rusqlite::params_from_iter(values.iter()), stored)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
    }
}

// Appending and reading audit events on SQLite.
use crate::store::events::*;

pub fn append(conn: &Connection, at_ms: i64, e: &Event<'_>) -> Result<()> {
    let data = e.data_text();
    conn.prepare_cached(
        "INSERT INTO events (at, kind, request_id, job_id, source, identity_id, data, writer, actor) VALUES (?,?,?,?,?,?,?,?,?)",
    )?
    .execute(params![at_ms, e.kind, e.request_id, e.job_id, e.source, e.identity, data, writer(), actor(e)])?;
    Ok(())
}

impl Sqlite {
    /// The newest event's id (0 when there is none): where a follower starts.
    pub fn last_event_id(&self) -> Result<i64> {
        self.with(|c| Ok(c.query_row("SELECT COALESCE(MAX(id), 0) FROM events", [], |r| r.get(0))?))
    }

    /// Up to `limit` events with `after < id <= upto` that `writer` did not write, oldest
    /// first (what the running agent must log for other processes).
    pub fn events_between(&self, w: &EventWindow) -> Result<Vec<StoredEvent>> {
        self.with(|c| {
            let mut st = c.prepare_cached(
                "SELECT id, at, kind, request_id, job_id, source, identity_id, data, writer, actor
                 FROM events WHERE id > ?1 AND id <= ?2 AND (?3 IS NULL OR writer IS NULL OR writer <> ?3)
                 ORDER BY id LIMIT ?4",
            )?;
            let rows = st
                .query_map(params![w.after, w.upto, w.not_by, w.limit.min(i64::MAX as usize) as i64], stored)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
    }
}

/// An event read back; columns: id, at, kind, request_id, job_id, source, identity_id,
/// data, writer, actor.
pub(crate) fn stored(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredEvent> {
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

impl Audit for Sqlite {
    fn holdings(&self, q: AccessQuery) -> Fut<Vec<Holding>> {
        blocking!(self, |s| s.holdings(&q))
    }
    fn removals(&self, since: i64, until: i64, limit: usize) -> Fut<Vec<RemovalRow>> {
        blocking!(self, |s| s.removals(since, until, limit))
    }
    fn audit(&self, q: AuditQuery) -> Fut<Vec<StoredEvent>> {
        blocking!(self, |s| s.audit(&q))
    }
    fn last_event_id(&self) -> Fut<i64> {
        blocking!(self, |s| s.last_event_id())
    }
    fn note(&self, note: Note, by: Stamp) -> Fut<i64> {
        blocking!(self, |s| s.with(|c| {
            append(
                c,
                by.now,
                &crate::store::rules::events::note(&note, &by.actor),
            )?;
            Ok(c.last_insert_rowid())
        }))
    }
    fn events_between(&self, window: EventWindow) -> Fut<Vec<StoredEvent>> {
        blocking!(self, |s| s.events_between(&window))
    }
}
