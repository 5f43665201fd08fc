//! The job queue on SQLite: claims under the lane rule, leases, attempt ends and the
//! job reads. The rules they follow are `store::rules`'; the row types `store::jobs`.

use super::Sqlite;
use crate::store::jobs::{Finish, Job, JobFilter, JobState, Moved, Retry};
use crate::store::roles::{Claim, Fut, Queue, Stamp};
use crate::store::{Result, StoreError};

use super::settle::settle;
use crate::model::agent_actor;
use crate::store::events::Event;
use crate::store::jobs::*;
use rusqlite::{Connection, OptionalExtension, Row, params};

const COLUMNS: &str = "id, request_id, identity_id, source, kind, identity, operations, ops_done, state, attempt,
    max_attempts, next_attempt_at, lease_owner, lease_expires_at, errors, created_at, window_start, updated_at, finalized_at";

fn from_row(r: &Row<'_>) -> rusqlite::Result<Job> {
    crate::store::jobs::job_from(r, false).map_err(super::cells::driver_error)
}

/// Writes one attempt's end inside the caller's transaction, guarded on the lease.
fn end_in(tx: &Connection, f: &Finish) -> Result<()> {
    let (job, owner, now) = (&f.job, f.owner.as_str(), f.now);
    let actor = agent_actor(owner);
    if let Ending::Released { error } = &f.ending {
        let n = tx
            .prepare_cached(
                "UPDATE jobs SET state = 'queued', attempt = MAX(attempt - 1, 0), next_attempt_at = NULL,
                    lease_owner = NULL, lease_expires_at = NULL, updated_at = ?
                 WHERE id = ? AND state = 'running' AND lease_owner = ?",
            )?
            .execute(params![now, job.id, owner])?;
        if n == 0 {
            return Err(lost(job.id));
        }
        record_ops(tx, job, &f.ops, now, &actor)?;
        return super::audit::append(
            tx,
            now,
            &Event::of_job(
                "job_released",
                job,
                &actor,
                crate::store::rules::released_event(job, error),
            ),
        );
    }
    let Some(row) = crate::store::rules::end_row(job, &f.ending, now)? else {
        return Ok(());
    };
    let state = row.state;
    let n = tx
        .prepare_cached(
            "UPDATE jobs SET state = ?, next_attempt_at = ?, errors = COALESCE(?, errors), lease_owner = NULL,
                lease_expires_at = NULL, finalized_at = ?, updated_at = ?
             WHERE id = ? AND state = 'running' AND lease_owner = ?",
        )?
        .execute(params![state.as_str(), row.next_attempt_at, row.errors, row.finalized_at, now, job.id, owner])?;
    if n == 0 {
        return Err(lost(job.id));
    }
    record_ops(tx, job, &f.ops, now, &actor)?;
    super::audit::append(tx, now, &Event::of_job(row.kind, job, &actor, row.data))?;
    if state.is_final() {
        settle(tx, job.id, now)?;
    }
    Ok(())
}

/// Writes an attempt's calls: progress, the account's native id, one audit event each.
fn record_ops(tx: &Connection, job: &Job, ops: &[OpRecord], now: i64, actor: &str) -> Result<()> {
    let Some(last) = ops.last() else {
        return Ok(());
    };
    tx.prepare_cached("UPDATE jobs SET ops_done = ? WHERE id = ?")?
        .execute(params![(last.index + 1) as i64, job.id])?;
    for op in ops {
        if let Some(native) = &op.native_id {
            tx.prepare_cached(
                "INSERT INTO accounts (identity_id, source, native_id, state, job_id, updated_at) VALUES (?,?,?,'active',?,?)
                 ON CONFLICT(identity_id, source) DO UPDATE SET native_id = excluded.native_id, state = 'active',
                    updated_at = excluded.updated_at",
            )?
            .execute(params![job.identity_id, job.source, native, job.id, now])?;
        }
        super::audit::append(
            tx,
            now,
            &Event::of_job(
                "connector_call",
                job,
                actor,
                crate::store::rules::call_event(job, op),
            ),
        )?;
    }
    if let Some(disabled) = crate::store::rules::status_after(job, ops) {
        tx.prepare_cached("UPDATE accounts SET disabled = ? WHERE identity_id = ? AND source = ?")?
            .execute(params![disabled, job.identity_id, job.source])?;
    }
    if crate::store::rules::deletes_account(job, ops) {
        tx.prepare_cached(&crate::store::jobs::forget_account_sql(
            crate::store::audit::sqlite_param,
        ))?
        .execute(params![job.identity_id, job.source, job.id])?;
    }
    Ok(())
}

