//! The store: one SQLite database (WAL, `synchronous=FULL`, so a commit is on disk before
//! provd answers) holding requests, jobs, assignments, accounts, tasks and the audit log.
//!
//! One connection behind a mutex per process: SQLite takes one writer at a time anyway,
//! and CLI commands run against the same file while the daemon runs (busy timeout).
//! Async callers go through [`Store::call`], which runs the closure on the blocking pool.

pub mod accept;
mod events;
mod identities;
pub mod jobs;
pub mod schedule;
mod schema;
pub mod status;
pub mod tasks;
pub mod upstream;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::Connection;

pub use accept::{Accepted, Replay};
pub use events::Event;
pub use jobs::{Job, JobState};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("store: cannot create {path}: {source}")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "store: the database is at schema version {found}, newer than this provd knows ({known}); upgrade provd"
    )]
    TooNew { found: i64, known: i64 },
    #[error("store: corrupt row: {0}")]
    Corrupt(String),
    #[error("store: the store lock was poisoned by a panic")]
    Poisoned,
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    NotFound(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[derive(Clone)]
pub struct Store {
    conn: Arc<Mutex<Connection>>,
    path: PathBuf,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

pub const DB_FILE: &str = "provd.db";

impl Store {
    /// Opens (creating if needed) `provd.db` in `state_dir` and migrates it.
    pub fn open(state_dir: &Path) -> Result<Store> {
        std::fs::create_dir_all(state_dir).map_err(|source| StoreError::Dir {
            path: state_dir.to_path_buf(),
            source,
        })?;
        Self::open_file(&state_dir.join(DB_FILE))
    }

    pub fn open_file(path: &Path) -> Result<Store> {
        let mut conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // FULL: a committed transaction survives power loss, which is what a 202 promises.
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        // The hot paths use a few dozen distinct statements; the default cache of 16 would
        // have them re-prepared over and over.
        conn.set_prepared_statement_cache_capacity(256);
        // Plans must not depend on bound values: otherwise SQLite (built with STAT4)
        // re-prepares some cached statements on every new binding, which cost a tenth of
        // the dispatcher's CPU.
        conn.set_db_config(
            rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
            true,
        )?;
        migrate(&mut conn)?;
        Ok(Store {
            conn: Arc::new(Mutex::new(conn)),
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` with the connection (blocking).
    pub fn with<T>(&self, f: impl FnOnce(&mut Connection) -> Result<T>) -> Result<T> {
        let mut conn = self.conn.lock().map_err(|_| StoreError::Poisoned)?;
        f(&mut conn)
    }

    /// Runs a blocking store call off the async runtime's worker threads.
    pub async fn call<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> Result<T> + Send + 'static,
    {
        let store = self.clone();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|e| StoreError::Conflict(format!("store task failed: {e}")))?
    }

    /// Is the database usable (for `/readyz`)?
    pub fn ping(&self) -> Result<()> {
        self.with(|c| Ok(c.query_row("SELECT 1", [], |_| Ok(()))?))
    }
}

fn migrate(conn: &mut Connection) -> Result<()> {
    let known = schema::MIGRATIONS.len() as i64;
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > known {
        return Err(StoreError::TooNew {
            found: version,
            known,
        });
    }
    for (i, sql) in schema::MIGRATIONS.iter().enumerate().skip(version as usize) {
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
    }
    tx.commit()?;
    Ok(())
}

/// A fresh request id: 32 lowercase hex digits, like the upstream's.
pub fn new_id() -> String {
    format!("{:032x}", fastrand::u128(..))
}

#[cfg(test)]
mod tests;
