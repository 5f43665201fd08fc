//! Imported identities and the accounts provd made, on PostgreSQL.

use std::collections::{BTreeMap, BTreeSet};

use provd_connector_core::Identity;

use super::Postgres;
use crate::store::roles::{Accounts, Fut, Stamp};
use crate::store::rules::events;

use crate::store::rules::stored_identity as identity;

impl Accounts for Postgres {
    fn identities(&self, ids: Vec<String>) -> Fut<BTreeMap<String, Identity>> {
        let me = self.clone();
        Box::pin(async move {
            let c = me.client().await?;
            // Every accept reads its identities: prepared once per connection, not
            // parsed and planned anew (and a round trip more) each time.
            let st = c
                .prepare_cached("SELECT id, attributes FROM identities WHERE id = ANY($1)")
                .await?;
            let rows = c.query(&st, &[&ids]).await?;
            rows.iter()
                .map(|r| {
                    let id: String = r.get(0);
                    Ok((id.clone(), identity(id, r.get(1))?))
                })
                .collect()
        })
    }

    fn identity_ids(&self) -> Fut<Vec<String>> {
        let me = self.clone();
        Box::pin(async move {
            let c = me.client().await?;
            let rows = c
                .query("SELECT id FROM identities ORDER BY id", &[])
                .await?;
            Ok(rows.iter().map(|r| r.get(0)).collect())
        })
    }

    fn import_identities(&self, ids: Vec<Identity>, from_file: bool, by: Stamp) -> Fut<usize> {
        let me = self.clone();
        let Stamp { actor, now } = by;
        Box::pin(async move {
            let mut c = me.client().await?;
            let tx = c.transaction().await?;
            let st = tx
                .prepare(
                    "INSERT INTO identities (id, attributes, updated_at, from_file) VALUES ($1,$2,$3,$4)
                     ON CONFLICT (id) DO UPDATE SET attributes = excluded.attributes, updated_at = excluded.updated_at,
                        from_file = excluded.from_file",
                )
                .await?;
            for i in &ids {
                let attrs = crate::store::rules::identity_attributes(i)?;
                tx.execute(&st, &[&i.id, &attrs, &now, &i64::from(from_file)])
                    .await?;
            }
            let event = events::identities_imported(ids.len(), &actor);
            super::audit::append(&tx, now, &event).await?;
            tx.commit().await?;
            Ok(ids.len())
        })
    }

    fn account_owners(&self, source: String, native_id: String) -> Fut<Vec<String>> {
        let me = self.clone();
        Box::pin(async move {
            let c = me.client().await?;
            let rows = c
                .query(
                    "SELECT identity_id FROM accounts WHERE source = $1 AND lower(native_id) = lower($2) ORDER BY identity_id",
                    &[&source, &native_id],
                )
                .await?;
            Ok(rows.iter().map(|r| r.get(0)).collect())
        })
    }

    fn account_sources(&self, ids: Vec<String>) -> Fut<BTreeMap<String, BTreeSet<String>>> {
        let me = self.clone();
        Box::pin(async move {
            let c = me.client().await?;
            let rows = c
                .query(
                    "SELECT identity_id, source FROM accounts WHERE identity_id = ANY($1)",
                    &[&ids],
                )
                .await?;
            let mut out: BTreeMap<String, BTreeSet<String>> =
                ids.into_iter().map(|i| (i, BTreeSet::new())).collect();
            for r in &rows {
                out.entry(r.get(0)).or_default().insert(r.get(1));
            }
            Ok(out)
        })
    }

    fn file_identities(&self) -> Fut<BTreeMap<String, Identity>> {
        let me = self.clone();
        Box::pin(async move {
            let c = me.client().await?;
            let rows = c
                .query(
                    "SELECT id, attributes FROM identities WHERE from_file = 1",
                    &[],
                )
                .await?;
            rows.iter()
                .map(|r| {
                    let id: String = r.get(0);
                    Ok((id.clone(), identity(id, r.get(1))?))
                })
                .collect()
        })
    }

    fn identity_by_attribute(&self, attr: String, value: String) -> Fut<Option<String>> {
        let me = self.clone();
        Box::pin(async move {
            let c = me.client().await?;
            let row = c
                .query_opt(
                    "SELECT id FROM identities WHERE (attributes::jsonb ->> $1) = $2 ORDER BY id LIMIT 1",
                    &[&attr, &value],
                )
                .await?;
            Ok(row.map(|r| r.get(0)))
        })
    }

    fn native_id(&self, identity: String, source: String) -> Fut<Option<String>> {
        let me = self.clone();
        Box::pin(async move {
            let c = me.client().await?;
            let row = c
                .query_opt(
                    "SELECT native_id FROM accounts WHERE identity_id = $1 AND source = $2",
                    &[&identity, &source],
                )
                .await?;
            Ok(row.and_then(|r| r.get(0)))
        })
    }
}
