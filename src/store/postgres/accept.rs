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

use std::collections::HashMap;

use futures_util::future::try_join_all;
use tokio_postgres::Statement;

use super::rows::to_json;
use super::{Param, Tx};
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
    // Both reads in one round trip.
    let (live, held): (&[Param], &[Param]) = (&[&identities, &include], &[&identities]);
    let (rows, accounts) = futures_util::try_join!(
        super::query(tx,
            "SELECT id, identity_id, item_type, item_id, state, request_id, entitlements FROM assignments
             WHERE identity_id = ANY($1) AND (state IN ('pending','active') OR id = $2) ORDER BY id",
            live,
        ),
        super::query(
            tx,
            "SELECT identity_id, source FROM accounts WHERE identity_id = ANY($1)",
            held,
        ),
    )?;
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

/// The statements of a request's writes. They are prepared (from the connection's cache)
/// before any is sent: a statement prepared on first use costs a round trip of its own
/// and could let one sent after it overtake it, and ids must follow plan order.
struct Statements {
    request: Statement,
    job: Statement,
    account: Statement,
    grant: Statement,
    remove_at: Statement,
    revoke: Statement,
    item: Statement,
}

async fn prepare(tx: &Tx<'_>) -> Result<Statements> {
    let sql = [
        "INSERT INTO requests (id, idempotency_key, origin, requester, request_type, body, response, received_at)
         VALUES ($1,$2,$3,$4,$5,$6,$7,$8)",
        "INSERT INTO jobs (request_id, identity_id, source, kind, identity, operations, state, max_attempts,
                           next_attempt_at, created_at, updated_at)
         VALUES ($1,$2,$3,$4,$5,$6,'queued',$7,$8,$9,$9) RETURNING id",
        "INSERT INTO accounts (identity_id, source, state, job_id, updated_at) VALUES ($1,$2,'pending',$3,$4)
         ON CONFLICT (identity_id, source) DO NOTHING",
        "INSERT INTO assignments (identity_id, item_type, item_id, state, request_id, entitlements,
            start_at, remove_at, created_at, updated_at, active_at)
         VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$9,CASE WHEN $4 = 'active' THEN $9::BIGINT END) RETURNING id",
        "UPDATE assignments SET remove_at = $1, updated_at = $2 WHERE id = $3",
        "UPDATE assignments SET state = $1, updated_at = $2 WHERE id = $3",
        "INSERT INTO request_items (request_id, identity_id, item_type, item_id, name, disposition,
            existing_request_id, assignment_id, effect, comment, start_at, remove_at, client_metadata)
         VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13) RETURNING id",
    ];
    let mut st = try_join_all(sql.iter().map(|s| tx.prepare_cached(s)))
        .await?
        .into_iter();
    let mut next = || {
        st.next()
            .ok_or_else(|| corrupt("a statement was not prepared"))
    };
    Ok(Statements {
        request: next()?,
        job: next()?,
        account: next()?,
        grant: next()?,
        remove_at: next()?,
        revoke: next()?,
        item: next()?,
    })
}

