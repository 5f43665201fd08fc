//! The one way in. HTTP, the CLI, the spool folder and upstream pulls (and, later,
//! triggers and lifecycle changes) all hand their request bodies to an [`Intake`]: it
//! validates, plans and stores against the configuration in force, logs the acceptance
//! once with the same fields whatever the origin, and wakes dispatch and the scheduler.
//! A new intake is a caller of this handle, not a copy of its wiring.

use std::collections::BTreeMap;
use std::sync::Arc;

use provd_connector_core::Identity;

use tokio::sync::Notify;

use super::group::{Body, Group, Parsed, group};
use super::{SubmitError, replayed, stored, validate};
use crate::clock::SharedClock;
use crate::config::Live;
use crate::model::{Requester, ValidRequest};
use crate::store::roles::Requests;
use crate::store::{Replay, Store};

#[derive(Clone)]
pub struct Intake {
    live: Arc<Live>,
    /// The store as the intake uses it: requests (identities are read by the group).
    requests: Arc<dyn Requests>,
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
            group: Arc::new(group(&store)),
            requests: store.as_requests(),
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
        let replay = match replayed(&*self.requests, body, origin, idempotency_key).await? {
            Some(found) => found,
            None => {
                let parsed = Parsed {
                    value: Body::Json(validate::parse(body)?),
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
        self.accepted(&replay, from);
        Ok(replay)
    }

    /// Takes in a request provd made itself (a lifecycle change): valid already, for
    /// `identities` as they are now (which may not be stored yet). Its stored body is the
    /// request in the API's shape, with the account operations it carries.
    pub async fn submit_valid(
        &self,
        request: ValidRequest,
        identities: BTreeMap<String, Identity>,
        from: &Requester,
        idempotency_key: Option<&str>,
    ) -> Result<Replay, SubmitError> {
        let body = serde_json::json!({
            "requestedFor": request.requested_for,
            "requestType": request.request_type.as_str(),
            "requestedItems": request.items.iter().map(|i| serde_json::json!({
                "type": i.ty.as_str(), "id": i.id, "comment": i.comment })).collect::<Vec<_>>(),
            "accountOperations": request.account_ops.iter().map(|(source, op)| serde_json::json!({
                "source": source, "op": op.kind().as_str() })).collect::<Vec<_>>(),
            "repairs": request.repairs.iter().map(|(source, op)| serde_json::json!({
                "source": source, "op": op.kind().as_str() })).collect::<Vec<_>>(),
            // A lifecycle request's `cause` (its identity_changed event) stays with it
            // even when it has no item to carry it.
            "clientMetadata": request.client_metadata,
        })
        .to_string()
        .into_bytes();
        let parsed = Parsed {
            value: Body::Valid(request, identities),
            config: self.live.get(),
            body,
            from: from.clone(),
            idempotency_key: idempotency_key.map(str::to_string),
            now: self.clock.now(),
        };
        let outcome =
            self.group.call(parsed).await.map_err(|e| {
                SubmitError::Internal(format!("{e}; the request may not be stored"))
            })?;
        let replay = outcome?;
        self.accepted(&replay, from);
        Ok(replay)
    }

    /// After a request is on disk: one log line, and wake whoever must act on it.
    fn accepted(&self, replay: &Replay, from: &Requester) {
        if let Replay::New(a) = replay {
            tracing::info!(request_id = %a.request_id, origin = %from.origin, requester = %from.name, jobs = a.job_ids.len(), "request accepted");
            for w in &self.wakers {
                w.notify_one();
            }
            if !a.removals.is_empty() {
                for w in &self.removal_wakers {
                    w.notify_one();
                }
            }
        }
    }
}
