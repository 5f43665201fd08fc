//! What happens to a job after its attempts, on SQLite: settling its assignments and
//! account, the manual path's end, the operator's cancel and retry. The rules are
//! `store::rules`'; this file writes what they decide.

use super::Sqlite;
use super::queue::get;
use crate::store::events::Event;
use crate::store::jobs::{Job, JobState, Retry};
use crate::store::rules::manual::{self, Verdict};
use crate::store::rules::operator::{self, RetryMove, guarded};
use crate::store::{Result, Stamp, StoreError};
use rusqlite::{Connection, OptionalExtension, params};

impl Sqlite {
    /// `provd jobs cancel`: a job that has not been applied (queued, retrying, waiting on
    /// manual tasks) is canceled; its open tasks are canceled with it.
    pub fn cancel_job(&self, id: i64, now: i64, reason: &str, actor: &str) -> Result<Job> {
        self.with(|c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let job = cancel_in(&tx, id, now, reason, actor)?;
            tx.commit()?;
            Ok(job)
        })
    }

    /// Cancels every job of a request that has not been applied yet; returns how many.
    pub fn cancel_request(
        &self,
        request_id: &str,
        now: i64,
        comment: &str,
        actor: &str,
    ) -> Result<usize> {
        self.with(|c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let exists: Option<i64> = tx.prepare_cached("SELECT seq FROM requests WHERE id = ?")?.query_row([request_id], |r| r.get(0)).optional()?;
            if exists.is_none() {
                return Err(operator::no_request(request_id));
            }
            let ids = tx
                .prepare_cached("SELECT id FROM jobs WHERE request_id = ? AND state IN ('queued','retrying','manual') ORDER BY id")?
                .query_map([request_id], |r| r.get::<_, i64>(0))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            operator::cancel_request(request_id, ids.len())?;
            for id in &ids {
                cancel_in(&tx, *id, now, comment, actor)?;
            }
            tx.prepare_cached("UPDATE requests SET canceled_at = ?, cancel_comment = ? WHERE id = ?")?
                .execute(params![now, comment, request_id])?;
            super::audit::append(
                &tx,
                now,
                &Event {
                    kind: "request_canceled",
                    request_id: Some(request_id),
                    data: operator::request_canceled(comment, ids.len()),
                    actor,
                    ..Default::default()
                },
            )?;
            tx.commit()?;
            Ok(ids.len())
        })
    }

    /// `provd jobs retry`: a failed job gets a fresh attempt budget (its source's
    /// `max_attempts`, counted from zero again; the errors of earlier attempts stay in its
    /// history) and runs again with the identity as it is now (`identity`), so that a job
    /// that failed on a missing attribute can succeed once the attribute is imported. A
    /// retrying one runs now.
    pub fn retry_job(&self, id: i64, retry: &Retry, by: &Stamp) -> Result<Job> {
        let (now, actor) = (by.now, by.actor.as_str());
        let identity = retry
            .identity
            .as_ref()
            .map(|i| serde_json::to_string(i).map_err(|e| StoreError::Corrupt(e.to_string())))
            .transpose()?;
        self.with(|c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let job = get(&tx, id)?.ok_or_else(|| operator::no_job(id))?;
            let grants = tx
                .prepare_cached(&crate::store::jobs::grants_of_job_sql(crate::store::audit::sqlite_param))?
                .query_row([id], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))?;
            let later = tx
                .prepare_cached(&crate::store::jobs::later_jobs_sql(crate::store::audit::sqlite_param))?
                .query_map(params![job.identity_id, job.source, id], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let later = crate::store::jobs::parse_later(later)?;
            let retry = operator::retry(&job, retry.max_attempts, grants, &later)?;
            match retry.how {
                RetryMove::Requeue {
                    max_attempts,
                    pending_account,
                } => {
                    let n = tx.prepare_cached(
                        "UPDATE jobs SET state = 'queued', attempt = 0, max_attempts = ?, window_start = NULL,
                            next_attempt_at = NULL, finalized_at = NULL, updated_at = ?,
                            identity = COALESCE(?, identity)
                         WHERE id = ? AND state = ?",
                    )?
                    .execute(params![max_attempts, now, identity, id, job.state.as_str()])?;
                    guarded(n as u64, || operator::retry_raced(id))?;
                    unsettle(&tx, id, now)?;
                    if pending_account {
                        tx.prepare_cached(
                            "INSERT INTO accounts (identity_id, source, state, job_id, updated_at) VALUES (?,?,'pending',?,?)
                             ON CONFLICT(identity_id, source) DO NOTHING",
                        )?
                        .execute(params![job.identity_id, job.source, id, now])?;
                    }
                }
                RetryMove::RunNow => {
                    let n = tx.prepare_cached("UPDATE jobs SET next_attempt_at = ?, updated_at = ? WHERE id = ? AND state = 'retrying'")?
                        .execute(params![now, now, id])?;
                    guarded(n as u64, || operator::retry_raced(id))?;
                }
            }
            super::audit::append(&tx, now, &Event::of_job("job_retry_requested", &job, actor, retry.data))?;
            let job = get(&tx, id)?.ok_or_else(|| operator::no_job(id))?;
            tx.commit()?;
            Ok(job)
        })
    }
}

