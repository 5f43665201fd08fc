//! Time-bound access on PostgreSQL: the same two phases as SQLite (`store/schedule.rs`).
//! Firing takes due rows with SKIP LOCKED, so two schedulers never record one removal
//! twice; planning locks each fired row, so a revoke is planned once.

use jiff::Timestamp;

use super::Postgres;
use crate::clock::to_ms;
use crate::config::ItemType;
use crate::store::StoreError;
use crate::store::accept::{Accepted, Context, Replay};
use crate::store::roles::{Fut, Schedule};
use crate::store::rules::events;
use crate::store::schedule::{Assignment, Fired, Planned, Removal};

fn fired(r: &tokio_postgres::Row, now: Option<i64>) -> Option<Fired> {
    let remove_at: i64 = r.get(4);
    ItemType::parse(r.get(2)).map(|ty| Fired {
        assignment: r.get(0),
        identity: r.get(1),
        ty,
        item_id: r.get(3),
        remove_at,
        lag_ms: now.map_or(0, |n| n - remove_at),
        grant_request: r.get(5),
        grant_metadata: r.get(6),
    })
}

impl Schedule for Postgres {
    fn assignments(&self, identity: Option<String>) -> Fut<Vec<Assignment>> {
        let me = self.clone();
        Box::pin(async move {
            let c = me.client().await?;
            let rows = c
                .query(
                    "SELECT id, identity_id, item_type, item_id, state, request_id, remove_at FROM assignments
                     WHERE $1::TEXT IS NULL OR identity_id = $1 ORDER BY id",
                    &[&identity],
                )
                .await?;
            rows.iter()
                .map(|r| {
                    let id: i64 = r.get(0);
                    let ty: String = r.get(2);
                    Ok(Assignment {
                        id,
                        identity: r.get(1),
                        ty: ItemType::parse(&ty).ok_or_else(|| {
                            StoreError::Corrupt(format!("assignment {id}: type {ty}"))
                        })?,
                        item_id: r.get(3),
                        state: r.get(4),
                        request_id: r.get(5),
                        remove_at: r.get(6),
                    })
                })
                .collect()
        })
    }

    fn next_removal(&self) -> Fut<Option<i64>> {
        let me = self.clone();
        Box::pin(async move {
            let c = me.client().await?;
            let row = c
                .query_one(
                    "SELECT MIN(remove_at) FROM assignments WHERE remove_at IS NOT NULL AND state IN ('pending','active','failed')",
                    &[],
                )
                .await?;
            Ok(row.get(0))
        })
    }

    fn fire(&self, now: i64, limit: usize) -> Fut<Vec<Fired>> {
        let me = self.clone();
        Box::pin(async move {
            let mut c = me.client().await?;
            let tx = c.transaction().await?;
            me.fenced(&tx).await?;
            let rows = tx
                .query(
                    "WITH due AS (SELECT id FROM assignments WHERE remove_at IS NOT NULL AND remove_at <= $1
                                  AND state IN ('pending','active','failed') ORDER BY remove_at, id LIMIT $2
                                  FOR UPDATE SKIP LOCKED)
                     UPDATE assignments a SET state = 'revoking', fired_at = $1, revoke_planned = 0, updated_at = $1
                     FROM due WHERE a.id = due.id
                     RETURNING a.id, a.identity_id, a.item_type, a.item_id, a.remove_at, a.request_id,
                        (SELECT ri.client_metadata FROM request_items ri WHERE ri.request_id = a.request_id
                         AND ri.assignment_id = a.id ORDER BY ri.id LIMIT 1)",
                    &[&now, &(limit as i64)],
                )
                .await?;
            let mut list: Vec<Fired> = rows.iter().filter_map(|r| fired(r, Some(now))).collect();
            list.sort_by_key(|f| (f.remove_at, f.assignment));
            if !list.is_empty() {
                let e = events::removals_fired(&list);
                super::audit::append(&tx, now, &e).await?;
            }
            tx.commit().await?;
            Ok(list)
        })
    }

    fn unplanned(&self, limit: usize) -> Fut<Vec<Fired>> {
        let me = self.clone();
        Box::pin(async move {
            let c = me.client().await?;
            let rows = c
                .query(
                    "SELECT a.id, a.identity_id, a.item_type, a.item_id, a.remove_at, a.request_id,
                        (SELECT ri.client_metadata FROM request_items ri WHERE ri.request_id = a.request_id
                         AND ri.assignment_id = a.id ORDER BY ri.id LIMIT 1)
                     FROM assignments a WHERE a.revoke_planned = 0 ORDER BY a.fired_at, a.id LIMIT $1",
                    &[&(limit as i64)],
                )
                .await?;
            Ok(rows.iter().filter_map(|r| fired(r, None)).collect())
        })
    }

    fn plan_fired(&self, due: Vec<Removal>, ctx: Context, now: Timestamp) -> Fut<Vec<Planned>> {
        let me = self.clone();
        Box::pin(async move {
            let now_ms = to_ms(now);
            let mut c = me.client().await?;
            let tx = c.transaction().await?;
            me.fenced(&tx).await?;
            // The identities first (as every accept locks them), all at once, then the rows.
            let names: Vec<String> = due
                .iter()
                .flat_map(|r| {
                    super::accept::lock_names(Some(&r.key), std::slice::from_ref(&r.fired.identity))
                })
                .collect();
            super::accept::lock_all(&tx, &names).await?;
            let mut out = Vec::new();
            let from = crate::model::Requester::schedule();
            for removal in &due {
                let f = &removal.fired;
                let pending: Option<i64> = tx
                    .query_opt(
                        "SELECT revoke_planned FROM assignments WHERE id = $1 FOR UPDATE",
                        &[&f.assignment],
                    )
                    .await?
                    .map(|r| r.get(0));
                if pending != Some(0) {
                    continue;
                }
                let regranted: Option<i64> = tx
                    .query_opt(
                        "SELECT id FROM assignments WHERE identity_id = $1 AND item_type = $2 AND item_id = $3
                         AND state IN ('pending','active') LIMIT 1",
                        &[&f.identity, &f.ty.as_str(), &f.item_id],
                    )
                    .await?
                    .map(|r| r.get(0));
                let mut planned = Planned {
                    assignment: f.assignment,
                    identity: f.identity.clone(),
                    item_id: f.item_id.clone(),
                    request_id: None,
                    jobs: 0,
                };
                if let Some(newer) = regranted {
                    tx.execute(
                        "UPDATE assignments SET state = 'removed', revoke_planned = 1, updated_at = $1 WHERE id = $2",
                        &[&now_ms, &f.assignment],
                    )
                    .await?;
                    let e = events::removal_superseded(f, newer);
                    super::audit::append(&tx, now_ms, &e).await?;
                    out.push(planned);
                    continue;
                }
                if let Replay::New(Accepted {
                    request_id,
                    job_ids,
                    ..
                }) = super::accept::accept_in(&tx, &removal.submission(&from, &ctx, now)).await?
                {
                    planned.request_id = Some(request_id);
                    planned.jobs = job_ids.len();
                }
                tx.execute(
                    "UPDATE assignments SET revoke_planned = 1 WHERE id = $1",
                    &[&f.assignment],
                )
                .await?;
                out.push(planned);
            }
            tx.commit().await?;
            Ok(out)
        })
    }
}
