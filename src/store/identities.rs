//! Identities imported with `provd identities import` (and later by upstream pulls).
//! They take precedence over `identities.csv` for the same id.

use provd_connector_core::Identity;
use rusqlite::{OptionalExtension, params};

use super::Result;
use super::sqlite::Sqlite;

impl Sqlite {
    pub fn identity(&self, id: &str) -> Result<Option<Identity>> {
        self.with(|c| {
            let attrs: Option<String> = c
                .prepare_cached("SELECT attributes FROM identities WHERE id = ?")?
                .query_row([id], |r| r.get(0))
                .optional()?;
            attrs
                .map(|a| super::rules::stored_identity(id.to_string(), &a))
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

    pub fn import_identities(&self, ids: &[Identity], now_ms: i64, actor: &str) -> Result<usize> {
        self.with(|c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            {
                let mut stmt = tx.prepare(
                    "INSERT INTO identities (id, attributes, updated_at) VALUES (?,?,?)
                     ON CONFLICT(id) DO UPDATE SET attributes = excluded.attributes, updated_at = excluded.updated_at",
                )?;
                for i in ids {
                    let attrs = super::rules::identity_attributes(i)?;
                    stmt.execute(params![i.id, attrs, now_ms])?;
                }
            }
            super::events::append(&tx, now_ms, &super::rules::events::identities_imported(ids.len(), actor))?;
            tx.commit()?;
            Ok(ids.len())
        })
    }
}
