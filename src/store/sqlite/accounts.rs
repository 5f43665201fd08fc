//! Imported identities on SQLite.

use super::Sqlite;
use crate::store::roles::{Accounts, Fut, Stamp};
use crate::store::{Result, StoreError};
use provd_connector_core::Identity;
use std::collections::{BTreeMap, BTreeSet};

use rusqlite::{OptionalExtension, params};

impl Sqlite {
    pub fn identity(&self, id: &str) -> Result<Option<Identity>> {
        self.with(|c| {
            let attrs: Option<String> = c
                .prepare_cached("SELECT attributes FROM identities WHERE id = ?")?
                .query_row([id], |r| r.get(0))
                .optional()?;
            attrs
                .map(|a| crate::store::rules::stored_identity(id.to_string(), &a))
                .transpose()
        })
    }

    /// Upserts all identities in one transaction: all or nothing.
    /// Ids of the imported identities (they take precedence over `identities.csv`).
    pub fn identity_ids(&self) -> Result<Vec<String>> {
        self.with(|c| {
            Ok(c.prepare_cached("SELECT id FROM identities ORDER BY id")?
                .query_map([], |r| r.get(0))?
                .collect::<rusqlite::Result<Vec<String>>>()?)
        })
    }

    pub fn import_identities(
        &self,
        ids: &[Identity],
        from_file: bool,
        by: &Stamp,
    ) -> Result<usize> {
        let (now_ms, actor) = (by.now, by.actor.as_str());
        self.with(|c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            {
                let mut stmt = tx.prepare(
                    "INSERT INTO identities (id, attributes, updated_at, from_file) VALUES (?,?,?,?)
                     ON CONFLICT(id) DO UPDATE SET attributes = excluded.attributes, updated_at = excluded.updated_at,
                        from_file = excluded.from_file",
                )?;
                for i in ids {
                    let attrs = crate::store::rules::identity_attributes(i)?;
                    stmt.execute(params![i.id, attrs, now_ms, from_file])?;
                }
            }
            super::audit::append(&tx, now_ms, &crate::store::rules::events::identities_imported(ids.len(), actor))?;
            tx.commit()?;
            Ok(ids.len())
        })
    }
}

impl Accounts for Sqlite {
    fn identities(&self, ids: Vec<String>) -> Fut<BTreeMap<String, Identity>> {
        blocking!(self, |s| {
            let mut out = BTreeMap::new();
            for id in ids {
                if let Some(found) = s.identity(&id)? {
                    out.insert(id, found);
                }
            }
            Ok(out)
        })
    }
    fn identity_ids(&self) -> Fut<Vec<String>> {
        blocking!(self, |s| s.identity_ids())
    }
    fn import_identities(&self, ids: Vec<Identity>, from_file: bool, by: Stamp) -> Fut<usize> {
        blocking!(self, |s| s.import_identities(&ids, from_file, &by))
    }
    fn account_owners(&self, source: String, native_id: String) -> Fut<Vec<String>> {
        blocking!(self, |s| {
            s.with(|c| {
            Ok(c.prepare_cached(
                "SELECT identity_id FROM accounts WHERE source = ? AND lower(native_id) = lower(?) ORDER BY identity_id",
            )?
            .query_map([&source, &native_id], |r| r.get(0))?
            .collect::<rusqlite::Result<Vec<String>>>()?)
        })
        })
    }
    fn account_sources(&self, ids: Vec<String>) -> Fut<BTreeMap<String, BTreeSet<String>>> {
        blocking!(self, |s| s.with(|c| {
            let mut st = c.prepare_cached("SELECT source FROM accounts WHERE identity_id = ?")?;
            let mut out = BTreeMap::new();
            for id in ids {
                let sources = st
                    .query_map([&id], |r| r.get::<_, String>(0))?
                    .collect::<rusqlite::Result<BTreeSet<_>>>()?;
                out.insert(id, sources);
            }
            Ok(out)
        }))
    }
    fn file_identities(&self) -> Fut<BTreeMap<String, Identity>> {
        blocking!(self, |s| s.with(|c| {
            let rows = c
                .prepare_cached("SELECT id, attributes FROM identities WHERE from_file = 1")?
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            rows.into_iter()
                .map(|(id, a)| Ok((id.clone(), crate::store::rules::stored_identity(id, &a)?)))
                .collect()
        }))
    }
    fn identity_by_attribute(&self, attr: String, value: String) -> Fut<Option<String>> {
        blocking!(self, |s| s.identity_by_attribute(&attr, &value))
    }
    fn native_id(&self, identity: String, source: String) -> Fut<Option<String>> {
        blocking!(self, |s| s.native_id(&identity, &source))
    }
}
