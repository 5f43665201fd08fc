//! Writing an accepted request's rows on PostgreSQL: a handful of statements whatever the
//! request's size. Each kind of row goes in one `INSERT … SELECT FROM unnest(…) WITH
//! ORDINALITY … ORDER BY ord`: the rows are inserted in plan order, so their identities
//! are drawn in that order, and sorting the returned ids gives back plan order whatever
//! order RETURNING lists them in. A request of ten identities was some fifty statements,
//! three round trips per item one after another; each statement costs the server a
//! parse-bind-execute and a network write, which on a small machine shared with the
//! directory was the intake's whole cost.

use std::collections::HashMap;

use futures_util::future::try_join_all;
use provd_connector_core::Operation;
use serde_json::Value;
use tokio_postgres::Statement;

use super::rows::to_json;
use super::{Param, Tx};
use crate::clock::to_ms;
use crate::model::{Effect, Plan, PlannedItem, Requester, ValidRequest};
use crate::store::accept::{Context, RemovalChange};
use crate::store::events::Event;
use crate::store::{Result, StoreError};

pub(super) struct Write<'a> {
    pub req: &'a ValidRequest,
    pub body: &'a str,
    pub from: &'a Requester,
    pub idempotency_key: Option<&'a str>,
    pub ctx: &'a Context,
    pub plan: &'a Plan,
    pub request_id: &'a str,
    pub response: &'a Value,
}

const REQUEST: &str = "INSERT INTO requests (id, idempotency_key, origin, requester, request_type, body, response, received_at)
     VALUES ($1,$2,$3,$4,$5,$6,$7,$8)";
const JOBS: &str = "INSERT INTO jobs (request_id, identity_id, source, kind, identity, operations, state, max_attempts,
                       next_attempt_at, created_at, updated_at)
     SELECT $1, u.identity_id, u.source, u.kind, u.identity, u.operations, 'queued', u.max_attempts,
            u.next_attempt_at, $2, $2
     FROM unnest($3::TEXT[], $4::TEXT[], $5::TEXT[], $6::TEXT[], $7::TEXT[], $8::BIGINT[], $9::BIGINT[])
          WITH ORDINALITY AS u(identity_id, source, kind, identity, operations, max_attempts, next_attempt_at, ord)
     ORDER BY u.ord RETURNING id";
const ACCOUNTS: &str = "INSERT INTO accounts (identity_id, source, state, job_id, updated_at)
     SELECT u.identity_id, u.source, 'pending', u.job_id, $1
     FROM unnest($2::TEXT[], $3::TEXT[], $4::BIGINT[]) WITH ORDINALITY AS u(identity_id, source, job_id, ord)
     ORDER BY u.ord
     ON CONFLICT (identity_id, source) DO NOTHING";
const GRANTS: &str = "INSERT INTO assignments (identity_id, item_type, item_id, state, request_id, entitlements,
        start_at, remove_at, created_at, updated_at, active_at)
     SELECT u.identity_id, u.item_type, u.item_id, u.state, $1, u.entitlements, u.start_at, u.remove_at, $2, $2,
            CASE WHEN u.state = 'active' THEN $2::BIGINT END
     FROM unnest($3::TEXT[], $4::TEXT[], $5::TEXT[], $6::TEXT[], $7::TEXT[], $8::BIGINT[], $9::BIGINT[])
          WITH ORDINALITY AS u(identity_id, item_type, item_id, state, entitlements, start_at, remove_at, ord)
     ORDER BY u.ord RETURNING id";
