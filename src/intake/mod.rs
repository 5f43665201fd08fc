//! Intake: every way a request comes in (HTTP, CLI, spool folder; upstream pulls later)
//! goes through [`submit`]: one validation path, one planning path, one transaction.

pub mod dates;
mod group;
mod handle;
pub mod identity;
pub mod json;
pub mod spool;
pub mod validate;

use std::collections::BTreeMap;
use std::sync::Arc;

use jiff::Timestamp;
use provd_connector_core::Identity;

use crate::config::{Config, ItemType};
use crate::model::{Requester, ValidRequest};
use crate::store::roles::Accept;
use crate::store::roles::{Accounts, Requests};
use crate::store::{Context, Replay, Store, StoreError};
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
/// each job given its source's attempt budget, answered in the SailPoint shape.
pub fn decider(config: std::sync::Arc<Config>) -> std::sync::Arc<crate::store::Decide> {
    std::sync::Arc::new(move |req, snapshot, request_id| {
        let mut plan = crate::plan::plan(req, &config.catalog, snapshot, &config.rules);
        for job in &mut plan.jobs {
            if let Some(s) = config.sources.get(&job.source) {
                job.max_attempts = s.retry.max_attempts;
            }
        }
        let answer = crate::wire::accepted(request_id, &plan);
        (plan, answer)
    })
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
/// Validation is pure, so the identities a body names are looked up before it runs.
pub struct Directory<'a> {
    pub config: &'a Config,
    imported: std::borrow::Cow<'a, BTreeMap<String, Identity>>,
}

impl<'a> Directory<'a> {
    /// Looks up `ids` in the store once.
    pub async fn load(
        config: &'a Config,
        store: &dyn Accounts,
        ids: Vec<String>,
    ) -> Result<Self, StoreError> {
        Ok(Self {
            config,
            imported: std::borrow::Cow::Owned(store.identities(ids).await?),
        })
    }

    /// Over identities looked up already (a group's, in one query).
    pub fn with(config: &'a Config, imported: &'a BTreeMap<String, Identity>) -> Self {
        Self {
            config,
            imported: std::borrow::Cow::Borrowed(imported),
        }
    }

    pub fn lookup(&self, id: &str) -> Option<Identity> {
        self.find(id).cloned()
    }

    fn find(&self, id: &str) -> Option<&Identity> {
        self.imported
            .get(id)
            .or_else(|| self.config.identities.get(id))
    }
}

impl Known for Directory<'_> {
    fn identity_exists(&self, id: &str) -> bool {
        self.imported.contains_key(id) || self.config.identities.contains_key(id)
    }

    fn item_exists(&self, ty: ItemType, id: &str) -> bool {
        self.config.catalog.contains(ty, id)
    }

    fn not_requestable(&self, id: &str) -> Option<String> {
        if self.config.lifecycle.states.is_empty() {
            return None;
        }
        // Borrowed: validation runs for every request, a clone per identity is waste.
        let identity = self.find(id)?;
        let state = self.config.lifecycle.state_of(&identity.attributes)?;
        (!state.requestable).then(|| {
            identity
                .attributes
                .get(crate::config::lifecycle::STATE_ATTRIBUTE)
                .cloned()
                .unwrap_or_default()
        })
    }
}

/// The identity ids a parsed body names (a body that names none gets its error from
/// validation).
fn named_identities(body: &serde_json::Value) -> Vec<String> {
    body.get("requestedFor")
        .and_then(serde_json::Value::as_array)
        .map(|list| {
            list.iter()
                .take(validate::MAX_IDENTITIES + 1)
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Parses once, looks up the identities the body names once, then validates.
async fn checked(
    config: &Config,
    store: &dyn Accounts,
    now: Timestamp,
    body: &[u8],
) -> Result<(ValidRequest, BTreeMap<String, Identity>), SubmitError> {
    let value = validate::parse(body)?;
    let dir = Directory::load(config, store, named_identities(&value)).await?;
    Ok(validated(&value, &dir, config, now)?)
}

/// Validates a parsed body against `dir`; the request and the identities it names.
fn validated(
    value: &serde_json::Value,
    dir: &Directory<'_>,
    config: &Config,
    now: Timestamp,
) -> Result<(ValidRequest, BTreeMap<String, Identity>), Invalid> {
    let req = validate::validate_parsed(value, dir, &config.agent.time_zone, now)?;
    let identities = req
        .requested_for
        .iter()
        .filter_map(|id| dir.lookup(id).map(|i| (id.clone(), i)))
        .collect();
    Ok((req, identities))
}

/// What storing a valid request needs.
fn to_accept(
    config: &Arc<Config>,
    (request, identities): (ValidRequest, BTreeMap<String, Identity>),
    body: &[u8],
    from: &Requester,
    idempotency_key: Option<&str>,
    now: Timestamp,
) -> Accept {
    Accept {
        request,
        body: String::from_utf8_lossy(body).into_owned(),
        requester: from.clone(),
        idempotency_key: idempotency_key.map(str::to_string),
        ctx: Context {
            identities,
            decide: decider(config.clone()),
        },
        now,
    }
}

/// A replay under a known idempotency key, answered from the store before anything else
/// (the first answer stands even if the body would no longer validate).
async fn replayed(
    store: &dyn Requests,
    body: &[u8],
    origin: &str,
    idempotency_key: Option<&str>,
) -> Result<Option<Replay>, SubmitError> {
    let Some(key) = idempotency_key else {
        return Ok(None);
    };
    let Some(found) = store.by_idempotency_key(key.to_string()).await? else {
        return Ok(None);
    };
    same_request(&found, body, origin)?;
    Ok(Some(Replay::Replayed(found)))
}

/// Validates, plans and stores a request body alone (no group commit: benches, tools).
/// `Ok` means the request is on disk.
pub async fn submit(
    config: &Arc<Config>,
    store: &Store,
    now: Timestamp,
    body: &[u8],
    from: &Requester,
    idempotency_key: Option<&str>,
) -> Result<Replay, SubmitError> {
    if let Some(found) = replayed(&**store, body, &from.origin, idempotency_key).await? {
        return Ok(found);
    }
    let valid = checked(config, &**store, now, body).await?;
    let accept = to_accept(config, valid, body, from, idempotency_key, now);
    let replay = store.accept(accept).await?;
    stored(replay, body, &from.origin)
}

/// After the write: a replay found inside the transaction is checked like one found
/// before it, and removeDates the request scheduled are logged.
fn stored(replay: Replay, body: &[u8], origin: &str) -> Result<Replay, SubmitError> {
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
pub async fn dry_run(
    config: &Config,
    store: &Store,
    now: Timestamp,
    body: &[u8],
) -> Result<crate::plan::Plan, SubmitError> {
    let (req, _) = checked(config, &**store, now, body).await?;
    let snapshot = store.snapshot(req.requested_for.clone()).await?;
    Ok(crate::plan::plan(
        &req,
        &config.catalog,
        &snapshot,
        &config.rules,
    ))
}

pub use crate::wire::fnv1a64;
