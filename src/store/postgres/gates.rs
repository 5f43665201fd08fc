//! The credential gate's memory on PostgreSQL, shared by every agent: one row per
//! source, each decision in a transaction serialized per source by an advisory lock (the
//! row may not exist yet, so there is nothing to lock `FOR UPDATE`).

use provd_connector_core::gate::{self, Admit, Remembered};

use super::{Postgres, Tx};
use crate::store::Result;
use crate::store::Stamp;
use crate::store::roles::{Fut, Gates};
use crate::store::rules::gate::{fingerprint_text, parse_fingerprint, unblocked};

async fn locked_record(tx: &Tx<'_>, source: &str) -> Result<Option<Remembered>> {
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext('credential_gate:' || $1))",
        &[&source],
    )
    .await?;
    record(tx, source).await
}

async fn record(
    c: &impl deadpool_postgres::GenericClient,
    source: &str,
) -> Result<Option<Remembered>> {
    let row = c
        .query_opt(
            "SELECT fingerprint, failures, at, last FROM credential_gates WHERE source = $1",
            &[&source],
        )
        .await?;
    Ok(row.map(|r| Remembered {
        fingerprint: parse_fingerprint(r.get(0)),
        failures: u32::try_from(r.get::<_, i64>(1)).unwrap_or(u32::MAX),
        at_ms: r.get(2),
        last: r.get(3),
    }))
}

impl Gates for Postgres {
    fn gate_admit(&self, source: String, fingerprint: u64, now: i64) -> Fut<Admit> {
        let me = self.clone();
        Box::pin(async move {
            let mut c = me.client().await?;
            let tx = c.transaction().await?;
            let decided = gate::admit(
                locked_record(&tx, &source).await?.as_ref(),
                fingerprint,
                now,
            );
            if decided == Admit::Probe {
                tx.execute(
                    "UPDATE credential_gates SET at = $1 WHERE source = $2",
                    &[&now, &source],
                )
                .await?;
            }
            tx.commit().await?;
            Ok(decided)
        })
    }

    fn gate_failed(&self, source: String, fingerprint: u64, now: i64, answer: String) -> Fut<()> {
        let me = self.clone();
        Box::pin(async move {
            let mut c = me.client().await?;
            let tx = c.transaction().await?;
            let before = locked_record(&tx, &source).await?;
            let r = gate::after_failure(before.as_ref(), fingerprint, now, &answer);
            tx.execute(
                "INSERT INTO credential_gates (source, fingerprint, failures, at, last)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (source) DO UPDATE SET fingerprint = excluded.fingerprint,
                    failures = excluded.failures, at = excluded.at, last = excluded.last",
                &[
                    &source,
                    &fingerprint_text(r.fingerprint),
                    &i64::from(r.failures),
                    &r.at_ms,
                    &r.last,
                ],
            )
            .await?;
            tx.commit().await?;
            Ok(())
        })
    }

    fn gate_clear(&self, source: String, by: Option<Stamp>) -> Fut<bool> {
        let me = self.clone();
        Box::pin(async move {
            let mut c = me.client().await?;
            let tx = c.transaction().await?;
            let was = locked_record(&tx, &source).await?;
            tx.execute("DELETE FROM credential_gates WHERE source = $1", &[&source])
                .await?;
            if let (Some(was), Some(by)) = (&was, &by) {
                super::audit::append(&tx, by.now, &unblocked(&source, was, &by.actor)).await?;
            }
            tx.commit().await?;
            Ok(was.is_some())
        })
    }

    fn gate_record(&self, source: String) -> Fut<Option<Remembered>> {
        let me = self.clone();
        Box::pin(async move {
            let c = me.client().await?;
            record(&c, &source).await
        })
    }

    fn gate_key(&self, candidate: Vec<u8>) -> Fut<Option<Vec<u8>>> {
        let me = self.clone();
        Box::pin(async move {
            let c = me.client().await?;
            c.execute(
                "INSERT INTO gate_key (id, key) VALUES (1, $1) ON CONFLICT (id) DO NOTHING",
                &[&candidate],
            )
            .await?;
            let row = c
                .query_one("SELECT key FROM gate_key WHERE id = 1", &[])
                .await?;
            Ok(Some(row.get(0)))
        })
    }
}
