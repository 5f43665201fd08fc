//! The audit trail on PostgreSQL: appended inside the writer's transaction, read in id
//! order. (Ids are assigned at insert, so a reader can see id 10 committed before id 9;
//! a follower that must not skip any reads up to what it saw as the last id.)

use serde_json::Value;

use super::{Postgres, Tx};
use crate::store::Result;
use crate::store::events::{Event, StoredEvent, writer};
use crate::store::roles::{Audit, BoxFuture};

pub(super) async fn append(c: &Tx<'_>, at_ms: i64, e: &Event<'_>) -> Result<()> {
    let data = if e.data.is_null() {
        "{}".to_string()
    } else {
        e.data.to_string()
    };
    super::exec(
        c,
        "INSERT INTO events (at, kind, request_id, job_id, source, identity_id, data, writer)
         VALUES ($1,$2,$3,$4,$5,$6,$7,$8)",
        &[
            &at_ms,
            &e.kind,
            &e.request_id,
            &e.job_id,
            &e.source,
            &e.identity,
            &data,
            &writer(),
        ],
    )
    .await?;
    Ok(())
}

impl Audit for Postgres {
    fn last_event_id(&self) -> BoxFuture<Result<i64>> {
        let me = self.clone();
        Box::pin(async move {
            let c = me.client().await?;
            let row = c
                .query_one("SELECT COALESCE(MAX(id), 0) FROM events", &[])
                .await?;
            Ok(row.get(0))
        })
    }

    fn events_after(&self, after: i64, limit: usize) -> BoxFuture<Result<Vec<StoredEvent>>> {
        self.events_between(after, i64::MAX, None, limit)
    }

    fn events_between(
        &self,
        after: i64,
        upto: i64,
        not_by: Option<String>,
        limit: usize,
    ) -> BoxFuture<Result<Vec<StoredEvent>>> {
        let me = self.clone();
        Box::pin(async move {
            let c = me.client().await?;
            let rows = c
                .query(
                    "SELECT id, at, kind, request_id, job_id, source, identity_id, data, writer
                     FROM events WHERE id > $1 AND id <= $2
                       AND ($3::TEXT IS NULL OR writer IS NULL OR writer <> $3)
                     ORDER BY id LIMIT $4",
                    &[
                        &after,
                        &upto,
                        &not_by,
                        &(limit.min(i64::MAX as usize) as i64),
                    ],
                )
                .await?;
            Ok(rows
                .iter()
                .map(|r| StoredEvent {
                    id: r.get(0),
                    at: r.get(1),
                    kind: r.get(2),
                    request_id: r.get(3),
                    job_id: r.get(4),
                    source: r.get(5),
                    identity: r.get(6),
                    data: serde_json::from_str(r.get::<_, &str>(7)).unwrap_or(Value::Null),
                    writer: r.get(8),
                })
                .collect())
        })
    }
}
