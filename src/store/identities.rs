//! Identities imported with `provd identities import` (and later by upstream pulls).
//! They take precedence over `identities.csv` for the same id.

use std::collections::BTreeMap;

use provd_connector_core::Identity;
use rusqlite::{OptionalExtension, params};

use super::sqlite::Sqlite;
use super::{Result, StoreError};

impl Sqlite {
    pub fn identity(&self, id: &str) -> Result<Option<Identity>> {
        self.with(|c| {
            let attrs: Option<String> = c
                .prepare_cached("SELECT attributes FROM identities WHERE id = ?")?
                .query_row([id], |r| r.get(0))
                .optional()?;
            attrs
                .map(|a| {
                    let attributes: BTreeMap<String, String> = serde_json::from_str(&a)
                        .map_err(|e| StoreError::Corrupt(format!("identity {id}: {e}")))?;
                    Ok(Identity {
                        id: id.to_string(),
                        attributes,
                    })
                })
                .transpose()
        })
    }

    /// Upserts all identities in one transaction: all or nothing.
    /// Ids of the imported identities (they take precedence over `identities.csv`).
    pub fn identity_ids(&self) -> Result<Vec<String>> {
        self.with(|c| {
            Ok(c.prepare_cached("SELECT id FROM identities")?
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
                    let attrs = serde_json::to_string(&i.attributes).map_err(|e| StoreError::Corrupt(e.to_string()))?;
                    stmt.execute(params![i.id, attrs, now_ms])?;
                }
            }
            super::events::append(
                &tx,
                now_ms,
                &super::Event {
                    kind: "identities_imported",
                    data: serde_json::json!({ "count": ids.len() }),
                    actor,
                    ..Default::default()
                },
            )?;
            tx.commit()?;
            Ok(ids.len())
        })
    }
}
