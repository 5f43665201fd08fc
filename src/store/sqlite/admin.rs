//! The store itself on SQLite: versions, health, integrity.

use super::Sqlite;
use crate::store::StoreError;
use crate::store::roles::{Admin, Fut};
use std::collections::BTreeMap;

impl Admin for Sqlite {
    fn schema_version(&self) -> Fut<(i64, i64)> {
        blocking!(self, |s| s.schema_version())
    }
    fn row_counts(&self) -> Fut<BTreeMap<&'static str, i64>> {
        blocking!(self, |s| s.row_counts())
    }
    fn ping(&self) -> Fut<()> {
        blocking!(self, |s| s.ping())
    }
    fn probe_write(&self, now: i64) -> Fut<()> {
        blocking!(self, |s| s.probe_write(now))
    }
    fn check_free_space(&self) -> Fut<()> {
        blocking!(self, |s| s.check_free_space())
    }
    fn quick_check(&self) -> Fut<()> {
        blocking!(self, |s| s.quick_check())
    }
    fn analyze_stale(&self, _share: f64) -> Fut<Vec<String>> {
        // SQLite's plans do not hinge on gathered statistics the way PostgreSQL's do
        // (and the hot statements pin theirs, see `open_existing`).
        Box::pin(async { Ok(Vec::new()) })
    }
    fn store_id(&self) -> Fut<String> {
        blocking!(self, |s| s.with(|c| Ok(c.query_row(
            crate::store::STORE_ID_SQL,
            [],
            |r| r.get(0)
        )?)))
    }
    fn exclusive(&self) -> bool {
        true
    }

    fn location(&self) -> String {
        self.path().display().to_string()
    }
    fn writers(&self) -> usize {
        1
    }
}
