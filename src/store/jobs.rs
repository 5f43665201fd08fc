//! The job table, River-style: states, a list of per-attempt errors, leases, and
//! transitions that are each one guarded statement (`WHERE id = ? AND state = 'running'
//! AND lease_owner = ?`), so that a worker whose lease was taken over can never overwrite
//! the newer outcome.

use provd_connector_core::{Identity, Operation};
use serde::{Deserialize, Serialize};

use super::cells::Cells;
use super::{Result, StoreError};

pub use super::rules::states::JobState;

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
    /// The fencing token of the lease (PostgreSQL): incremented by every claim, and every
    /// write of the attempt's outcome must still match it. SQLite, one agent per file,
    /// fences on the owner alone and leaves it 0.
    pub lease_epoch: i64,
    /// The account's native id on the job's source, read with the claim (None elsewhere):
    /// the lane rule keeps it from changing while the job waits to run.
    pub account: Option<String>,
}

#[cfg(test)]
impl Job {
    /// A job of `identity` on `source` in `state`, for unit tests to change what they test.
    pub fn sample(identity: &str, source: &str, state: JobState) -> Job {
        Job {
            id: 7,
            request_id: "r".into(),
            identity_id: identity.into(),
            source: source.into(),
            kind: "grant".into(),
            identity: provd_connector_core::Identity {
                id: identity.into(),
                attributes: Default::default(),
            },
            ops: Vec::new(),
            ops_done: 0,
            state,
            attempt: 2,
            max_attempts: 3,
            next_attempt_at: None,
            lease_owner: None,
            lease_expires_at: None,
            errors: Vec::new(),
            created_at: 0,
            window_start: None,
            updated_at: 0,
            finalized_at: None,
            lease_epoch: 0,
            account: None,
        }
    }
}

