//! What happens to a job after its attempts, on PostgreSQL: settling its assignments and
//! account, the manual path's end, and the operator's cancel. The rules are
//! `store::rules`'; this file writes what they decide.

use futures_util::future::try_join_all;

use super::Tx;
use super::rows::get;
use crate::store::events::Event;
use crate::store::jobs::{Job, JobState};
use crate::store::rules::manual::{self, Verdict};
use crate::store::rules::operator::{self, guarded};
use crate::store::{Result, StoreError};

/// A job's items that concern an assignment, each with the states of all its jobs.
const ITEMS: &str = "SELECT ri.id, ri.effect, ri.assignment_id,
        ARRAY(SELECT (SELECT j.state FROM jobs j WHERE j.id = o.job_id) FROM item_jobs o WHERE o.item_id = ri.id)
    FROM item_jobs ij,
        LATERAL (SELECT r.id, r.effect, r.assignment_id FROM request_items r
                 WHERE r.id = ij.item_id AND r.assignment_id IS NOT NULL OFFSET 0) ri
    WHERE ij.job_id = $1";

/// Locks assignments, in id order (two settles never wait on each other crosswise).
const LOCK: &str = "SELECT id FROM assignments WHERE id = ANY($1) ORDER BY id FOR UPDATE";

/// The states of all an item's jobs, read through the key as [`ITEMS`] reads them.
const STATES: &str = "SELECT ARRAY(SELECT (SELECT j.state FROM jobs j WHERE j.id = o.job_id) FROM item_jobs o WHERE o.item_id = $1)";

/// An item to settle: its id, effect, assignment and the states of all its jobs.
struct Item {
    id: i64,
    effect: String,
    assignment: i64,
    states: Vec<JobState>,
}

fn states_of(raw: Vec<String>) -> Vec<JobState> {
    raw.iter().filter_map(|s| JobState::parse(s)).collect()
}

impl Item {
    fn of(row: &tokio_postgres::Row) -> Item {
        Item {
            id: row.get(0),
            effect: row.get(1),
            assignment: row.get(2),
            states: states_of(row.get(3)),
        }
    }
}

/// An item carried by several jobs reads its siblings' states again once its assignment
/// is locked. Under READ COMMITTED two transactions ending (or retrying) sibling jobs at
/// once each read the other's state from before: a success that read a failure put the
/// access back (`active`) while the retry of that failure, looking for `active` access to
/// put in flight again, found none, and the access stayed held for good (issue 33,
/// simulation seed 92). Locked first, the second reads what the first wrote. An item of
/// one job needs no lock: its job's own row, guarded, orders its end and its retry.
async fn hold(tx: &Tx<'_>, items: &mut [Item]) -> Result<()> {
    let mut shared: Vec<i64> = items
        .iter()
        .filter(|i| i.states.len() > 1)
        .map(|i| i.assignment)
        .collect();
    if shared.is_empty() {
        return Ok(());
    }
    shared.sort_unstable();
    shared.dedup();
    super::query(tx, LOCK, &[&shared]).await?;
    let fresh = try_join_all(
        items
            .iter()
            .filter(|i| i.states.len() > 1)
            .map(|i| async move { super::query(tx, STATES, &[&i.id]).await }),
    )
    .await?;
    for (item, rows) in items.iter_mut().filter(|i| i.states.len() > 1).zip(fresh) {
        if let Some(row) = rows.first() {
            item.states = states_of(row.try_get(0)?);
        }
    }
    Ok(())
}

/// The heir of an account a failed or canceled job was to create makes it first.
async fn inherit(tx: &Tx<'_>, job_id: i64, now: i64) -> Result<()> {
    let p = crate::store::audit::postgres_param;
    let heir: Option<i64> = super::query_opt(tx, &crate::store::jobs::heir_sql(p), &[&job_id])
        .await?
        .map(|r| r.try_get(0))
        .transpose()?;
    let Some(heir) = heir else {
        return Ok(());
    };
    let (Some(from), Some(heir)) = (get(tx, job_id).await?, get(tx, heir).await?) else {
        return Ok(());
    };
    if let Some(ops) = operator::inherit_create(&from.ops, &heir) {
        let json = super::rows::to_json(&ops)?;
        let sql = crate::store::jobs::inherit_sql(p);
        if super::exec(tx, &sql, &[&json, &heir.id]).await? > 0 {
            let data = operator::replanned(&from, &ops);
            let e = Event::of_job("job_replanned", &heir, "provd", data);
            super::audit::append(tx, now, &e).await?;
        }
    }
    Ok(())
}

