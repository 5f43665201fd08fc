//! Reading SQLite's tables generically, in order and in chunks, for `store migrate`.

use rusqlite::types::ValueRef;

use super::Sqlite;
use crate::store::{Result, StoreError};

/// One value as SQLite holds it.
#[derive(Debug, Clone)]
pub enum Cell {
    Null,
    Int(i64),
    Text(String),
}

impl Sqlite {
    /// The columns of `table`.
    pub fn columns(&self, table: &str) -> Result<Vec<String>> {
        self.with(|c| {
            let mut st = c.prepare(&format!("PRAGMA table_info({table})"))?;
            let cols = st
                .query_map([], |r| r.get::<_, String>(1))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(cols)
        })
    }

    /// Up to `limit` rows of `cols` whose `order` column (an integer key, or `rowid`) is
    /// above `after`, in that order; and the last key read.
    pub fn rows_after(
        &self,
        table: &str,
        order: &str,
        cols: &[String],
        after: i64,
        limit: usize,
    ) -> Result<(Vec<Vec<Cell>>, i64)> {
        self.with(|c| {
            let sql = format!(
                "SELECT {order}, {} FROM {table} WHERE {order} > ?1 ORDER BY {order} LIMIT ?2",
                cols.join(", ")
            );
            let mut st = c.prepare(&sql)?;
            let mut rows = st.query(rusqlite::params![after, limit as i64])?;
            let mut out = Vec::new();
            let mut last = after;
            while let Some(r) = rows.next()? {
                last = r.get(0)?;
                let mut row = Vec::with_capacity(cols.len());
                for (i, col) in cols.iter().enumerate() {
                    row.push(match r.get_ref(i + 1)? {
                        ValueRef::Null => Cell::Null,
                        ValueRef::Integer(n) => Cell::Int(n),
                        ValueRef::Text(t) => Cell::Text(String::from_utf8_lossy(t).into_owned()),
                        other => {
                            return Err(StoreError::Corrupt(format!(
                                "{table}.{col}: unexpected {:?} value",
                                other.data_type()
                            )));
                        }
                    });
                }
                out.push(row);
            }
            Ok((out, last))
        })
    }
}
