//! Checkpoints off the writer's path. SQLite's automatic checkpoint runs inside the
//! commit that fills the log past its limit: that commit, holding the one connection,
//! copies the log into the database file and fsyncs it before anyone writes again. On a
//! disk slower to sync than this machine's, those waits added up: a burst of 100,000
//! removals wrote about 290 MB of log and 260 MB of database pages, and the last revoke
//! was planned 14 s after its due time with the disk held to 30 MB/s (1.8 s unthrottled;
//! `cargo bench --bench schedule`, issue 32). Here a thread of its own, on a connection
//! of its own, checkpoints (PASSIVE: it never blocks a writer) whenever a commit left
//! the log past [`CHECKPOINT_PAGES`] — SQLite's own test, told by its WAL hook, which
//! also turns its automatic checkpoint off.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::Connection;

/// The log's length (pages) past which a checkpoint is asked for: SQLite's own default.
pub const CHECKPOINT_PAGES: i32 = 1000;

/// The log's length (pages, about 64 MiB) past which the checkpointer makes writers wait
/// for it once so that the log starts over. A checkpoint beside busy writers rarely
/// catches up, and the log only starts over after one that did: under the intake bench
/// it grew past a gigabyte, and every page read searched an index of it.
pub const RESTART_PAGES: i64 = 16_000;

/// Asks the checkpointer to run; cheap to clone. The thread starts the first time the
/// log passes the limit (a CLI command never needs one) and is joined when the last
/// clone goes, so that its connection is closed before the store counts as closed: the
/// last connection to close folds the log into the file, and a store opened again at
/// once (a new store renamed into place, a test) must not race it.
#[derive(Clone, Debug)]
pub struct Checkpointer {
    db: PathBuf,
    /// Set by the writer's WAL hook inside a commit; read after the connection is let
    /// go (the hook itself does nothing that could fail or block).
    due: Arc<AtomicBool>,
    thread: Arc<Mutex<Option<Running>>>,
}

#[derive(Debug)]
struct Running {
    wake: Option<SyncSender<()>>,
    handle: Option<JoinHandle<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        // No sender left: the thread's loop ends, and with it its connection.
        self.wake.take();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Checkpointer {
    /// The checkpointer of the database at `db`, whose writer is `conn`: its WAL hook
    /// (replacing SQLite's automatic checkpoint) marks a checkpoint due.
    pub fn new(db: &Path, conn: &mut Connection) -> rusqlite::Result<Checkpointer> {
        let due = Arc::new(AtomicBool::new(false));
        let mark = due.clone();
        // `pages` counts the log's frames since it last started over, which it does only
        // at a commit after a checkpoint that caught up. A checkpoint running beside the
        // writers often does not catch up, so the count keeps growing: asking whenever it
        // was past the limit asked at every commit and kept a checkpoint running all the
        // time (the intake bench lost a tenth of its requests per second). One is asked
        // for each time the log has grown by the limit since the last ask.
        let mut asked_at = 0;
        conn.wal_hook(Some(move |_: &mut rusqlite::hooks::Wal, pages: i32| {
            if pages < asked_at {
                asked_at = 0;
            }
            if pages - asked_at > CHECKPOINT_PAGES {
                asked_at = pages;
                mark.store(true, Ordering::Relaxed);
            }
            Ok(())
        }))?;
        Ok(Checkpointer {
            db: db.to_path_buf(),
            due,
            thread: Arc::new(Mutex::new(None)),
        })
    }

    /// After a write, the connection let go: asks for a checkpoint if a commit left the
    /// log past the limit (a request already waiting covers this one).
    pub fn wrote(&self) {
        if !self.due.swap(false, Ordering::Relaxed) {
            return;
        }
        let Ok(mut thread) = self.thread.lock() else {
            return;
        };
        if thread.is_none() {
            match start(&self.db) {
                Ok(running) => *thread = Some(running),
                Err(e) => {
                    tracing::warn!(error = %e, "store checkpointer not started; tried again after the next writes");
                    return;
                }
            }
        }
        if let Some(wake) = thread.as_ref().and_then(|t| t.wake.as_ref()) {
            match wake.try_send(()) {
                Ok(()) | Err(TrySendError::Full(())) => {}
                Err(TrySendError::Disconnected(())) => {
                    tracing::warn!("store checkpointer has stopped");
                }
            }
        }
    }
}

/// The thread, on a connection of its own.
fn start(db: &Path) -> Result<Running, Box<dyn std::error::Error + Send + Sync>> {
    let conn = Connection::open(db)?;
    conn.busy_timeout(Duration::from_secs(10))?;
    // Syncs the database file after each checkpoint (NORMAL, as the writer's).
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    let (wake, asked) = sync_channel::<()>(1);
    let handle = std::thread::Builder::new()
        .name("provd-checkpoint".into())
        .spawn(move || {
            while asked.recv().is_ok() {
                // (busy, pages in the log, pages copied into the file)
                let pass = |mode: &str| {
                    conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
                        r.get::<_, i64>(1)
                    })
                };
                let done = match pass("PASSIVE") {
                    Ok(log) if log > RESTART_PAGES => pass("RESTART"),
                    other => other,
                };
                if let Err(e) = done {
                    // The next write past the limit asks again.
                    tracing::warn!(error = %e, "store checkpoint failed");
                }
            }
        })?;
    Ok(Running {
        wake: Some(wake),
        handle: Some(handle),
    })
}
