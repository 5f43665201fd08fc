//! Leader election for the work that must happen once (DESIGN §12): firing removeDates and
//! startDates, upstream polls and their checkpoints, overdue reminders. Every agent runs
//! this loop; the one holding the lease row does that work.
//!
//! The lease is renewed every third of its length. A leader that cannot renew (the store
//! unreachable, the process stalled) stops the work before its lease ends, a fifth of the
//! lease early, so that it never overlaps with the agent that takes over; and whatever it
//! still writes is refused by the store's fence (the epoch).

use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::clock::{SharedClock, to_ms};
use crate::leading::Leading;
use crate::store::{SINGLETON, Store};

/// Starts the election loop; returns the handle singleton loops wait on.
pub fn start(
    store: Store,
    name: String,
    lease: Duration,
    clock: SharedClock,
    stop: impl Future<Output = ()> + Send + 'static,
) -> (Leading, tokio::task::JoinHandle<()>) {
    let (tx, rx) = watch::channel(false);
    let task = tokio::spawn(run(store, name, lease, clock, tx, stop));
    (Leading::from(rx), task)
}

async fn run(
    store: Store,
    name: String,
    lease: Duration,
    clock: SharedClock,
    tx: watch::Sender<bool>,
    stop: impl Future<Output = ()>,
) {
    tokio::pin!(stop);
    let every = lease / 3;
    let margin = lease / 5;
    // Until when the work may go on without a renewal.
    let mut valid_until = Instant::now();
    let set = |leading: bool, epoch: Option<i64>| {
        let was = tx.send_replace(leading);
        crate::metrics::leader(&name, leading);
        if leading && !was {
            tracing::info!(agent = %name, epoch, "leader: this agent now does the singleton work");
        } else if !leading && was {
            tracing::warn!(agent = %name, "leader lease lost or not renewed: singleton work stops here");
        }
    };
    set(false, None);
    loop {
        let started = Instant::now();
        let now = clock.now();
        let until = to_ms(crate::model::add(now, lease));
        let call = store.lead(SINGLETON.into(), name.clone(), to_ms(now), until);
        match tokio::time::timeout(every, call).await {
            Ok(Ok(Some(epoch))) => {
                valid_until = started + lease - margin;
                set(true, Some(epoch));
            }
            Ok(Ok(None)) => set(false, None),
            Ok(Err(e)) => {
                if !crate::logging::store_unavailable(&e) {
                    tracing::warn!(agent = %name, error = %e, "renewing the leader lease failed")
                }
            }
            Err(_) => tracing::warn!(agent = %name, "renewing the leader lease timed out"),
        }
        let _ = store.seen(name.clone(), to_ms(clock.now())).await;
        // Wake to renew, or at the deadline to stop working if no renewal got through; a
        // follower asks more often, so that it takes over soon after the lease runs out.
        let mut next = started + if *tx.borrow() { every } else { lease / 5 };
        if *tx.borrow() && valid_until < next {
            next = valid_until;
        }
        tokio::select! {
            _ = &mut stop => break,
            _ = tokio::time::sleep_until(next) => {}
        }
        if *tx.borrow() && Instant::now() >= valid_until {
            set(false, None);
        }
    }
    if *tx.borrow() {
        set(false, None);
        if let Err(e) = store.resign(SINGLETON.into(), name.clone()).await {
            tracing::warn!(agent = %name, error = %e, "giving up the leader lease failed; it expires by itself");
        }
    }
}