pub(crate) fn get(conn: &Connection, id: i64) -> Result<Option<Job>> {
    Ok(conn
        .prepare_cached(&format!("SELECT {COLUMNS} FROM jobs WHERE id = ?"))?
        .query_row([id], from_row)
        .optional()?)
}

fn lost(job_id: i64) -> StoreError {
    StoreError::LeaseLost { job_id }
}

impl Sqlite {
    pub fn job(&self, id: i64) -> Result<Option<Job>> {
        self.with(|c| get(c, id))
    }

    pub fn jobs(&self, f: &JobFilter) -> Result<Vec<Job>> {
        self.with(|c| {
            let mut stmt = c.prepare(&format!(
                "SELECT {COLUMNS} FROM jobs WHERE (?1 IS NULL OR state = ?1) AND (?2 IS NULL OR source = ?2)
                 AND (?3 IS NULL OR request_id = ?3) ORDER BY id LIMIT ?4"
            ))?;
            let limit = f.limit.map_or(-1, |l| l as i64);
            let rows = stmt
                .query_map(params![f.state.map(JobState::as_str), f.source, f.request_id, limit], from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
    }

    /// Claims up to `limit` jobs that are due, leasing them to `owner` until `lease_until`.
    /// A job is claimed only when no earlier job of the same (identity, source) is still
    /// open: that lane runs one job at a time, in acceptance order (the `lane_head` flag,
    /// kept by triggers: schema migration 5). Jobs are taken in the order they came due
    /// (`next_attempt_at`, else acceptance time), then by id; the partial index
    /// `jobs_claimable` holds only lane heads that may run, so the cost of a claim does
    /// not grow with the number of jobs waiting behind them.
    pub fn claim(
        &self,
        owner: &str,
        limit: usize,
        now: i64,
        lease_until: i64,
        skip_sources: &[String],
        only_source: Option<&str>,
    ) -> Result<Vec<Job>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let actor = agent_actor(owner);
        self.with_redoable(|c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let skip = serde_json::to_string(skip_sources).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            let jobs = tx
                .prepare_cached(&format!(
                    "UPDATE jobs SET state = 'running', lease_owner = ?1, lease_expires_at = ?2, attempt = attempt + 1,
                        window_start = COALESCE(window_start, ?3), next_attempt_at = NULL, updated_at = ?3
                     WHERE id IN (
                        SELECT j.id FROM jobs j INDEXED BY jobs_claimable
                        WHERE j.lane_head = 1 AND j.state IN ('queued','retrying')
                          AND COALESCE(j.next_attempt_at, j.created_at) <= ?3
                          AND (?4 = '[]' OR j.source NOT IN (SELECT value FROM json_each(?4)))
                          AND (?5 IS NULL OR j.source = ?5)
                        ORDER BY COALESCE(j.next_attempt_at, j.created_at), j.id LIMIT ?6)
                     RETURNING {COLUMNS},
                        (SELECT a.native_id FROM accounts a WHERE a.identity_id = jobs.identity_id AND a.source = jobs.source)"
                ))?
                .query_map(params![owner, lease_until, now, skip, only_source, limit as i64], from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            for job in &jobs {
                super::audit::append(&tx, now, &Event::of_job("job_running", job, &actor, crate::store::rules::events::job_running(job, owner)))?;
            }
            tx.commit()?;
            Ok(jobs)
        })
    }

    /// When the next claimable job comes due (a lane head's `next_attempt_at`, else its
    /// acceptance time), so the dispatcher can sleep until then. Jobs waiting behind
    /// another in their lane do not count: they cannot run when their time comes.
    pub fn next_due(&self) -> Result<Option<i64>> {
        self.with(|c| {
            Ok(c.prepare_cached(
                "SELECT MIN(COALESCE(next_attempt_at, created_at)) FROM jobs INDEXED BY jobs_claimable
                 WHERE lane_head = 1 AND state IN ('queued','retrying')",
            )?
            .query_row([], |r| r.get(0))?)
        })
    }

    /// The account's native id on the job's source, if provd knows it.
    pub fn native_id(&self, identity: &str, source: &str) -> Result<Option<String>> {
        self.with(|c| {
            Ok(c.prepare_cached(
                "SELECT native_id FROM accounts WHERE identity_id = ? AND source = ?",
            )?
            .query_row([identity, source], |r| r.get::<_, Option<String>>(0))
            .optional()?
            .flatten())
        })
    }

    /// The job's operations all succeeded (`ops` says how each went).
    pub fn succeed(&self, job: &Job, owner: &str, now: i64, ops: &[OpRecord]) -> Result<()> {
        self.end_attempt(&Finish {
            job: job.clone(),
            owner: owner.into(),
            now,
            ops: ops.to_vec(),
            ending: Ending::Succeeded,
        })
    }

    /// Records a failed attempt: `retry_at` Some → `retrying`, None → `failed`.
    pub fn fail_attempt(
        &self,
        job: &Job,
        owner: &str,
        now: i64,
        error: AttemptError,
        retry_at: Option<i64>,
        reason: Option<&str>,
    ) -> Result<()> {
        let ending = match retry_at {
            Some(at) => Ending::Retry { at, error },
            None => Ending::Failed {
                error,
                reason: reason.unwrap_or("").into(),
            },
        };
        self.end_attempt(&Finish {
            job: job.clone(),
            owner: owner.into(),
            now,
            ops: Vec::new(),
            ending,
        })
    }

    /// Records how one attempt ended, in its own transaction.
    pub fn end_attempt(&self, f: &Finish) -> Result<()> {
        self.with(|c| {
            let tx = c.transaction()?;
            end_in(&tx, f)?;
            tx.commit()?;
            Ok(())
        })
    }

    /// Group commit: records how many attempts ended, in ONE transaction (one fsync).
    /// Each attempt is still guarded on its own: one whose lease was taken over gets its
    /// error back and writes nothing, the others commit.
    pub fn finish_all(&self, items: &[Finish]) -> Result<Vec<Result<()>>> {
        self.with_redoable(|c| {
            let tx = c.transaction()?;
            let mut out = Vec::with_capacity(items.len());
            for f in items {
                tx.prepare_cached("SAVEPOINT attempt")?.execute([])?;
                match end_in(&tx, f) {
                    Ok(()) => {
                        tx.prepare_cached("RELEASE attempt")?.execute([])?;
                        out.push(Ok(()));
                    }
                    Err(e) => {
                        tx.prepare_cached("ROLLBACK TO attempt")?.execute([])?;
                        tx.prepare_cached("RELEASE attempt")?.execute([])?;
                        out.push(Err(e));
                    }
                }
            }
            tx.commit()?;
            Ok(out)
        })
    }

    /// Extends the leases of running jobs still held by `owner`; returns those it lost.
    pub fn renew(&self, owner: &str, jobs: &[(i64, i64)], until: i64) -> Result<Vec<i64>> {
        self.with_redoable(|c| {
            let tx = c.transaction()?;
            let mut lost = Vec::new();
            for (id, _epoch) in jobs {
                let n = tx
                    .prepare_cached(
                        "UPDATE jobs SET lease_expires_at = ? WHERE id = ? AND state = 'running' AND lease_owner = ?",
                    )?
                    .execute(params![until, id, owner])?;
                if n == 0 {
                    lost.push(*id);
                }
            }
            tx.commit()?;
            Ok(lost)
        })
    }

    /// Gives a job back without spending its attempt (shutdown before it could finish).
    pub fn release(&self, job: &Job, owner: &str, now: i64) -> Result<()> {
        self.with_redoable(|c| {
            let tx = c.transaction()?;
            let n = tx
                .prepare_cached(
                    "UPDATE jobs SET state = 'queued', attempt = MAX(attempt - 1, 0), lease_owner = NULL,
                        lease_expires_at = NULL, updated_at = ?
                     WHERE id = ? AND state = 'running' AND lease_owner = ?",
                )?
                .execute(params![now, job.id, owner])?;
            if n > 0 {
                super::audit::append(&tx, now, &Event::of_job("job_released", job, &agent_actor(owner), crate::store::rules::events::released_at_shutdown()))?;
            }
            tx.commit()?;
            Ok(())
        })
    }

    /// Jobs whose lease ran out (their agent died) go back to `queued`, keeping their
    /// attempts and errors. With `all_but` set, every lease not held by that owner is
    /// taken back at once: used at start-up, when this agent holds the state directory's
    /// lock and so knows no other agent is alive.
    pub fn expire_leases(&self, now: i64, all_but: Option<&str>, by: &str) -> Result<Vec<Moved>> {
        let actor = agent_actor(by);
        self.with(|c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let stale = tx
                .prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM jobs WHERE state = 'running'
                     AND (lease_expires_at < ?1 OR (?2 IS NOT NULL AND lease_owner IS NOT ?2))"
                ))?
                .query_map(params![now, all_but], from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let mut moved = Vec::new();
            for job in stale {
                let mut errors = job.errors.clone();
                errors.push(AttemptError {
                    at: crate::clock::rfc3339_ms(now),
                    attempt: job.attempt,
                    class: "lease".into(),
                    code: None,
                    message: format!(
                        "the agent `{}` holding the job stopped before finishing it; taken back",
                        job.lease_owner.as_deref().unwrap_or("?")
                    ),
                });
                let errors = serde_json::to_string(&errors).map_err(|e| StoreError::Corrupt(e.to_string()))?;
                tx.prepare_cached(
                    "UPDATE jobs SET state = 'queued', errors = ?, lease_owner = NULL, lease_expires_at = NULL, updated_at = ?
                     WHERE id = ? AND state = 'running' AND lease_owner IS ?",
                )?
                .execute(params![errors, now, job.id, job.lease_owner])?;
                super::audit::append(&tx, now, &Event::of_job("job_lease_expired", &job, &actor, crate::store::rules::events::lease_expired(&job)))?;
                moved.push(Moved {
                    job_id: job.id,
                    request_id: job.request_id.clone(),
                    source: job.source.clone(),
                    identity_id: job.identity_id.clone(),
                });
            }
            tx.commit()?;
            Ok(moved)
        })
    }

