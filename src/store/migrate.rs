//! `provd store migrate --to POSTGRES_URL`: copies an SQLite store into an empty
//! PostgreSQL database (DESIGN §12): requests, jobs with their attempt history,
//! assignments, accounts, tasks, identities, upstream checkpoints and every audit event,
//! ids kept. One PostgreSQL transaction: the counts are verified before it commits, so a
//! failed migration leaves the target empty. The agent must be stopped (the caller holds
//! the state directory's lock).

use std::collections::BTreeMap;

use super::postgres::{Postgres, Settings};
use super::sqlite::{Cell, Sqlite};
use super::{Result, StoreError};

/// Tables in copy order, with the column that orders them (their id).
const TABLES: [(&str, &str); 15] = [
    ("requests", "seq"),
    ("request_items", "id"),
    ("jobs", "id"),
    ("item_jobs", "rowid"),
    ("assignments", "id"),
    ("accounts", "rowid"),
    ("tasks", "id"),
    ("identities", "rowid"),
    ("events", "id"),
    ("upstream_state", "rowid"),
    ("upstream_requests", "rowid"),
    ("mail_state", "rowid"),
    ("trigger_invocations", "rowid"),
    ("account_snapshots", "id"),
    ("source_accounts", "rowid"),
];

/// Rows read from SQLite per round trip (and written per INSERT).
const CHUNK: usize = 500;

/// Rows per table, copied and verified.
pub type Counts = BTreeMap<&'static str, i64>;

pub async fn sqlite_to_postgres(from: &Sqlite, to: &Settings) -> Result<Counts> {
    let source = from.clone();
    let (found, known) = tokio::task::spawn_blocking(move || {
        source.quick_check()?;
        source.schema_version()
    })
    .await
    .map_err(|e| StoreError::Backend(e.to_string().into()))??;
    if found != known {
        return Err(StoreError::Conflict(format!(
            "the SQLite store is at schema version {found}, this provd at {known}: start this provd on it once (it migrates), stop it, then migrate"
        )));
    }
    let pg = Postgres::connect(to).await?;
    pg.copy_all(from, &TABLES, CHUNK).await
}

impl Postgres {
    async fn copy_all(
        &self,
        from: &Sqlite,
        tables: &[(&'static str, &'static str)],
        chunk: usize,
    ) -> Result<Counts> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        let mut counts = Counts::new();
        for (table, _) in tables {
            let n: i64 = tx
                .query_one(&format!("SELECT COUNT(*) FROM {table}"), &[])
                .await?
                .get(0);
            if n > 0 {
                return Err(StoreError::Conflict(format!(
                    "the target database is not empty ({table} has {n} rows): migrate into a new, empty database"
                )));
            }
        }
        for (table, order) in tables {
            // The columns both sides have (PostgreSQL's extras, such as jobs.lease_epoch,
            // take their defaults; SQLite's own, such as jobs.lane_head, stay behind).
            let pg_cols: Vec<(String, String)> = tx
                .query(
                    "SELECT column_name::TEXT, data_type::TEXT FROM information_schema.columns
                     WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position",
                    &[table],
                )
                .await?
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect();
            let lite_cols = {
                let (s, t) = (from.clone(), table.to_string());
                tokio::task::spawn_blocking(move || s.columns(&t))
                    .await
                    .map_err(|e| StoreError::Backend(e.to_string().into()))??
            };
            let cols: Vec<(String, String)> = pg_cols
                .into_iter()
                .filter(|(c, _)| lite_cols.contains(c))
                .collect();
            let names: Vec<String> = cols.iter().map(|(c, _)| c.clone()).collect();
            let mut after = i64::MIN;
            let mut copied = 0i64;
            loop {
                let (s, t, o, n) = (
                    from.clone(),
                    table.to_string(),
                    order.to_string(),
                    names.clone(),
                );
                let (rows, last) =
                    tokio::task::spawn_blocking(move || s.rows_after(&t, &o, &n, after, chunk))
                        .await
                        .map_err(|e| StoreError::Backend(e.to_string().into()))??;
                if rows.is_empty() {
                    break;
                }
                insert(&tx, table, &cols, &rows).await?;
                copied += rows.len() as i64;
                after = last;
            }
            counts.insert(*table, copied);
            // Identity columns continue after the copied ids.
            let id = if *table == "requests" { "seq" } else { "id" };
            if cols.iter().any(|(c, _)| c == id) && *order != "rowid" {
                tx.execute(
                    &format!(
                        "SELECT setval(pg_get_serial_sequence('{table}', '{id}'), COALESCE(MAX({id}), 1), MAX({id}) IS NOT NULL) FROM {table}"
                    ),
                    &[],
                )
                .await?;
            }
        }
        let expected = {
            let s = from.clone();
            tokio::task::spawn_blocking(move || s.row_counts())
                .await
                .map_err(|e| StoreError::Backend(e.to_string().into()))??
        };
        for (table, n) in &counts {
            let there: i64 = tx
                .query_one(&format!("SELECT COUNT(*) FROM {table}"), &[])
                .await?
                .get(0);
            let want = expected.get(table).copied().unwrap_or(-1);
            if there != want || *n != want {
                return Err(StoreError::Conflict(format!(
                    "{table}: {want} rows in SQLite, {there} in PostgreSQL after the copy; nothing was committed"
                )));
            }
        }
        tx.commit().await?;
        Ok(counts)
    }
}

/// One multi-row INSERT per chunk, values typed by the PostgreSQL column.
async fn insert(
    tx: &super::postgres::Tx<'_>,
    table: &str,
    cols: &[(String, String)],
    rows: &[Vec<Cell>],
) -> Result<()> {
    let mut params: Vec<Box<dyn tokio_postgres::types::ToSql + Sync + Send>> = Vec::new();
    let mut tuples = Vec::with_capacity(rows.len());
    for row in rows {
        let mut marks = Vec::with_capacity(cols.len());
        for ((name, ty), cell) in cols.iter().zip(row) {
            let p: Box<dyn tokio_postgres::types::ToSql + Sync + Send> = match (ty.as_str(), cell) {
                ("bigint", Cell::Int(i)) => Box::new(Some(*i)),
                ("bigint", Cell::Null) => Box::new(None::<i64>),
                ("text", Cell::Text(t)) => Box::new(Some(t.clone())),
                ("text", Cell::Int(i)) => Box::new(Some(i.to_string())),
                ("text", Cell::Null) => Box::new(None::<String>),
                (ty, cell) => {
                    return Err(StoreError::Corrupt(format!(
                        "{table}.{name}: cannot copy {cell:?} into a {ty} column"
                    )));
                }
            };
            params.push(p);
            marks.push(format!("${}", params.len()));
        }
        tuples.push(format!("({})", marks.join(",")));
    }
    let names: Vec<&str> = cols.iter().map(|(c, _)| c.as_str()).collect();
    let sql = format!(
        "INSERT INTO {table} ({}) OVERRIDING SYSTEM VALUE VALUES {}",
        names.join(","),
        tuples.join(",")
    );
    let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = params
        .iter()
        .map(|p| p.as_ref() as &(dyn tokio_postgres::types::ToSql + Sync))
        .collect();
    tx.execute(&sql, &refs).await?;
    Ok(())
}
