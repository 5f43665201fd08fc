//! Accepting requests on SQLite: the snapshot a plan is made against and the rows an
//! accepted request writes, in one transaction.

use super::Sqlite;
use crate::clock::to_ms;
use crate::model::{Effect, Plan, Snapshot};
use crate::store::accept::*;
use crate::store::events::Event;
use crate::store::roles::Accept;
use crate::store::{Result, StoreError};
use provd_connector_core::Operation;
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value;

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

/// `include`: an assignment to count as held although it is no longer live (a removal
/// fired a moment ago, whose revoke is being planned now).
fn snapshot(tx: &Connection, identities: &[String], include: Option<i64>) -> Result<Snapshot> {
    let mut snap = Snapshot::default();
    let mut stmt = tx.prepare_cached(
        "SELECT a.id, a.identity_id, a.item_type, a.item_id, a.state, a.request_id, a.entitlements,
            CASE WHEN a.state IN ('failed','revoking') THEN
              (SELECT json_group_object(j.source, j.state) FROM request_items ri
                 JOIN item_jobs ij ON ij.item_id = ri.id JOIN jobs j ON j.id = ij.job_id
                 WHERE ri.assignment_id = a.id AND ri.request_id = a.request_id) END
         FROM assignments a
         WHERE a.identity_id = ?1 AND (a.state IN ('pending','active','failed') OR a.id = ?2)",
    )?;
    let mut acc = tx.prepare_cached("SELECT source FROM accounts WHERE identity_id = ?")?;
    for identity in identities {
        let rows = stmt.query_map(params![identity, include], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
                r.get(7)?,
            ))
        })?;
        for row in rows {
            snap.assignments.push(live_assignment(row?)?);
        }
        for source in acc.query_map([identity], |r| r.get::<_, String>(0))? {
            snap.accounts.insert((identity.clone(), source?));
        }
    }
    Ok(snap)
}

impl Sqlite {
    /// The stored answer for an idempotency key, if that request was accepted before.
    pub fn by_idempotency_key(&self, key: &str) -> Result<Option<Accepted>> {
        self.with(|c| lookup_key(c, key))
    }

    /// Plans and stores valid requests in one transaction (one fsync), each in a savepoint
    /// of its own, in the order given; with an idempotency key already stored, a request's
    /// first answer instead. `Err` means nothing was stored; an inner `Err` that that
    /// request was not stored, the others were.
    pub fn accept_all(&self, batch: &[Accept]) -> Result<Vec<Result<Replay>>> {
        self.with(|c| {
            crate::store::sqlite::each_in_savepoint(c, batch, |tx, a| {
                accept_in(tx, &a.submission())
            })
        })
    }
}

/// Plans and writes a request inside the caller's (immediate) transaction.
pub(crate) fn accept_in(tx: &Connection, s: &Submission<'_>) -> Result<Replay> {
    if let Some(key) = s.idempotency_key
        && let Some(found) = lookup_key(tx, key)?
    {
        return Ok(Replay::Replayed(found));
    }
    let snap = snapshot(tx, &s.request.requested_for, s.include)?;
    let request_id = crate::store::new_request_id(s.now);
    let (plan, response) = (s.ctx.decide)(s.request, &snap, &request_id);
    let written = write(tx, s, &plan, &request_id, &response)?;
    Ok(Accepted::stored(request_id, response, written))
}

