//! The job table, River-style: states, a list of per-attempt errors, leases, and
//! transitions that are each one guarded statement (`WHERE id = ? AND state = 'running'
//! AND lease_owner = ?`), so that a worker whose lease was taken over can never overwrite
//! the newer outcome.

use provd_connector_core::{Identity, Operation};
use rusqlite::{Connection, OptionalExtension, Row, params};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::events::{self, Event};
use super::{Result, Store, StoreError};

/// DESIGN §3 contract: the job states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Queued,
    Running,
    Retrying,
    Manual,
    Succeeded,
    Failed,
    Canceled,
}

impl JobState {
    pub const ALL: [JobState; 7] = [
        JobState::Queued,
        JobState::Running,
        JobState::Retrying,
        JobState::Manual,
        JobState::Succeeded,
        JobState::Failed,
        JobState::Canceled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Retrying => "retrying",
            JobState::Manual => "manual",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Canceled => "canceled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Canceled
        )
    }
}

/// The error of one attempt, kept for good in the job's list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptError {
    /// RFC 3339.
    pub at: String,
    pub attempt: u32,
    /// `retryable`, `permanent`, or `lease` (the agent holding the job went away).
    pub class: String,
    pub code: Option<String>,
    pub message: String,
}

#[derive(Debug, Clone)]
pub struct Job {
    pub id: i64,
    pub request_id: String,
    pub identity_id: String,
    pub source: String,
    pub kind: String,
    pub identity: Identity,
    pub ops: Vec<Operation>,
    pub ops_done: usize,
    pub state: JobState,
    pub attempt: u32,
    pub max_attempts: u32,
    pub next_attempt_at: Option<i64>,
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<i64>,
    pub errors: Vec<AttemptError>,
    pub created_at: i64,
    pub window_start: Option<i64>,
    pub updated_at: i64,
    pub finalized_at: Option<i64>,
    /// The account's native id on the job's source, read with the claim (None elsewhere):
    /// the lane rule keeps it from changing while the job waits to run.
    pub account: Option<String>,
}

const COLUMNS: &str = "id, request_id, identity_id, source, kind, identity, operations, ops_done, state, attempt,
    max_attempts, next_attempt_at, lease_owner, lease_expires_at, errors, created_at, window_start, updated_at, finalized_at";

fn corrupt(id: i64, what: &str, e: impl std::fmt::Display) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        0,
        rusqlite::types::Type::Text,
        format!("job {id}: {what}: {e}").into(),
    )
}

fn from_row(r: &Row<'_>) -> rusqlite::Result<Job> {
    let id: i64 = r.get(0)?;
    let identity: String = r.get(5)?;
    let ops: String = r.get(6)?;
    let state: String = r.get(8)?;
    let errors: String = r.get(14)?;
    Ok(Job {
        id,
        request_id: r.get(1)?,
        identity_id: r.get(2)?,
        source: r.get(3)?,
        kind: r.get(4)?,
        identity: serde_json::from_str(&identity).map_err(|e| corrupt(id, "identity", e))?,
        ops: serde_json::from_str(&ops).map_err(|e| corrupt(id, "operations", e))?,
        ops_done: r.get::<_, i64>(7)? as usize,
        state: JobState::parse(&state).ok_or_else(|| corrupt(id, "state", &state))?,
        attempt: r.get(9)?,
        max_attempts: r.get(10)?,
        next_attempt_at: r.get(11)?,
        lease_owner: r.get(12)?,
        lease_expires_at: r.get(13)?,
        errors: serde_json::from_str(&errors).map_err(|e| corrupt(id, "errors", e))?,
        created_at: r.get(15)?,
        window_start: r.get(16)?,
        updated_at: r.get(17)?,
        finalized_at: r.get(18)?,
        account: if r.as_ref().column_count() > 19 {
            r.get(19)?
        } else {
            None
        },
    })
}

/// How one connector call of an attempt went, recorded with the attempt's outcome. The
/// calls are not committed one by one: every operation is idempotent, so after a crash
/// the job simply does them again, and the attempt costs one commit instead of one per call.
#[derive(Debug, Clone)]
pub struct OpRecord {
    pub index: usize,
    pub outcome: &'static str,
    pub native_id: Option<String>,
    /// What the audit trail should say beyond the outcome (a DN that was taken).
    pub detail: Option<String>,
}

/// How an attempt ended.
#[derive(Debug, Clone)]
pub enum Ending {
    Succeeded,
    /// Retryable: try again at `at`.
    Retry {
        at: i64,
        error: AttemptError,
    },
    /// Given up.
    Failed {
        error: AttemptError,
        reason: String,
    },
    /// Not the job's fault (provd's own credentials were refused): back to `queued` with
    /// the attempt given back, to wait for the source. The error is in the event only.
    Released {
        error: AttemptError,
    },
}

