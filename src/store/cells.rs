//! A result row as both backends hand it over, read by column index: the row types map
//! from it once (`jobs::job_from`, `triggers::invocation_from`), and each backend only
//! says how its driver reads a cell (`sqlite/cells.rs`, `postgres/cells.rs`).

use super::Result;

pub trait Cells {
    fn int(&self, i: usize) -> Result<i64>;
    fn opt_int(&self, i: usize) -> Result<Option<i64>>;
    fn text(&self, i: usize) -> Result<String>;
    fn opt_text(&self, i: usize) -> Result<Option<String>>;
    fn opt_bool(&self, i: usize) -> Result<Option<bool>>;
    /// How many columns the row has.
    fn width(&self) -> usize;
}
