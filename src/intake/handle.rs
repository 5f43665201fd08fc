//! The one way in. HTTP, the CLI, the spool folder and upstream pulls (and, later,
//! triggers and lifecycle changes) all hand their request bodies to an [`Intake`]: it
//! validates, plans and stores against the configuration in force, logs the acceptance
//! once with the same fields whatever the origin, and wakes dispatch and the scheduler.
//! A new intake is a caller of this handle, not a copy of its wiring.

use std::sync::Arc;

use tokio::sync::Notify;

use super::group::{Group, Parsed, group};
use super::{SubmitError, replayed, stored, validate};
use crate::clock::SharedClock;
use crate::config::Live;
use crate::model::Requester;
use crate::store::{Replay, Store};

#[derive(Clone)]
pub struct Intake {
    live: Arc<Live>,
    store: Store,
    clock: SharedClock,
    /// Concurrent submits share one transaction (group commit).
    group: Arc<Group>,
    /// Woken after a request is stored: dispatch (its jobs can start at once).
    wakers: Vec<Arc<Notify>>,
    /// Woken after a request changed a removeDate: the scheduler (it may now be due
    /// earlier). Not for every request: each wake costs the scheduler a look at the store.
    removal_wakers: Vec<Arc<Notify>>,
}

impl Intake {
    pub fn new(live: Arc<Live>, store: Store, clock: SharedClock) -> Self {
        Self {
            live,
            group: Arc::new(group(store.clone())),
            store,
            clock,
            wakers: Vec::new(),
            removal_wakers: Vec::new(),
        }
    }

    /// Also wake `notify` whenever a request is stored.
    pub fn waking(mut self, notify: Arc<Notify>) -> Self {
        self.wakers.push(notify);
        self
    }

    /// Also wake `notify` whenever a stored request set, moved or cleared a removeDate.
    pub fn waking_on_removals(mut self, notify: Arc<Notify>) -> Self {
        self.removal_wakers.push(notify);
        self
    }

    /// Takes a request in; `Ok` means it is on disk (or was, under the same idempotency
    /// key). Requests submitted at the same time are committed together.
    pub async fn submit(
        &self,
        body: &[u8],
        from: &Requester,
        idempotency_key: Option<&str>,
    ) -> Result<Replay, SubmitError> {
        let origin = from.origin.as_str();
        let config = self.live.get();
        let now = self.clock.now();
        let replay = match replayed(&self.store, body, origin, idempotency_key).await? {
            Some(found) => found,
            None => {
                let parsed = Parsed {
                    value: validate::parse(body)?,
                    config,
                    body: body.to_vec(),
                    from: from.clone(),
                    idempotency_key: idempotency_key.map(str::to_string),
                    now,
                };
                let outcome = self.group.call(parsed).await.map_err(|e| {
                    SubmitError::Internal(format!("{e}; the request may not be stored"))
                })?;
                stored(outcome?, body, origin)?
            }
        };
        if let Replay::New(a) = &replay {
            tracing::info!(request_id = %a.request_id, origin, requester = %from.name, jobs = a.job_ids.len(), "request accepted");
            for w in &self.wakers {
                w.notify_one();
            }
            if !a.removals.is_empty() {
                for w in &self.removal_wakers {
                    w.notify_one();
                }
            }
        }
        Ok(replay)
    }
}
