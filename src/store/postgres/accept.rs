//! Accepting a request on PostgreSQL: snapshot, decision and writes in one transaction,
//! as on SQLite. SQLite has one writer at a time; here several agents accept at once, so
//! the transaction first takes advisory locks on the idempotency key and on each identity
//! (in one order, so two transactions never wait on each other crosswise): two requests
//! for the same identity are decided one after the other, each seeing the other's
//! assignments, and jobs of one lane get ids in acceptance order. A group of requests
//! (group commit, DESIGN §18) takes all its locks at once, then accepts each request in a
//! savepoint of its own.

use jiff::Timestamp;
use provd_connector_core::Operation;
use serde_json::{Value, json};

use futures_util::future::try_join_all;

use super::Tx;
use super::rows::to_json;
use crate::clock::to_ms;
use crate::config::ItemType;
use crate::model::{
    AssignmentState, Effect, Granted, LiveAssignment, Plan, Requester, Snapshot, ValidRequest,
};
use crate::store::accept::{Accepted, Context, RemovalChange, Replay};
use crate::store::events::Event;
use crate::store::{Result, StoreError};

/// The advisory locks a request takes: its idempotency key and each identity it names.
pub(super) fn lock_names(key: Option<&str>, identities: &[String]) -> Vec<String> {
    key.map(|k| format!("key:{k}"))
        .into_iter()
        .chain(identities.iter().map(|id| format!("identity:{id}")))
        .collect()
}

/// Takes the advisory locks `names` for the rest of the transaction, in one round trip and
/// in the order of their hashes. Every transaction that takes several takes them in that
/// one order (a group of requests, a batch of removals), so two never wait on each other
/// crosswise.
pub(super) async fn lock_all(tx: &Tx<'_>, names: &[String]) -> Result<()> {
    if names.is_empty() {
        return Ok(());
    }
    super::exec(tx,
        "SELECT pg_advisory_xact_lock(h) FROM
           (SELECT DISTINCT hashtextextended(n, 0) AS h FROM unnest($1::text[]) AS n ORDER BY h) AS l",
        &[&names],
    )
    .await?;
    Ok(())
}

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

/// What the identities hold; `include`: an assignment to count although no longer live (a
/// removal fired a moment ago, whose revoke is being planned now).
pub(super) async fn snapshot(
    tx: &Tx<'_>,
    identities: &[String],
    include: Option<i64>,
) -> Result<Snapshot> {
    let mut snap = Snapshot::default();
    let rows = super::query(tx,
            "SELECT id, identity_id, item_type, item_id, state, request_id, entitlements FROM assignments
             WHERE identity_id = ANY($1) AND (state IN ('pending','active') OR id = $2) ORDER BY id",
            &[&identities, &include],
        )
        .await?;
    for r in &rows {
        let id: i64 = r.get(0);
        let ty: String = r.get(2);
        let ty =
            ItemType::parse(&ty).ok_or_else(|| corrupt(format!("assignment {id}: type {ty}")))?;
        let entitlements: Vec<Granted> = serde_json::from_str(r.get(6)).map_err(corrupt)?;
        let state: String = r.get(4);
        snap.assignments.push(LiveAssignment {
            id,
            identity: r.get(1),
            ty,
            item_id: r.get(3),
            state: if state == "active" {
                AssignmentState::Active
            } else {
                AssignmentState::Pending
            },
            request_id: r.get(5),
            entitlements,
        });
    }
    let accounts = super::query(
        tx,
        "SELECT identity_id, source FROM accounts WHERE identity_id = ANY($1)",
        &[&identities],
    )
    .await?;
    for r in &accounts {
        snap.accounts.insert((r.get(0), r.get(1)));
    }
    Ok(snap)
}

pub(super) async fn lookup_key(tx: &Tx<'_>, key: &str) -> Result<Option<Accepted>> {
    let Some(row) = super::query_opt(
        tx,
        "SELECT id, response, body FROM requests WHERE idempotency_key = $1",
        &[&key],
    )
    .await?
    else {
        return Ok(None);
    };
    let request_id: String = row.get(0);
    let job_ids = super::query(
        tx,
        "SELECT id FROM jobs WHERE request_id = $1 ORDER BY id",
        &[&request_id],
    )
    .await?
    .iter()
    .map(|r| r.get(0))
    .collect();
    Ok(Some(Accepted {
        request_id,
        response: serde_json::from_str(row.get(1)).map_err(corrupt)?,
        job_ids,
        body: Some(row.get(2)),
        removals: Vec::new(),
    }))
}