/// Writes a request in four pipelined waves, whatever its size: (1) the request, its
/// event and the removeDates its duplicate grants may keep; (2) its jobs, then what each
/// item does to the assignments; (3) accounts, the jobs' and items' events, the items'
/// rows; (4) the links of items to jobs. Each wave is sent in plan order (ids keep it),
/// and waits only for what the next one needs — a request of ten identities was some
/// forty round trips one after another, three per item. Items of a request concern
/// distinct assignments (validation refuses an identity or an item named twice), so
/// none of a wave's statements depends on another's.
async fn write(tx: &Tx<'_>, w: &Write<'_>, now_ms: i64) -> Result<(Vec<i64>, Vec<RemovalChange>)> {
    let (req, plan, request_id) = (w.req, w.plan, w.request_id);
    let st = prepare(tx).await?;

    let (request_type, response) = (req.request_type.as_str(), w.response.to_string());
    let accepted = Event {
        kind: "request_accepted",
        request_id: Some(request_id),
        data: json!({ "origin": w.from.origin, "requestType": request_type, "jobs": plan.jobs.len() }),
        actor: &w.from.name,
        ..Default::default()
    };
    let kept: Vec<i64> = plan
        .items
        .iter()
        .filter_map(|i| match i.effect {
            Effect::SetRemoveDate { assignment, .. } => Some(assignment),
            _ => None,
        })
        .collect();
    let (_, _, current) = futures_util::try_join!(
        async {
            tx.execute(
                &st.request,
                &[
                    &request_id,
                    &w.idempotency_key,
                    &w.from.origin,
                    &w.from.name,
                    &request_type,
                    &w.body,
                    &response,
                    &now_ms,
                ],
            )
            .await
            .map_err(StoreError::from)
        },
        super::audit::append(tx, now_ms, &accepted),
        remove_dates(tx, &kept),
    )?;
    // A duplicate grant that keeps the removeDate it had changes nothing.
    let unchanged = plan
        .items
        .iter()
        .map(|item| match item.effect {
            Effect::SetRemoveDate {
                assignment,
                remove_at,
            } => current
                .get(&assignment)
                .map(|c| *c == remove_at.map(to_ms))
                .ok_or_else(|| {
                    corrupt(format!("assignment {assignment} vanished while accepting"))
                }),
            _ => Ok(false),
        })
        .collect::<Result<Vec<bool>>>()?;

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
            job.kind.as_str(),
            i64::from(job.max_attempts),
        ));
    }
    let st = &st;
    let jobs = try_join_all(plan.jobs.iter().zip(&rows).map(
        |(job, (identity, ops, not_before, kind, max))| async move {
            let row = tx
                .query_one(
                    &st.job,
                    &[
                        &request_id,
                        &job.identity,
                        &job.source,
                        kind,
                        identity,
                        ops,
                        max,
                        not_before,
                        &now_ms,
                    ],
                )
                .await?;
            Ok::<i64, StoreError>(row.get(0))
        },
    ));
    let effects = try_join_all(
        plan.items
            .iter()
            .zip(&unchanged)
            .map(|(item, &unchanged)| apply_effect(tx, st, item, unchanged, request_id, now_ms)),
    );
    let (job_ids, assignments) = futures_util::try_join!(jobs, effects)?;

    let creates = plan
        .jobs
        .iter()
        .zip(&job_ids)
        .filter(|(job, _)| job.ops.contains(&Operation::CreateAccount));
    let accounts = try_join_all(creates.map(|(job, id)| async move {
        tx.execute(&st.account, &[&job.identity, &job.source, id, &now_ms])
            .await
            .map_err(StoreError::from)
    }));
    let mut events: Vec<(i64, Event)> = plan
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
    for (item, &unchanged) in plan.items.iter().zip(&unchanged) {
        if let Some(e) = remove_date_event(item, unchanged, request_id, &w.from.name) {
            events.push((now_ms, e));
        }
    }
    let mut item_rows = Vec::with_capacity(plan.items.len());
    for (item, assignment) in plan.items.iter().zip(&assignments) {
        let (disposition, existing_request) = crate::store::rules::disposition(item);
        let mut meta = req.client_metadata.clone();
        meta.extend(item.item.client_metadata.clone());
        item_rows.push((
            item,
            *assignment,
            disposition,
            existing_request,
            crate::store::rules::effect_name(&item.effect),
            to_json(&meta)?,
        ));
    }
    let items = try_join_all(item_rows.iter().map(
        |(item, assignment, disposition, existing, effect, meta)| async move {
            let row = tx
                .query_one(
                    &st.item,
                    &[
                        &request_id,
                        &item.identity,
                        &item.item.ty.as_str(),
                        &item.item.id,
                        &item.name,
                        disposition,
                        existing,
                        assignment,
                        effect,
                        &item.item.comment,
                        &item.item.start_at.map(to_ms),
                        &item.item.remove_at.map(to_ms),
                        meta,
                    ],
                )
                .await?;
            Ok::<i64, StoreError>(row.get(0))
        },
    ));
    let (_, _, item_ids) =
        futures_util::try_join!(accounts, super::audit::append_all(tx, &events), items)?;

    let (mut link_items, mut link_jobs) = (Vec::new(), Vec::new());
    for (item, item_id) in plan.items.iter().zip(&item_ids) {
        for job_id in item.jobs.iter().filter_map(|j| job_ids.get(*j)) {
            link_items.push(*item_id);
            link_jobs.push(*job_id);
        }
    }
    if !link_items.is_empty() {
        super::exec(
            tx,
            "INSERT INTO item_jobs (item_id, job_id) SELECT * FROM unnest($1::BIGINT[], $2::BIGINT[])
             ON CONFLICT DO NOTHING",
            &[&link_items, &link_jobs],
        )
        .await?;
    }

    let mut removals = Vec::new();
    for ((item, &unchanged), assignment) in plan.items.iter().zip(&unchanged).zip(&assignments) {
        if let Some(change) = crate::store::rules::removal_change(item, unchanged) {
            removals.push(RemovalChange {
                identity: item.identity.clone(),
                item: item.item.id.clone(),
                assignment: *assignment,
                change,
                remove_at: item.item.remove_at.map(to_ms),
            });
        }
    }
    Ok((job_ids, removals))
}

