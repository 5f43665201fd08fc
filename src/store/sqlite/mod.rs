//! The SQLite backend: one database file (WAL) holding requests, jobs, assignments,
//! accounts, tasks and the audit log; the embedded default, for a single host.
//!
//! Durability: a write is on disk before provd answers for it, but the fsync happens after
//! the connection is let go. Transactions commit with `synchronous=NORMAL` (into the
//! write-ahead log, in the operating system's cache), and a call that wrote then syncs
//! the log itself ([`Sqlite::with`]) — the same guarantee as `synchronous=FULL`, while the
//! next writer already works (DESIGN §18). Writes provd redoes by itself if a power cut
//! loses them skip that sync ([`Sqlite::with_redoable`]). A killed process loses nothing
//! either way: a commit is in the operating system's cache the moment it returns.
//!
//! One connection behind a mutex per process: SQLite takes one writer at a time anyway,
//! and CLI commands run against the same file while the daemon runs (busy timeout). The
//! queries are blocking methods in this folder's topic files, which mirror `postgres/`'s;
//! each file's role impl runs them on the blocking pool ([`blocking!`]).

/// Runs `$body` with `$s` (a clone of the backend) on the blocking pool.
macro_rules! blocking {
    ($self:ident, |$s:ident| $body:expr) => {{
        let $s = $self.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || $body)
                .await
                .map_err(|e| StoreError::Backend(format!("store task failed: {e}").into()))?
        })
    }};
}

mod accept;
mod accounts;
mod admin;
mod audit;
mod cells;
mod checkpoint;
mod dump;
mod evidence;
#[cfg(any(test, feature = "test-support"))]
mod fixtures;
mod gates;
mod leader;
mod queue;
mod requests;
mod schedule;
mod schema;
mod settle;
mod states;
mod tasks;
#[cfg(test)]
mod tests;
mod triggers;
mod upstream;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::Connection;

pub use dump::Cell;

use super::{Result, StoreError};

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode as C;
        match &e {
            rusqlite::Error::SqliteFailure(f, _)
                if matches!(
                    f.code,
                    C::DiskFull
                        | C::SystemIoFailure
                        | C::CannotOpen
                        | C::ReadOnly
                        | C::DatabaseBusy
                        | C::DatabaseLocked
                ) =>
            {
                StoreError::Unavailable(e.to_string())
            }
            // Damage stays the backend's error: start-up tells it apart to refuse the
            // file; `is_unavailable` still counts it for the API.
            _ => StoreError::Backend(Box::new(e)),
        }
    }
}

/// Whether a backend error is SQLite finding damaged pages (or an I/O failure).
pub(crate) fn is_unavailable(e: &(dyn std::error::Error + Send + Sync + 'static)) -> bool {
    match e.downcast_ref::<rusqlite::Error>() {
        Some(rusqlite::Error::SqliteFailure(f, _)) => matches!(
            f.code,
            rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase
        ),
        _ => e.downcast_ref::<std::io::Error>().is_some(),
    }
}

/// Which file the store opened: (device, inode). A file deleted or replaced under the
/// agent keeps taking writes into the old inode, which nobody will ever read again.
fn file_identity(path: &Path) -> std::io::Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path)?;
    Ok((m.dev(), m.ino()))
}

#[derive(Clone)]
pub struct Sqlite {
    conn: Arc<Mutex<Connection>>,
    path: PathBuf,
    /// The file opened (device, inode), checked after every durable write and by ping.
    identity: Option<(u64, u64)>,
    /// The lease `lead` granted (for `/readyz`): in memory, as nobody else can lead.
    leader: Arc<Mutex<Option<crate::store::Leader>>>,
    /// Moves the log into the database file, off the writer's path.
    checkpoints: checkpoint::Checkpointer,
}

impl std::fmt::Debug for Sqlite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sqlite").field("path", &self.path).finish()
    }
}

pub const DB_FILE: &str = "provd.db";

impl Sqlite {
    /// Opens (creating if needed) `provd.db` in `state_dir` and migrates it.
    pub fn open(state_dir: &Path) -> Result<Sqlite> {
        std::fs::create_dir_all(state_dir).map_err(|source| StoreError::Dir {
            path: state_dir.to_path_buf(),
            source,
        })?;
        Self::open_file(&state_dir.join(DB_FILE))
    }