fn lookup_key(c: &Connection, key: &str) -> Result<Option<Accepted>> {
    let row: Option<(String, String, String)> = c
        .prepare_cached("SELECT id, response, body FROM requests WHERE idempotency_key = ?")?
        .query_row([key], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    let Some((request_id, response, body)) = row else {
        return Ok(None);
    };
    let job_ids = c
        .prepare_cached("SELECT id FROM jobs WHERE request_id = ? ORDER BY id")?
        .query_map([&request_id], |r| r.get(0))?
        .collect::<rusqlite::Result<Vec<i64>>>()?;
    Ok(Some(Accepted {
        request_id,
        response: serde_json::from_str(&response).map_err(corrupt)?,
        job_ids,
        body: Some(body),
        removals: Vec::new(),
    }))
}

#[allow(clippy::too_many_arguments)]
fn write(
    tx: &Connection,
    s: &Submission<'_>,
    plan: &Plan,
    request_id: &str,
    response: &Value,
) -> Result<(Vec<i64>, Vec<RemovalChange>)> {
    let Submission {
        request: req,
        body,
        requester: from,
        idempotency_key,
        ctx,
        now,
        ..
    } = *s;
    let now_ms = to_ms(now);
    let mut removals = Vec::new();
    tx.prepare_cached(
        "INSERT INTO requests (id, idempotency_key, origin, requester, request_type, body, response, received_at)
         VALUES (?,?,?,?,?,?,?,?)",
    )?
    .execute(params![request_id, idempotency_key, from.origin, from.name, req.request_type.as_str(), body, response.to_string(), now_ms])?;
    let accepted = Event::request_accepted(request_id, from, req, plan.jobs.len());
    super::audit::append(tx, now_ms, &accepted)?;

    let mut job_ids = Vec::with_capacity(plan.jobs.len());
    for job in &plan.jobs {
        let identity = ctx.identity(&job.identity)?;
        let max_attempts = job.max_attempts;
        tx.prepare_cached(
            "INSERT INTO jobs (request_id, identity_id, source, kind, identity, operations, state, max_attempts,
                               next_attempt_at, created_at, updated_at)
             VALUES (?,?,?,?,?,?,'queued',?,?,?,?)",
        )?
        .execute(params![
            request_id,
            job.identity,
            job.source,
            job.kind.as_str(),
            serde_json::to_string(identity).map_err(corrupt)?,
            serde_json::to_string(&job.ops).map_err(corrupt)?,
            max_attempts,
            job.not_before.map(to_ms),
            now_ms,
            now_ms
        ])?;
        let id = tx.last_insert_rowid();
        if job.ops.contains(&Operation::CreateAccount) {
            tx.prepare_cached(
                "INSERT INTO accounts (identity_id, source, state, job_id, updated_at) VALUES (?,?,'pending',?,?)
                 ON CONFLICT(identity_id, source) DO NOTHING",
            )?
            .execute(params![job.identity, job.source, id, now_ms])?;
        }
        super::audit::append(
            tx,
            now_ms,
            &Event::job_queued(request_id, id, job, &from.name),
        )?;
        job_ids.push(id);
    }

    for item in &plan.items {
        // A duplicate grant that keeps the removeDate it had changes nothing: no event, and
        // no "removeDate cleared" log line for access that never had one.
        let unchanged = match item.effect {
            Effect::SetRemoveDate {
                assignment,
                remove_at,
            } => {
                let current: Option<i64> = tx
                    .prepare_cached("SELECT remove_at FROM assignments WHERE id = ?")?
                    .query_row([assignment], |r| r.get(0))?;
                current == remove_at.map(to_ms)
            }
            _ => false,
        };
        let assignment = match item.effect {
            Effect::SetRemoveDate { assignment, .. } if unchanged => Some(assignment),
            _ => apply_effect(tx, item, request_id, &from.name, now_ms)?,
        };
        let change = crate::store::rules::removal_change(item, unchanged);
        if let Some(change) = change {
            removals.push(RemovalChange {
                identity: item.identity.clone(),
                item: item.item.id.clone(),
                assignment,
                change,
                remove_at: item.item.remove_at.map(to_ms),
            });
        }
        let (disposition, existing_request) = crate::store::rules::disposition(item);
        let effect = crate::store::rules::effect_name(&item.effect);
        let mut meta = req.client_metadata.clone();
        meta.extend(item.item.client_metadata.clone());
        tx.prepare_cached(
            "INSERT INTO request_items (request_id, identity_id, item_type, item_id, name, disposition,
                existing_request_id, assignment_id, effect, comment, start_at, remove_at, client_metadata)
             VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
        )?
        .execute(params![
            request_id,
            item.identity,
            item.item.ty.as_str(),
            item.item.id,
            item.name,
            disposition,
            existing_request,
            assignment,
            effect,
            item.item.comment,
            item.item.start_at.map(to_ms),
            item.item.remove_at.map(to_ms),
            serde_json::to_string(&meta).map_err(corrupt)?
        ])?;
        let item_row = tx.last_insert_rowid();
        for j in &item.jobs {
            if let Some(job_id) = job_ids.get(*j) {
                tx.prepare_cached(
                    "INSERT OR IGNORE INTO item_jobs (item_id, job_id) VALUES (?,?)",
                )?
                .execute(params![item_row, job_id])?;
            }
        }
    }
    Ok((job_ids, removals))
}

