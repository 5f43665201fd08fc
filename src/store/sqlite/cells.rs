//! How SQLite's driver reads a cell, for the row mappings written once above the
//! backends (`store::cells`).

use crate::store::StoreError;

crate::store::cells::cells_via!(rusqlite::Row<'_>, get, |r| r.as_ref().column_count());

/// A mapping's error as the driver's, for `query_map` closures.
pub(crate) fn driver_error(e: StoreError) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
}