const REMOVE_AT: &str = "UPDATE assignments SET remove_at = $1, updated_at = $2 WHERE id = $3";
const REVOKE: &str = "UPDATE assignments SET state = $1, updated_at = $2 WHERE id = $3";
/// The items' rows and their links to the jobs: a link names its item by place (1…), and
/// the rows' places are their ids in order.
const ITEMS: &str = "WITH ins AS (
       INSERT INTO request_items (request_id, identity_id, item_type, item_id, name, disposition,
           existing_request_id, assignment_id, effect, comment, start_at, remove_at, client_metadata)
       SELECT $1, u.identity_id, u.item_type, u.item_id, u.name, u.disposition, u.existing, u.assignment,
              u.effect, u.comment, u.start_at, u.remove_at, u.meta
       FROM unnest($2::TEXT[], $3::TEXT[], $4::TEXT[], $5::TEXT[], $6::TEXT[], $7::TEXT[], $8::BIGINT[],
                   $9::TEXT[], $10::TEXT[], $11::BIGINT[], $12::BIGINT[], $13::TEXT[])
            WITH ORDINALITY AS u(identity_id, item_type, item_id, name, disposition, existing, assignment,
                                 effect, comment, start_at, remove_at, meta, ord)
       ORDER BY u.ord RETURNING id),
     placed AS (SELECT id, row_number() OVER (ORDER BY id) AS place FROM ins)
     INSERT INTO item_jobs (item_id, job_id)
     SELECT placed.id, l.job_id FROM placed JOIN unnest($14::BIGINT[], $15::BIGINT[]) AS l(place, job_id)
         ON l.place = placed.place
     ON CONFLICT DO NOTHING";

/// The statements, prepared (from the connection's cache) before any is sent: one
/// prepared on first use costs a round trip of its own and could let one sent after it
/// overtake it.
struct Statements {
    request: Statement,
    jobs: Statement,
    accounts: Statement,
    grants: Statement,
    remove_at: Statement,
    revoke: Statement,
    items: Statement,
}

async fn prepare(tx: &Tx<'_>) -> Result<Statements> {
    let sql = [REQUEST, JOBS, ACCOUNTS, GRANTS, REMOVE_AT, REVOKE, ITEMS];
    let mut st = try_join_all(sql.iter().map(|s| tx.prepare_cached(s)))
        .await?
        .into_iter();
    let mut next = || {
        st.next()
            .ok_or_else(|| StoreError::Corrupt("a statement was not prepared".into()))
    };
    Ok(Statements {
        request: next()?,
        jobs: next()?,
        accounts: next()?,
        grants: next()?,
        remove_at: next()?,
        revoke: next()?,
        items: next()?,
    })
}

/// Writes a request in two pipelined waves (three when a duplicate grant may keep its
/// removeDate, which must be read first): (1) the request, its jobs and what its items do
/// to the assignments; (2) the accounts its jobs create, all its events, its items' rows
/// with their links to the jobs. Items of a request concern distinct assignments
/// (validation refuses an identity or an item named twice), so none of a wave's
/// statements depends on another's.
pub(super) async fn write(
    tx: &Tx<'_>,
    w: &Write<'_>,
    now_ms: i64,
) -> Result<(Vec<i64>, Vec<RemovalChange>)> {
    let (req, plan, request_id) = (w.req, w.plan, w.request_id);
    let st = &prepare(tx).await?;

    let kept: Vec<i64> = plan
        .items
        .iter()
        .filter_map(|i| match i.effect {
            Effect::SetRemoveDate { assignment, .. } => Some(assignment),
            _ => None,
        })
        .collect();
    let current = remove_dates(tx, &kept).await?;
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
                    StoreError::Corrupt(format!("assignment {assignment} vanished while accepting"))
                }),
            _ => Ok(false),
        })
        .collect::<Result<Vec<bool>>>()?;

    // Wave 1.
    let request_type = req.request_type.as_str();
    let response = w.response.to_string();
    let request = async {
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
    };
    let jobs = Jobs::of(w)?;
    let grants = Grants::of(plan)?;
    let updates = try_join_all(
        plan.items
            .iter()
            .zip(&unchanged)
            .map(|(item, &unchanged)| update(tx, st, item, unchanged, now_ms)),
    );
    let (_, job_ids, grant_ids, _) = futures_util::try_join!(
        request,
        jobs.insert(tx, st, request_id, now_ms),
        grants.insert(tx, st, request_id, now_ms),
        updates,
    )?;
    let assignments = assignments_of(plan, grant_ids);

    // Wave 2.
    let creates: Vec<(&str, &str, i64)> = plan
        .jobs
        .iter()
        .zip(&job_ids)
        .filter(|(job, _)| job.ops.contains(&Operation::CreateAccount))
        .map(|(job, id)| (job.identity.as_str(), job.source.as_str(), *id))
        .collect();
    let accounts = async {
        if creates.is_empty() {
            return Ok(0);
        }
        let identity: Vec<&str> = creates.iter().map(|c| c.0).collect();
        let source: Vec<&str> = creates.iter().map(|c| c.1).collect();
        let job: Vec<i64> = creates.iter().map(|c| c.2).collect();
        tx.execute(&st.accounts, &[&now_ms, &identity, &source, &job])
            .await
            .map_err(StoreError::from)
    };
    let events = events(w, &job_ids, &unchanged, now_ms);
    let items = Items::of(w, &assignments, &job_ids)?;
    futures_util::try_join!(
        accounts,
        super::audit::append_all(tx, &events),
        items.insert(tx, st, request_id),
    )?;

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

