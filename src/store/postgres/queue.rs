//! Jobs on PostgreSQL, for several agents at once.
//!
//! A claim takes due lane heads in due order with `FOR UPDATE SKIP LOCKED`: two agents
//! claiming together never take the same job, and the lane rule (no earlier open job of
//! the same identity and source) is checked per candidate. Each claim increments the
//! job's `lease_epoch`; every end, retry and release is written only while owner and
//! epoch still match, so an agent that stalled past its lease writes nothing (LeaseLost).

use super::audit::append_all;
use super::rows::{COLUMNS, get, job, to_json};
use crate::store::events::Event;

use super::Postgres;
use crate::model::agent_actor;
use crate::store::Result;
use crate::store::jobs::{AttemptError, Finish, Job, JobFilter, JobState, Moved, Retry};
use crate::store::roles::{Claim, Fut, Queue, Stamp};
use crate::store::rules::events;
use crate::store::rules::operator::{self, RetryMove, guarded};

const OPEN: &str = "('queued','running','retrying','manual')";

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
            let data = events::lease_expired(&j);
            super::audit::append(
                &tx,
                now,
                &Event::of_job("job_lease_expired", &j, &actor, data),
            )
            .await?;
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
    /// One claim transaction (see `claim`), run again whole after a deadlock.
    async fn claim_once(&self, cl: &Claim) -> Result<Vec<Job>> {
        let mut c = self.client().await?;
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
                let data = events::job_running(j, &cl.owner);
                (cl.now, Event::of_job("job_running", j, &actor, data))
            })
            .collect();
        append_all(&tx, &events).await?;
        tx.commit().await?;
        Ok(jobs)
    }
}

impl Queue for Postgres {
    fn job(&self, id: i64) -> Fut<Option<Job>> {
        let me = self.clone();
        Box::pin(async move {
            let c = me.client().await?;
            let row = c
                .query_opt(&format!("SELECT {COLUMNS} FROM jobs WHERE id = $1"), &[&id])
                .await?;
            row.as_ref().map(job).transpose()
        })
    }

