//! Upstream checkpoints and pulled requests, on PostgreSQL.

use super::Postgres;
use crate::store::jobs::AttemptError;
use crate::store::roles::{Fut, JobOutcome, Upstream};
use crate::store::rules::events;
use crate::store::upstream::{Health, Outcome, Pulled, Unwritten};

impl Upstream for Postgres {
    fn upstream_cursor(&self, name: String) -> Fut<Option<String>> {
        let me = self.clone();
        Box::pin(async move {
            let c = me.client().await?;
            let row = c
                .query_opt(
                    "SELECT cursor FROM upstream_state WHERE name = $1",
                    &[&name],
                )
                .await?;
            Ok(row.and_then(|r| r.get(0)))
        })
    }

    fn set_upstream_cursor(&self, name: String, cursor: String, now: i64) -> Fut<()> {
        let me = self.clone();
        Box::pin(async move {
            let mut c = me.client().await?;
            let tx = c.transaction().await?;
            // The checkpoint is the leader's: a stalled former leader must not move it.
            me.fenced(&tx).await?;
            tx.execute(
                "INSERT INTO upstream_state (name, cursor, updated_at) VALUES ($1, $2, $3)
                 ON CONFLICT (name) DO UPDATE SET cursor = $2, updated_at = $3",
                &[&name, &cursor, &now],
            )
            .await?;
            tx.commit().await?;
            Ok(())
        })
    }

    fn set_upstream_health(&self, name: String, error: Option<String>, now: i64) -> Fut<()> {
        let me = self.clone();
        Box::pin(async move {
            let c = me.client().await?;
            c.execute(
                "INSERT INTO upstream_state (name, healthy, last_error, last_poll_at, updated_at) VALUES ($1, $2, $3, $4, $4)
                 ON CONFLICT (name) DO UPDATE SET healthy = $2, last_error = $3, last_poll_at = $4, updated_at = $4",
                &[&name, &i64::from(error.is_none()), &error, &now],
            )
            .await?;
            Ok(())
        })
    }

    fn upstream_health(&self) -> Fut<Vec<Health>> {
        let me = self.clone();
        Box::pin(async move {
            let c = me.client().await?;
            let rows = c
                .query(
                    "SELECT name, healthy, last_error, last_poll_at FROM upstream_state ORDER BY name",
                    &[],
                )
                .await?;
            Ok(rows
                .iter()
                .map(|r| Health {
                    name: r.get(0),
                    healthy: r.get::<_, i64>(1) != 0,
                    last_error: r.get(2),
                    last_poll_at: r.get(3),
                })
                .collect())
        })
    }

    fn upstream_seen(&self, name: String, id: String) -> Fut<bool> {
        let me = self.clone();
        Box::pin(async move {
            let c = me.client().await?;
            let row = c
                .query_opt(
                    "SELECT 1 FROM upstream_requests WHERE upstream = $1 AND upstream_id = $2",
                    &[&name, &id],
                )
                .await?;
            Ok(row.is_some())
        })
    }

    fn record_upstream(&self, name: String, id: String, outcome: Outcome, now: i64) -> Fut<()> {
        let me = self.clone();
        Box::pin(async move {
            let (request_id, reason) = outcome.columns();
            let actor = format!("upstream:{name}");
            let mut c = me.client().await?;
            let tx = c.transaction().await?;
            me.fenced(&tx).await?;
            let n = tx
                .execute(
                    "INSERT INTO upstream_requests (upstream, upstream_id, request_id, outcome, reason, received_at)
                     VALUES ($1,$2,$3,$4,$5,$6) ON CONFLICT DO NOTHING",
                    &[&name, &id, &request_id, &outcome.as_str(), &reason, &now],
                )
                .await?;
            if n > 0 && request_id.is_none() {
                let event = events::upstream_rejected(&name, &id, reason, &actor);
                super::audit::append(&tx, now, &event).await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    fn unwritten(&self, name: String) -> Fut<Vec<Unwritten>> {
        let me = self.clone();
        Box::pin(async move {
            let c = me.client().await?;
            let rows = c
                .query(
                    "SELECT upstream_id, request_id, outcome, reason FROM upstream_requests
                     WHERE upstream = $1 AND written_at IS NULL ORDER BY received_at, upstream_id",
                    &[&name],
                )
                .await?;
            Ok(rows
                .iter()
                .map(|r| Unwritten {
                    upstream_id: r.get(0),
                    request_id: r.get(1),
                    outcome: r.get(2),
                    reason: r.get(3),
                })
                .collect())
        })
    }

    fn mark_written(&self, name: String, id: String, message: String, now: i64) -> Fut<()> {
        let me = self.clone();
        Box::pin(async move {
            let actor = format!("upstream:{name}");
            let mut c = me.client().await?;
            let tx = c.transaction().await?;
            me.fenced(&tx).await?;
            tx.execute(
                "UPDATE upstream_requests SET written_at = $1
                 WHERE upstream = $2 AND upstream_id = $3 AND written_at IS NULL",
                &[&now, &name, &id],
            )
            .await?;
            let event = events::upstream_written_back(&name, &id, &message, &actor);
            super::audit::append(&tx, now, &event).await?;
            tx.commit().await?;
            Ok(())
        })
    }

    fn upstream_request(&self, id: String) -> Fut<Option<Pulled>> {
        let me = self.clone();
        Box::pin(async move {
            let c = me.client().await?;
            let row = c
                .query_opt(
                    "SELECT upstream, request_id, reason, received_at FROM upstream_requests
                     WHERE upstream_id = $1 ORDER BY upstream LIMIT 1",
                    &[&id],
                )
                .await?;
            Ok(row.map(|r| Pulled {
                upstream: r.get(0),
                request_id: r.get(1),
                reason: r.get(2),
                received_at: r.get(3),
            }))
        })
    }

    fn request_jobs(&self, request_id: String) -> Fut<Vec<JobOutcome>> {
        let me = self.clone();
        Box::pin(async move {
            let c = me.client().await?;
            let rows = c
                .query(
                    "SELECT state, source, errors FROM jobs WHERE request_id = $1 ORDER BY id",
                    &[&request_id],
                )
                .await?;
            Ok(rows
                .iter()
                .map(|r| {
                    let last = serde_json::from_str::<Vec<AttemptError>>(r.get(2))
                        .ok()
                        .and_then(|e| e.last().map(|e| e.message.clone()));
                    (r.get(0), r.get(1), last)
                })
                .collect())
        })
    }
}