fn cancel_in(tx: &Connection, id: i64, now: i64, reason: &str, actor: &str) -> Result<Job> {
    let job = get(tx, id)?.ok_or_else(|| operator::no_job(id))?;
    let cancel = operator::cancel(&job, reason)?;
    let n = tx
        .prepare_cached(
            "UPDATE jobs SET state = 'canceled', lease_owner = NULL, lease_expires_at = NULL, finalized_at = ?, updated_at = ?
             WHERE id = ? AND state = ?",
        )?
        .execute(params![now, now, id, cancel.from.as_str()])?;
    guarded(n as u64, || operator::cancel_raced(id))?;
    tx.prepare_cached("UPDATE tasks SET status = 'canceled', resolved_at = ?, note = ? WHERE job_id = ? AND status = 'open'")?
        .execute(params![now, reason, id])?;
    super::audit::append(
        tx,
        now,
        &Event::of_job("job_canceled", &job, actor, cancel.data),
    )?;
    settle(tx, id, now)?;
    Ok(job)
}

/// After a job ended: move the assignments it granted or revoked, and drop an account it
/// was to create but did not.
pub(crate) fn settle(tx: &Connection, job_id: i64, now: i64) -> Result<()> {
    let items = tx
        .prepare_cached(
            "SELECT ri.id, ri.effect, ri.assignment_id FROM request_items ri JOIN item_jobs ij ON ij.item_id = ri.id
             WHERE ij.job_id = ? AND ri.assignment_id IS NOT NULL",
        )?
        .query_map([job_id], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?)))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    for (item, effect, assignment) in items {
        let states = tx
            .prepare_cached("SELECT j.state FROM jobs j JOIN item_jobs ij ON ij.job_id = j.id WHERE ij.item_id = ?")?
            .query_map([item], |r| r.get::<_, String>(0))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let states: Vec<JobState> = states.iter().filter_map(|s| JobState::parse(s)).collect();
        let Some((from, to)) = crate::store::rules::settled(&effect, &states) else {
            continue;
        };
        // A failed revoke of an item granted again meanwhile: the newer grant holds it;
        // a failed removeDate removal stays owed (as PostgreSQL's settle says).
        tx.prepare_cached(
            "UPDATE assignments SET state = CASE WHEN ?1 = 'active' AND EXISTS (SELECT 1 FROM assignments b
                    WHERE b.identity_id = assignments.identity_id AND b.item_type = assignments.item_type
                      AND b.item_id = assignments.item_id AND b.id <> assignments.id
                      AND b.state IN ('pending','active')) THEN 'removed'
                    WHEN ?1 = 'active' AND fired_at IS NOT NULL THEN 'revoking' ELSE ?1 END,
                updated_at = ?2,
                active_at = CASE WHEN ?1 = 'active' AND fired_at IS NULL THEN ?2 ELSE active_at END
             WHERE id = ?3 AND state = ?4",
        )?
        .execute(params![to.as_str(), now, assignment, from.as_str()])?;
    }
    let handed = tx
        .prepare_cached(&crate::store::jobs::hand_over_account_sql(
            crate::store::audit::sqlite_param,
        ))?
        .execute(params![job_id])?;
    if handed > 0 {
        inherit(tx, job_id, now)?;
    }
    let dropped = tx
        .prepare_cached(
            "DELETE FROM accounts WHERE job_id = ?1 AND state = 'pending'
             AND (SELECT state FROM jobs WHERE id = ?1) IN ('failed','canceled')",
        )?
        .execute(params![job_id])?;
    if dropped > 0 {
        cancel_orphans(tx, job_id, now)?;
    }
    Ok(())
}

