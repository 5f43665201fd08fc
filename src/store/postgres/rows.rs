//! Jobs as PostgreSQL rows, and the writes every job transition shares.

use tokio_postgres::Row;

use super::Tx;
use crate::store::events::Event;
use crate::store::jobs::{Job, JobState};
use crate::store::{Result, StoreError};

pub(super) const COLUMNS: &str = "id, request_id, identity_id, source, kind, identity, operations, ops_done, state, attempt,
    max_attempts, next_attempt_at, lease_owner, lease_expires_at, errors, created_at, window_start, updated_at, finalized_at,
    lease_epoch";

fn corrupt(id: i64, what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("job {id}: {what}: {e}"))
}

/// A job from a row of [`COLUMNS`] (and, as a 21st column, the account's native id).
pub(super) fn job(r: &Row) -> Result<Job> {
    let id: i64 = r.try_get(0)?;
    let state: String = r.try_get(8)?;
    Ok(Job {
        id,
        request_id: r.try_get(1)?,
        identity_id: r.try_get(2)?,
        source: r.try_get(3)?,
        kind: r.try_get(4)?,
        identity: serde_json::from_str(r.try_get(5)?).map_err(|e| corrupt(id, "identity", e))?,
        ops: serde_json::from_str(r.try_get(6)?).map_err(|e| corrupt(id, "operations", e))?,
        ops_done: r.try_get::<_, i64>(7)? as usize,
        state: JobState::parse(&state).ok_or_else(|| corrupt(id, "state", &state))?,
        attempt: r.try_get::<_, i64>(9)? as u32,
        max_attempts: r.try_get::<_, i64>(10)? as u32,
        next_attempt_at: r.try_get(11)?,
        lease_owner: r.try_get(12)?,
        lease_expires_at: r.try_get(13)?,
        errors: serde_json::from_str(r.try_get(14)?).map_err(|e| corrupt(id, "errors", e))?,
        created_at: r.try_get(15)?,
        window_start: r.try_get(16)?,
        updated_at: r.try_get(17)?,
        finalized_at: r.try_get(18)?,
        lease_epoch: r.try_get(19)?,
        account: if r.len() > 20 { r.try_get(20)? } else { None },
    })
}

pub(super) async fn get(tx: &Tx<'_>, id: i64) -> Result<Option<Job>> {
    let row = tx
        .query_opt(&format!("SELECT {COLUMNS} FROM jobs WHERE id = $1"), &[&id])
        .await?;
    row.as_ref().map(job).transpose()
}

pub(super) async fn event(
    tx: &Tx<'_>,
    now: i64,
    kind: &str,
    job: &Job,
    actor: &str,
    data: serde_json::Value,
) -> Result<()> {
    super::audit::append(tx, now, &Event::of_job(kind, job, actor, data)).await
}

pub(super) fn to_json<T: serde::Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| StoreError::Corrupt(e.to_string()))
}
