//! Jobs on PostgreSQL, for several agents at once.
//!
//! A claim takes due lane heads in due order with `FOR UPDATE SKIP LOCKED`: two agents
//! claiming together never take the same job, and the lane rule (no earlier open job of
//! the same identity and source) is checked per candidate. Each claim increments the
//! job's `lease_epoch`; every end, retry and release is written only while owner and
//! epoch still match, so an agent that stalled past its lease writes nothing (LeaseLost).

use serde_json::json;

use super::audit::append_all;
use super::rows::{COLUMNS, event, get, job, to_json};
use crate::store::events::Event;
use crate::store::rules::{EndRow, end_row};
use futures_util::future::try_join_all;

use super::{Postgres, Tx, exec};
use crate::model::agent_actor;
use crate::store::jobs::{AttemptError, Ending, Finish, Job, JobFilter, JobState, Moved, OpRecord};
use crate::store::roles::{BoxFuture, Claim, Queue};
use crate::store::{Result, StoreError};

const OPEN: &str = "('queued','running','retrying','manual')";

fn lost(job_id: i64) -> StoreError {
    StoreError::LeaseLost { job_id }
}

/// The progress an attempt's calls leave on the job (ops done), if it made any.
fn ops_done(f: &Finish) -> Option<i64> {
    f.ops.last().map(|last| (last.index + 1) as i64)
}

/// Fences one attempt's end: writes the job's new state (and its progress) only where
/// owner and epoch still match; false when another agent holds the job now.
async fn fence(tx: &Tx<'_>, f: &Finish, row: Option<&EndRow>) -> Result<bool> {
    let (job, owner, now, done) = (&f.job, f.owner.as_str(), f.now, ops_done(f));
    let n = match row {
        None => {
            exec(
                tx,
                "UPDATE jobs SET state = 'queued', attempt = GREATEST(attempt - 1, 0), next_attempt_at = NULL,
                    lease_owner = NULL, lease_expires_at = NULL, updated_at = $1, ops_done = COALESCE($5, ops_done)
                 WHERE id = $2 AND state = 'running' AND lease_owner = $3 AND lease_epoch = $4",
                &[&now, &job.id, &owner, &job.lease_epoch, &done],
            )
            .await?
        }
        Some(row) => {
            exec(
                tx,
                "UPDATE jobs SET state = $1, next_attempt_at = $2, errors = COALESCE($3, errors), lease_owner = NULL,
                    lease_expires_at = NULL, finalized_at = $4, updated_at = $5, ops_done = COALESCE($9, ops_done)
                 WHERE id = $6 AND state = 'running' AND lease_owner = $7 AND lease_epoch = $8",
                &[&row.state, &row.next_attempt_at, &row.errors, &row.finalized_at, &now, &job.id, &owner, &job.lease_epoch, &done],
            )
            .await?
        }
    };
    Ok(n > 0)
}

/// The event kind of a job's end in `state`.
fn end_kind(state: &str) -> &'static str {
    match state {
        "succeeded" => "job_succeeded",
        "retrying" => "job_retrying",
        "failed" => "job_failed",
        _ => "job_ended",
    }
}

/// What a fenced end writes besides the job: its account, its settling; and the events
/// it leaves, for the group to write together. `row`: the same as [`fence`] wrote.
async fn after_fence<'a>(
    tx: &Tx<'_>,
    f: &'a Finish,
    row: Option<EndRow>,
    actor: &'a str,
) -> Result<Vec<(i64, Event<'a>)>> {
    let (job, now) = (&f.job, f.now);
    let mut events = record_ops(tx, job, &f.ops, now, actor).await?;
    match (&f.ending, row) {
        (Ending::Released { error }, _) => {
            let data = json!({ "reason": "authentication", "error": error, "attemptRefunded": job.attempt });
            events.push((now, Event::of_job("job_released", job, actor, data)));
        }
        (_, Some(row)) => {
            events.push((
                now,
                Event::of_job(end_kind(row.state), job, actor, row.data),
            ));
            if row.state != "retrying" {
                super::settle::settle(tx, job.id, now, row.state).await?;
            }
        }
        (_, None) => {}
    }
    Ok(events)
}

