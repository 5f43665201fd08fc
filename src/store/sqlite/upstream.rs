//! Upstream bookkeeping on SQLite: cursors, health, pulled requests, write-backs.

use super::Sqlite;
use crate::store::roles::{Fut, JobOutcome, Upstream};
use crate::store::upstream::{Health, Outcome, Pulled, Unwritten};
use crate::store::{Result, StoreError};

use crate::store::rules::events as rules;
use rusqlite::{OptionalExtension, params};

impl Sqlite {
    pub fn upstream_cursor(&self, name: &str) -> Result<Option<String>> {
        self.with(|c| {
            Ok(
                c.prepare_cached("SELECT cursor FROM upstream_state WHERE name = ?")?
                    .query_row([name], |r| r.get::<_, Option<String>>(0))
                    .optional()?
                    .flatten(),
            )
        })
    }

    pub fn set_upstream_cursor(&self, name: &str, cursor: &str, now: i64) -> Result<()> {
        self.with(|c| {
            c.prepare_cached(
                "INSERT INTO upstream_state (name, cursor, updated_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT(name) DO UPDATE SET cursor = ?2, updated_at = ?3",
            )?
            .execute(params![name, cursor, now])?;
            Ok(())
        })
    }

    pub fn set_upstream_health(&self, name: &str, error: Option<&str>, now: i64) -> Result<()> {
        self.with(|c| {
            c.prepare_cached(
                "INSERT INTO upstream_state (name, healthy, last_error, last_poll_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?4)
                 ON CONFLICT(name) DO UPDATE SET healthy = ?2, last_error = ?3, last_poll_at = ?4, updated_at = ?4",
            )?
            .execute(params![name, error.is_none(), error, now])?;
            Ok(())
        })
    }

