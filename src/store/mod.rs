//! The store: requests, jobs, assignments, accounts, tasks and the audit log, behind one
//! async boundary. The role traits in [`roles`] are the boundary; a backend implements
//! them all and [`Store`] is the cloneable handle every stage holds. SQLite
//! ([`sqlite::Sqlite`]) is the embedded default.
//!
//! Above the backends: the role traits ([`roles`]), the rules every backend writes by
//! ([`rules`]: state machines, decisions, event data), the row types the roles exchange
//! (the topic files, `jobs.rs`, `tasks.rs`, …) and the conformance suite. Below them,
//! `sqlite/` and `postgres/` mirror each other file for file (`queue.rs`, `tasks.rs`,
//! `settle.rs`, …), each writing in its dialect what the rules decide; nothing outside
//! `src/store/` names a database crate.

pub mod accept;
pub mod audit;
pub mod cells;
#[cfg(any(test, feature = "test-support"))]
#[doc(hidden)]
pub mod conformance;
mod events;
pub mod evidence;
pub mod jobs;
pub mod mail;
pub mod migrate;
pub mod postgres;
pub mod roles;
pub mod rules;
pub mod schedule;
pub mod sqlite;
pub mod status;
pub mod tasks;
pub mod triggers;
pub mod upstream;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use accept::{Accepted, Context, Decide, Replay};
pub use events::{Event, StoredEvent, writer};
pub use jobs::{Job, JobState};
pub use roles::{Backend, BoxFuture, Claim, Fut, Leader, SINGLETON, Stamp};
pub use sqlite::DB_FILE;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database said no (I/O, constraint, busy beyond the timeout, …): the backend's
    /// own error, boxed so that no caller names a database crate.
    #[error("store: {0}")]
    Backend(Box<dyn std::error::Error + Send + Sync>),
    /// A job's outcome was written by an agent that no longer holds its lease: another
    /// agent has it (or had it) now, so this outcome is dropped.
    #[error("job {job_id} is no longer leased to this agent")]
    LeaseLost { job_id: i64 },
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
    /// The database file is unusable: empty, not a database, or failing its integrity
    /// check. provd refuses to start on it rather than start an empty store over it.
    #[error("store: {path} is damaged: {reason}")]
    Damaged { path: PathBuf, reason: String },
    /// A singleton write (firing removals, upstream checkpoints) from an agent that no
    /// longer holds the leader lease: another agent leads now.
    #[error("this agent no longer holds the leader lease")]
    NotLeader,
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    NotFound(String),
    /// The store cannot be reached or trusted right now: its file was deleted, replaced
    /// or truncated under the agent, the disk is full, I/O failed, PostgreSQL is down.
    /// Worth asking again later: the API answers 503 with Retry-After, never a 202.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The database failed the transaction to break a deadlock or a serialization
    /// conflict: nothing of it was written, and the whole of it may be tried again.
    #[error("store: {0}")]
    Contention(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

impl StoreError {
    /// Whether this is the store being unavailable rather than the request being at
    /// fault: damaged pages found on a read count too (the database said "corrupt").
    pub fn is_unavailable(&self) -> bool {
        match self {
            Self::Unavailable(_) | Self::Damaged { .. } => true,
            Self::Backend(b) => sqlite::is_unavailable(b.as_ref()),
            _ => false,
        }
    }

    /// The same failure again, for each of the items of a batch whose one transaction
    /// failed (the error itself cannot be cloned: it may hold the backend's error).
    pub fn for_each_of(&self, n: usize) -> Vec<StoreError> {
        let reason = match self {
            StoreError::Unavailable(m) => m.clone(),
            e => e.to_string(),
        };
        // An unavailable store stays one for every item: each is answered 503, not 500.
        let unavailable = self.is_unavailable();
        (0..n)
            .map(|_| {
                if unavailable {
                    StoreError::Unavailable(reason.clone())
                } else {
                    StoreError::Backend(reason.clone().into())
                }
            })
            .collect()
    }
}

/// The tables of a store (both backends): what `store check` counts and `store migrate`
/// copies and verifies.
pub const TABLES: [&str; 15] = [
    "requests",
    "request_items",
    "jobs",
    "item_jobs",
    "assignments",
    "accounts",
    "tasks",
    "identities",
    "events",
    "upstream_state",
    "upstream_requests",
    "mail_state",
    "trigger_invocations",
    "account_snapshots",
    "source_accounts",
];

/// The store's identity (migration 13), the same statement on both backends.
pub(crate) const STORE_ID_SQL: &str = "SELECT store_id FROM store_identity WHERE id = 1";

/// The store every stage holds: a backend behind the role traits. Cloning is cheap.
#[derive(Clone)]
pub struct Store(Arc<dyn Backend>);

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Store").field(&self.0.location()).finish()
    }
}