/// Writes an attempt's calls: the account's native id; one audit event each, returned.
async fn record_ops<'a>(
    tx: &Tx<'_>,
    job: &'a Job,
    ops: &[OpRecord],
    now: i64,
    actor: &'a str,
) -> Result<Vec<(i64, Event<'a>)>> {
    let mut events = Vec::with_capacity(ops.len() + 1);
    for op in ops {
        if let Some(native) = &op.native_id {
            exec(
                tx,
                "INSERT INTO accounts (identity_id, source, native_id, state, job_id, updated_at) VALUES ($1,$2,$3,'active',$4,$5)
                 ON CONFLICT (identity_id, source) DO UPDATE SET native_id = excluded.native_id, state = 'active',
                    updated_at = excluded.updated_at",
                &[&job.identity_id, &job.source, native, &job.id, &now],
            )
            .await?;
        }
        let data = crate::store::rules::call_event(job, op);
        events.push((now, Event::of_job("connector_call", job, actor, data)));
    }
    Ok(events)
}

impl Postgres {
    /// Puts running jobs matching `which` (over `params`) back in the queue, each with a
    /// `lease` error in its history. SKIP LOCKED: a job another agent is ending right now
    /// is not taken back.
    async fn take_back(
        &self,
        which: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
        now: i64,
        by: &str,
    ) -> Result<Vec<Moved>> {
        let actor = agent_actor(by);
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let stale = tx
            .query(
                &format!("SELECT {COLUMNS} FROM jobs WHERE state = 'running' AND ({which}) ORDER BY id FOR UPDATE SKIP LOCKED"),
                params,
            )
            .await?;
        let mut moved = Vec::new();
        for row in &stale {
            let j = job(row)?;
            let mut errors = j.errors.clone();
            errors.push(AttemptError {
                at: crate::clock::rfc3339_ms(now),
                attempt: j.attempt,
                class: "lease".into(),
                code: None,
                message: format!(
                    "the agent `{}` holding the job stopped before finishing it; taken back",
                    j.lease_owner.as_deref().unwrap_or("?")
                ),
            });
            tx.execute(
                "UPDATE jobs SET state = 'queued', errors = $1, lease_owner = NULL, lease_expires_at = NULL, updated_at = $2
                 WHERE id = $3 AND state = 'running' AND lease_epoch = $4",
                &[&to_json(&errors)?, &now, &j.id, &j.lease_epoch],
            )
            .await?;
            let data =
                json!({ "owner": j.lease_owner, "attempt": j.attempt, "epoch": j.lease_epoch });
            event(&tx, now, "job_lease_expired", &j, &actor, data).await?;
            moved.push(Moved {
                job_id: j.id,
                request_id: j.request_id.clone(),
                source: j.source.clone(),
                identity_id: j.identity_id.clone(),
            });
        }
        tx.commit().await?;
        Ok(moved)
    }
}

impl Queue for Postgres {
    fn job(&self, id: i64) -> BoxFuture<Result<Option<Job>>> {
        let me = self.clone();
        Box::pin(async move {
            let c = me.client().await?;
            let row = c
                .query_opt(&format!("SELECT {COLUMNS} FROM jobs WHERE id = $1"), &[&id])
                .await?;
            row.as_ref().map(job).transpose()
        })
    }

    fn jobs(&self, f: JobFilter) -> BoxFuture<Result<Vec<Job>>> {
        let me = self.clone();
        Box::pin(async move {
            let c = me.client().await?;
            let limit = f.limit.map(|l| l as i64);
            let rows = c
                .query(
                    &format!(
                        "SELECT {COLUMNS} FROM jobs WHERE ($1::TEXT IS NULL OR state = $1)
                         AND ($2::TEXT IS NULL OR source = $2) AND ($3::TEXT IS NULL OR request_id = $3)
                         ORDER BY id LIMIT $4"
                    ),
                    &[&f.state.map(JobState::as_str), &f.source, &f.request_id, &limit],
                )
                .await?;
            rows.iter().map(job).collect()
        })
    }

