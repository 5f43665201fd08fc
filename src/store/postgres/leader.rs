//! Leadership on PostgreSQL: a lease row per duty. Taking it over increments the epoch;
//! every singleton write checks, in its own transaction, that the row still names this
//! handle's holder and epoch (`fenced`), so a leader that stalled past its lease and
//! woke up writes nothing.

use super::{Postgres, Tx};
use crate::store::roles::{Fut, Leader, Leadership, SINGLETON};
use crate::store::{Result, StoreError};

impl Postgres {
    /// Refuses the caller's transaction unless this handle still leads (the row is
    /// share-locked, so a takeover waits for this transaction to end).
    pub(super) async fn fenced(&self, tx: &Tx<'_>) -> Result<()> {
        let held = self.fence.lock().ok().and_then(|f| f.clone());
        let Some((holder, epoch)) = held else {
            return Err(StoreError::NotLeader);
        };
        let row = tx
            .query_opt(
                "SELECT 1 FROM leader WHERE name = $1 AND holder = $2 AND epoch = $3 FOR SHARE",
                &[&SINGLETON, &holder, &epoch],
            )
            .await?;
        match row {
            Some(_) => Ok(()),
            None => Err(StoreError::NotLeader),
        }
    }

    fn set_fence(&self, f: Option<(String, i64)>) {
        if let Ok(mut g) = self.fence.lock() {
            *g = f;
        }
    }
}

impl Leadership for Postgres {
    fn lead(&self, duty: String, holder: String, now: i64, until: i64) -> Fut<Option<i64>> {
        let me = self.clone();
        Box::pin(async move {
            let c = me.client().await?;
            // Renewed by its holder (same epoch) or taken over when expired (next epoch).
            let row = c
                .query_opt(
                    "INSERT INTO leader (name, holder, epoch, expires_at) VALUES ($1, $2, 1, $4)
                     ON CONFLICT (name) DO UPDATE SET
                        epoch = CASE WHEN leader.holder = excluded.holder THEN leader.epoch ELSE leader.epoch + 1 END,
                        holder = excluded.holder, expires_at = excluded.expires_at
                     WHERE leader.holder = excluded.holder OR leader.expires_at < $3
                     RETURNING epoch",
                    &[&duty, &holder, &now, &until],
                )
                .await?;
            let epoch: Option<i64> = row.map(|r| r.get(0));
            if duty == SINGLETON {
                me.set_fence(epoch.map(|e| (holder, e)));
            }
            Ok(epoch)
        })
    }

    fn resign(&self, duty: String, holder: String) -> Fut<()> {
        let me = self.clone();
        Box::pin(async move {
            if duty == SINGLETON {
                me.set_fence(None);
            }
            let c = me.client().await?;
            // Expired at once, epoch kept: the next taker increments it.
            c.execute(
                "UPDATE leader SET expires_at = 0 WHERE name = $1 AND holder = $2",
                &[&duty, &holder],
            )
            .await?;
            Ok(())
        })
    }

    fn leader(&self, duty: String) -> Fut<Option<Leader>> {
        let me = self.clone();
        Box::pin(async move {
            let c = me.client().await?;
            let row = c
                .query_opt(
                    "SELECT holder, epoch, expires_at FROM leader WHERE name = $1",
                    &[&duty],
                )
                .await?;
            Ok(row.map(|r| Leader {
                holder: r.get(0),
                epoch: r.get(1),
                expires_at: r.get(2),
            }))
        })
    }

    fn seen(&self, name: String, now: i64) -> Fut<()> {
        let me = self.clone();
        Box::pin(async move {
            let c = me.client().await?;
            c.execute(
                "INSERT INTO agents (name, seen_at) VALUES ($1, $2)
                 ON CONFLICT (name) DO UPDATE SET seen_at = excluded.seen_at",
                &[&name, &now],
            )
            .await?;
            Ok(())
        })
    }

    fn agents(&self, since: i64) -> Fut<Vec<String>> {
        let me = self.clone();
        Box::pin(async move {
            let c = me.client().await?;
            let rows = c
                .query(
                    "SELECT name FROM agents WHERE seen_at >= $1 ORDER BY name",
                    &[&since],
                )
                .await?;
            Ok(rows.iter().map(|r| r.get(0)).collect())
        })
    }
}
