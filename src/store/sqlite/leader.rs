//! Leadership on SQLite: one agent per file (the state directory's lock), so the lease is
//! this process's own, kept in memory.

use super::Sqlite;
use crate::store::roles::{Fut, Leader, Leadership};

/// Alone on its file (the state directory's lock), an SQLite agent always leads: its
/// lease is granted at once and never taken over.
impl Leadership for Sqlite {
    fn lead(&self, _duty: String, holder: String, _now: i64, until: i64) -> Fut<Option<i64>> {
        if let Ok(mut l) = self.leader.lock() {
            *l = Some(Leader {
                holder,
                epoch: 1,
                expires_at: until,
            });
        }
        Box::pin(async { Ok(Some(1)) })
    }
    fn resign(&self, _duty: String, _holder: String) -> Fut<()> {
        if let Ok(mut l) = self.leader.lock() {
            *l = None;
        }
        Box::pin(async { Ok(()) })
    }
    fn leader(&self, _duty: String) -> Fut<Option<Leader>> {
        let l = self.leader.lock().ok().and_then(|l| l.clone());
        Box::pin(async move { Ok(l) })
    }
    fn seen(&self, _name: String, _now: i64) -> Fut<()> {
        Box::pin(async { Ok(()) })
    }
    fn agents(&self, since: i64) -> Fut<Vec<String>> {
        // The only agent is the one leading; counted while its lease is recent.
        let l = self.leader.lock().ok().and_then(|l| l.clone());
        Box::pin(async move {
            Ok(l.filter(|l| l.expires_at >= since)
                .map(|l| vec![l.holder])
                .unwrap_or_default())
        })
    }
}