    fn claim(&self, cl: Claim) -> BoxFuture<Result<Vec<Job>>> {
        let me = self.clone();
        Box::pin(async move {
            if cl.limit == 0 {
                return Ok(Vec::new());
            }
            let mut c = me.client().await?;
            let tx = c.transaction().await?;
            // The claim must walk jobs_claimable in due order and stop after `limit`
            // heads. Planned while the table was small or never analyzed (a new store, a
            // burst of new jobs) it would rather bitmap-scan every queued job and sort
            // them: 8 ms a claim at 10,000 queued. Without a sort to choose, the planner
            // takes the ordered index scan, whatever the statistics say.
            tx.batch_execute("SET LOCAL enable_sort = off").await?;
            let rows = super::query(
                &tx,
                &format!(
                        "WITH picked AS (
                            SELECT j.id FROM jobs j
                            WHERE j.state IN ('queued','retrying')
                              AND COALESCE(j.next_attempt_at, j.created_at) <= $3
                              AND NOT (j.source = ANY($4))
                              AND ($5::TEXT IS NULL OR j.source = $5)
                              AND NOT EXISTS (SELECT 1 FROM jobs p WHERE p.identity_id = j.identity_id
                                  AND p.source = j.source AND p.state IN {OPEN} AND p.id < j.id)
                            ORDER BY COALESCE(j.next_attempt_at, j.created_at), j.id
                            LIMIT $6 FOR UPDATE SKIP LOCKED)
                         UPDATE jobs SET state = 'running', lease_owner = $1, lease_expires_at = $2,
                            lease_epoch = lease_epoch + 1, attempt = attempt + 1,
                            window_start = COALESCE(window_start, $3), next_attempt_at = NULL, updated_at = $3
                         FROM picked WHERE jobs.id = picked.id
                         RETURNING {cols},
                            (SELECT a.native_id FROM accounts a WHERE a.identity_id = jobs.identity_id AND a.source = jobs.source)",
                        cols = COLUMNS
                            .split(',')
                            .map(|c| format!("jobs.{}", c.trim()))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    &[
                        &cl.owner,
                        &cl.lease_until,
                        &cl.now,
                        &cl.skip_sources,
                        &cl.only_source,
                        &(cl.limit as i64),
                    ],
                )
                .await?;
            let mut jobs = rows.iter().map(job).collect::<Result<Vec<_>>>()?;
            jobs.sort_by_key(|j| (j.next_attempt_at.unwrap_or(j.created_at), j.id));
            let actor = agent_actor(&cl.owner);
            let events: Vec<_> = jobs
                .iter()
                .map(|j| {
                    let data =
                        json!({ "attempt": j.attempt, "owner": cl.owner, "epoch": j.lease_epoch });
                    (cl.now, Event::of_job("job_running", j, &actor, data))
                })
                .collect();
            append_all(&tx, &events).await?;
            tx.commit().await?;
            Ok(jobs)
        })
    }

    fn next_due(&self) -> BoxFuture<Result<Option<i64>>> {
        let me = self.clone();
        Box::pin(async move {
            let c = me.client().await?;
            // In due order through jobs_claimable, stopping at the first lane head: a MIN()
            // checked the lane of every queued job, and the dispatcher asks on every pass.
            let row = c
                .query_opt(
                    &format!(
                        "SELECT COALESCE(j.next_attempt_at, j.created_at) FROM jobs j
                         WHERE j.state IN ('queued','retrying')
                           AND NOT EXISTS (SELECT 1 FROM jobs p WHERE p.identity_id = j.identity_id
                               AND p.source = j.source AND p.state IN {OPEN} AND p.id < j.id)
                         ORDER BY COALESCE(j.next_attempt_at, j.created_at), j.id LIMIT 1"
                    ),
                    &[],
                )
                .await?;
            Ok(row.map(|r| r.get(0)))
        })
    }