/// The removeDates now held by `assignments` (none asked: no round trip).
async fn remove_dates(tx: &Tx<'_>, assignments: &[i64]) -> Result<HashMap<i64, Option<i64>>> {
    if assignments.is_empty() {
        return Ok(HashMap::new());
    }
    let rows = super::query(
        tx,
        "SELECT id, remove_at FROM assignments WHERE id = ANY($1)",
        &[&assignments],
    )
    .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// What an item does to the assignments — at most one statement, so that the wave of a
/// request's items goes out in their order; returns the assignment it concerns.
async fn apply_effect(
    tx: &Tx<'_>,
    st: &Statements,
    item: &crate::model::PlannedItem,
    unchanged: bool,
    request_id: &str,
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
            let row = tx
                .query_one(
                    &st.grant,
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
        Effect::SetRemoveDate { assignment, .. } if unchanged => Some(assignment),
        Effect::SetRemoveDate {
            assignment,
            remove_at: Some(remove_at),
        }
        | Effect::ScheduleRemoval {
            assignment,
            remove_at,
        } => {
            tx.execute(
                &st.remove_at,
                &[&Some(to_ms(remove_at)), &now_ms, &assignment],
            )
            .await?;
            Some(assignment)
        }
        Effect::SetRemoveDate {
            assignment,
            remove_at: None,
        } => {
            tx.execute(&st.remove_at, &[&None::<i64>, &now_ms, &assignment])
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
                tx.execute(&st.revoke, &[&state, &now_ms, &a]).await?;
            }
            assignment
        }
        Effect::Nothing => None,
    })
}

/// The event of an item that sets or clears a removeDate.
fn remove_date_event<'a>(
    item: &'a crate::model::PlannedItem,
    unchanged: bool,
    request_id: &'a str,
    actor: &'a str,
) -> Option<Event<'a>> {
    let (assignment, remove_at) = match item.effect {
        Effect::SetRemoveDate { .. } if unchanged => return None,
        Effect::SetRemoveDate {
            assignment,
            remove_at,
        } => (assignment, remove_at),
        Effect::ScheduleRemoval {
            assignment,
            remove_at,
        } => (assignment, Some(remove_at)),
        _ => return None,
    };
    Some(Event {
        kind: "remove_date_set",
        request_id: Some(request_id),
        identity: Some(&item.identity),
        data: json!({ "assignment": assignment, "removeDate": remove_at.map(|t| crate::clock::rfc3339_ms(to_ms(t))) }),
        actor,
        ..Default::default()
    })
}
