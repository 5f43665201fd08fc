//! How PostgreSQL's driver reads a cell, for the row mappings written once above the
//! backends (`store::cells`).

use tokio_postgres::Row;

use crate::store::Result;
use crate::store::cells::Cells;

impl Cells for Row {
    fn int(&self, i: usize) -> Result<i64> {
        Ok(self.try_get(i)?)
    }
    fn opt_int(&self, i: usize) -> Result<Option<i64>> {
        Ok(self.try_get(i)?)
    }
    fn text(&self, i: usize) -> Result<String> {
        Ok(self.try_get(i)?)
    }
    fn opt_text(&self, i: usize) -> Result<Option<String>> {
        Ok(self.try_get(i)?)
    }
    fn opt_bool(&self, i: usize) -> Result<Option<bool>> {
        Ok(self.try_get(i)?)
    }
    fn width(&self) -> usize {
        self.len()
    }
}