impl std::ops::Deref for Store {
    type Target = dyn Backend;

    fn deref(&self) -> &Self::Target {
        &*self.0
    }
}

impl Store {
    /// The embedded store: `provd.db` in `state_dir` (created and migrated if needed).
    pub fn open(state_dir: &Path) -> Result<Store> {
        Ok(Store::new(sqlite::Sqlite::open(state_dir)?))
    }

    /// An SQLite store at an explicit file.
    pub fn open_file(path: &Path) -> Result<Store> {
        Ok(Store::new(sqlite::Sqlite::open_file(path)?))
    }

    /// A PostgreSQL store (DESIGN §12), migrated to this build's schema.
    pub async fn postgres(settings: &postgres::Settings) -> Result<Store> {
        Ok(Store::new(postgres::Postgres::connect(settings).await?))
    }

    pub fn new(backend: impl Backend + 'static) -> Store {
        Store(Arc::new(backend))
    }

    /// The queue alone, for a stage that works jobs and nothing else of the store (as
    /// lldap's handlers take only the backend traits they use).
    pub fn as_queue(&self) -> Arc<dyn roles::Queue> {
        self.0.clone()
    }

    /// Manual tasks alone.
    pub fn as_tasks(&self) -> Arc<dyn roles::Tasks> {
        self.0.clone()
    }

    /// Requests alone: accepting, replaying, reading back.
    pub fn as_requests(&self) -> Arc<dyn roles::Requests> {
        self.0.clone()
    }

    /// Removal dates alone: what comes due and the revokes it becomes.
    pub fn as_schedule(&self) -> Arc<dyn roles::Schedule> {
        self.0.clone()
    }

    /// Upstream bookkeeping alone: checkpoints, pulls, write-backs.
    pub fn as_upstream(&self) -> Arc<dyn roles::Upstream> {
        self.0.clone()
    }

    /// Imported identities and accounts alone.
    pub fn as_accounts(&self) -> Arc<dyn roles::Accounts> {
        self.0.clone()
    }
}

/// The store `config` names: its `[store]` PostgreSQL database, else SQLite in
/// `agent.state_dir`.
pub async fn open(config: &crate::config::Config) -> Result<Store> {
    match &config.store {
        Some(pg) => {
            Store::postgres(&postgres::Settings {
                url: pg.url.clone(),
                password: pg.password.clone(),
                tls_ca_file: pg.tls_ca_file.clone(),
                pool_size: pg.pool_size,
            })
            .await
        }
        None => Store::open(&config.agent.state_dir),
    }
}

/// Where an SQLite store of `state_dir` lives (for messages before it is opened).
pub fn sqlite_path(state_dir: &Path) -> PathBuf {
    state_dir.join(DB_FILE)
}

/// A fresh id: 32 lowercase hex digits, like the upstream's, all random.
pub fn new_id() -> String {
    format!("{:032x}", fastrand::u128(..))
}

/// A fresh request id, 32 lowercase hex digits: the milliseconds of `now` (48 bits, as in
/// a UUIDv7), then 80 random bits. Ids of requests accepted together sort together, so the
/// indexes keyed by request id take a group's inserts on one page rather than one random
/// page each (intake bench without dispatch: about 2,300 → 3,000 requests/s, issue 16).
pub fn new_request_id(now: jiff::Timestamp) -> String {
    let ms = (now.as_millisecond().max(0) as u128) & ((1 << 48) - 1);
    format!("{:032x}", (ms << 80) | (fastrand::u128(..) >> 48))
}

#[cfg(test)]
mod tests;