/// Runs a multi-row insert of `rows` rows (none: no statement) and returns the new ids
/// in the order the rows were inserted, whatever order RETURNING lists them in.
async fn insert_ids(
    tx: &Tx<'_>,
    st: &Statement,
    rows: usize,
    params: &[Param<'_>],
) -> Result<Vec<i64>> {
    if rows == 0 {
        return Ok(Vec::new());
    }
    let mut ids: Vec<i64> = tx
        .query(st, params)
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    ids.sort_unstable();
    Ok(ids)
}

/// The request's jobs as columns.
struct Jobs<'a> {
    identity_id: Vec<&'a str>,
    source: Vec<&'a str>,
    kind: Vec<&'a str>,
    identity: Vec<String>,
    operations: Vec<String>,
    max_attempts: Vec<i64>,
    not_before: Vec<Option<i64>>,
}

impl<'a> Jobs<'a> {
    fn of(w: &Write<'a>) -> Result<Self> {
        let jobs = &w.plan.jobs;
        let mut identity = Vec::with_capacity(jobs.len());
        let mut operations = Vec::with_capacity(jobs.len());
        for job in jobs {
            identity.push(to_json(w.ctx.identity(&job.identity)?)?);
            operations.push(to_json(&job.ops)?);
        }
        Ok(Self {
            identity_id: jobs.iter().map(|j| j.identity.as_str()).collect(),
            source: jobs.iter().map(|j| j.source.as_str()).collect(),
            kind: jobs.iter().map(|j| j.kind.as_str()).collect(),
            identity,
            operations,
            max_attempts: jobs.iter().map(|j| i64::from(j.max_attempts)).collect(),
            not_before: jobs.iter().map(|j| j.not_before.map(to_ms)).collect(),
        })
    }

    async fn insert(
        &self,
        tx: &Tx<'_>,
        st: &Statements,
        request: &str,
        now: i64,
    ) -> Result<Vec<i64>> {
        let params: &[Param] = &[
            &request,
            &now,
            &self.identity_id,
            &self.source,
            &self.kind,
            &self.identity,
            &self.operations,
            &self.max_attempts,
            &self.not_before,
        ];
        insert_ids(tx, &st.jobs, self.identity_id.len(), params).await
    }
}

/// The assignments the request's new grants create, as columns.
struct Grants<'a> {
    identity_id: Vec<&'a str>,
    item_type: Vec<&'a str>,
    item_id: Vec<&'a str>,
    state: Vec<&'a str>,
    entitlements: Vec<String>,
    start_at: Vec<Option<i64>>,
    remove_at: Vec<Option<i64>>,
}