/// After a job ended: move the assignments it granted or revoked, and drop an account it
/// was to create but did not. A failed revoke leaves its access held (`active`) — unless
/// the item was granted again meanwhile: that newer grant holds it, and the old one ends
/// `removed` (found by the simulation, issue 33, seed 72: the owner's FAILED answer was
/// refused by the unique index of live grants). A failed removal a removeDate fired stays
/// `revoking`: the removal is still owed and its failed job is the operator's to retry
/// (back at `active` it fired again at once, and the new removal was swallowed as a
/// replay of the first one's request: PostgreSQL simulation seed 157).
/// `state`: the job's state now, when the caller knows it (an account is dropped only
/// after a failed or canceled job).
pub(super) async fn settle(tx: &Tx<'_>, job_id: i64, now: i64, state: JobState) -> Result<()> {
    // The job's items looked up one by one through the key (the OFFSET 0 keeps the
    // planner from flattening the lateral join): the statement is prepared once per
    // connection, and a plan made while the tables were small and never analyzed
    // hash-joined a scan of every request item, on every job's end. Each item comes with
    // the states of all its jobs: one round trip, not one more per item. Those states are
    // read job by job through the key too (a scalar subquery): joined, the same plan
    // hashed a scan of every job on every end.
    let mut items: Vec<Item> = super::query(tx, ITEMS, &[&job_id])
        .await?
        .iter()
        .map(Item::of)
        .collect();
    hold(tx, &mut items).await?;
    for Item {
        effect,
        assignment,
        states,
        ..
    } in &items
    {
        let Some((from, to)) = crate::store::rules::settled(effect, states) else {
            continue;
        };
        super::exec(
            tx,
            "UPDATE assignments SET state = CASE WHEN $1 = 'active' AND EXISTS (SELECT 1 FROM assignments b
                    WHERE b.identity_id = assignments.identity_id AND b.item_type = assignments.item_type
                      AND b.item_id = assignments.item_id AND b.id <> assignments.id
                      AND b.state IN ('pending','active')) THEN 'removed'
                    WHEN $1 = 'active' AND fired_at IS NOT NULL THEN 'revoking' ELSE $1 END,
                updated_at = $2,
                active_at = CASE WHEN $1 = 'active' AND fired_at IS NULL THEN $2::BIGINT ELSE active_at END
             WHERE id = $3 AND state = $4",
            &[&to.as_str(), &now, assignment, &from.as_str()],
        )
        .await?;
    }
    // Only a failed or canceled job leaves an account it did not create behind.
    if !matches!(state, JobState::Failed | JobState::Canceled) {
        return Ok(());
    }
    let hand_over = crate::store::jobs::hand_over_account_sql(crate::store::audit::postgres_param);
    if super::exec(tx, &hand_over, &[&job_id]).await? > 0 {
        inherit(tx, job_id, now).await?;
    }
    let dropped = super::exec(
        tx,
        "DELETE FROM accounts WHERE job_id = $1 AND state = 'pending'
         AND (SELECT state FROM jobs WHERE id = $1) IN ('failed','canceled')",
        &[&job_id],
    )
    .await?;
    if dropped > 0 {
        cancel_orphans(tx, job_id, now).await?;
    }
    Ok(())
}

/// Cancels the jobs waiting behind `job_id` that act only on the account it was to make
/// and did not ([`operator::orphaned`]).
async fn cancel_orphans(tx: &Tx<'_>, job_id: i64, now: i64) -> Result<()> {
    let sql = crate::store::jobs::waiting_behind_sql(crate::store::audit::postgres_param);
    for row in super::query(tx, &sql, &[&job_id]).await? {
        let (id, ops): (i64, String) = (row.try_get(0)?, row.try_get(1)?);
        if operator::orphaned(&crate::store::jobs::parse_ops_of(id, &ops)?) {
            // Boxed: canceling settles the orphan in turn, and that future holds this one.
            Box::pin(cancel_in(
                tx,
                id,
                now,
                &operator::orphan_reason(job_id),
                "provd",
            ))
            .await?;
        }
    }
    Ok(())
}