/// Cancels the jobs waiting behind `job_id` that act only on the account it was to make
/// and did not ([`operator::orphaned`]).
fn cancel_orphans(tx: &Connection, job_id: i64, now: i64) -> Result<()> {
    let waiting = tx
        .prepare_cached(&crate::store::jobs::waiting_behind_sql(
            crate::store::audit::sqlite_param,
        ))?
        .query_map([job_id], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    for (id, ops) in waiting {
        if operator::orphaned(&crate::store::jobs::parse_ops_of(id, &ops)?) {
            cancel_in(tx, id, now, &operator::orphan_reason(job_id), "provd")?;
        }
    }
    Ok(())
}

/// The heir of an account a failed or canceled job was to create makes it first.
fn inherit(tx: &Connection, job_id: i64, now: i64) -> Result<()> {
    let p = crate::store::audit::sqlite_param;
    let heir: Option<i64> = tx
        .prepare_cached(&crate::store::jobs::heir_sql(p))?
        .query_row(params![job_id], |r| r.get(0))
        .optional()?;
    let (Some(from), Some(heir)) = (
        get(tx, job_id)?,
        heir.map(|h| get(tx, h)).transpose()?.flatten(),
    ) else {
        return Ok(());
    };
    if let Some(ops) = operator::inherit_create(&from.ops, &heir) {
        let json = serde_json::to_string(&ops).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let n = tx
            .prepare_cached(&crate::store::jobs::inherit_sql(p))?
            .execute(params![json, heir.id])?;
        if n > 0 {
            let data = operator::replanned(&from, &ops);
            let e = Event::of_job("job_replanned", &heir, "provd", data);
            super::audit::append(tx, now, &e)?;
        }
    }
    Ok(())
}

/// Before a failed job runs again: its assignments are in flight once more.
fn unsettle(tx: &Connection, job_id: i64, now: i64) -> Result<()> {
    // A grant whose assignment was re-granted meanwhile stays failed (the unique index
    // of live assignments would refuse a second one); the newer grant carries it.
    tx.prepare_cached(
        "UPDATE OR IGNORE assignments SET state = 'pending', updated_at = ?1 WHERE state = 'failed' AND id IN
           (SELECT ri.assignment_id FROM request_items ri JOIN item_jobs ij ON ij.item_id = ri.id
            WHERE ij.job_id = ?2 AND ri.effect = 'grant')",
    )?
    .execute(params![now, job_id])?;
    tx.prepare_cached(
        "UPDATE assignments SET state = 'revoking', updated_at = ?1 WHERE state = 'active' AND id IN
           (SELECT ri.assignment_id FROM request_items ri JOIN item_jobs ij ON ij.item_id = ri.id
            WHERE ij.job_id = ?2 AND ri.effect = 'revoke')",
    )?
    .execute(params![now, job_id])?;
    Ok(())
}

/// Ends a job waiting on manual tasks (guarded on `manual`); returns its state after.
pub(crate) fn finish_manual(
    tx: &Connection,
    job_id: i64,
    verdict: Verdict,
    now: i64,
    actor: &str,
) -> Result<JobState> {
    let job = get(tx, job_id)?.ok_or_else(|| operator::no_job(job_id))?;
    let Some(end) = manual::end_manual(&job, verdict)? else {
        return Ok(job.state);
    };
    let n = tx
        .prepare_cached("UPDATE jobs SET state = ?, errors = ?, ops_done = ?, finalized_at = ?, updated_at = ? WHERE id = ? AND state = 'manual'")?
        .execute(params![end.state.as_str(), end.errors, end.ops_done, now, now, job_id])?;
    guarded(n as u64, || manual::end_raced(job_id))?;
    if let Some(note) = end.cancel_open_tasks {
        tx.prepare_cached("UPDATE tasks SET status = 'canceled', resolved_at = ?, note = ? WHERE job_id = ? AND status = 'open'")?
            .execute(params![now, note, job_id])?;
    }
    if end.activate_account {
        // Its native id is the one the tasks named (the source owner made it so).
        tx.prepare_cached(
            "UPDATE accounts SET state = 'active', updated_at = ?1,
                native_id = COALESCE(native_id, (SELECT account FROM tasks WHERE job_id = ?2 AND account <> '' ORDER BY op_index LIMIT 1))
             WHERE job_id = ?2 AND state = 'pending'",
        )?
        .execute(params![now, job_id])?;
    }
    if end.rename_account {
        tx.prepare_cached(
            "UPDATE accounts SET updated_at = ?1, native_id = COALESCE((SELECT renamed_to FROM tasks
                WHERE job_id = ?2 AND renamed_to IS NOT NULL ORDER BY op_index DESC LIMIT 1), native_id)
             WHERE identity_id = ?3 AND source = ?4",
        )?
        .execute(params![now, job_id, job.identity_id, job.source])?;
    }
    if let Some(disabled) = end.set_disabled {
        tx.prepare_cached("UPDATE accounts SET disabled = ? WHERE identity_id = ? AND source = ?")?
            .execute(params![disabled, job.identity_id, job.source])?;
    }
    if end.forget_account {
        tx.prepare_cached(&crate::store::jobs::forget_account_sql(
            crate::store::audit::sqlite_param,
        ))?
        .execute(params![job.identity_id, job.source, job_id])?;
    }
    super::audit::append(tx, now, &Event::of_job(end.kind, &job, actor, end.data))?;
    settle(tx, job_id, now)?;
    Ok(end.state)
}
