//! Jobs as PostgreSQL rows, and the writes every job transition shares.

use tokio_postgres::Row;

use super::Tx;
use crate::store::jobs::Job;
use crate::store::{Result, StoreError};

/// The job columns both backends read (see `jobs::job_from`), then the lease's epoch.
pub(super) const COLUMNS: &str = "id, request_id, identity_id, source, kind, identity, operations, ops_done, state, attempt,
    max_attempts, next_attempt_at, lease_owner, lease_expires_at, errors, created_at, window_start, updated_at, finalized_at,
    lease_epoch";

/// A job from a row of [`COLUMNS`] (and, as a 21st column, the account's native id).
pub(super) fn job(r: &Row) -> Result<Job> {
    crate::store::jobs::job_from(r, true)
}

pub(super) async fn get(tx: &Tx<'_>, id: i64) -> Result<Option<Job>> {
    let row = tx
        .query_opt(&format!("SELECT {COLUMNS} FROM jobs WHERE id = $1"), &[&id])
        .await?;
    row.as_ref().map(job).transpose()
}

pub(super) fn to_json<T: serde::Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| StoreError::Corrupt(e.to_string()))
}