/// Plans and writes a request inside the caller's transaction, which holds the request's
/// locks ([`lock_names`]).
#[allow(clippy::too_many_arguments)]
pub(super) async fn accept_in(
    tx: &Tx<'_>,
    req: &ValidRequest,
    body: &str,
    from: &Requester,
    idempotency_key: Option<&str>,
    ctx: &Context,
    now: Timestamp,
    include: Option<i64>,
) -> Result<Replay> {
    if let Some(key) = idempotency_key
        && let Some(found) = lookup_key(tx, key).await?
    {
        return Ok(Replay::Replayed(found));
    }
    let snap = snapshot(tx, &req.requested_for, include).await?;
    let request_id = crate::store::new_request_id(now);
    let (plan, response) = (ctx.decide)(req, &snap, &request_id);
    let w = Write {
        req,
        body,
        from,
        idempotency_key,
        ctx,
        plan: &plan,
        request_id: &request_id,
        response: &response,
    };
    let (job_ids, removals) = write(tx, &w, to_ms(now)).await?;
    Ok(Replay::New(Accepted {
        request_id,
        response,
        job_ids,
        body: None,
        removals,
    }))
}

struct Write<'a> {
    req: &'a ValidRequest,
    body: &'a str,
    from: &'a Requester,
    idempotency_key: Option<&'a str>,
    ctx: &'a Context,
    plan: &'a Plan,
    request_id: &'a str,
    response: &'a Value,
}

async fn write(tx: &Tx<'_>, w: &Write<'_>, now_ms: i64) -> Result<(Vec<i64>, Vec<RemovalChange>)> {
    let (req, plan, request_id) = (w.req, w.plan, w.request_id);
    let mut removals = Vec::new();
    super::exec(tx,
        "INSERT INTO requests (id, idempotency_key, origin, requester, request_type, body, response, received_at)
         VALUES ($1,$2,$3,$4,$5,$6,$7,$8)",
        &[&request_id, &w.idempotency_key, &w.from.origin, &w.from.name, &req.request_type.as_str(), &w.body, &w.response.to_string(), &now_ms],
    )
    .await?;
    let e = Event {
        kind: "request_accepted",
        request_id: Some(request_id),
        data: json!({ "origin": w.from.origin, "requestType": req.request_type.as_str(), "jobs": plan.jobs.len() }),
        actor: &w.from.name,
        ..Default::default()
    };
    super::audit::append(tx, now_ms, &e).await?;

    // The request's jobs are inserted in one pipelined wave (sent in plan order, so that
    // they get ids in that order, as jobs of one lane must), then their accounts and
    // events in a second: a round trip or two per request, not three per job.
    let mut rows = Vec::with_capacity(plan.jobs.len());
    for job in &plan.jobs {
        let identity = w.ctx.identities.get(&job.identity).ok_or_else(|| {
            StoreError::Conflict(format!(
                "identity `{}` vanished while planning",
                job.identity
            ))
        })?;
        rows.push((
            to_json(identity)?,
            to_json(&job.ops)?,
            job.not_before.map(to_ms),
        ));
    }
    let insert_job = tx
        .prepare_cached(
            "INSERT INTO jobs (request_id, identity_id, source, kind, identity, operations, state, max_attempts,
                               next_attempt_at, created_at, updated_at)
             VALUES ($1,$2,$3,$4,$5,$6,'queued',$7,$8,$9,$9) RETURNING id",
        )
        .await?;
    let insert_job = &insert_job;
    let job_ids: Vec<i64> = try_join_all(plan.jobs.iter().zip(&rows).map(
        |(job, (identity, ops, not_before))| async move {
            let (kind, max) = (job.kind.as_str(), i64::from(job.max_attempts));
            tx.query_one(
                insert_job,
                &[
                    &request_id,
                    &job.identity,
                    &job.source,
                    &kind,
                    identity,
                    ops,
                    &max,
                    not_before,
                    &now_ms,
                ],
            )
            .await
            .map(|r| r.get::<_, i64>(0))
        },
    ))
    .await?;
    let creates = plan
        .jobs
        .iter()
        .zip(&job_ids)
        .filter(|(job, _)| job.ops.contains(&Operation::CreateAccount));
    try_join_all(creates.map(|(job, id)| async move {
        super::exec(
            tx,
            "INSERT INTO accounts (identity_id, source, state, job_id, updated_at) VALUES ($1,$2,'pending',$3,$4)
             ON CONFLICT (identity_id, source) DO NOTHING",
            &[&job.identity, &job.source, id, &now_ms],
        )
        .await
    }))
    .await?;
    let events: Vec<(i64, Event)> = plan
        .jobs
        .iter()
        .zip(&job_ids)
        .map(|(job, id)| {
            (now_ms, Event {
                kind: "job_queued",
                request_id: Some(request_id),
                job_id: Some(*id),
                source: Some(&job.source),
                identity: Some(&job.identity),
                data: json!({ "kind": job.kind.as_str(), "operations": job.ops, "notBefore": job.not_before.map(|t| t.to_string()) }),
                actor: &w.from.name,
            })
        })
        .collect();
    super::audit::append_all(tx, &events).await?;

    for item in &plan.items {
        // A duplicate grant that keeps the removeDate it had changes nothing.
        let unchanged = match item.effect {
            Effect::SetRemoveDate {
                assignment,
                remove_at,
            } => {
                let current: Option<i64> = super::query_one(
                    tx,
                    "SELECT remove_at FROM assignments WHERE id = $1",
                    &[&assignment],
                )
                .await?
                .get(0);
                current == remove_at.map(to_ms)
            }
            _ => false,
        };
        let assignment = match item.effect {
            Effect::SetRemoveDate { assignment, .. } if unchanged => Some(assignment),
            _ => apply_effect(tx, item, request_id, &w.from.name, now_ms).await?,
        };
        let change = crate::store::rules::removal_change(item, unchanged);
        if let Some(change) = change {
            removals.push(RemovalChange {
                identity: item.identity.clone(),
                item: item.item.id.clone(),
                assignment,
                change,
                remove_at: item.item.remove_at.map(to_ms),
            });
        }
        let (disposition, existing_request) = crate::store::rules::disposition(item);
        let effect = crate::store::rules::effect_name(&item.effect);
        let mut meta = req.client_metadata.clone();
        meta.extend(item.item.client_metadata.clone());
        let row = super::query_one(tx,
                "INSERT INTO request_items (request_id, identity_id, item_type, item_id, name, disposition,
                    existing_request_id, assignment_id, effect, comment, start_at, remove_at, client_metadata)
                 VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13) RETURNING id",
                &[
                    &request_id,
                    &item.identity,
                    &item.item.ty.as_str(),
                    &item.item.id,
                    &item.name,
                    &disposition,
                    &existing_request,
                    &assignment,
                    &effect,
                    &item.item.comment,
                    &item.item.start_at.map(to_ms),
                    &item.item.remove_at.map(to_ms),
                    &to_json(&meta)?,
                ],
            )
            .await?;
        let item_row: i64 = row.get(0);
        for j in &item.jobs {
            if let Some(job_id) = job_ids.get(*j) {
                super::exec(
                    tx,
                    "INSERT INTO item_jobs (item_id, job_id) VALUES ($1,$2) ON CONFLICT DO NOTHING",
                    &[&item_row, job_id],
                )
                .await?;
            }
        }
    }
    Ok((job_ids, removals))
}