    pub fn upstream_health(&self) -> Result<Vec<Health>> {
        self.with(|c| {
            Ok(c.prepare_cached(
                "SELECT name, healthy, last_error, last_poll_at FROM upstream_state ORDER BY name",
            )?
            .query_map([], |r| {
                Ok(Health {
                    name: r.get(0)?,
                    healthy: r.get(1)?,
                    last_error: r.get(2)?,
                    last_poll_at: r.get(3)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    pub fn upstream_seen(&self, name: &str, id: &str) -> Result<bool> {
        self.with(|c| {
            Ok(c.prepare_cached(
                "SELECT 1 FROM upstream_requests WHERE upstream = ? AND upstream_id = ?",
            )?
            .query_row([name, id], |_| Ok(()))
            .optional()?
            .is_some())
        })
    }

    /// Records a pulled request (once: a second record of the same id changes nothing).
    pub fn record_upstream(&self, name: &str, id: &str, outcome: &Outcome, now: i64) -> Result<()> {
        let (request_id, reason) = outcome.columns();
        self.with(|c| {
            let tx = c.transaction()?;
            let n = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO upstream_requests (upstream, upstream_id, request_id, outcome, reason, received_at)
                     VALUES (?,?,?,?,?,?)",
                )?
                .execute(params![name, id, request_id, outcome.as_str(), reason, now])?;
            if n > 0 && request_id.is_none() {
                super::audit::append(
                    &tx,
                    now,
                    &rules::upstream_rejected(name, id, reason, &rules::upstream_actor(name)),
                )?;
            }
            tx.commit()?;
            Ok(())
        })
    }

    pub fn unwritten(&self, name: &str) -> Result<Vec<Unwritten>> {
        self.with(|c| {
            Ok(c.prepare_cached(
                "SELECT upstream_id, request_id, outcome, reason FROM upstream_requests WHERE upstream = ? AND written_at IS NULL
                 ORDER BY received_at, upstream_id",
            )?
            .query_map([name], |r| Ok(Unwritten { upstream_id: r.get(0)?, request_id: r.get(1)?, outcome: r.get(2)?, reason: r.get(3)? }))?
            .collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    pub fn mark_written(&self, name: &str, id: &str, message: &str, now: i64) -> Result<()> {
        self.with(|c| {
            let tx = c.transaction()?;
            tx.prepare_cached("UPDATE upstream_requests SET written_at = ? WHERE upstream = ? AND upstream_id = ? AND written_at IS NULL")?
                .execute(params![now, name, id])?;
            super::audit::append(
                &tx,
                now,
                &rules::upstream_written_back(name, id, message, &rules::upstream_actor(name)),
            )?;
            tx.commit()?;
            Ok(())
        })
    }

    /// A pulled request looked up by its upstream id (for `provd status`).
    pub fn upstream_request(&self, id: &str) -> Result<Option<Pulled>> {
        self.with(|c| {
            Ok(c.prepare_cached("SELECT upstream, request_id, reason, received_at FROM upstream_requests WHERE upstream_id = ? LIMIT 1")?
                .query_row([id], |r| Ok(Pulled { upstream: r.get(0)?, request_id: r.get(1)?, reason: r.get(2)?, received_at: r.get(3)? }))
                .optional()?)
        })
    }

    /// The id of the imported identity whose attribute `attr` is `value`.
    pub fn identity_by_attribute(&self, attr: &str, value: &str) -> Result<Option<String>> {
        self.with(|c| {
            Ok(c.prepare_cached(
                "SELECT id FROM identities WHERE json_extract(attributes, '$.' || ?) = ? LIMIT 1",
            )?
            .query_row([attr, value], |r| r.get(0))
            .optional()?)
        })
    }

    /// (state, source, last error, open task owners) of each job of a request.
    pub fn request_jobs(&self, request_id: &str) -> Result<Vec<crate::store::roles::JobOutcome>> {
        self.with(|c| {
            let rows = c
                .prepare_cached(
                    "SELECT state, source, errors FROM jobs WHERE request_id = ? ORDER BY id",
                )?
                .query_map([request_id], |r| {
                    Ok((
                        r.get::<_, crate::store::jobs::JobState>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows
                .into_iter()
                .map(|(state, source, errors)| {
                    let last =
                        serde_json::from_str::<Vec<crate::store::jobs::AttemptError>>(&errors)
                            .ok()
                            .and_then(|e| e.last().map(|e| e.message.clone()));
                    (state, source, last)
                })
                .collect())
        })
    }
}

impl Upstream for Sqlite {
    fn upstream_cursor(&self, name: String) -> Fut<Option<String>> {
        blocking!(self, |s| s.upstream_cursor(&name))
    }
    fn set_upstream_cursor(&self, name: String, cursor: String, now: i64) -> Fut<()> {
        blocking!(self, |s| s.set_upstream_cursor(&name, &cursor, now))
    }
    fn set_upstream_health(&self, name: String, error: Option<String>, now: i64) -> Fut<()> {
        blocking!(self, |s| s.set_upstream_health(
            &name,
            error.as_deref(),
            now
        ))
    }
    fn upstream_health(&self) -> Fut<Vec<Health>> {
        blocking!(self, |s| s.upstream_health())
    }
    fn upstream_seen(&self, name: String, id: String) -> Fut<bool> {
        blocking!(self, |s| s.upstream_seen(&name, &id))
    }
    fn record_upstream(&self, name: String, id: String, outcome: Outcome, now: i64) -> Fut<()> {
        blocking!(self, |s| s.record_upstream(&name, &id, &outcome, now))
    }
    fn unwritten(&self, name: String) -> Fut<Vec<Unwritten>> {
        blocking!(self, |s| s.unwritten(&name))
    }
    fn mark_written(&self, name: String, id: String, message: String, now: i64) -> Fut<()> {
        blocking!(self, |s| s.mark_written(&name, &id, &message, now))
    }
    fn upstream_request(&self, id: String) -> Fut<Option<Pulled>> {
        blocking!(self, |s| s.upstream_request(&id))
    }
    fn request_jobs(&self, request_id: String) -> Fut<Vec<JobOutcome>> {
        blocking!(self, |s| s.request_jobs(&request_id))
    }
}
