//! Evidence on SQLite: account snapshots, what they showed, the tasks they verified.

use super::Sqlite;
use crate::store::evidence::{SeenRow, SnapshotMeta};
use crate::store::roles::{Evidence, Fut};
use crate::store::{Result, StoreError};

use crate::store::rules::events::{self as rules, Verify};
use crate::store::rules::states::parse_stored;
use rusqlite::{OptionalExtension, params};

const META: &str = "id, source, kind, sha256, rows, as_of, actor, taken_at, status_told";

impl Sqlite {
    pub fn managed_accounts(&self, source: &str) -> Result<Vec<(String, String)>> {
        self.with(|c| {
            Ok(c.prepare_cached(
                "SELECT identity_id, native_id FROM accounts WHERE source = ? AND native_id IS NOT NULL ORDER BY identity_id",
            )?
            .query_map([source], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    pub fn last_snapshot(&self, source: &str) -> Result<Option<SnapshotMeta>> {
        self.with(|c| {
            Ok(c.prepare_cached(&format!(
                "SELECT {META} FROM account_snapshots WHERE source = ? ORDER BY id DESC LIMIT 1"
            ))?
            .query_row([source], |r| {
                Ok(SnapshotMeta {
                    id: r.get(0)?,
                    source: r.get(1)?,
                    kind: r.get(2)?,
                    sha256: r.get(3)?,
                    rows: r.get(4)?,
                    as_of: r.get(5)?,
                    actor: r.get(6)?,
                    taken_at: r.get(7)?,
                    status_told: r.get(8)?,
                })
            })
            .optional()?)
        })
    }

    pub fn seen_accounts(&self, source: &str) -> Result<Vec<SeenRow>> {
        self.with(|c| {
            Ok(c.prepare_cached(
                "SELECT account, entitlement_values, disabled FROM source_accounts WHERE source = ? ORDER BY account",
            )?
            .query_map([source], |r| {
                Ok(SeenRow {
                    account: r.get(0)?,
                    values: r.get(1)?,
                    disabled: r.get(2)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    /// Records a snapshot in one transaction: it replaces the source's seen accounts, and
    /// every task in `tasks` is verified (an open one resolved as VERIFIED, which ends
    /// its job when no task is left open). Returns the snapshot's id.
    pub fn record_snapshot(
        &self,
        meta: &SnapshotMeta,
        rows: &[SeenRow],
        tasks: &[i64],
    ) -> Result<i64> {
        let now = meta.taken_at;
        self.with(|c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            tx.prepare_cached(
                "INSERT INTO account_snapshots (source, kind, sha256, rows, as_of, actor, taken_at, status_told) VALUES (?,?,?,?,?,?,?,?)",
            )?
            .execute(params![meta.source, meta.kind, meta.sha256, meta.rows, meta.as_of, meta.actor, now, meta.status_told])?;
            let id = tx.last_insert_rowid();
            tx.prepare_cached("DELETE FROM source_accounts WHERE source = ?")?
                .execute([&meta.source])?;
            {
                let mut ins = tx.prepare_cached(
                    "INSERT INTO source_accounts (source, account, snapshot_id, entitlement_values, disabled) VALUES (?,?,?,?,?)",
                )?;
                for r in rows {
                    ins.execute(params![meta.source, r.account, id, r.values, r.disabled])?;
                }
            }
            let by = rules::snapshot_by(meta, id);
            for task in tasks {
                let status: Option<String> = tx
                    .prepare_cached("SELECT status FROM tasks WHERE id = ? AND verified_at IS NULL")?
                    .query_row([task], |r| r.get(0))
                    .optional()?;
                let status = status.map(|s| parse_stored(&s, format_args!("T{task}"))).transpose()?;
                match rules::verify(*task, status, &by) {
                    Verify::Answer { note } => {
                        super::tasks::resolve_in(&tx, *task, "VERIFIED", &meta.actor, &note, now)?;
                    }
                    Verify::Confirm(data) => super::audit::append(&tx, now, &rules::task_verified(meta, data))?,
                    Verify::Skip => continue,
                }
                tx.prepare_cached("UPDATE tasks SET verified_at = ?, verified_by = ? WHERE id = ?")?
                    .execute(params![now, by, task])?;
            }
            super::audit::append(&tx, now, &rules::accounts_snapshot(id, meta, tasks.len()))?;
            tx.commit()?;
            Ok(id)
        })
    }
}

impl Evidence for Sqlite {
    fn managed_accounts(&self, source: String) -> Fut<Vec<(String, String)>> {
        blocking!(self, |s| s.managed_accounts(&source))
    }
    fn last_snapshot(&self, source: String) -> Fut<Option<SnapshotMeta>> {
        blocking!(self, |s| s.last_snapshot(&source))
    }
    fn seen_accounts(&self, source: String) -> Fut<Vec<SeenRow>> {
        blocking!(self, |s| s.seen_accounts(&source))
    }
    fn record_snapshot(&self, meta: SnapshotMeta, rows: Vec<SeenRow>, tasks: Vec<i64>) -> Fut<i64> {
        blocking!(self, |s| s.record_snapshot(&meta, &rows, &tasks))
    }
}
