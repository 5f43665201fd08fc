//! How PostgreSQL's driver reads a cell, for the row mappings written once above the
//! backends (`store::cells`).

crate::store::cells::cells_via!(tokio_postgres::Row, try_get, |r| r.len());