/// Before a failed job runs again: its assignments are in flight once more.
pub(super) async fn unsettle(tx: &Tx<'_>, job_id: i64, now: i64) -> Result<()> {
    // The assignments locked first, whatever they will become: a sibling job's settle
    // then waits, and reads this job as queued again ([`hold`]).
    tx.query(
        "SELECT a.id FROM assignments a WHERE a.id IN (SELECT ri.assignment_id FROM request_items ri
            JOIN item_jobs ij ON ij.item_id = ri.id WHERE ij.job_id = $1) ORDER BY a.id FOR UPDATE",
        &[&job_id],
    )
    .await?;
    // A grant whose item was granted again meanwhile stays failed (the unique index of
    // live assignments would refuse a second one); the newer grant carries it.
    tx.execute(
        "UPDATE assignments a SET state = 'pending', updated_at = $1 WHERE a.state = 'failed' AND a.id IN
           (SELECT ri.assignment_id FROM request_items ri JOIN item_jobs ij ON ij.item_id = ri.id
            WHERE ij.job_id = $2 AND ri.effect = 'grant')
         AND NOT EXISTS (SELECT 1 FROM assignments l WHERE l.identity_id = a.identity_id
            AND l.item_type = a.item_type AND l.item_id = a.item_id AND l.state IN ('pending','active'))",
        &[&now, &job_id],
    )
    .await?;
    tx.execute(
        "UPDATE assignments SET state = 'revoking', updated_at = $1 WHERE state = 'active' AND id IN
           (SELECT ri.assignment_id FROM request_items ri JOIN item_jobs ij ON ij.item_id = ri.id
            WHERE ij.job_id = $2 AND ri.effect = 'revoke')",
        &[&now, &job_id],
    )
    .await?;
    Ok(())
}

/// [`settle`] for jobs that succeeded, all at once (`(job id, time)` each): their items
/// read in one pipelined wave, the assignments they move in one statement. A group
/// commit's ends settled one by one were two dependent round trips a job.
pub(super) async fn settle_succeeded(tx: &Tx<'_>, jobs: &[(i64, i64)]) -> Result<()> {
    if jobs.is_empty() {
        return Ok(());
    }
    // Each job's items through `settle`'s own statement, pipelined: it shares that
    // statement's plan, found by key. One statement for all (`job_id = ANY(…)`, or a
    // lateral lookup per id) was planned on the tables while they were small and
    // scanned every link: 25-130 ms a group at 10,000 jobs.
    let found = try_join_all(jobs.iter().map(|(job, at)| async move {
        let rows = super::query(tx, ITEMS, &[job]).await?;
        Ok::<_, StoreError>(rows.into_iter().map(move |r| (*at, r)))
    }))
    .await?;
    let mut items: Vec<(i64, Item)> = found
        .into_iter()
        .flatten()
        .map(|(at, row)| (at, Item::of(&row)))
        .collect();
    // Each item once (a group may end two of its jobs), then its assignment held.
    let mut seen = std::collections::HashSet::new();
    items.retain(|(_, i)| seen.insert(i.id));
    let (ats, mut held): (Vec<i64>, Vec<Item>) = items.into_iter().unzip();
    hold(tx, &mut held).await?;
    // Each assignment once (an UPDATE joins a row to one of its matches).
    let mut moved = std::collections::HashSet::new();
    let (mut assignment, mut from, mut to, mut now) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (at, item) in ats.iter().zip(&held) {
        if let Some((f, t)) = crate::store::rules::settled(&item.effect, &item.states)
            && moved.insert(item.assignment)
        {
            assignment.push(item.assignment);
            from.push(f.as_str());
            to.push(t.as_str());
            now.push(*at);
        }
    }
    if assignment.is_empty() {
        return Ok(());
    }
    // `a.id = ANY(…)`: the assignments are found through their key whatever the plan
    // thinks of the array's size.
    super::exec(
        tx,
        "UPDATE assignments a SET state = CASE WHEN u.to_state = 'active' AND EXISTS (SELECT 1 FROM assignments b
                    WHERE b.identity_id = a.identity_id AND b.item_type = a.item_type
                      AND b.item_id = a.item_id AND b.id <> a.id
                      AND b.state IN ('pending','active')) THEN 'removed'
                WHEN u.to_state = 'active' AND a.fired_at IS NOT NULL THEN 'revoking' ELSE u.to_state END,
            updated_at = u.at,
            active_at = CASE WHEN u.to_state = 'active' AND a.fired_at IS NULL THEN u.at ELSE a.active_at END
         FROM unnest($1::BIGINT[], $2::TEXT[], $3::TEXT[], $4::BIGINT[]) AS u(id, from_state, to_state, at)
         WHERE a.id = ANY($1) AND a.id = u.id AND a.state = u.from_state",
        &[&assignment, &from, &to, &now],
    )
    .await?;
    Ok(())
}