impl<'a> Grants<'a> {
    fn of(plan: &'a Plan) -> Result<Self> {
        let grants: Vec<&PlannedItem> = plan
            .items
            .iter()
            .filter(|i| matches!(i.effect, Effect::Grant { .. }))
            .collect();
        Ok(Self {
            identity_id: grants.iter().map(|i| i.identity.as_str()).collect(),
            item_type: grants.iter().map(|i| i.item.ty.as_str()).collect(),
            item_id: grants.iter().map(|i| i.item.id.as_str()).collect(),
            // Nothing left to provision (another active assignment holds it all): active now.
            state: grants
                .iter()
                .map(|i| {
                    if i.jobs.is_empty() {
                        "active"
                    } else {
                        "pending"
                    }
                })
                .collect(),
            entitlements: grants
                .iter()
                .map(|i| to_json(&i.entitlements))
                .collect::<Result<_>>()?,
            start_at: grants.iter().map(|i| i.item.start_at.map(to_ms)).collect(),
            remove_at: grants.iter().map(|i| i.item.remove_at.map(to_ms)).collect(),
        })
    }

    async fn insert(
        &self,
        tx: &Tx<'_>,
        st: &Statements,
        request: &str,
        now: i64,
    ) -> Result<Vec<i64>> {
        let params: &[Param] = &[
            &request,
            &now,
            &self.identity_id,
            &self.item_type,
            &self.item_id,
            &self.state,
            &self.entitlements,
            &self.start_at,
            &self.remove_at,
        ];
        insert_ids(tx, &st.grants, self.identity_id.len(), params).await
    }
}

/// The assignment each item concerns: a new grant's from `grant_ids` (in order), the
/// others' from the plan.
fn assignments_of(plan: &Plan, grant_ids: Vec<i64>) -> Vec<Option<i64>> {
    let mut new = grant_ids.into_iter();
    plan.items
        .iter()
        .map(|item| match item.effect {
            Effect::Grant { .. } => new.next(),
            Effect::SetRemoveDate { assignment, .. }
            | Effect::ScheduleRemoval { assignment, .. } => Some(assignment),
            Effect::Revoke { assignment } => assignment,
            Effect::Nothing => None,
        })
        .collect()
}

/// What an item does to an existing assignment (a new grant: to the failed one it
/// supersedes): at most one statement.
async fn update(
    tx: &Tx<'_>,
    st: &Statements,
    item: &PlannedItem,
    unchanged: bool,
    now_ms: i64,
) -> Result<()> {
    match item.effect {
        Effect::Grant {
            supersedes: Some(old),
        } => {
            let sql = crate::store::accept::supersede_sql(crate::store::audit::postgres_param);
            tx.execute(sql.as_str(), &[&now_ms, &old]).await?;
        }
        Effect::SetRemoveDate {
            assignment,
            remove_at,
        } if !unchanged => {
            let at = remove_at.map(to_ms);
            tx.execute(&st.remove_at, &[&at, &now_ms, &assignment])
                .await?;
        }
        Effect::ScheduleRemoval {
            assignment,
            remove_at,
        } => {
            tx.execute(
                &st.remove_at,
                &[&Some(to_ms(remove_at)), &now_ms, &assignment],
            )
            .await?;
        }
        Effect::Revoke {
            assignment: Some(a),
        } => {
            let state = if item.jobs.is_empty() {
                "removed"
            } else {
                "revoking"
            };
            tx.execute(&st.revoke, &[&state, &now_ms, &a]).await?;
        }
        _ => {}
    }
    Ok(())
}

