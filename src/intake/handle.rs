//! The one way in. HTTP, the CLI, the spool folder and upstream pulls (and, later,
//! triggers and lifecycle changes) all hand their request bodies to an [`Intake`]: it
//! validates, plans and stores against the configuration in force, logs the acceptance
//! once with the same fields whatever the origin, and wakes dispatch and the scheduler.
//! A new intake is a caller of this handle, not a copy of its wiring.

use std::sync::Arc;

use tokio::sync::Notify;

use super::{SubmitError, submit};
use crate::clock::SharedClock;
use crate::config::Live;
use crate::store::{Replay, Store};

#[derive(Clone)]
pub struct Intake {
    live: Arc<Live>,
    store: Store,
    clock: SharedClock,
    /// Woken after a request is stored: dispatch (its jobs can start at once) and the
    /// scheduler (it may have set an earlier removeDate).
    wakers: Vec<Arc<Notify>>,
}

impl Intake {
    pub fn new(live: Arc<Live>, store: Store, clock: SharedClock) -> Self {
        Self {
            live,
            store,
            clock,
            wakers: Vec::new(),
        }
    }

    /// Also wake `notify` whenever a request is stored.
    pub fn waking(mut self, notify: Arc<Notify>) -> Self {
        self.wakers.push(notify);
        self
    }

    /// Takes a request in; `Ok` means it is on disk (or was, under the same idempotency
    /// key).
    pub async fn submit(
        &self,
        body: &[u8],
        origin: &str,
        idempotency_key: Option<&str>,
    ) -> Result<Replay, SubmitError> {
        let config = self.live.get();
        let replay = submit(
            &config,
            &self.store,
            self.clock.now(),
            body,
            origin,
            idempotency_key,
        )
        .await?;
        if let Replay::New(a) = &replay {
            tracing::info!(request_id = %a.request_id, origin, jobs = a.job_ids.len(), "request accepted");
            for w in &self.wakers {
                w.notify_one();
            }
        }
        Ok(replay)
    }
}
