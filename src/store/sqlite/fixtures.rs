//! Bulk fixtures and probes for the benchmarks (`benches/`): a million queued jobs or a
//! hundred thousand due removals cannot be made through the normal, fsync'd paths in a
//! reasonable time. Nothing in the agent calls these; they live here because this is the
//! only place that speaks SQL (DESIGN §12).

use rusqlite::params;

use super::Sqlite;
use crate::store::Result;

impl Sqlite {
    /// Copies job 1 (a real accepted job) into jobs `from..to`, one in ten the second of
    /// its (identity, source) lane; the lane triggers run for every row.
    #[doc(hidden)]
    pub fn bench_copy_first_job(&self, from: usize, to: usize) -> Result<()> {
        self.with(|c| {
            let tx = c.transaction()?;
            tx.execute(
                "WITH RECURSIVE n(i) AS (SELECT ?1 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < ?2)
                 INSERT INTO jobs (request_id, identity_id, source, kind, identity, operations, state, max_attempts,
                                   created_at, updated_at)
                 SELECT t.request_id, 'q' || (i - (i % 10 = 0)), t.source, t.kind,
                        json_set(t.identity, '$.id', 'q' || (i - (i % 10 = 0))), t.operations, 'queued',
                        t.max_attempts, t.created_at + i, t.created_at + i
                 FROM n, (SELECT * FROM jobs WHERE id = 1) t",
                params![from as i64, to as i64],
            )?;
            tx.commit()?;
            Ok(())
        })
    }

    /// How many claimable jobs the claim's read finds (its first `limit`), without the
    /// write: the cost of finding a batch.
    #[doc(hidden)]
    pub fn bench_find_claimable(&self, now: i64, limit: usize) -> Result<usize> {
        self.with(|c| {
            let mut st = c.prepare_cached(
                "SELECT id FROM jobs INDEXED BY jobs_claimable
                 WHERE lane_head = 1 AND state IN ('queued','retrying')
                   AND COALESCE(next_attempt_at, created_at) <= ?1
                 ORDER BY COALESCE(next_attempt_at, created_at), id LIMIT ?2",
            )?;
            let ids = st.query_map(params![now, limit as i64], |r| r.get::<_, i64>(0))?;
            Ok(ids.count())
        })
    }

    /// Undoes claims made by `owner`, as a cleanly stopped agent leaves its jobs.
    #[doc(hidden)]
    pub fn bench_unclaim(&self, owner: &str) -> Result<()> {
        self.with(|c| {
            c.execute(
                "UPDATE jobs SET state = 'queued', attempt = 0, lease_owner = NULL, lease_expires_at = NULL
                 WHERE lease_owner = ?",
                [owner],
            )?;
            Ok(())
        })
    }

    /// Active assignments of `item_id` (entitlements as JSON) for `u0…`, one per due time.
    #[doc(hidden)]
    pub fn bench_due_assignments(
        &self,
        item_id: &str,
        entitlements: &str,
        due: &[i64],
    ) -> Result<()> {
        self.with(|c| {
            let tx = c.transaction()?;
            {
                let mut st = tx.prepare(
                    "INSERT INTO assignments (identity_id, item_type, item_id, state, request_id, entitlements, remove_at, created_at, updated_at)
                     VALUES (?, 'ENTITLEMENT', ?, 'active', 'bench', ?, ?, 0, 0)",
                )?;
                for (i, at) in due.iter().enumerate() {
                    st.execute(params![format!("u{i}"), item_id, entitlements, at])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
    }

    /// How late each fired removal was recorded (ms after its removeDate).
    #[doc(hidden)]
    pub fn bench_fire_lags(&self) -> Result<Vec<i64>> {
        self.with(|c| {
            Ok(c.prepare(
                "SELECT fired_at - remove_at FROM assignments WHERE fired_at IS NOT NULL",
            )?
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<Vec<i64>>>()?)
        })
    }

    /// For each fired removal whose revoke is planned: planned (the revoke request's
    /// arrival) minus due, in ms.
    pub fn bench_plan_lags(&self) -> Result<Vec<i64>> {
        self.with(|c| {
            Ok(c.prepare(
                "SELECT r.received_at - a.remove_at FROM assignments a
                 JOIN requests r ON r.idempotency_key = 'schedule:' || a.id || ':' || a.remove_at
                 WHERE a.fired_at IS NOT NULL",
            )?
            .query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<Vec<i64>>>()?)
        })
    }
}
