//! Intake: every way a request comes in (HTTP, CLI, spool folder; upstream pulls later)
//! goes through [`submit`]: one validation path, one planning path, one transaction.

pub mod dates;
mod handle;
pub mod json;
pub mod spool;
pub mod validate;

use std::cell::RefCell;
use std::collections::BTreeMap;

use jiff::Timestamp;
use provd_connector_core::Identity;

use crate::config::{Config, ItemType};
use crate::model::ValidRequest;
use crate::store::accept::Context;
use crate::store::{Replay, Store, StoreError};
use validate::{Invalid, Known};

#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The request broke a rule; nothing was stored.
    #[error("{0}")]
    Invalid(#[from] Invalid),
    /// A client's idempotency key came again with a different body: answering with the
    /// first request's result would hide that the second was never taken.
    #[error(
        "Idempotency-Key: already used for a different request body (request {request_id}); use a new key for a new request"
    )]
    KeyReused { request_id: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The blocking task that ran the submit failed (a panic): nothing was stored.
    #[error("intake failed: {0}")]
    Internal(String),
}

pub use handle::Intake;

/// Decides a request the usual way: planned against the catalog and source rules in force,
/// answered in the SailPoint shape.
pub fn decider(
    config: &Config,
) -> impl Fn(&ValidRequest, &crate::model::Snapshot, &str) -> (crate::model::Plan, serde_json::Value) + '_
{
    move |req, snapshot, request_id| {
        let plan = crate::plan::plan(req, &config.catalog, snapshot, &config.rules);
        let answer = crate::wire::accepted(request_id, &plan);
        (plan, answer)
    }
}

/// A replay is only a replay if the body is the same. Keys provd derives itself (spool,
/// upstream) come from content, so only client-chosen keys (origin `api`) are checked.
fn same_request(
    found: &crate::store::Accepted,
    body: &[u8],
    origin: &str,
) -> Result<(), SubmitError> {
    let stored = found.body.as_deref().map(str::as_bytes);
    if origin == "api" && stored.is_some_and(|b| b != String::from_utf8_lossy(body).as_bytes()) {
        return Err(SubmitError::KeyReused {
            request_id: found.request_id.clone(),
        });
    }
    Ok(())
}

/// Where identities come from: imported ones in the store first, then `identities.csv`.
pub struct Directory<'a> {
    pub config: &'a Config,
    pub store: &'a Store,
    error: RefCell<Option<StoreError>>,
}

impl<'a> Directory<'a> {
    pub fn new(config: &'a Config, store: &'a Store) -> Self {
        Self {
            config,
            store,
            error: RefCell::new(None),
        }
    }

    pub fn lookup(&self, id: &str) -> Result<Option<Identity>, StoreError> {
        if let Some(found) = self.store.identity(id)? {
            return Ok(Some(found));
        }
        Ok(self.config.identities.get(id).cloned())
    }
}

impl Known for Directory<'_> {
    fn identity_exists(&self, id: &str) -> bool {
        match self.lookup(id) {
            Ok(found) => found.is_some(),
            Err(e) => {
                self.error.borrow_mut().get_or_insert(e);
                false
            }
        }
    }

    fn item_exists(&self, ty: ItemType, id: &str) -> bool {
        self.config.catalog.contains(ty, id)
    }
}

/// Validates, plans and stores a request body. `Ok` means the request is on disk.
pub fn submit(
    config: &Config,
    store: &Store,
    now: Timestamp,
    body: &[u8],
    origin: &str,
    idempotency_key: Option<&str>,
) -> Result<Replay, SubmitError> {
    if let Some(key) = idempotency_key
        && let Some(found) = store.by_idempotency_key(key)?
    {
        same_request(&found, body, origin)?;
        return Ok(Replay::Replayed(found));
    }
    let dir = Directory::new(config, store);
    let checked = validate::validate(body, &dir, &config.agent.time_zone, now);
    if let Some(e) = dir.error.borrow_mut().take() {
        return Err(SubmitError::Store(e));
    }
    let req = checked?;
    let mut identities = BTreeMap::new();
    for id in &req.requested_for {
        if let Some(found) = dir.lookup(id)? {
            identities.insert(id.clone(), found);
        }
    }
    let decide = decider(config);
    let ctx = Context {
        sources: &config.sources,
        identities: &identities,
        decide: &decide,
    };
    let text = String::from_utf8_lossy(body);
    let replay = store.accept(&req, &text, origin, idempotency_key, &ctx, now)?;
    if let Replay::Replayed(found) = &replay {
        // Another submit with the same key won the race.
        same_request(found, body, origin)?;
    }
    if let Replay::New(a) = &replay {
        for r in &a.removals {
            tracing::info!(request_id = %a.request_id, identity = %r.identity, item = %r.item, assignment = r.assignment,
                change = r.change, due = r.remove_at.map(crate::clock::rfc3339_ms).unwrap_or_default(), "removeDate {}", r.change);
        }
    }
    Ok(replay)
}

/// Plans a request without storing anything (`provd plan`).
pub fn dry_run(
    config: &Config,
    store: &Store,
    now: Timestamp,
    body: &[u8],
) -> Result<crate::plan::Plan, SubmitError> {
    let dir = Directory::new(config, store);
    let checked = validate::validate(body, &dir, &config.agent.time_zone, now);
    if let Some(e) = dir.error.borrow_mut().take() {
        return Err(SubmitError::Store(e));
    }
    let req = checked?;
    let snapshot = store.snapshot(&req.requested_for)?;
    Ok(crate::plan::plan(
        &req,
        &config.catalog,
        &snapshot,
        &config.rules,
    ))
}

pub use crate::wire::fnv1a64;