/// The request's events in their order: accepted, each job queued, each removeDate set.
fn events<'a>(
    w: &Write<'a>,
    job_ids: &[i64],
    unchanged: &[bool],
    now_ms: i64,
) -> Vec<(i64, Event<'a>)> {
    let (plan, request_id, actor) = (w.plan, w.request_id, w.from.name.as_str());
    let accepted = Event::request_accepted(request_id, w.from, w.req, plan.jobs.len());
    let queued = plan
        .jobs
        .iter()
        .zip(job_ids)
        .map(|(job, id)| Event::job_queued(request_id, *id, job, actor));
    let dates = plan
        .items
        .iter()
        .zip(unchanged)
        .filter_map(|(item, &unchanged)| remove_date_event(item, unchanged, request_id, actor));
    std::iter::once(accepted)
        .chain(queued)
        .chain(dates)
        .map(|e| (now_ms, e))
        .collect()
}

/// The event of an item that sets or clears a removeDate.
fn remove_date_event<'a>(
    item: &'a PlannedItem,
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
    let at = remove_at.map(to_ms);
    Some(Event::remove_date_set(
        request_id,
        &item.identity,
        assignment,
        at,
        actor,
    ))
}

/// The request's items as columns, with the links to their jobs (item place, job id).
struct Items<'a> {
    identity_id: Vec<&'a str>,
    item_type: Vec<&'a str>,
    item_id: Vec<&'a str>,
    name: Vec<&'a str>,
    disposition: Vec<&'static str>,
    existing: Vec<Option<&'a str>>,
    assignment: Vec<Option<i64>>,
    effect: Vec<&'static str>,
    comment: Vec<Option<&'a str>>,
    start_at: Vec<Option<i64>>,
    remove_at: Vec<Option<i64>>,
    meta: Vec<String>,
    link_place: Vec<i64>,
    link_job: Vec<i64>,
}

impl<'a> Items<'a> {
    fn of(w: &Write<'a>, assignments: &[Option<i64>], job_ids: &[i64]) -> Result<Self> {
        let items = &w.plan.items;
        let mut me = Items {
            identity_id: items.iter().map(|i| i.identity.as_str()).collect(),
            item_type: items.iter().map(|i| i.item.ty.as_str()).collect(),
            item_id: items.iter().map(|i| i.item.id.as_str()).collect(),
            name: items.iter().map(|i| i.name.as_str()).collect(),
            disposition: Vec::with_capacity(items.len()),
            existing: Vec::with_capacity(items.len()),
            assignment: assignments.to_vec(),
            effect: items
                .iter()
                .map(|i| crate::store::rules::effect_name(&i.effect))
                .collect(),
            comment: items.iter().map(|i| i.item.comment.as_deref()).collect(),
            start_at: items.iter().map(|i| i.item.start_at.map(to_ms)).collect(),
            remove_at: items.iter().map(|i| i.item.remove_at.map(to_ms)).collect(),
            meta: Vec::with_capacity(items.len()),
            link_place: Vec::new(),
            link_job: Vec::new(),
        };
        for (place, item) in (1..).zip(items) {
            let (disposition, existing) = crate::store::rules::disposition(item);
            me.disposition.push(disposition);
            me.existing.push(existing);
            let mut meta = w.req.client_metadata.clone();
            meta.extend(item.item.client_metadata.clone());
            me.meta.push(to_json(&meta)?);
            for job in item.jobs.iter().filter_map(|j| job_ids.get(*j)) {
                me.link_place.push(place);
                me.link_job.push(*job);
            }
        }
        Ok(me)
    }

    async fn insert(&self, tx: &Tx<'_>, st: &Statements, request: &str) -> Result<u64> {
        if self.identity_id.is_empty() {
            return Ok(0);
        }
        Ok(tx
            .execute(
                &st.items,
                &[
                    &request,
                    &self.identity_id,
                    &self.item_type,
                    &self.item_id,
                    &self.name,
                    &self.disposition,
                    &self.existing,
                    &self.assignment,
                    &self.effect,
                    &self.comment,
                    &self.start_at,
                    &self.remove_at,
                    &self.meta,
                    &self.link_place,
                    &self.link_job,
                ],
            )
            .await?)
    }
}
