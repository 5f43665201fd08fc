//! Upkeep of the store the leader does (River's maintenance loops): PostgreSQL's
//! statistics refreshed for provd's tables once they drift. Autovacuum does this on a
//! well-run server, but not where it is off or behind: a backlog on tables that grew
//! without statistics once made three agents livelock (issue 31), and one ANALYZE
//! drained it at once.

use std::future::Future;
use std::time::Duration;

use crate::leading::Leading;
use crate::store::Store;

/// How often the leader looks.
const EVERY: Duration = Duration::from_secs(30);

/// A table is analyzed once this share of its rows changed since the last time.
pub const STALE_SHARE: f64 = 0.2;

pub async fn run(store: Store, mut leading: Leading, stop: impl Future<Output = ()>) {
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => return,
            () = leading.wait() => {}
        }
        match store.analyze_stale(STALE_SHARE).await {
            Ok(tables) if !tables.is_empty() => {
                tracing::info!(tables = %tables.join(","), "store statistics refreshed");
            }
            Ok(_) => {}
            Err(e) => {
                if !crate::logging::store_unavailable(&e) {
                    tracing::warn!(error = %e, "refreshing the store's statistics failed");
                }
            }
        }
        tokio::select! {
            () = &mut stop => return,
            () = tokio::time::sleep(EVERY) => {}
        }
    }
}
