//! Keeps this agent's leases alive while their connector calls run: a lease shorter than
//! a slow call must not let another agent take the job over mid-call. Every third of the
//! lease, every job this agent holds (running or waiting in its local queue) is renewed
//! in one store write; a job no longer held is reported (`lease lost`): its outcome will
//! be dropped when it ends, because another agent holds it now.

use std::sync::Arc;
use std::time::Duration;

use super::Inner;
use crate::clock::to_ms;
use crate::model::add;

/// The renewing task; dropped (the dispatcher has released what it held, or failed),
/// it stops.
pub(super) struct Heartbeat(tokio::task::JoinHandle<()>);

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub(super) fn spawn(inner: Arc<Inner>) -> Heartbeat {
    Heartbeat(tokio::spawn(async move {
        loop {
            let lease = inner.live.get().agent.lease;
            tokio::time::sleep((lease / 3).max(Duration::from_millis(200))).await;
            let held: Vec<(i64, i64)> = match inner.running.lock() {
                Ok(r) => r.values().map(|j| (j.id, j.lease_epoch)).collect(),
                Err(_) => continue,
            };
            if held.is_empty() {
                continue;
            }
            let until = to_ms(add(inner.clock.now(), lease));
            match inner
                .queue
                .renew(inner.owner.clone(), held.clone(), until)
                .await
            {
                Ok(lost) => {
                    // What this agent may still start: a job waiting locally is started
                    // only while its lease is known to last (see `Dispatcher::run`).
                    if let Ok(mut running) = inner.running.lock() {
                        for (id, _) in &held {
                            if !lost.contains(id)
                                && let Some(j) = running.get_mut(id)
                            {
                                j.lease_expires_at = Some(until);
                            }
                        }
                    }
                    for id in lost {
                        // Ended a moment ago (committed) or taken back by another agent.
                        let still_ours = inner.running.lock().is_ok_and(|r| r.contains_key(&id));
                        if still_ours {
                            crate::metrics::lease_lost();
                            tracing::warn!(job_id = id, owner = %inner.owner, "lease lost: another agent may run this job; this agent's outcome will be dropped");
                        }
                    }
                }
                Err(e) => {
                    if !crate::logging::store_unavailable(&e) {
                        tracing::warn!(error = %e, "renewing leases failed; tried again shortly");
                    }
                }
            }
        }
    }))
}
