//! Writing a group of attempts' ends on PostgreSQL (the dispatcher's group commit) in a
//! few statements whatever the group's size: (1) every end fenced in one UPDATE over
//! arrays, which answers which of them still held their lease; (2) the accounts they
//! created, the items of those that succeeded, and all their events; (3) the assignments
//! those items move. Ends were four statements each (fence, account, the items, the
//! assignment), and each statement costs the server a parse-bind-execute and a network
//! write. The rare ends — a release, a failure that settles differently — keep their
//! own statements.

use std::collections::HashSet;

use futures_util::future::try_join_all;

use super::audit::append_all;
use super::{Tx, exec};
use crate::model::agent_actor;
use crate::store::events::Event;
use crate::store::jobs::{Ending, Finish, JobState};
use crate::store::rules::{EndRow, end_row, released_event};
use crate::store::{Result, StoreError};

/// The progress an attempt's calls leave on the job (ops done), if it made any.
fn ops_done(f: &Finish) -> Option<i64> {
    f.ops.last().map(|last| (last.index + 1) as i64)
}

/// Fences a release (the attempt given back): only where owner and epoch still match.
async fn fence_release(tx: &Tx<'_>, f: &Finish) -> Result<bool> {
    let n = exec(
        tx,
        "UPDATE jobs SET state = 'queued', attempt = GREATEST(attempt - 1, 0), next_attempt_at = NULL,
            lease_owner = NULL, lease_expires_at = NULL, updated_at = $1, ops_done = COALESCE($5, ops_done)
         WHERE id = $2 AND state = 'running' AND lease_owner = $3 AND lease_epoch = $4",
        &[&f.now, &f.job.id, &f.owner, &f.job.lease_epoch, &ops_done(f)],
    )
    .await?;
    Ok(n > 0)
}