/// One attempt's end, to be committed (alone or with others).
#[derive(Debug, Clone)]
pub struct Finish {
    pub job: Job,
    pub owner: String,
    pub now: i64,
    pub ops: Vec<OpRecord>,
    pub ending: Ending,
}

/// Writes one attempt's end inside the caller's transaction, guarded on the lease.
fn end_in(tx: &Connection, f: &Finish) -> Result<()> {
    let (job, owner, now) = (&f.job, f.owner.as_str(), f.now);
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
        record_ops(tx, job, &f.ops, now)?;
        return event(
            tx,
            now,
            "job_released",
            job,
            json!({ "reason": "authentication", "error": error, "attemptRefunded": job.attempt }),
        );
    }
    let errors_with = |e: &AttemptError| {
        let mut errors = job.errors.clone();
        errors.push(e.clone());
        serde_json::to_string(&errors).map_err(|e| StoreError::Corrupt(e.to_string()))
    };
    let (state, next_at, errors, data) = match &f.ending {
        Ending::Succeeded => ("succeeded", None, None, json!({ "attempt": job.attempt })),
        Ending::Retry { at, error } => (
            "retrying",
            Some(*at),
            Some(errors_with(error)?),
            json!({ "attempt": job.attempt, "error": error, "nextAttemptAt": crate::clock::rfc3339_ms(*at) }),
        ),
        Ending::Failed { error, reason } => (
            "failed",
            None,
            Some(errors_with(error)?),
            json!({ "attempt": job.attempt, "error": error, "reason": reason }),
        ),
        Ending::Released { .. } => return Ok(()),
    };
    let finalized = (state != "retrying").then_some(now);
    let n = tx
        .prepare_cached(
            "UPDATE jobs SET state = ?, next_attempt_at = ?, errors = COALESCE(?, errors), lease_owner = NULL,
                lease_expires_at = NULL, finalized_at = ?, updated_at = ?
             WHERE id = ? AND state = 'running' AND lease_owner = ?",
        )?
        .execute(params![state, next_at, errors, finalized, now, job.id, owner])?;
    if n == 0 {
        return Err(lost(job.id));
    }
    record_ops(tx, job, &f.ops, now)?;
    event(tx, now, &format!("job_{state}"), job, data)?;
    if state != "retrying" {
        settle(tx, job.id, now)?;
    }
    Ok(())
}

/// Writes an attempt's calls: progress, the account's native id, one audit event each.
fn record_ops(tx: &Connection, job: &Job, ops: &[OpRecord], now: i64) -> Result<()> {
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
        let kind = job.ops.get(op.index).map(|o| o.kind().as_str());
        event(
            tx,
            now,
            "connector_call",
            job,
            json!({ "op": kind, "index": op.index, "outcome": op.outcome, "nativeId": op.native_id, "detail": op.detail }),
        )?;
    }
    Ok(())
}

/// A job that moved, for the log line the caller writes.
#[derive(Debug, Clone)]
pub struct Moved {
    pub job_id: i64,
    pub request_id: String,
    pub source: String,
    pub identity_id: String,
}

/// The filter of `provd jobs list`.
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    pub state: Option<JobState>,
    pub source: Option<String>,
    pub request_id: Option<String>,
    pub limit: Option<usize>,
}

fn event(
    conn: &Connection,
    now: i64,
    kind: &str,
    job: &Job,
    data: serde_json::Value,
) -> Result<()> {
    events::append(
        conn,
        now,
        &Event {
            kind,
            request_id: Some(&job.request_id),
            job_id: Some(job.id),
            source: Some(&job.source),
            identity: Some(&job.identity_id),
            data,
        },
    )
}

fn get(conn: &Connection, id: i64) -> Result<Option<Job>> {
    Ok(conn
        .prepare_cached(&format!("SELECT {COLUMNS} FROM jobs WHERE id = ?"))?
        .query_row([id], from_row)
        .optional()?)
}

fn lost(job_id: i64) -> StoreError {
    StoreError::LeaseLost { job_id }
}

impl Store {
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