    /// Jobs per (source, state), from the trigger-kept `job_counts` table: read every few
    /// seconds (STATUS=, /metrics), it must not count a million rows each time.
    pub fn job_counts(&self) -> Result<Vec<(String, JobState, i64)>> {
        self.with(|c| {
            Ok(c.prepare_cached(
                "SELECT source, state, n FROM job_counts WHERE n > 0 ORDER BY source, state",
            )?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }
}

impl Queue for Sqlite {
    fn job(&self, id: i64) -> Fut<Option<Job>> {
        blocking!(self, |s| s.job(id))
    }
    fn jobs(&self, filter: JobFilter) -> Fut<Vec<Job>> {
        blocking!(self, |s| s.jobs(&filter))
    }
    fn claim(&self, c: Claim) -> Fut<Vec<Job>> {
        blocking!(self, |s| s.claim(
            &c.owner,
            c.limit,
            c.now,
            c.lease_until,
            &c.skip_sources,
            c.only_source.as_deref()
        ))
    }
    fn next_due(&self) -> Fut<Option<i64>> {
        blocking!(self, |s| s.next_due())
    }
    fn finish_all(&self, items: Vec<Finish>) -> Fut<Vec<Result<()>>> {
        blocking!(self, |s| s.finish_all(&items))
    }
    fn renew(&self, owner: String, jobs: Vec<(i64, i64)>, until: i64) -> Fut<Vec<i64>> {
        blocking!(self, |s| s.renew(&owner, &jobs, until))
    }
    fn release(&self, job: Job, owner: String, now: i64) -> Fut<()> {
        blocking!(self, |s| s.release(&job, &owner, now))
    }
    fn expire_leases(&self, now: i64, all_but: Option<String>, by: String) -> Fut<Vec<Moved>> {
        blocking!(self, |s| s.expire_leases(now, all_but.as_deref(), &by))
    }
    /// Alone on its file, start-up takes back every foreign lease anyway.
    fn reclaim(&self, _name: String, me: String, now: i64) -> Fut<Vec<Moved>> {
        blocking!(self, |s| s.expire_leases(now, Some(&me), &me))
    }
    fn job_counts(&self) -> Fut<Vec<(String, JobState, i64)>> {
        blocking!(self, |s| s.job_counts())
    }
    fn cancel_job(&self, id: i64, reason: String, by: Stamp) -> Fut<Job> {
        blocking!(self, |s| s.cancel_job(id, by.now, &reason, &by.actor))
    }
    fn cancel_request(&self, request_id: String, comment: String, by: Stamp) -> Fut<usize> {
        blocking!(self, |s| s.cancel_request(
            &request_id,
            by.now,
            &comment,
            &by.actor
        ))
    }
    fn retry_job(&self, id: i64, retry: Retry, by: Stamp) -> Fut<Job> {
        blocking!(self, |s| s.retry_job(id, &retry, &by))
    }
}
