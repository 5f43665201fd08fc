//! The audit trail on PostgreSQL: appended inside the writer's transaction, read in id
//! order. (Ids are assigned at insert, so a reader can see id 10 committed before id 9;
//! a follower that must not skip any reads up to what it saw as the last id.)

use serde_json::Value;

use super::{Postgres, Tx};
use crate::store::Result;
use crate::store::audit::{
    AccessQuery, AuditQuery, EventWindow, HOLDINGS_POSTGRES, Holding, Param, RemovalRow, audit_sql,
    holding_from, postgres_param, removals_sql,
};
use crate::store::events::{Event, StoredEvent, actor, writer};
use crate::store::roles::{Audit, Fut, Stamp};
use crate::store::rules::events::Note;

pub(super) async fn append(c: &Tx<'_>, at_ms: i64, e: &Event<'_>) -> Result<()> {
    let data = e.data_text();
    super::exec(
        c,
        "INSERT INTO events (at, kind, request_id, job_id, source, identity_id, data, writer, actor)
         VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9)",
        &[
            &at_ms,
            &e.kind,
            &e.request_id,
            &e.job_id,
            &e.source,
            &e.identity,
            &data,
            &writer(),
            &actor(e),
        ],
    )
    .await?;
    Ok(())
}

/// Appends `events` (each with its time) in one statement, in their order: a claim's or
/// a group commit's events cost one round trip and one statement, not one each.
pub(super) async fn append_all(c: &Tx<'_>, events: &[(i64, Event<'_>)]) -> Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    let at: Vec<i64> = events.iter().map(|(at, _)| *at).collect();
    let kind: Vec<&str> = events.iter().map(|(_, e)| e.kind).collect();
    let request: Vec<Option<&str>> = events.iter().map(|(_, e)| e.request_id).collect();
    let job: Vec<Option<i64>> = events.iter().map(|(_, e)| e.job_id).collect();
    let source: Vec<Option<&str>> = events.iter().map(|(_, e)| e.source).collect();
    let identity: Vec<Option<&str>> = events.iter().map(|(_, e)| e.identity).collect();
    let data: Vec<String> = events.iter().map(|(_, e)| e.data_text()).collect();
    let who: Vec<Option<&str>> = events.iter().map(|(_, e)| actor(e)).collect();
    super::exec(
        c,
        "INSERT INTO events (at, kind, request_id, job_id, source, identity_id, data, writer, actor)
         SELECT u.at, u.kind, u.request_id, u.job_id, u.source, u.identity_id, u.data, $9, u.actor
         FROM unnest($1::BIGINT[], $2::TEXT[], $3::TEXT[], $4::BIGINT[], $5::TEXT[], $6::TEXT[], $7::TEXT[], $8::TEXT[])
              WITH ORDINALITY AS u(at, kind, request_id, job_id, source, identity_id, data, actor, n)
         ORDER BY u.n",
        &[&at, &kind, &request, &job, &source, &identity, &data, &who, &writer()],
    )
    .await?;
    Ok(())
}

fn stored(r: &tokio_postgres::Row) -> StoredEvent {
    StoredEvent {
        id: r.get(0),
        at: r.get(1),
        kind: r.get(2),
        request_id: r.get(3),
        job_id: r.get(4),
        source: r.get(5),
        identity: r.get(6),
        data: serde_json::from_str(r.get::<_, &str>(7)).unwrap_or(Value::Null),
        writer: r.get(8),
        actor: r.get(9),
    }
}

impl Audit for Postgres {
    fn holdings(&self, q: AccessQuery) -> Fut<Vec<Holding>> {
        let me = self.clone();
        Box::pin(async move {
            let c = me.client().await?;
            let rows = c
                .query(HOLDINGS_POSTGRES, &[&q.identity, &q.after, &q.sql_limit()])
                .await?;
            rows.iter().map(holding_from).collect()
        })
    }

    fn removals(&self, since: i64, until: i64, limit: usize) -> Fut<Vec<RemovalRow>> {
        let me = self.clone();
        Box::pin(async move {
            let c = me.client().await?;
            let limit = limit.min(i64::MAX as usize) as i64;
            let rows = c
                .query(&removals_sql(postgres_param), &[&since, &until, &limit])
                .await?;
            Ok(rows
                .iter()
                .map(|r| RemovalRow {
                    assignment: r.get(0),
                    identity: r.get(1),
                    item_type: r.get(2),
                    item_id: r.get(3),
                    due_at: r.get(4),
                    fired_at: r.get(5),
                    grant_request: r.get(6),
                    revoke_request: r.get(7),
                    jobs: r.get(8),
                    jobs_ended: r.get(9),
                    jobs_failed: r.get(10),
                    done_at: r.get(11),
                    state: r.get(12),
                })
                .collect())
        })
    }

    fn audit(&self, q: AuditQuery) -> Fut<Vec<StoredEvent>> {
        let me = self.clone();
        Box::pin(async move {
            let (sql, params) = audit_sql(&q, postgres_param);
            let values: Vec<Box<dyn tokio_postgres::types::ToSql + Sync + Send>> = params
                .into_iter()
                .map(|p| -> Box<dyn tokio_postgres::types::ToSql + Sync + Send> {
                    match p {
                        Param::Int(i) => Box::new(i),
                        Param::Text(t) => Box::new(t),
                    }
                })
                .collect();
            let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = values
                .iter()
                .map(|v| v.as_ref() as &(dyn tokio_postgres::types::ToSql + Sync))
                .collect();
            let c = me.client().await?;
            let rows = c.query(&sql, &refs).await?;
            Ok(rows.iter().map(stored).collect())
        })
    }

    fn note(&self, note: Note, by: Stamp) -> Fut<i64> {
        let me = self.clone();
        Box::pin(async move {
            let mut c = me.client().await?;
            let tx = c.transaction().await?;
            append(
                &tx,
                by.now,
                &crate::store::rules::events::note(&note, &by.actor),
            )
            .await?;
            let id: i64 = tx.query_one("SELECT lastval()", &[]).await?.get(0);
            tx.commit().await?;
            Ok(id)
        })
    }
    fn last_event_id(&self) -> Fut<i64> {
        let me = self.clone();
        Box::pin(async move {
            let c = me.client().await?;
            let row = c
                .query_one("SELECT COALESCE(MAX(id), 0) FROM events", &[])
                .await?;
            Ok(row.get(0))
        })
    }

    fn events_between(&self, w: EventWindow) -> Fut<Vec<StoredEvent>> {
        let me = self.clone();
        Box::pin(async move {
            let c = me.client().await?;
            let rows = c
                .query(
                    "SELECT id, at, kind, request_id, job_id, source, identity_id, data, writer, actor
                     FROM events WHERE id > $1 AND id <= $2
                       AND ($3::TEXT IS NULL OR writer IS NULL OR writer <> $3)
                     ORDER BY id LIMIT $4",
                    &[
                        &w.after,
                        &w.upto,
                        &w.not_by,
                        &(w.limit.min(i64::MAX as usize) as i64),
                    ],
                )
                .await?;
            Ok(rows.iter().map(stored).collect())
        })
    }
}