    pub fn open_file(path: &Path) -> Result<Sqlite> {
        let damaged = |reason: String| StoreError::Damaged {
            path: path.to_path_buf(),
            reason,
        };
        match std::fs::metadata(path) {
            // SQLite would take a 0-byte file as a new, empty database and start over
            // silently. provd never leaves one (see `create`), so it is a truncated store.
            Ok(m) if m.len() == 0 && !has_wal(path) => {
                return Err(damaged(
                    "the file is empty (0 bytes); restore it from a backup, or move it away to start a new, empty store".into(),
                ));
            }
            Ok(_) => {}
            // A log without its database: replaying it into a new file would make a store
            // nobody wrote. Someone removed provd.db alone.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && has_wal(path) => {
                return Err(damaged(
                    "the file is missing but its write-ahead log (-wal) is there; restore provd.db, or remove the -wal and -shm files to start a new, empty store".into(),
                ));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => create(path)?,
            Err(e) => return Err(damaged(format!("cannot read it: {e}"))),
        }
        let store = Self::open_existing(path).map_err(|e| match e {
            StoreError::Backend(b)
                if matches!(
                    b.downcast_ref::<rusqlite::Error>(),
                    Some(rusqlite::Error::SqliteFailure(f, _))
                        if matches!(f.code, rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt)
                ) =>
            {
                damaged(format!("{b}"))
            }
            e => e,
        })?;
        private_files(path);
        Ok(store)
    }