/// Writes what an item does to the assignments; returns the assignment it concerns.
fn apply_effect(
    tx: &Connection,
    item: &crate::model::PlannedItem,
    request_id: &str,
    actor: &str,
    now_ms: i64,
) -> Result<Option<i64>> {
    Ok(match item.effect {
        Effect::Grant { supersedes } => {
            if let Some(old) = supersedes {
                tx.prepare_cached(&supersede_sql(crate::store::audit::sqlite_param))?
                    .execute(params![now_ms, old])?;
            }
            // Nothing left to provision (another active assignment holds it all): active now.
            let state = if item.jobs.is_empty() {
                "active"
            } else {
                "pending"
            };
            tx.prepare_cached(
                "INSERT INTO assignments (identity_id, item_type, item_id, state, request_id, entitlements,
                    start_at, remove_at, created_at, updated_at, active_at)
                 VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?9,CASE WHEN ?4 = 'active' THEN ?9 END)",
            )?
            .execute(params![
                item.identity,
                item.item.ty.as_str(),
                item.item.id,
                state,
                request_id,
                serde_json::to_string(&item.entitlements).map_err(corrupt)?,
                item.item.start_at.map(to_ms),
                item.item.remove_at.map(to_ms),
                now_ms
            ])?;
            Some(tx.last_insert_rowid())
        }
        Effect::SetRemoveDate {
            assignment,
            remove_at,
        } => {
            set_remove_at(
                tx,
                assignment,
                remove_at.map(to_ms),
                (request_id, actor, &item.identity),
                now_ms,
            )?;
            Some(assignment)
        }
        Effect::ScheduleRemoval {
            assignment,
            remove_at,
        } => {
            set_remove_at(
                tx,
                assignment,
                Some(to_ms(remove_at)),
                (request_id, actor, &item.identity),
                now_ms,
            )?;
            Some(assignment)
        }
        Effect::Revoke { assignment } => {
            if let Some(a) = assignment {
                let state = if item.jobs.is_empty() {
                    "removed"
                } else {
                    "revoking"
                };
                tx.prepare_cached("UPDATE assignments SET state = ?, updated_at = ? WHERE id = ?")?
                    .execute(params![state, now_ms, a])?;
            }
            assignment
        }
        Effect::Nothing => None,
    })
}

fn set_remove_at(
    tx: &Connection,
    assignment: i64,
    remove_at: Option<i64>,
    (request_id, actor, identity): (&str, &str, &str),
    now_ms: i64,
) -> Result<()> {
    tx.prepare_cached("UPDATE assignments SET remove_at = ?, updated_at = ? WHERE id = ?")?
        .execute(params![remove_at, now_ms, assignment])?;
    let e = Event::remove_date_set(request_id, identity, assignment, remove_at, actor);
    super::audit::append(tx, now_ms, &e)
}

impl Sqlite {
    /// What the identities hold now (for `provd plan`).
    pub fn snapshot(&self, identities: &[String]) -> Result<Snapshot> {
        self.with(|c| {
            let tx = c.transaction()?;
            snapshot(&tx, identities, None)
        })
    }
}