/// Fences every other end in one statement: writes each job's new state (and progress)
/// only where owner and epoch still match; returns the ids written. `a.id = ANY(…)`
/// finds the jobs through their key whatever the plan thinks of the arrays' size.
async fn fence_ends(tx: &Tx<'_>, ends: &[(&Finish, &EndRow)]) -> Result<HashSet<i64>> {
    if ends.is_empty() {
        return Ok(HashSet::new());
    }
    let id: Vec<i64> = ends.iter().map(|(f, _)| f.job.id).collect();
    let state: Vec<&str> = ends.iter().map(|(_, r)| r.state.as_str()).collect();
    let next: Vec<Option<i64>> = ends.iter().map(|(_, r)| r.next_attempt_at).collect();
    let errors: Vec<Option<&str>> = ends.iter().map(|(_, r)| r.errors.as_deref()).collect();
    let finalized: Vec<Option<i64>> = ends.iter().map(|(_, r)| r.finalized_at).collect();
    let now: Vec<i64> = ends.iter().map(|(f, _)| f.now).collect();
    let owner: Vec<&str> = ends.iter().map(|(f, _)| f.owner.as_str()).collect();
    let epoch: Vec<i64> = ends.iter().map(|(f, _)| f.job.lease_epoch).collect();
    let done: Vec<Option<i64>> = ends.iter().map(|(f, _)| ops_done(f)).collect();
    let st = tx
        .prepare_cached(
            "UPDATE jobs j SET state = u.state, next_attempt_at = u.next_attempt_at, errors = COALESCE(u.errors, j.errors),
                lease_owner = NULL, lease_expires_at = NULL, finalized_at = u.finalized_at, updated_at = u.now,
                ops_done = COALESCE(u.done, j.ops_done)
             FROM unnest($1::BIGINT[], $2::TEXT[], $3::BIGINT[], $4::TEXT[], $5::BIGINT[], $6::BIGINT[], $7::TEXT[],
                         $8::BIGINT[], $9::BIGINT[])
                  AS u(id, state, next_attempt_at, errors, finalized_at, now, owner, epoch, done)
             WHERE j.id = ANY($1) AND j.id = u.id AND j.state = 'running' AND j.lease_owner = u.owner
               AND j.lease_epoch = u.epoch
             RETURNING j.id",
        )
        .await?;
    let rows = tx
        .query(
            &st,
            &[
                &id, &state, &next, &errors, &finalized, &now, &owner, &epoch, &done,
            ],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// The accounts the held ends' calls created or found, in one statement; when one
/// account comes twice, the later end's values win, as they would one after another.
async fn record_accounts(tx: &Tx<'_>, held: &[&Finish]) -> Result<u64> {
    let mut rows: Vec<(&str, &str, &str, i64, i64)> = Vec::new();
    for f in held {
        for native in f.ops.iter().filter_map(|op| op.native_id.as_deref()) {
            let (identity, source) = (f.job.identity_id.as_str(), f.job.source.as_str());
            rows.retain(|r| (r.0, r.1) != (identity, source));
            rows.push((identity, source, native, f.job.id, f.now));
        }
    }
    let deleted: Vec<(&str, &str, i64)> = held
        .iter()
        .filter(|f| crate::store::rules::deletes_account(&f.job, &f.ops))
        .map(|f| (f.job.identity_id.as_str(), f.job.source.as_str(), f.job.id))
        .collect();
    if !deleted.is_empty() {
        let identity: Vec<&str> = deleted.iter().map(|d| d.0).collect();
        let source: Vec<&str> = deleted.iter().map(|d| d.1).collect();
        let job: Vec<i64> = deleted.iter().map(|d| d.2).collect();
        // As `forget_account_sql`: not an account a later job is making.
        exec(
            tx,
            "DELETE FROM accounts a USING unnest($1::TEXT[], $2::TEXT[], $3::BIGINT[]) AS d(identity_id, source, job_id)
             WHERE a.identity_id = d.identity_id AND a.source = d.source
               AND NOT (a.state = 'pending' AND a.job_id IS NOT NULL AND a.job_id > d.job_id)",
            &[&identity, &source, &job],
        )
        .await?;
    }
    let written = if rows.is_empty() {
        0
    } else {
        let identity: Vec<&str> = rows.iter().map(|r| r.0).collect();
        let source: Vec<&str> = rows.iter().map(|r| r.1).collect();
        let native: Vec<&str> = rows.iter().map(|r| r.2).collect();
        let job: Vec<i64> = rows.iter().map(|r| r.3).collect();
        let now: Vec<i64> = rows.iter().map(|r| r.4).collect();
        exec(
            tx,
            "INSERT INTO accounts (identity_id, source, native_id, state, job_id, updated_at)
             SELECT u.identity_id, u.source, u.native_id, 'active', u.job_id, u.now
             FROM unnest($1::TEXT[], $2::TEXT[], $3::TEXT[], $4::BIGINT[], $5::BIGINT[])
                  AS u(identity_id, source, native_id, job_id, now)
             ON CONFLICT (identity_id, source) DO UPDATE SET native_id = excluded.native_id, state = 'active',
                updated_at = excluded.updated_at",
            &[&identity, &source, &native, &job, &now],
        )
        .await?
    };
    record_status(tx, held).await?;
    Ok(written)
}

/// The accounts the held ends' calls disabled or enabled (`rules::status_after`), after
/// they were written: the later end wins where one account comes twice.
async fn record_status(tx: &Tx<'_>, held: &[&Finish]) -> Result<u64> {
    let mut rows: Vec<(&str, &str, i64)> = Vec::new();
    for f in held {
        if let Some(disabled) = crate::store::rules::status_after(&f.job, &f.ops) {
            let (identity, source) = (f.job.identity_id.as_str(), f.job.source.as_str());
            rows.retain(|r| (r.0, r.1) != (identity, source));
            rows.push((identity, source, i64::from(disabled)));
        }
    }
    if rows.is_empty() {
        return Ok(0);
    }
    let identity: Vec<&str> = rows.iter().map(|r| r.0).collect();
    let source: Vec<&str> = rows.iter().map(|r| r.1).collect();
    let disabled: Vec<i64> = rows.iter().map(|r| r.2).collect();
    exec(
        tx,
        "UPDATE accounts a SET disabled = u.disabled
         FROM unnest($1::TEXT[], $2::TEXT[], $3::BIGINT[]) AS u(identity_id, source, disabled)
         WHERE a.identity_id = u.identity_id AND a.source = u.source",
        &[&identity, &source, &disabled],
    )
    .await
}

/// The events a held end leaves: one per call, then its end.
fn events_of<'a>(f: &'a Finish, row: Option<&EndRow>, actor: &'a str) -> Vec<(i64, Event<'a>)> {
    let (job, now) = (&f.job, f.now);
    let mut events: Vec<(i64, Event<'a>)> = f
        .ops
        .iter()
        .map(|op| {
            let data = crate::store::rules::call_event(job, op);
            (now, Event::of_job("connector_call", job, actor, data))
        })
        .collect();
    match (&f.ending, row) {
        (Ending::Released { error }, _) => {
            let data = released_event(job, error);
            events.push((now, Event::of_job("job_released", job, actor, data)));
        }
        (_, Some(row)) => {
            events.push((now, Event::of_job(row.kind, job, actor, row.data.clone())));
        }
        (_, None) => {}
    }
    events
}

/// Writes `items`' ends inside `tx`; per end, Ok or LeaseLost (another agent holds the
/// job now, and nothing of this end is written).
pub(super) async fn finish_all_in(tx: &Tx<'_>, items: &[Finish]) -> Result<Vec<Result<()>>> {
    // One lock order for every statement that writes several jobs: by id, taken first.
    // Without it an end batch and a lease renewal (or two batches) took the same rows in
    // opposite orders and deadlocked by the thousand under a backlog (issue 31).
    let ids: Vec<i64> = items.iter().map(|f| f.job.id).collect();
    let lock = tx
        .prepare_cached("SELECT id FROM jobs WHERE id = ANY($1) ORDER BY id FOR UPDATE")
        .await?;
    tx.query(&lock, &[&ids]).await?;
    // Each end's row once (it serializes the job's error history).
    let rows = items
        .iter()
        .map(|f| end_row(&f.job, &f.ending, f.now))
        .collect::<Result<Vec<_>>>()?;
    let ends: Vec<(&Finish, &EndRow)> = items
        .iter()
        .zip(&rows)
        .filter_map(|(f, r)| r.as_ref().map(|r| (f, r)))
        .collect();
    let releases = items
        .iter()
        .zip(&rows)
        .filter(|(_, r)| r.is_none())
        .map(|(f, _)| async move { Ok::<_, StoreError>((f.job.id, fence_release(tx, f).await?)) });
    let (fenced, released) =
        futures_util::try_join!(fence_ends(tx, &ends), try_join_all(releases))?;
    // A job twice in one group ends once: the first of its ends is the one written.
    let mut first = HashSet::new();
    let held: Vec<bool> = items
        .iter()
        .zip(&rows)
        .map(|(f, r)| {
            let written = match r {
                Some(_) => fenced.contains(&f.job.id),
                None => released.iter().any(|(id, w)| *id == f.job.id && *w),
            };
            written && first.insert(f.job.id)
        })
        .collect();

    let actors: Vec<String> = items.iter().map(|f| agent_actor(&f.owner)).collect();
    let kept: Vec<(&Finish, Option<&EndRow>, &str)> = items
        .iter()
        .zip(&rows)
        .zip(&actors)
        .zip(&held)
        .filter(|(_, h)| **h)
        .map(|(((f, r), a), _)| (f, r.as_ref(), a.as_str()))
        .collect();
    let events: Vec<(i64, Event)> = kept
        .iter()
        .flat_map(|(f, r, a)| events_of(f, *r, a))
        .collect();
    let finished: Vec<&Finish> = kept.iter().map(|(f, _, _)| *f).collect();
    let succeeded: Vec<(i64, i64)> = kept
        .iter()
        .filter(|(_, r, _)| r.is_some_and(|r| r.state == JobState::Succeeded))
        .map(|(f, _, _)| (f.job.id, f.now))
        .collect();
    // Failed ones settle on their own: they may drop an account or a grant.
    let others = kept.iter().filter_map(|(f, r, _)| match r {
        Some(r) if r.state.is_final() && r.state != JobState::Succeeded => {
            Some(super::settle::settle(tx, f.job.id, f.now, r.state))
        }
        _ => None,
    });
    futures_util::try_join!(
        record_accounts(tx, &finished),
        super::settle::settle_succeeded(tx, &succeeded),
        try_join_all(others),
        append_all(tx, &events),
    )?;
    Ok(items
        .iter()
        .zip(held)
        .map(|(f, h)| {
            if h {
                Ok(())
            } else {
                Err(StoreError::LeaseLost { job_id: f.job.id })
            }
        })
        .collect())
}