    fn open_existing(path: &Path) -> Result<Sqlite> {
        let mut conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // NORMAL: a commit is written to the log but not synced; `with` syncs the log
        // after letting go of the connection (see the module's doc).
        conn.pragma_update(None, "synchronous", "NORMAL")?;
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
        // Checkpoints run on a thread of their own (see `checkpoint`), not in a commit.
        let checkpoints = checkpoint::Checkpointer::new(path, &mut conn)?;
        Ok(Sqlite {
            checkpoints,
            conn: Arc::new(Mutex::new(conn)),
            identity: file_identity(path).ok(),
            path: path.to_path_buf(),
            leader: Arc::new(Mutex::new(None)),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` with the connection (blocking); if it wrote, the write is on disk when
    /// this returns. Only the store's own modules speak SQL.
    pub(crate) fn with<T>(&self, f: impl FnOnce(&mut Connection) -> Result<T>) -> Result<T> {
        let (r, wrote) = {
            let mut conn = self.conn.lock().map_err(|_| StoreError::Poisoned)?;
            let before = conn.total_changes();
            let r = f(&mut conn);
            (r, conn.total_changes() != before)
        };
        if wrote {
            self.checkpoints.wrote();
            self.sync_log()?;
            // Only now may the caller say "stored": not if the file is no longer the one
            // written to.
            self.check_file()?;
        }
        r
    }

    /// Is the file at the store's path still the one it opened, and still a database?
    /// A deleted, replaced or truncated file makes the store unavailable (DESIGN §25).
    pub(crate) fn check_file(&self) -> Result<()> {
        let gone = |what: &str| {
            StoreError::Unavailable(format!(
                "{} {what} while the agent was running; stop the agent and restore it (accepted work since then is not in it)",
                self.path.display()
            ))
        };
        let m = match std::fs::metadata(&self.path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(gone("was deleted")),
            Err(e) => {
                return Err(StoreError::Unavailable(format!(
                    "{}: {e}",
                    self.path.display()
                )));
            }
        };
        use std::os::unix::fs::MetadataExt;
        if self.identity.is_some_and(|id| id != (m.dev(), m.ino())) {
            return Err(gone("was replaced by another file"));
        }
        // A database is at least its 100-byte header; WAL mode only ever grows the file
        // at checkpoints, so a shorter one was cut.
        if m.len() < 100 {
            return Err(gone("was truncated"));
        }
        Ok(())
    }

    /// Runs `f`, a write provd redoes by itself if a power cut loses it (a claim, an
    /// attempt's end, the tasks of a running job, a removal fired or its revoke planned),
    /// without syncing the
    /// log: the next durable write (an accepted request) or checkpoint syncs it. These are
    /// most of the store's writes; skipping their syncs leaves the disk to the writes
    /// whose answers promise it.
    pub(crate) fn with_redoable<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T>,
    ) -> Result<T> {
        let (r, wrote) = {
            let mut conn = self.conn.lock().map_err(|_| StoreError::Poisoned)?;
            let before = conn.total_changes();
            let r = f(&mut conn);
            (r, conn.total_changes() != before)
        };
        if wrote {
            self.checkpoints.wrote();
        }
        r
    }

    /// Makes every commit so far durable: fdatasync of the write-ahead log (what
    /// `synchronous=FULL` does inside the commit). Open while a connection is, the log
    /// is only ever gone when a checkpoint moved all of it into the synced database file.
    fn sync_log(&self) -> Result<()> {
        let mut log = self.path.clone().into_os_string();
        log.push("-wal");
        match std::fs::File::open(&log) {
            Ok(f) => f.sync_data().map_err(|e| StoreError::Backend(Box::new(e))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::Backend(Box::new(e))),
        }
    }

    /// The schema version on disk and the newest this build knows.
    pub fn schema_version(&self) -> Result<(i64, i64)> {
        let found: i64 =
            self.with(|c| Ok(c.query_row("PRAGMA user_version", [], |r| r.get(0))?))?;
        Ok((found, schema::MIGRATIONS.len() as i64))
    }

    /// Rows per table, for `provd store check`, a migration's verification and tests.
    pub fn row_counts(&self) -> Result<std::collections::BTreeMap<&'static str, i64>> {
        self.with(|c| {
            let mut out = std::collections::BTreeMap::new();
            for t in crate::store::TABLES {
                let n: i64 = c.query_row(&format!("SELECT COUNT(*) FROM {t}"), [], |r| r.get(0))?;
                out.insert(t, n);
            }
            Ok(out)
        })
    }

    /// Is the database usable (for `/readyz`)?
    pub fn ping(&self) -> Result<()> {
        self.check_file()?;
        self.with(|c| Ok(c.query_row("SELECT 1", [], |_| Ok(()))?))
    }

    /// Does the database still take a committed write? One fsync'd row: a full disk or a
    /// read-only file system fails here.
    pub fn probe_write(&self, now_ms: i64) -> Result<()> {
        self.with(|c| {
            c.execute(
                "INSERT INTO probe (id, at) VALUES (1, ?1) ON CONFLICT (id) DO UPDATE SET at = ?1",
                [now_ms],
            )?;
            Ok(())
        })
    }

    /// Is there room left for the store to grow? A write into WAL pages already on disk
    /// succeeds on a full disk, so the probe alone would say "ready" until a checkpoint
    /// or a larger request fails.
    pub fn check_free_space(&self) -> Result<()> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        match free_bytes(dir) {
            Some(free) if free < MIN_FREE_BYTES => Err(StoreError::Damaged {
                path: self.path.clone(),
                reason: format!(
                    "the disk is full: {free} bytes free on the store's file system (at least {MIN_FREE_BYTES} needed)"
                ),
            }),
            _ => Ok(()),
        }
    }

    /// SQLite's `quick_check` (structure, not every index entry): run before the agent
    /// starts, so that it never dispatches from a damaged file.
    pub fn quick_check(&self) -> Result<()> {
        let problems: Vec<String> = self.with(|c| {
            let mut st = c.prepare("PRAGMA quick_check(5)")?;
            let rows = st.query_map([], |r| r.get::<_, String>(0))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })?;
        if problems.len() == 1 && problems[0] == "ok" {
            return Ok(());
        }
        Err(StoreError::Damaged {
            path: self.path.clone(),
            reason: format!("integrity check failed: {}", problems.join("; ")),
        })
    }
}

/// Below this much free space the store is reported as not ready.
pub const MIN_FREE_BYTES: u64 = 1 << 20;

/// Bytes available to an unprivileged writer on the file system holding `dir`.
fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a properly sized out-parameter.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    (rc == 0).then(|| st.f_bavail as u64 * st.f_frsize as u64)
}

/// Is there a non-empty write-ahead log beside `path` (content not yet checkpointed)?
fn has_wal(path: &Path) -> bool {
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    std::fs::metadata(wal).is_ok_and(|m| m.len() > 0)
}

/// Creates a new database under a temporary name and renames it into place, so that a
/// crash can never leave an empty `provd.db` that would later pass for a new store.
fn create(path: &Path) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".new");
    let tmp = PathBuf::from(tmp);
    for suffix in ["", "-wal", "-shm"] {
        let mut p = tmp.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(p);
    }
    {
        let store = Sqlite::open_existing(&tmp)?;
        private_files(&tmp);
        drop(store);
    }
    std::fs::rename(&tmp, path).map_err(|source| StoreError::Dir {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(())
}

/// The database and its WAL and shared-memory files are readable by provd's user only,
/// whatever the umask (they hold identities and requests). SQLite gives new -wal/-shm
/// files the database file's mode, so fixing the main file first covers them too.
fn private_files(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    // A CLI command run with sudo may have made the log files (or the store): they are
    // the state directory owner's, the agent's user (issue 35).
    if let (Some(dir), Some(name)) = (path.parent(), path.file_name()) {
        let name = name.to_string_lossy();
        let names = ["", "-wal", "-shm"].map(|s| format!("{name}{s}"));
        if let Err(e) = crate::ownership::hand_over_in(dir, &names) {
            tracing::warn!(path = %path.display(), error = %e, "store files could not be given to the state directory's owner");
        }
    }
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        if let Ok(m) = std::fs::metadata(&p)
            && m.permissions().mode() & 0o077 != 0
        {
            let _ = std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600));
        }
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

/// Runs `f` for each item in one immediate transaction, each in a savepoint of its own:
/// an item that fails leaves nothing behind and the others are committed all the same
/// (a group commit). `Err`: the transaction itself failed and nothing was written.
pub(crate) fn each_in_savepoint<I, T>(
    c: &mut Connection,
    items: &[I],
    f: impl Fn(&Connection, &I) -> Result<T>,
) -> Result<Vec<Result<T>>> {
    let mut tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let sp = tx.savepoint()?;
        match f(&sp, item) {
            Ok(r) => {
                sp.commit()?;
                out.push(Ok(r));
            }
            // Dropping the savepoint rolls back what this item wrote.
            Err(e) => out.push(Err(e)),
        }
    }
    tx.commit()?;
    Ok(out)
}
