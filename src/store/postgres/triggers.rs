//! SailPoint trigger invocations on PostgreSQL (same rules as SQLite's `store/triggers.rs`).

use tokio_postgres::Row;

use super::Postgres;
use crate::store::Result;
use crate::store::events::Event;
use crate::store::roles::{Fut, Stamp, Triggers};
use crate::store::rules::events;
use crate::store::triggers::{
    Answer, COLUMNS, CallbackEnd, Invocation, TriggerEvent, decision_event,
};

fn row(r: &Row) -> Result<Invocation> {
    crate::store::triggers::invocation_from(r)
}

impl Triggers for Postgres {
    fn record_invocation(&self, inv: Invocation, actor: String) -> Fut<(Invocation, bool)> {
        let me = self.clone();
        Box::pin(async move {
            let mut c = me.client().await?;
            let tx = c.transaction().await?;
            let a = inv.answer.as_ref();
            let n = tx
                .execute(
                    &format!(
                        "INSERT INTO trigger_invocations ({COLUMNS})
                         VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17) ON CONFLICT DO NOTHING"
                    ),
                    &[
                        &inv.id, &inv.trigger, &inv.access_request_id, &inv.identity, &inv.mode, &inv.body,
                        &a.map(|a| a.approved), &a.map(|a| &a.comment), &a.map(|a| &a.approver), &a.map(|a| &a.rule),
                        &inv.callback_url, &inv.sealed_secret, &inv.state, &inv.attempts, &inv.next_attempt_at,
                        &inv.deadline_at, &inv.received_at,
                    ],
                )
                .await?;
            if n > 0
                && let Some(a) = a
            {
                let event = Event {
                    kind: "trigger_decision",
                    identity: inv.identity.as_deref(),
                    data: decision_event(&inv, a),
                    actor: &actor,
                    ..Default::default()
                };
                super::audit::append(&tx, inv.received_at, &event).await?;
            }
            let stored = tx
                .query_one(
                    &format!("SELECT {COLUMNS} FROM trigger_invocations WHERE id = $1"),
                    &[&inv.id],
                )
                .await?;
            tx.commit().await?;
            Ok((row(&stored)?, n > 0))
        })
    }

    fn invocation(&self, id: String) -> Fut<Option<Invocation>> {
        let me = self.clone();
        Box::pin(async move {
            let c = me.client().await?;
            let r = c
                .query_opt(
                    &format!("SELECT {COLUMNS} FROM trigger_invocations WHERE id = $1"),
                    &[&id],
                )
                .await?;
            r.as_ref().map(row).transpose()
        })
    }

    fn due_invocations(&self, now: i64, limit: usize) -> Fut<Vec<Invocation>> {
        let me = self.clone();
        Box::pin(async move {
            let c = me.client().await?;
            let rows = c
                .query(
                    &format!(
                        "SELECT {COLUMNS} FROM trigger_invocations WHERE state = 'pending' AND next_attempt_at <= $1
                         ORDER BY next_attempt_at, id LIMIT $2"
                    ),
                    &[&now, &(limit as i64)],
                )
                .await?;
            rows.iter().map(row).collect()
        })
    }

    fn answer_invocation(&self, inv: Invocation, a: Answer, by: Stamp) -> Fut<()> {
        let me = self.clone();
        Box::pin(async move {
            let mut c = me.client().await?;
            let tx = c.transaction().await?;
            let n = tx
                .execute(
                    "UPDATE trigger_invocations SET approved = $1, comment = $2, approver = $3, rule = $4 WHERE id = $5 AND approved IS NULL",
                    &[&a.approved, &a.comment, &a.approver, &a.rule, &inv.id],
                )
                .await?;
            if n > 0 {
                let event = events::trigger_decision(&inv, &a, &by.actor);
                super::audit::append(&tx, by.now, &event).await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    fn retry_invocation(&self, id: String, next_at: i64, error: String) -> Fut<()> {
        let me = self.clone();
        Box::pin(async move {
            let c = me.client().await?;
            c.execute(
                "UPDATE trigger_invocations SET attempts = attempts + 1, next_attempt_at = $1, last_error = $2 WHERE id = $3 AND state = 'pending'",
                &[&next_at, &error, &id],
            )
            .await?;
            Ok(())
        })
    }

    fn finish_invocation(&self, inv: Invocation, end: CallbackEnd, by: Stamp) -> Fut<()> {
        let me = self.clone();
        Box::pin(async move {
            let mut c = me.client().await?;
            let tx = c.transaction().await?;
            let n = tx
                .execute(
                    "UPDATE trigger_invocations SET state = $1, attempts = attempts + 1, last_error = $2, done_at = $3, sealed_secret = NULL
                     WHERE id = $4 AND state = 'pending'",
                    &[&end.state, &end.error, &by.now, &inv.id],
                )
                .await?;
            if n > 0 {
                let event = events::trigger_callback(&inv, &end, &by.actor);
                super::audit::append(&tx, by.now, &event).await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    fn trigger_event(&self, entry: TriggerEvent, by: Stamp) -> Fut<()> {
        let me = self.clone();
        Box::pin(async move {
            let mut c = me.client().await?;
            let tx = c.transaction().await?;
            let event = events::trigger_event(&entry, &by.actor);
            super::audit::append(&tx, by.now, &event).await?;
            tx.commit().await?;
            Ok(())
        })
    }
}
