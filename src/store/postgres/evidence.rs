//! Evidence on PostgreSQL (same rules as SQLite's `store/evidence.rs`).

use super::Postgres;
use crate::store::evidence::{SeenRow, SnapshotMeta};
use crate::store::roles::{Evidence, Fut};
use crate::store::rules::events::{self as rules, Verify};
use crate::store::rules::states::parse_stored;
use crate::store::tasks::TaskAnswer;

impl Evidence for Postgres {
    fn managed_accounts(&self, source: String) -> Fut<Vec<(String, String)>> {
        let me = self.clone();
        Box::pin(async move {
            let c = me.client().await?;
            let rows = c
                .query(
                    "SELECT identity_id, native_id FROM accounts WHERE source = $1 AND native_id IS NOT NULL ORDER BY identity_id",
                    &[&source],
                )
                .await?;
            Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
        })
    }
    fn last_snapshot(&self, source: String) -> Fut<Option<SnapshotMeta>> {
        let me = self.clone();
        Box::pin(async move {
            let c = me.client().await?;
            let r = c
                .query_opt(
                    "SELECT id, source, kind, sha256, rows, as_of, actor, taken_at, status_told FROM account_snapshots
                     WHERE source = $1 ORDER BY id DESC LIMIT 1",
                    &[&source],
                )
                .await?;
            Ok(r.map(|r| SnapshotMeta {
                id: r.get(0),
                source: r.get(1),
                kind: r.get(2),
                sha256: r.get(3),
                rows: r.get(4),
                as_of: r.get(5),
                actor: r.get(6),
                taken_at: r.get(7),
                status_told: r.get::<_, i64>(8) != 0,
            }))
        })
    }

    fn seen_accounts(&self, source: String) -> Fut<Vec<SeenRow>> {
        let me = self.clone();
        Box::pin(async move {
            let c = me.client().await?;
            let rows = c
                .query(
                    "SELECT account, entitlement_values, disabled FROM source_accounts WHERE source = $1 ORDER BY account",
                    &[&source],
                )
                .await?;
            Ok(rows
                .iter()
                .map(|r| SeenRow {
                    account: r.get(0),
                    values: r.get(1),
                    disabled: r.get::<_, i64>(2) != 0,
                })
                .collect())
        })
    }

    fn record_snapshot(&self, meta: SnapshotMeta, rows: Vec<SeenRow>, tasks: Vec<i64>) -> Fut<i64> {
        let me = self.clone();
        let now = meta.taken_at;
        Box::pin(async move {
            let mut c = me.client().await?;
            let tx = c.transaction().await?;
            let id: i64 = tx
                .query_one(
                    "INSERT INTO account_snapshots (source, kind, sha256, rows, as_of, actor, taken_at, status_told)
                     VALUES ($1,$2,$3,$4,$5,$6,$7,$8) RETURNING id",
                    &[&meta.source, &meta.kind, &meta.sha256, &meta.rows, &meta.as_of, &meta.actor, &now, &i64::from(meta.status_told)],
                )
                .await?
                .get(0);
            tx.execute(
                "DELETE FROM source_accounts WHERE source = $1",
                &[&meta.source],
            )
            .await?;
            let ins = tx
                .prepare(
                    "INSERT INTO source_accounts (source, account, snapshot_id, entitlement_values, disabled) VALUES ($1,$2,$3,$4,$5)",
                )
                .await?;
            for r in &rows {
                tx.execute(
                    &ins,
                    &[
                        &meta.source,
                        &r.account,
                        &id,
                        &r.values,
                        &i64::from(r.disabled),
                    ],
                )
                .await?;
            }
            let by = rules::snapshot_by(&meta, id);
            for task in &tasks {
                // The task's job first, then the task: the lock order of every writer of
                // a manual job (see `tasks::resolve_in`).
                tx.execute(
                    "SELECT 1 FROM jobs WHERE id = (SELECT job_id FROM tasks WHERE id = $1) FOR UPDATE",
                    &[task],
                )
                .await?;
                let status: Option<String> = tx
                    .query_opt(
                        "SELECT status FROM tasks WHERE id = $1 AND verified_at IS NULL FOR UPDATE",
                        &[task],
                    )
                    .await?
                    .map(|r| r.get(0));
                let status = status
                    .map(|s| parse_stored(&s, format_args!("T{task}")))
                    .transpose()?;
                match rules::verify(*task, status, &by) {
                    Verify::Answer { note } => {
                        let answer = TaskAnswer {
                            task: *task,
                            resolution: "VERIFIED".into(),
                            resolved_by: meta.actor.clone(),
                            note,
                        };
                        super::tasks::resolve_in(&tx, &answer, now).await?;
                    }
                    Verify::Confirm(data) => {
                        super::audit::append(&tx, now, &rules::task_verified(&meta, data)).await?;
                    }
                    Verify::Skip => continue,
                }
                tx.execute(
                    "UPDATE tasks SET verified_at = $1, verified_by = $2 WHERE id = $3",
                    &[&now, &by, task],
                )
                .await?;
            }
            let e = rules::accounts_snapshot(id, &meta, tasks.len());
            super::audit::append(&tx, now, &e).await?;
            tx.commit().await?;
            Ok(id)
        })
    }
}