    fn jobs(&self, f: JobFilter) -> Fut<Vec<Job>> {
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

    fn claim(&self, cl: Claim) -> Fut<Vec<Job>> {
        let me = self.clone();
        Box::pin(async move {
            if cl.limit == 0 {
                return Ok(Vec::new());
            }
            super::retrying(|| me.claim_once(&cl)).await
        })
    }

    fn next_due(&self) -> Fut<Option<i64>> {
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

    /// One transaction for the group, in a few statements whatever its size (see
    /// `finish.rs`). An end whose lease was lost writes nothing (LeaseLost); any other
    /// error fails the group, whose jobs then run again once their leases expire.
    fn finish_all(&self, items: Vec<Finish>) -> Fut<Vec<Result<()>>> {
        let me = self.clone();
        Box::pin(async move {
            super::retrying(|| async {
                let mut c = me.client().await?;
                let tx = c.transaction().await?;
                let out = super::finish::finish_all_in(&tx, &items).await?;
                tx.commit().await?;
                Ok(out)
            })
            .await
        })
    }

    fn renew(&self, owner: String, jobs: Vec<(i64, i64)>, until: i64) -> Fut<Vec<i64>> {
        let me = self.clone();
        Box::pin(async move {
            let (ids, epochs): (Vec<i64>, Vec<i64>) = jobs.into_iter().unzip();
            let c = me.client().await?;
            // A renewal never waits behind an end batch (which once made renewals wait
            // minutes and leases expire): rows locked now are skipped; the rest are
            // taken in id order, as every multi-row write takes them.
            let held: Vec<i64> = c
                .query(
                    "WITH mine AS (
                        SELECT j.id FROM jobs j JOIN unnest($2::BIGINT[], $3::BIGINT[]) AS l(id, epoch) ON j.id = l.id
                        WHERE j.lease_epoch = l.epoch AND j.state = 'running' AND j.lease_owner = $4
                        ORDER BY j.id FOR UPDATE OF j SKIP LOCKED)
                     UPDATE jobs SET lease_expires_at = $1 FROM mine WHERE jobs.id = mine.id
                     RETURNING jobs.id",
                    &[&until, &ids, &epochs, &owner],
                )
                .await?
                .iter()
                .map(|r| r.get(0))
                .collect();
            let (rest, rest_epochs): (Vec<i64>, Vec<i64>) = ids
                .iter()
                .zip(&epochs)
                .filter(|(id, _)| !held.contains(id))
                .map(|(i, e)| (*i, *e))
                .unzip();
            if rest.is_empty() {
                return Ok(rest);
            }
            // Not renewed: lost, or locked by a write under way (an end). A plain read
            // sees the last committed owner without waiting: still ours is not lost.
            let busy: Vec<i64> = c
                .query(
                    "SELECT j.id FROM jobs j JOIN unnest($1::BIGINT[], $2::BIGINT[]) AS l(id, epoch) ON j.id = l.id
                     WHERE j.lease_epoch = l.epoch AND j.state = 'running' AND j.lease_owner = $3",
                    &[&rest, &rest_epochs, &owner],
                )
                .await?
                .iter()
                .map(|r| r.get(0))
                .collect();
            Ok(rest.into_iter().filter(|id| !busy.contains(id)).collect())
        })
    }

    fn release(&self, j: Job, owner: String, now: i64) -> Fut<()> {
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
                super::audit::append(
                    &tx,
                    now,
                    &Event::of_job(
                        "job_released",
                        &j,
                        &agent_actor(&owner),
                        events::released_at_shutdown(),
                    ),
                )
                .await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    fn expire_leases(&self, now: i64, all_but: Option<String>, by: String) -> Fut<Vec<Moved>> {
        let me = self.clone();
        Box::pin(async move {
            super::retrying(|| async {
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
            .await
        })
    }

    fn reclaim(&self, name: String, me_owner: String, now: i64) -> Fut<Vec<Moved>> {
        let me = self.clone();
        Box::pin(async move {
            let which = "left(lease_owner, length($1) + 1) = $1 || '#' AND lease_owner <> $2";
            me.take_back(which, &[&name, &me_owner], now, &me_owner)
                .await
        })
    }

    fn job_counts(&self) -> Fut<Vec<(String, JobState, i64)>> {
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

    fn cancel_job(&self, id: i64, reason: String, by: Stamp) -> Fut<Job> {
        let me = self.clone();
        let Stamp { actor, now } = by;
        Box::pin(async move {
            let mut c = me.client().await?;
            let tx = c.transaction().await?;
            let j = super::settle::cancel_in(&tx, id, now, &reason, &actor).await?;
            tx.commit().await?;
            Ok(j)
        })
    }

    fn cancel_request(&self, request_id: String, comment: String, by: Stamp) -> Fut<usize> {
        let me = self.clone();
        let Stamp { actor, now } = by;
        Box::pin(async move {
            let mut c = me.client().await?;
            let tx = c.transaction().await?;
            let n = super::settle::cancel_request(&tx, &request_id, now, &comment, &actor).await?;
            tx.commit().await?;
            Ok(n)
        })
    }

    fn retry_job(&self, id: i64, retry: Retry, by: Stamp) -> Fut<Job> {
        let me = self.clone();
        let Stamp { actor, now } = by;
        let Retry {
            max_attempts,
            identity,
        } = retry;
        Box::pin(async move {
            let identity = identity.as_ref().map(to_json).transpose()?;
            let mut c = me.client().await?;
            let tx = c.transaction().await?;
            let j = get(&tx, id).await?.ok_or_else(|| operator::no_job(id))?;
            let row = tx
                .query_one(
                    &crate::store::jobs::grants_of_job_sql(crate::store::audit::postgres_param),
                    &[&id],
                )
                .await?;
            // The lane's later jobs locked, not only read: a claim (FOR UPDATE SKIP
            // LOCKED) that took one of them before this retry committed would otherwise
            // leave the lane with two jobs out (simulation seed 55); locked, a claim in
            // flight is waited for and seen running, and a later one skips them.
            let later = tx
                .query(
                    &format!(
                        "{} FOR UPDATE",
                        crate::store::jobs::later_jobs_sql(crate::store::audit::postgres_param)
                    ),
                    &[&j.identity_id, &j.source, &id],
                )
                .await?
                .iter()
                .map(|r| {
                    (
                        r.get::<_, i64>(0),
                        r.get::<_, String>(1),
                        r.get::<_, String>(2),
                    )
                })
                .collect();
            let later = crate::store::jobs::parse_later(later)?;
            let retry = operator::retry(&j, max_attempts, (row.get(0), row.get(1)), &later)?;
            // Each UPDATE is guarded by the state read above; one that changed nothing
            // lost a race (a claim took the job meanwhile) and must not be reported, nor
            // leave a `job_retry_requested` event, as if it had happened (issue 32).
            match retry.how {
                RetryMove::Requeue {
                    max_attempts,
                    pending_account,
                } => {
                    let n = tx
                        .execute(
                            "UPDATE jobs SET state = 'queued', attempt = 0, max_attempts = $1, window_start = NULL,
                            next_attempt_at = NULL, finalized_at = NULL, updated_at = $2,
                            identity = COALESCE($3, identity)
                         WHERE id = $4 AND state = $5",
                            &[&i64::from(max_attempts), &now, &identity, &id, &j.state.as_str()],
                        )
                        .await?;
                    guarded(n, || operator::retry_raced(id))?;
                    super::settle::unsettle(&tx, id, now).await?;
                    if pending_account {
                        tx.execute(
                            "INSERT INTO accounts (identity_id, source, state, job_id, updated_at) VALUES ($1,$2,'pending',$3,$4)
                             ON CONFLICT (identity_id, source) DO NOTHING",
                            &[&j.identity_id, &j.source, &id, &now],
                        )
                        .await?;
                    }
                }
                RetryMove::RunNow => {
                    let n = tx
                        .execute(
                            "UPDATE jobs SET next_attempt_at = $1, updated_at = $1 WHERE id = $2 AND state = 'retrying'",
                            &[&now, &id],
                        )
                        .await?;
                    guarded(n, || operator::retry_raced(id))?;
                }
            }
            super::audit::append(
                &tx,
                now,
                &Event::of_job("job_retry_requested", &j, &actor, retry.data),
            )
            .await?;
            let j = get(&tx, id).await?.ok_or_else(|| operator::no_job(id))?;
            tx.commit().await?;
            Ok(j)
        })
    }
}