    /// One transaction for the group. Its statements are pipelined (sent without waiting
    /// for each answer): first every end's fence, then what the held ones did. An end
    /// whose lease was lost writes nothing (LeaseLost); any other error fails the group,
    /// whose jobs then run again once their leases expire.
    fn finish_all(&self, items: Vec<Finish>) -> BoxFuture<Result<Vec<Result<()>>>> {
        let me = self.clone();
        Box::pin(async move {
            let mut c = me.client().await?;
            let tx = c.transaction().await?;
            // Each end's row once (it serializes the job's error history): the fence
            // writes it, what follows reads its state and event data.
            let rows = items
                .iter()
                .map(|f| end_row(&f.job, &f.ending, f.now))
                .collect::<Result<Vec<_>>>()?;
            let held = try_join_all(
                items
                    .iter()
                    .zip(&rows)
                    .map(|(f, r)| fence(&tx, f, r.as_ref())),
            )
            .await?;
            let actors: Vec<String> = items.iter().map(|f| agent_actor(&f.owner)).collect();
            let events = try_join_all(
                items
                    .iter()
                    .zip(rows)
                    .zip(&actors)
                    .zip(&held)
                    .filter(|(_, h)| **h)
                    .map(|(((f, row), actor), _)| after_fence(&tx, f, row, actor)),
            )
            .await?;
            append_all(&tx, &events.concat()).await?;
            tx.commit().await?;
            Ok(items
                .iter()
                .zip(held)
                .map(|(f, h)| if h { Ok(()) } else { Err(lost(f.job.id)) })
                .collect())
        })
    }

    fn renew(
        &self,
        owner: String,
        jobs: Vec<(i64, i64)>,
        until: i64,
    ) -> BoxFuture<Result<Vec<i64>>> {
        let me = self.clone();
        Box::pin(async move {
            let (ids, epochs): (Vec<i64>, Vec<i64>) = jobs.into_iter().unzip();
            let c = me.client().await?;
            let held: Vec<i64> = c
                .query(
                    "UPDATE jobs SET lease_expires_at = $1
                     FROM unnest($2::BIGINT[], $3::BIGINT[]) AS l(id, epoch)
                     WHERE jobs.id = l.id AND jobs.lease_epoch = l.epoch AND jobs.state = 'running'
                       AND jobs.lease_owner = $4
                     RETURNING jobs.id",
                    &[&until, &ids, &epochs, &owner],
                )
                .await?
                .iter()
                .map(|r| r.get(0))
                .collect();
            Ok(ids.into_iter().filter(|id| !held.contains(id)).collect())
        })
    }