    pub fn job_events(&self, id: i64) -> Result<Vec<(i64, String, String)>> {
        self.with(|c| events::for_job(c, id))
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
        self.with(|c| {
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
                          AND j.source NOT IN (SELECT value FROM json_each(?4))
                          AND (?5 IS NULL OR j.source = ?5)
                        ORDER BY COALESCE(j.next_attempt_at, j.created_at), j.id LIMIT ?6)
                     RETURNING {COLUMNS},
                        (SELECT a.native_id FROM accounts a WHERE a.identity_id = jobs.identity_id AND a.source = jobs.source)"
                ))?
                .query_map(params![owner, lease_until, now, skip, only_source, limit as i64], from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            for job in &jobs {
                event(&tx, now, "job_running", job, json!({ "attempt": job.attempt, "owner": owner }))?;
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
        self.with(|c| {
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

    /// Gives a job back without spending its attempt (shutdown before it could finish).
    pub fn release(&self, job: &Job, owner: &str, now: i64) -> Result<()> {
        self.with(|c| {
            let tx = c.transaction()?;
            let n = tx
                .prepare_cached(
                    "UPDATE jobs SET state = 'queued', attempt = MAX(attempt - 1, 0), lease_owner = NULL,
                        lease_expires_at = NULL, updated_at = ?
                     WHERE id = ? AND state = 'running' AND lease_owner = ?",
                )?
                .execute(params![now, job.id, owner])?;
            if n > 0 {
                event(&tx, now, "job_released", job, json!({ "reason": "shutdown" }))?;
            }
            tx.commit()?;
            Ok(())
        })
    }

    /// Jobs whose lease ran out (their agent died) go back to `queued`, keeping their
    /// attempts and errors. With `all_but` set, every lease not held by that owner is
    /// taken back at once: used at start-up, when this agent holds the state directory's
    /// lock and so knows no other agent is alive.
    pub fn expire_leases(&self, now: i64, all_but: Option<&str>) -> Result<Vec<Moved>> {
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
                event(&tx, now, "job_lease_expired", &job, json!({ "owner": job.lease_owner, "attempt": job.attempt }))?;
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

    /// `provd jobs cancel`: a job that has not been applied (queued, retrying, waiting on
    /// manual tasks) is canceled; its open tasks are canceled with it.
    pub fn cancel_job(&self, id: i64, now: i64, reason: &str) -> Result<Job> {
        self.with(|c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let job = cancel_in(&tx, id, now, reason)?;
            tx.commit()?;
            Ok(job)
        })
    }

    /// Cancels every job of a request that has not been applied yet; returns how many.
    pub fn cancel_request(&self, request_id: &str, now: i64, comment: &str) -> Result<usize> {
        self.with(|c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let exists: Option<i64> = tx.prepare_cached("SELECT seq FROM requests WHERE id = ?")?.query_row([request_id], |r| r.get(0)).optional()?;
            if exists.is_none() {
                return Err(StoreError::NotFound(format!("no access request `{request_id}`")));
            }
            let ids = tx
                .prepare_cached("SELECT id FROM jobs WHERE request_id = ? AND state IN ('queued','retrying','manual') ORDER BY id")?
                .query_map([request_id], |r| r.get::<_, i64>(0))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            for id in &ids {
                cancel_in(&tx, *id, now, comment)?;
            }
            tx.prepare_cached("UPDATE requests SET canceled_at = ?, cancel_comment = ? WHERE id = ?")?
                .execute(params![now, comment, request_id])?;
            events::append(
                &tx,
                now,
                &Event {
                    kind: "request_canceled",
                    request_id: Some(request_id),
                    data: json!({ "comment": comment, "jobsCanceled": ids.len() }),
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
    pub fn retry_job(
        &self,
        id: i64,
        now: i64,
        max_attempts: u32,
        identity: Option<&Identity>,
    ) -> Result<Job> {
        let identity = identity
            .map(|i| serde_json::to_string(i).map_err(|e| StoreError::Corrupt(e.to_string())))
            .transpose()?;
        self.with(|c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let job = get(&tx, id)?.ok_or_else(|| StoreError::NotFound(format!("no job {id}")))?;
            match job.state {
                JobState::Failed => {
                    tx.prepare_cached(
                        "UPDATE jobs SET state = 'queued', attempt = 0, max_attempts = ?, window_start = NULL,
                            next_attempt_at = NULL, finalized_at = NULL, updated_at = ?,
                            identity = COALESCE(?, identity)
                         WHERE id = ? AND state = 'failed'",
                    )?
                    .execute(params![max_attempts, now, identity, id])?;
                    unsettle(&tx, id, now)?;
                }
                JobState::Retrying => {
                    tx.prepare_cached("UPDATE jobs SET next_attempt_at = ?, updated_at = ? WHERE id = ? AND state = 'retrying'")?
                        .execute(params![now, now, id])?;
                }
                other => {
                    return Err(StoreError::Conflict(format!(
                        "job {id} is {}; only failed or retrying jobs can be retried",
                        other.as_str()
                    )));
                }
            }
            event(&tx, now, "job_retry_requested", &job, json!({ "from": job.state.as_str(), "attempts_before": job.attempt, "max_attempts": max_attempts }))?;
            let job = get(&tx, id)?.ok_or_else(|| StoreError::NotFound(format!("no job {id}")))?;
            tx.commit()?;
            Ok(job)
        })
    }

    /// Jobs per (source, state), from the trigger-kept `job_counts` table: read every few
    /// seconds (STATUS=, /metrics), it must not count a million rows each time.
    pub fn job_counts(&self) -> Result<Vec<(String, String, i64)>> {
        self.with(|c| {
            Ok(c.prepare_cached(
                "SELECT source, state, n FROM job_counts WHERE n > 0 ORDER BY source, state",
            )?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }
}

fn cancel_in(tx: &Connection, id: i64, now: i64, reason: &str) -> Result<Job> {
    let job = get(tx, id)?.ok_or_else(|| StoreError::NotFound(format!("no job {id}")))?;
    match job.state {
        JobState::Queued | JobState::Retrying | JobState::Manual => {}
        JobState::Running => {
            return Err(StoreError::Conflict(format!(
                "job {id} is running right now; cancel it once this attempt has ended"
            )));
        }
        other => {
            return Err(StoreError::Conflict(format!(
                "job {id} has already ended ({})",
                other.as_str()
            )));
        }
    }
    tx.prepare_cached(
        "UPDATE jobs SET state = 'canceled', lease_owner = NULL, lease_expires_at = NULL, finalized_at = ?, updated_at = ?
         WHERE id = ? AND state IN ('queued','retrying','manual')",
    )?
    .execute(params![now, now, id])?;
    tx.prepare_cached("UPDATE tasks SET status = 'canceled', resolved_at = ?, note = ? WHERE job_id = ? AND status = 'open'")?
        .execute(params![now, reason, id])?;
    event(
        tx,
        now,
        "job_canceled",
        &job,
        json!({ "reason": reason, "from": job.state.as_str() }),
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
        if !states.iter().all(|s| s.is_final()) {
            continue;
        }
        let all_ok = states.iter().all(|s| *s == JobState::Succeeded);
        let all_canceled = states.iter().all(|s| *s == JobState::Canceled);
        let (from, to) = match (effect.as_str(), all_ok, all_canceled) {
            ("grant", true, _) => ("pending", "active"),
            ("grant", false, true) => ("pending", "canceled"),
            ("grant", false, false) => ("pending", "failed"),
            ("revoke", true, _) => ("revoking", "removed"),
            // The removal did not (fully) happen: the access is still there.
            ("revoke", false, _) => ("revoking", "active"),
            _ => continue,
        };
        tx.prepare_cached(
            "UPDATE assignments SET state = ?, updated_at = ? WHERE id = ? AND state = ?",
        )?
        .execute(params![to, now, assignment, from])?;
    }
    tx.prepare_cached(
        "DELETE FROM accounts WHERE job_id = ?1 AND state = 'pending'
         AND (SELECT state FROM jobs WHERE id = ?1) IN ('failed','canceled')",
    )?
    .execute(params![job_id])?;
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
    now: i64,
    state: &str,
    error: Option<AttemptError>,
) -> Result<String> {
    let Some(job) = get(tx, job_id)? else {
        return Err(StoreError::NotFound(format!("no job {job_id}")));
    };
    if job.state != JobState::Manual {
        return Ok(job.state.as_str().to_string());
    }
    let mut errors = job.errors.clone();
    errors.extend(error.clone());
    let errors = serde_json::to_string(&errors).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    tx.prepare_cached("UPDATE jobs SET state = ?, errors = ?, ops_done = CASE WHEN ? = 'succeeded' THEN json_array_length(operations) ELSE ops_done END, finalized_at = ?, updated_at = ? WHERE id = ? AND state = 'manual'")?
        .execute(params![state, errors, state, now, now, job_id])?;
    // The job failed: its other open tasks are moot, take them off the owner's list.
    if state == "failed" {
        tx.prepare_cached("UPDATE tasks SET status = 'canceled', resolved_at = ?, note = 'the job failed' WHERE job_id = ? AND status = 'open'")?
            .execute(params![now, job_id])?;
    }
    // A manual job that created the account: the account now exists on the source.
    if state == "succeeded" {
        tx.prepare_cached("UPDATE accounts SET state = 'active', updated_at = ? WHERE job_id = ? AND state = 'pending'")?
            .execute(params![now, job_id])?;
    }
    event(
        tx,
        now,
        &format!("job_{state}"),
        &job,
        json!({ "by": "manual tasks", "error": error }),
    )?;
    settle(tx, job_id, now)?;
    Ok(state.to_string())
}
