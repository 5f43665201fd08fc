//! The Requests role on PostgreSQL: accepting (see `accept.rs`), replays, and the rows
//! status answers are shaped from.

use super::Postgres;
use super::accept::{accept_in, lock_all, lock_names};
use crate::model::Snapshot;
use crate::store::Result;
use crate::store::accept::{Accepted, Replay};
use crate::store::roles::{Accept, Fut, Requests};
use crate::store::status::{CANCEL_COLUMNS, StatusJob, StatusQuery, StatusRow, cancel_of};

async fn accept_one(tx: &super::Tx<'_>, a: &Accept) -> Result<Replay> {
    accept_in(tx, &a.submission()).await
}

impl Requests for Postgres {
    fn by_idempotency_key(&self, key: String) -> Fut<Option<Accepted>> {
        let me = self.clone();
        Box::pin(async move {
            let mut c = me.client().await?;
            let tx = c.transaction().await?;
            let found = super::accept::lookup_key(&tx, &key).await?;
            tx.commit().await?;
            Ok(found)
        })
    }

    fn accept_all(&self, batch: Vec<Accept>) -> Fut<Vec<Result<Replay>>> {
        let me = self.clone();
        Box::pin(async move {
            let mut c = me.client().await?;
            let mut tx = c.transaction().await?;
            let names: Vec<String> = batch
                .iter()
                .flat_map(|a| lock_names(a.idempotency_key.as_deref(), &a.request.requested_for))
                .collect();
            lock_all(&tx, &names).await?;
            // A request alone needs no savepoint (two round trips): refused, its
            // transaction is rolled back whole. The refusal is its answer; a failed
            // rollback (the connection gone) must not hide it, and the server ends the
            // transaction anyway.
            if let [a] = batch.as_slice() {
                let out = accept_one(&tx, a).await;
                if out.is_ok() {
                    tx.commit().await?;
                } else {
                    let _ = tx.rollback().await;
                }
                return Ok(vec![out]);
            }
            let out = super::each_in_savepoint!(tx, batch, |sp, a| accept_one(&sp, a));
            tx.commit().await?;
            Ok(out)
        })
    }

    fn snapshot(&self, identities: Vec<String>) -> Fut<Snapshot> {
        let me = self.clone();
        Box::pin(async move {
            let mut c = me.client().await?;
            let tx = c.transaction().await?;
            let snap = super::accept::snapshot(&tx, &identities, None).await?;
            tx.commit().await?;
            Ok(snap)
        })
    }

    fn status(&self, q: StatusQuery) -> Fut<Vec<StatusRow>> {
        let me = self.clone();
        Box::pin(async move {
            let c = me.client().await?;
            let rows = c
                .query(
                    &format!("SELECT ri.id, ri.request_id, ri.identity_id, ri.item_type, ri.item_id, ri.name, ri.disposition,
                            ri.client_metadata, r.request_type, r.received_at, r.canceled_at, a.state, a.remove_at,
                            COALESCE(r.requester, r.origin), ri.comment,
                            CASE WHEN a.request_id <> ri.request_id THEN a.request_id END, {CANCEL_COLUMNS}
                     FROM request_items ri JOIN requests r ON r.id = ri.request_id
                     LEFT JOIN assignments a ON a.id = ri.assignment_id
                     WHERE ($1::TEXT IS NULL OR ri.request_id = $1) AND ($2::TEXT IS NULL OR ri.identity_id = $2)
                     ORDER BY r.seq DESC, ri.id LIMIT $3 OFFSET $4"),
                    &[&q.request_id, &q.requested_for, &(q.limit as i64), &(q.offset as i64)],
                )
                .await?;
            let jobs_of = c
                .prepare(
                    "SELECT j.id, j.state, j.errors, j.updated_at, j.source,
                        COALESCE((SELECT ac.disabled FROM accounts ac WHERE ac.identity_id = j.identity_id AND ac.source = j.source), 0)
                     FROM jobs j JOIN item_jobs ij ON ij.job_id = j.id
                     WHERE ij.item_id = $1 ORDER BY j.id",
                )
                .await?;
            let tasks_of = c
                .prepare("SELECT owner, created_at FROM tasks WHERE job_id = $1 AND status = 'open' ORDER BY id")
                .await?;
            let mut out = Vec::with_capacity(rows.len());
            for r in &rows {
                let item: i64 = r.get(0);
                let mut carried = Vec::new();
                for j in &c.query(&jobs_of, &[&item]).await? {
                    let disabled: i64 = j.get(5);
                    let mut job = StatusJob::from_row(
                        j.get(0),
                        j.get(1),
                        j.get(2),
                        j.get(3),
                        j.get(4),
                        disabled != 0,
                    )?;
                    if job.waits_on_tasks() {
                        job.open_tasks = c
                            .query(&tasks_of, &[&job.id])
                            .await?
                            .iter()
                            .map(|t| (t.get(0), t.get(1)))
                            .collect();
                    }
                    carried.push(job);
                }
                out.push(StatusRow {
                    request_id: r.get(1),
                    identity: r.get(2),
                    item_type: r.get(3),
                    item_id: r.get(4),
                    name: r.get(5),
                    disposition: r.get(6),
                    client_metadata: r.get(7),
                    request_type: r.get(8),
                    received_at: r.get(9),
                    canceled_at: r.get(10),
                    cancel: cancel_of(r.get(10), r.get(16), r.get(17)),
                    cancelable: r.get(18),
                    assignment_state: r.get(11),
                    remove_at: r.get(12),
                    requester: r.get(13),
                    comment: r.get(14),
                    grant_request: r.get(15),
                    jobs: carried,
                });
            }
            Ok(out)
        })
    }

    fn request_origin(&self, id: String) -> Fut<Option<String>> {
        let me = self.clone();
        Box::pin(async move {
            let c = me.client().await?;
            let row = c
                .query_opt("SELECT origin FROM requests WHERE id = $1", &[&id])
                .await?;
            Ok(row.map(|r| r.get(0)))
        })
    }

    fn request_exists(&self, id: String) -> Fut<bool> {
        let me = self.clone();
        Box::pin(async move {
            let c = me.client().await?;
            let row = c
                .query_opt("SELECT 1 FROM requests WHERE id = $1", &[&id])
                .await?;
            Ok(row.is_some())
        })
    }
}