    fn release(&self, j: Job, owner: String, now: i64) -> BoxFuture<Result<()>> {
        let me = self.clone();
        Box::pin(async move {
            let mut c = me.client().await?;
            let tx = c.transaction().await?;
            let n = tx
                .execute(
                    "UPDATE jobs SET state = 'queued', attempt = GREATEST(attempt - 1, 0), lease_owner = NULL,
                        lease_expires_at = NULL, updated_at = $1
                     WHERE id = $2 AND state = 'running' AND lease_owner = $3 AND lease_epoch = $4",
                    &[&now, &j.id, &owner, &j.lease_epoch],
                )
                .await?;
            if n > 0 {
                event(
                    &tx,
                    now,
                    "job_released",
                    &j,
                    &agent_actor(&owner),
                    json!({ "reason": "shutdown" }),
                )
                .await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    fn expire_leases(
        &self,
        now: i64,
        all_but: Option<String>,
        by: String,
    ) -> BoxFuture<Result<Vec<Moved>>> {
        let me = self.clone();
        Box::pin(async move {
            match &all_but {
                Some(o) => {
                    let which = "lease_expires_at < $1 OR lease_owner IS DISTINCT FROM $2";
                    me.take_back(which, &[&now, o], now, &by).await
                }
                None => {
                    me.take_back("lease_expires_at < $1", &[&now], now, &by)
                        .await
                }
            }
        })
    }

    fn reclaim(&self, name: String, me_owner: String, now: i64) -> BoxFuture<Result<Vec<Moved>>> {
        let me = self.clone();
        Box::pin(async move {
            let which = "left(lease_owner, length($1) + 1) = $1 || '#' AND lease_owner <> $2";
            me.take_back(which, &[&name, &me_owner], now, &me_owner)
                .await
        })
    }

    fn job_counts(&self) -> BoxFuture<Result<Vec<(String, String, i64)>>> {
        let me = self.clone();
        Box::pin(async move {
            let c = me.client().await?;
            let rows = c
                .query(
                    "SELECT source, state, COUNT(*) FROM jobs GROUP BY source, state ORDER BY source, state",
                    &[],
                )
                .await?;
            Ok(rows
                .iter()
                .map(|r| (r.get(0), r.get(1), r.get(2)))
                .collect())
        })
    }

    fn cancel_job(
        &self,
        id: i64,
        now: i64,
        reason: String,
        actor: String,
    ) -> BoxFuture<Result<Job>> {
        let me = self.clone();
        Box::pin(async move {
            let mut c = me.client().await?;
            let tx = c.transaction().await?;
            let j = super::settle::cancel_in(&tx, id, now, &reason, &actor).await?;
            tx.commit().await?;
            Ok(j)
        })
    }

    fn cancel_request(
        &self,
        request_id: String,
        now: i64,
        comment: String,
        actor: String,
    ) -> BoxFuture<Result<usize>> {
        let me = self.clone();
        Box::pin(async move {
            let mut c = me.client().await?;
            let tx = c.transaction().await?;
            let n = super::settle::cancel_request(&tx, &request_id, now, &comment, &actor).await?;
            tx.commit().await?;
            Ok(n)
        })
    }

    fn retry_job(
        &self,
        id: i64,
        now: i64,
        max_attempts: u32,
        identity: Option<provd_connector_core::Identity>,
        actor: String,
    ) -> BoxFuture<Result<Job>> {
        let me = self.clone();
        Box::pin(async move {
            let identity = identity.as_ref().map(to_json).transpose()?;
            let mut c = me.client().await?;
            let tx = c.transaction().await?;
            let j = get(&tx, id)
                .await?
                .ok_or_else(|| StoreError::NotFound(format!("no job {id}")))?;
            match j.state {
                JobState::Failed => {
                    tx.execute(
                        "UPDATE jobs SET state = 'queued', attempt = 0, max_attempts = $1, window_start = NULL,
                            next_attempt_at = NULL, finalized_at = NULL, updated_at = $2,
                            identity = COALESCE($3, identity)
                         WHERE id = $4 AND state = 'failed'",
                        &[&i64::from(max_attempts), &now, &identity, &id],
                    )
                    .await?;
                    super::settle::unsettle(&tx, id, now).await?;
                }
                JobState::Retrying => {
                    tx.execute(
                        "UPDATE jobs SET next_attempt_at = $1, updated_at = $1 WHERE id = $2 AND state = 'retrying'",
                        &[&now, &id],
                    )
                    .await?;
                }
                other => {
                    return Err(StoreError::Conflict(format!(
                        "job {id} is {}; only failed or retrying jobs can be retried",
                        other.as_str()
                    )));
                }
            }
            let data = json!({ "from": j.state.as_str(), "attempts_before": j.attempt, "max_attempts": max_attempts });
            event(&tx, now, "job_retry_requested", &j, &actor, data).await?;
            let j = get(&tx, id)
                .await?
                .ok_or_else(|| StoreError::NotFound(format!("no job {id}")))?;
            tx.commit().await?;
            Ok(j)
        })
    }
}
