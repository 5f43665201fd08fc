//! How SQLite's driver reads a cell, for the row mappings written once above the
//! backends (`store::cells`).

use rusqlite::Row;

use crate::store::cells::Cells;
use crate::store::{Result, StoreError};

impl Cells for Row<'_> {
    fn int(&self, i: usize) -> Result<i64> {
        Ok(self.get(i)?)
    }
    fn opt_int(&self, i: usize) -> Result<Option<i64>> {
        Ok(self.get(i)?)
    }
    fn text(&self, i: usize) -> Result<String> {
        Ok(self.get(i)?)
    }
    fn opt_text(&self, i: usize) -> Result<Option<String>> {
        Ok(self.get(i)?)
    }
    fn opt_bool(&self, i: usize) -> Result<Option<bool>> {
        Ok(self.get(i)?)
    }
    fn width(&self) -> usize {
        self.as_ref().column_count()
    }
}

/// A mapping's error as the driver's, for `query_map` closures.
pub(crate) fn driver_error(e: StoreError) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
}