/// How one connector call of an attempt went, recorded with the attempt's outcome. The
/// calls are not committed one by one: every operation is idempotent, so after a crash
/// the job simply does them again, and the attempt costs one commit instead of one per call.
#[derive(Debug, Clone)]
pub struct OpRecord {
    pub index: usize,
    pub outcome: &'static str,
    pub native_id: Option<String>,
    /// The native id of the account the call worked on (an entitlement's account), for
    /// the audit trail; not written to the accounts table.
    pub account: Option<String>,
    /// What the audit trail should say beyond the outcome (a DN that was taken).
    pub detail: Option<String>,
    /// The account's status after the call (true: disabled), where the dispatcher knows
    /// it better than the operation says: an AD account made without `[account.password]`
    /// is created disabled and stays so.
    pub disabled: Option<bool>,
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

/// An operator's retry of a failed or canceled job: the attempts it gets from now, and
/// its identity as imported now (None: keep the one it was planned with), so that a
/// retry after a fix to the identity sees the fix.
#[derive(Debug, Clone, Default)]
pub struct Retry {
    pub max_attempts: u32,
    pub identity: Option<provd_connector_core::Identity>,
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

/// A job from a row of its columns in the order both backends read them (`id, request_id,
/// identity_id, source, kind, identity, operations, ops_done, state, attempt,
/// max_attempts, next_attempt_at, lease_owner, lease_expires_at, errors, created_at,
/// window_start, updated_at, finalized_at`), then PostgreSQL's lease epoch (`with_epoch`),
/// then, when there, the account's native id (a claim's read).
pub(crate) fn job_from(r: &impl Cells, with_epoch: bool) -> Result<Job> {
    let id = r.int(0)?;
    let corrupt = |what: &str, e: &dyn std::fmt::Display| {
        StoreError::Corrupt(format!("job {id}: {what}: {e}"))
    };
    let state = r.text(8)?;
    let account_at = if with_epoch { 20 } else { 19 };
    Ok(Job {
        id,
        request_id: r.text(1)?,
        identity_id: r.text(2)?,
        source: r.text(3)?,
        kind: r.text(4)?,
        identity: serde_json::from_str(&r.text(5)?).map_err(|e| corrupt("identity", &e))?,
        ops: serde_json::from_str(&r.text(6)?).map_err(|e| corrupt("operations", &e))?,
        ops_done: r.int(7)? as usize,
        state: JobState::parse(&state).ok_or_else(|| corrupt("state", &state))?,
        attempt: r.int(9)? as u32,
        max_attempts: r.int(10)? as u32,
        next_attempt_at: r.opt_int(11)?,
        lease_owner: r.opt_text(12)?,
        lease_expires_at: r.opt_int(13)?,
        errors: serde_json::from_str(&r.text(14)?).map_err(|e| corrupt("errors", &e))?,
        created_at: r.int(15)?,
        window_start: r.opt_int(16)?,
        updated_at: r.int(17)?,
        finalized_at: r.opt_int(18)?,
        lease_epoch: if with_epoch { r.int(19)? } else { 0 },
        account: if r.width() > account_at {
            r.opt_text(account_at)?
        } else {
            None
        },
    })
}

/// How many assignments a job grants (its grant items'), and how many of them are still
/// wanted (pending, active or failed): a retry of a grant job none of whose grants is
/// wanted any more would give the access again (see [`super::rules::operator::retry`]).
pub(crate) fn grants_of_job_sql(p: fn(usize) -> String) -> String {
    format!(
        "SELECT COUNT(*), COALESCE(SUM(CASE WHEN a.state IN ('pending','active','failed') THEN 1 ELSE 0 END), 0)
         FROM request_items ri JOIN item_jobs ij ON ij.item_id = ri.id
         JOIN assignments a ON a.id = ri.assignment_id
         WHERE ij.job_id = {} AND ri.effect = 'grant'",
        p(1)
    )
}

/// Hands the account a failed or canceled job was creating to the next live job of its
/// lane (parameter: the job's id), which was planned without a create because this one's
/// account was on its way: that job's success makes it known. Found by the simulation
/// (issue 33, seed 47): a grant withdrawn while a second grant waited behind it left the
/// second one adding to an account provd then never recorded, so a leaver would not
/// have disabled it. With no later job the row is dropped as before.
pub(crate) fn hand_over_account_sql(p: fn(usize) -> String) -> String {
    let job = p(1);
    // The next live job of the lane that gives access without making the account: one
    // planned while this one's create was pending (not a revoke, which needs no account,
    // nor a job that makes its own).
    let next = format!(
        "SELECT MIN(j.id) FROM jobs j
         WHERE j.identity_id = accounts.identity_id AND j.source = accounts.source
           AND j.id > {job} AND j.state IN ('queued','retrying','running','manual')
           AND j.kind = 'grant' AND j.operations LIKE '%\"ADD_ENTITLEMENT\"%'
           AND j.operations NOT LIKE '%\"CREATE_ACCOUNT\"%'"
    );
    format!(
        "UPDATE accounts SET job_id = ({next})
         WHERE job_id = {job} AND state = 'pending'
           AND (SELECT state FROM jobs WHERE id = {job}) IN ('failed','canceled')
           AND ({next}) IS NOT NULL"
    )
}

/// The job that holds the pending account of a job's lane, when not that job (parameter:
/// the job's id): after [`hand_over_account_sql`] moved it, its heir, which then makes the
/// account first (see [`super::rules::operator::inherit_create`]).
pub(crate) fn heir_sql(p: fn(usize) -> String) -> String {
    format!(
        "SELECT a.job_id FROM jobs d JOIN accounts a
           ON a.identity_id = d.identity_id AND a.source = d.source
         WHERE d.id = {} AND a.state = 'pending' AND a.job_id IS NOT NULL AND a.job_id <> d.id",
        p(1)
    )
}

/// Writes an heir's operations (parameters: the operations as JSON, its id), only while
/// none has run.
pub(crate) fn inherit_sql(p: fn(usize) -> String) -> String {
    format!(
        "UPDATE jobs SET operations = {} WHERE id = {} AND ops_done = 0",
        p(1),
        p(2)
    )
}

/// Forgets the account a job deleted (parameters: identity, source, the job's id) — not
/// one a later job is making (pending, with a larger job id): a grant accepted while the
/// delete waited in the lane made it, and it is wanted (found by the simulation, issue
/// 33: a withdrawn grant's account deleted before the new grant's create was done).
pub(crate) fn forget_account_sql(p: fn(usize) -> String) -> String {
    format!(
        "DELETE FROM accounts WHERE identity_id = {} AND source = {}
         AND NOT (state = 'pending' AND job_id IS NOT NULL AND job_id > {})",
        p(1),
        p(2),
        p(3)
    )
}

/// The jobs of a lane waiting behind one (parameter: its id) that have not begun: `id`,
/// `operations`. Those [`super::rules::operator::orphaned`] once the job's failure left
/// the lane no account are canceled.
pub(crate) fn waiting_behind_sql(p: fn(usize) -> String) -> String {
    format!(
        "SELECT l.id, l.operations FROM jobs d JOIN jobs l
           ON l.identity_id = d.identity_id AND l.source = d.source
         WHERE d.id = {} AND l.id > d.id AND l.state IN ('queued','retrying') AND l.ops_done = 0
         ORDER BY l.id",
        p(1)
    )
}

/// The jobs queued after one on the same identity and source: `id`, `operations`,
/// `state` (see [`super::rules::operator::retry`]).
pub(crate) fn later_jobs_sql(p: fn(usize) -> String) -> String {
    format!(
        "SELECT id, operations, state FROM jobs
         WHERE identity_id = {} AND source = {} AND id > {} ORDER BY id",
        p(1),
        p(2),
        p(3)
    )
}

/// Rows of [`later_jobs_sql`] (`id`, `operations`, `state`) read.
pub(crate) fn parse_later(
    rows: Vec<(i64, String, String)>,
) -> super::Result<Vec<super::rules::operator::Later>> {
    rows.into_iter()
        .map(|(id, ops, state)| {
            Ok(super::rules::operator::Later {
                id,
                state: JobState::parse(&state).ok_or_else(|| {
                    super::StoreError::Corrupt(format!("job {id}: state `{state}`"))
                })?,
                ops: parse_ops_of(id, &ops)?,
            })
        })
        .collect()
}

/// A job's operations, read from their JSON.
pub(crate) fn parse_ops_of(
    id: i64,
    ops: &str,
) -> super::Result<Vec<provd_connector_core::Operation>> {
    serde_json::from_str(ops)
        .map_err(|e| super::StoreError::Corrupt(format!("job {id}: operations: {e}")))
}