pub(super) async fn cancel_in(
    tx: &Tx<'_>,
    id: i64,
    now: i64,
    reason: &str,
    actor: &str,
) -> Result<Job> {
    let job = get(tx, id).await?.ok_or_else(|| operator::no_job(id))?;
    let cancel = operator::cancel(&job, reason)?;
    let n = tx
        .execute(
            "UPDATE jobs SET state = 'canceled', lease_owner = NULL, lease_expires_at = NULL, finalized_at = $1,
                updated_at = $1 WHERE id = $2 AND state = $3",
            &[&now, &id, &cancel.from.as_str()],
        )
        .await?;
    guarded(n, || operator::cancel_raced(id))?;
    tx.execute(
        "UPDATE tasks SET status = 'canceled', resolved_at = $1, note = $2 WHERE job_id = $3 AND status = 'open'",
        &[&now, &reason, &id],
    )
    .await?;
    super::audit::append(
        tx,
        now,
        &Event::of_job("job_canceled", &job, actor, cancel.data),
    )
    .await?;
    settle(tx, id, now, JobState::Canceled).await?;
    Ok(job)
}

pub(super) async fn cancel_request(
    tx: &Tx<'_>,
    request_id: &str,
    now: i64,
    comment: &str,
    actor: &str,
) -> Result<usize> {
    let exists = tx
        .query_opt("SELECT seq FROM requests WHERE id = $1", &[&request_id])
        .await?;
    if exists.is_none() {
        return Err(operator::no_request(request_id));
    }
    let ids: Vec<i64> = tx
        .query(
            "SELECT id FROM jobs WHERE request_id = $1 AND state IN ('queued','retrying','manual') ORDER BY id",
            &[&request_id],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    operator::cancel_request(request_id, ids.len())?;
    for id in &ids {
        cancel_in(tx, *id, now, comment, actor).await?;
    }
    tx.execute(
        "UPDATE requests SET canceled_at = $1, cancel_comment = $2 WHERE id = $3",
        &[&now, &comment, &request_id],
    )
    .await?;
    let e = Event {
        kind: "request_canceled",
        request_id: Some(request_id),
        data: operator::request_canceled(comment, ids.len()),
        actor,
        ..Default::default()
    };
    super::audit::append(tx, now, &e).await?;
    Ok(ids.len())
}

/// Ends a job waiting on manual tasks (guarded on `manual`); returns its state after.
pub(super) async fn finish_manual(
    tx: &Tx<'_>,
    job_id: i64,
    verdict: Verdict,
    now: i64,
    actor: &str,
) -> Result<JobState> {
    let job = get(tx, job_id)
        .await?
        .ok_or_else(|| operator::no_job(job_id))?;
    let Some(end) = manual::end_manual(&job, verdict)? else {
        return Ok(job.state);
    };
    let n = tx
        .execute(
            "UPDATE jobs SET state = $1, errors = $2, ops_done = $3, finalized_at = $4, updated_at = $4
             WHERE id = $5 AND state = 'manual'",
            &[&end.state.as_str(), &end.errors, &end.ops_done, &now, &job_id],
        )
        .await?;
    guarded(n, || manual::end_raced(job_id))?;
    if let Some(note) = end.cancel_open_tasks {
        tx.execute(
            "UPDATE tasks SET status = 'canceled', resolved_at = $1, note = $2 WHERE job_id = $3 AND status = 'open'",
            &[&now, &note, &job_id],
        )
        .await?;
    }
    if end.activate_account {
        tx.execute(
            "UPDATE accounts SET state = 'active', updated_at = $1,
                native_id = COALESCE(native_id, (SELECT account FROM tasks WHERE job_id = $2 AND account <> '' ORDER BY op_index LIMIT 1))
             WHERE job_id = $2 AND state = 'pending'",
            &[&now, &job_id],
        )
        .await?;
    }
    if end.rename_account {
        tx.execute(
            "UPDATE accounts SET updated_at = $1, native_id = COALESCE((SELECT renamed_to FROM tasks
                WHERE job_id = $2 AND renamed_to IS NOT NULL ORDER BY op_index DESC LIMIT 1), native_id)
             WHERE identity_id = $3 AND source = $4",
            &[&now, &job_id, &job.identity_id, &job.source],
        )
        .await?;
    }
    if let Some(disabled) = end.set_disabled {
        tx.execute(
            "UPDATE accounts SET disabled = $1 WHERE identity_id = $2 AND source = $3",
            &[&i64::from(disabled), &job.identity_id, &job.source],
        )
        .await?;
    }
    if end.forget_account {
        let sql = crate::store::jobs::forget_account_sql(crate::store::audit::postgres_param);
        tx.execute(sql.as_str(), &[&job.identity_id, &job.source, &job.id])
            .await?;
    }
    super::audit::append(tx, now, &Event::of_job(end.kind, &job, actor, end.data)).await?;
    settle(tx, job_id, now, end.state).await?;
    Ok(end.state)
}