/// Writes what an item does to the assignments; returns the assignment it concerns.
async fn apply_effect(
    tx: &Tx<'_>,
    item: &crate::model::PlannedItem,
    request_id: &str,
    actor: &str,
    now_ms: i64,
) -> Result<Option<i64>> {
    Ok(match item.effect {
        Effect::Grant => {
            // Nothing left to provision (another active assignment holds it all): active now.
            let state = if item.jobs.is_empty() {
                "active"
            } else {
                "pending"
            };
            let row = super::query_one(tx,
                    "INSERT INTO assignments (identity_id, item_type, item_id, state, request_id, entitlements,
                        start_at, remove_at, created_at, updated_at, active_at)
                     VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$9,CASE WHEN $4 = 'active' THEN $9::BIGINT END) RETURNING id",
                    &[
                        &item.identity,
                        &item.item.ty.as_str(),
                        &item.item.id,
                        &state,
                        &request_id,
                        &to_json(&item.entitlements)?,
                        &item.item.start_at.map(to_ms),
                        &item.item.remove_at.map(to_ms),
                        &now_ms,
                    ],
                )
                .await?;
            Some(row.get(0))
        }
        Effect::SetRemoveDate {
            assignment,
            remove_at,
        } => {
            set_remove_at(
                tx,
                assignment,
                remove_at.map(to_ms),
                (request_id, actor, &item.identity),
                now_ms,
            )
            .await?;
            Some(assignment)
        }
        Effect::ScheduleRemoval {
            assignment,
            remove_at,
        } => {
            set_remove_at(
                tx,
                assignment,
                Some(to_ms(remove_at)),
                (request_id, actor, &item.identity),
                now_ms,
            )
            .await?;
            Some(assignment)
        }
        Effect::Revoke { assignment } => {
            if let Some(a) = assignment {
                let state = if item.jobs.is_empty() {
                    "removed"
                } else {
                    "revoking"
                };
                super::exec(
                    tx,
                    "UPDATE assignments SET state = $1, updated_at = $2 WHERE id = $3",
                    &[&state, &now_ms, &a],
                )
                .await?;
            }
            assignment
        }
        Effect::Nothing => None,
    })
}

async fn set_remove_at(
    tx: &Tx<'_>,
    assignment: i64,
    remove_at: Option<i64>,
    (request_id, actor, identity): (&str, &str, &str),
    now_ms: i64,
) -> Result<()> {
    super::exec(
        tx,
        "UPDATE assignments SET remove_at = $1, updated_at = $2 WHERE id = $3",
        &[&remove_at, &now_ms, &assignment],
    )
    .await?;
    let e = Event {
        kind: "remove_date_set",
        request_id: Some(request_id),
        identity: Some(identity),
        data: json!({ "assignment": assignment, "removeDate": remove_at.map(crate::clock::rfc3339_ms) }),
        actor,
        ..Default::default()
    };
    super::audit::append(tx, now_ms, &e).await
}
