//! Removal dates on SQLite: firing due removals and planning their revokes.

use super::Sqlite;
use crate::store::accept::{Accepted, Context, Replay};
use crate::store::roles::{Fut, Schedule};
use crate::store::schedule::{Assignment, Fired, Planned, Removal};
use crate::store::{Result, StoreError};
use jiff::Timestamp;

use crate::clock::to_ms;
use crate::config::ItemType;
use rusqlite::{OptionalExtension, params};

/// A fired removal read back (`now`: when it fired, for its lag). Columns: id,
/// identity_id, item_type, item_id, remove_at, request_id, the grant item's metadata.
fn fired(r: &rusqlite::Row<'_>, now: Option<i64>) -> rusqlite::Result<Option<Fired>> {
    let (ty, remove_at): (String, i64) = (r.get(2)?, r.get(4)?);
    let Some(ty) = ItemType::parse(&ty) else {
        return Ok(None);
    };
    Ok(Some(Fired {
        assignment: r.get(0)?,
        identity: r.get(1)?,
        ty,
        item_id: r.get(3)?,
        remove_at,
        lag_ms: now.map_or(0, |n| n - remove_at),
        grant_request: r.get(5)?,
        grant_metadata: r.get(6)?,
    }))
}

impl Sqlite {
    /// Every assignment of `identity` (all identities when None), oldest first.
    pub fn assignments(&self, identity: Option<&str>) -> Result<Vec<Assignment>> {
        self.with(|c| {
            let mut st = c.prepare_cached(
                "SELECT id, identity_id, item_type, item_id, state, request_id, remove_at FROM assignments
                 WHERE ?1 IS NULL OR identity_id = ?1 ORDER BY id",
            )?;
            let rows = st.query_map([identity], |r| {
                Ok((r.get::<_, i64>(0)?, r.get(1)?, r.get::<_, String>(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (id, identity, ty, item_id, state, request_id, remove_at) = row?;
                let ty = ItemType::parse(&ty)
                    .ok_or_else(|| crate::store::StoreError::Corrupt(format!("assignment {id}: type {ty}")))?;
                out.push(Assignment { id, identity, ty, item_id, state, request_id, remove_at });
            }
            Ok(out)
        })
    }

    /// The earliest removeDate of a live assignment (indexed: no table scan).
    pub fn next_removal(&self) -> Result<Option<i64>> {
        self.with(|c| {
            Ok(c.prepare_cached("SELECT MIN(remove_at) FROM assignments WHERE remove_at IS NOT NULL AND state IN ('pending','active','failed')")?
                .query_row([], |r| r.get(0))?)
        })
    }

    /// Phase 1: records up to `limit` due removals, oldest first.
    pub fn fire(&self, now: i64, limit: usize) -> Result<Vec<Fired>> {
        self.with_redoable(|c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let rows = tx
                .prepare_cached(
                    "UPDATE assignments SET state = 'revoking', fired_at = ?1, revoke_planned = 0, updated_at = ?1
                     WHERE id IN (SELECT id FROM assignments WHERE remove_at IS NOT NULL AND remove_at <= ?1
                                  AND state IN ('pending','active','failed') ORDER BY remove_at, id LIMIT ?2)
                     RETURNING id, identity_id, item_type, item_id, remove_at, request_id,
                        (SELECT ri.client_metadata FROM request_items ri WHERE ri.request_id = assignments.request_id
                         AND ri.assignment_id = assignments.id ORDER BY ri.id LIMIT 1)",
                )?
                .query_map(params![now, limit as i64], |r| fired(r, Some(now)))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let mut fired: Vec<Fired> = rows.into_iter().flatten().collect();
            fired.sort_by_key(|f| (f.remove_at, f.assignment));
            if !fired.is_empty() {
                super::audit::append(&tx, now, &crate::store::rules::events::removals_fired(&fired))?;
            }
            tx.commit()?;
            Ok(fired)
        })
    }

    /// Fired removals whose revoke is not planned yet, oldest first.
    pub fn unplanned(&self, limit: usize) -> Result<Vec<Fired>> {
        self.with(|c| {
            let rows = c
                .prepare_cached(
                    "SELECT id, identity_id, item_type, item_id, remove_at, request_id,
                        (SELECT ri.client_metadata FROM request_items ri WHERE ri.request_id = assignments.request_id
                         AND ri.assignment_id = assignments.id ORDER BY ri.id LIMIT 1)
                     FROM assignments WHERE revoke_planned = 0 ORDER BY fired_at, id LIMIT ?",
                )?
                .query_map([limit as i64], |r| fired(r, None))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows.into_iter().flatten().collect())
        })
    }

    /// Phase 2: plans the revoke of each fired removal, in one transaction.
    pub fn plan_fired(
        &self,
        removals: &[Removal],
        ctx: &Context,
        now: Timestamp,
    ) -> Result<Vec<Planned>> {
        let now_ms = to_ms(now);
        // Redone if a power cut loses it: a fired removal without its revoke is planned
        // again (`unplanned`), one not fired either fires again, and a revoke that ran
        // meanwhile runs again, as after a lost attempt's end (revokes are idempotent).
        // Waiting on the log's sync for each batch made a burst's last revoke late by the
        // disk's speed (issue 32).
        self.with_redoable(|c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let mut out = Vec::new();
            let from = crate::model::Requester::schedule();
            for removal in removals {
                let f = &removal.fired;
                let pending: Option<i64> = tx
                    .prepare_cached("SELECT revoke_planned FROM assignments WHERE id = ?")?
                    .query_row([f.assignment], |r| r.get(0))
                    .optional()?;
                if pending != Some(0) {
                    continue;
                }
                let regranted: Option<i64> = tx
                    .prepare_cached(
                        "SELECT id FROM assignments WHERE identity_id = ? AND item_type = ? AND item_id = ?
                         AND state IN ('pending','active') LIMIT 1",
                    )?
                    .query_row(params![f.identity, f.ty.as_str(), f.item_id], |r| r.get(0))
                    .optional()?;
                let mut planned = Planned { assignment: f.assignment, identity: f.identity.clone(), item_id: f.item_id.clone(), request_id: None, jobs: 0 };
                if let Some(newer) = regranted {
                    tx.prepare_cached("UPDATE assignments SET state = 'removed', revoke_planned = 1, updated_at = ? WHERE id = ?")?
                        .execute(params![now_ms, f.assignment])?;
                    super::audit::append(&tx, now_ms, &crate::store::rules::events::removal_superseded(f, newer))?;
                    out.push(planned);
                    continue;
                }
                if let Replay::New(Accepted { request_id, job_ids, .. }) =
                    super::accept::accept_in(&tx, &removal.submission(&from, ctx, now))?
                {
                    planned.request_id = Some(request_id);
                    planned.jobs = job_ids.len();
                }
                tx.prepare_cached("UPDATE assignments SET revoke_planned = 1 WHERE id = ?")?.execute([f.assignment])?;
                out.push(planned);
            }
            tx.commit()?;
            Ok(out)
        })
    }
}

impl Schedule for Sqlite {
    fn assignments(&self, identity: Option<String>) -> Fut<Vec<Assignment>> {
        blocking!(self, |s| s.assignments(identity.as_deref()))
    }
    fn next_removal(&self) -> Fut<Option<i64>> {
        blocking!(self, |s| s.next_removal())
    }
    fn fire(&self, now: i64, limit: usize) -> Fut<Vec<Fired>> {
        blocking!(self, |s| s.fire(now, limit))
    }
    fn unplanned(&self, limit: usize) -> Fut<Vec<Fired>> {
        blocking!(self, |s| s.unplanned(limit))
    }
    fn plan_fired(&self, due: Vec<Removal>, ctx: Context, now: Timestamp) -> Fut<Vec<Planned>> {
        blocking!(self, |s| s.plan_fired(&due, &ctx, now))
    }
}
