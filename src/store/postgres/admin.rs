//! The PostgreSQL store's health and integrity.

use std::collections::BTreeMap;

use super::{Postgres, schema};
use crate::store::roles::{Admin, Fut};
use crate::store::{StoreError, TABLES};

impl Admin for Postgres {
    fn schema_version(&self) -> Fut<(i64, i64)> {
        let me = self.clone();
        Box::pin(async move {
            let c = me.client().await?;
            let row = c.query_one("SELECT version FROM provd_schema", &[]).await?;
            Ok((row.get(0), schema::MIGRATIONS.len() as i64))
        })
    }

    fn row_counts(&self) -> Fut<BTreeMap<&'static str, i64>> {
        let me = self.clone();
        Box::pin(async move {
            let c = me.client().await?;
            let mut out = BTreeMap::new();
            for t in TABLES {
                let row = c
                    .query_one(&format!("SELECT COUNT(*) FROM {t}"), &[])
                    .await?;
                out.insert(t, row.get(0));
            }
            Ok(out)
        })
    }

    fn ping(&self) -> Fut<()> {
        let me = self.clone();
        Box::pin(async move {
            me.client().await?.query_one("SELECT 1", &[]).await?;
            Ok(())
        })
    }

    fn probe_write(&self, now: i64) -> Fut<()> {
        let me = self.clone();
        Box::pin(async move {
            me.client()
                .await?
                .execute(
                    "INSERT INTO probe (id, at) VALUES (1, $1) ON CONFLICT (id) DO UPDATE SET at = $1",
                    &[&now],
                )
                .await?;
            Ok(())
        })
    }

    /// The database server manages its own disk; a full one fails `probe_write`.
    fn check_free_space(&self) -> Fut<()> {
        Box::pin(async { Ok(()) })
    }

    /// Every table this build needs is there and the append-only trigger guards events.
    fn analyze_stale(&self, share: f64) -> Fut<Vec<String>> {
        let me = self.clone();
        Box::pin(async move {
            let c = me.client().await?;
            // Never analyzed with rows in it, or changed by more than `share` (of at
            // least 1,000 rows, so small tables are not analyzed over and over).
            let stale: Vec<String> = c
                .query(
                    "SELECT relname::TEXT FROM pg_stat_user_tables
                     WHERE relname = ANY($1::TEXT[])
                       AND ((last_analyze IS NULL AND last_autoanalyze IS NULL AND n_live_tup + n_mod_since_analyze > 0)
                            OR n_mod_since_analyze > $2::FLOAT8 * GREATEST(n_live_tup, 1000))
                     ORDER BY relname",
                    &[&TABLES.to_vec(), &share],
                )
                .await?
                .iter()
                .map(|r| r.get(0))
                .collect();
            let names: Vec<&str> = TABLES
                .iter()
                .copied()
                .filter(|t| stale.iter().any(|s| s == t))
                .collect();
            me.analyze(&names).await?;
            Ok(stale)
        })
    }

    fn store_id(&self) -> Fut<String> {
        let me = self.clone();
        Box::pin(async move {
            let row = me
                .client()
                .await?
                .query_one(crate::store::STORE_ID_SQL, &[])
                .await?;
            Ok(row.get(0))
        })
    }

    fn quick_check(&self) -> Fut<()> {
        let me = self.clone();
        Box::pin(async move {
            let c = me.client().await?;
            let missing: Vec<String> = c
                .query(
                    "SELECT t FROM unnest($1::TEXT[]) AS t WHERE to_regclass(t) IS NULL",
                    &[&TABLES.to_vec()],
                )
                .await?
                .iter()
                .map(|r| r.get(0))
                .collect();
            let guarded = c
                .query_opt(
                    "SELECT 1 FROM pg_trigger WHERE tgname = 'events_no_update' AND tgrelid = 'events'::regclass",
                    &[],
                )
                .await
                .ok()
                .flatten()
                .is_some();
            if missing.is_empty() && guarded {
                return Ok(());
            }
            Err(StoreError::Damaged {
                path: me.location.clone().into(),
                reason: format!(
                    "missing tables: [{}]; events append-only trigger: {}",
                    missing.join(", "),
                    if guarded { "present" } else { "missing" }
                ),
            })
        })
    }

    fn exclusive(&self) -> bool {
        false
    }

    fn location(&self) -> String {
        self.location.clone()
    }
    fn writers(&self) -> usize {
        self.pool.status().max_size
    }
}
