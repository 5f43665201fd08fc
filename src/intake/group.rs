//! Group commit of accepts (DESIGN §18). Every submit through the [`Intake`] handle parses
//! its body and hands it to one [`Batcher`]: the requests waiting together have their
//! identities looked up in one query, are validated each on its own, and the valid ones
//! are stored in ONE transaction (one fsync). Each submitter is answered once that
//! transaction is committed, so a 202 still means on disk.
//!
//! A request refused by validation never reaches the transaction; one that fails inside it
//! (a conflict found while writing) is rolled back to its own savepoint. Either way the
//! others of its group are stored.
//!
//! [`Intake`]: super::Intake

use std::collections::BTreeMap;
use std::sync::Arc;

use jiff::Timestamp;
use serde_json::Value;

use super::{Directory, SubmitError, named_identities, to_accept, validated};
use crate::batch::{Batcher, BoxFuture, Work};
use crate::config::Config;
use crate::store::roles::{Accept, Accounts, Requests};
use crate::store::{Replay, Store};

/// What is to be stored: a client's body (validated in the group), or a request provd
/// made itself (a lifecycle change), valid already, with the identities it is for.
pub(super) enum Body {
    Json(Value),
    Valid(
        crate::model::ValidRequest,
        BTreeMap<String, provd_connector_core::Identity>,
    ),
}

/// At most this many requests in one transaction.
const MAX_GROUP: usize = 256;

/// A parsed request body on its way into the store.
pub(super) struct Parsed {
    pub config: Arc<Config>,
    pub value: Body,
    pub body: Vec<u8>,
    pub from: crate::model::Requester,
    pub idempotency_key: Option<String>,
    pub now: Timestamp,
}

pub(super) type Group = Batcher<Accepting>;

/// One group under way per writer the store has: on SQLite the next group forms while
/// one is written; on PostgreSQL several groups are written at once, on their own
/// connections, as single requests were before.
pub(super) fn group(store: &Store) -> Group {
    let accepting = Accepting {
        accounts: store.as_accounts(),
        requests: store.as_requests(),
    };
    Batcher::new(accepting, MAX_GROUP, store.writers())
}

/// What a group needs of the store: its identities looked up, its requests accepted.
pub(super) struct Accepting {
    accounts: Arc<dyn Accounts>,
    requests: Arc<dyn Requests>,
}

impl Work for Accepting {
    type Item = Parsed;
    type Out = Result<Replay, SubmitError>;

    fn run(&self, items: Vec<Parsed>) -> BoxFuture<Vec<Self::Out>> {
        let (accounts, requests) = (self.accounts.clone(), self.requests.clone());
        Box::pin(async move { accept_group(&*accounts, &*requests, items).await })
    }
}

async fn accept_group(
    accounts: &dyn Accounts,
    requests: &dyn Requests,
    items: Vec<Parsed>,
) -> Vec<Result<Replay, SubmitError>> {
    let ids: Vec<String> = items
        .iter()
        .flat_map(|p| match &p.value {
            Body::Json(v) => named_identities(v),
            Body::Valid(..) => Vec::new(),
        })
        .collect();
    let imported = match accounts.identities(ids).await {
        Ok(found) => found,
        Err(e) => {
            return e
                .for_each_of(items.len())
                .into_iter()
                .map(|e| Err(e.into()))
                .collect();
        }
    };
    let mut outs: Vec<Option<Result<Replay, SubmitError>>> = Vec::with_capacity(items.len());
    let mut accepts: Vec<Accept> = Vec::new();
    for p in &items {
        match decide(p, &imported) {
            Ok(a) => {
                accepts.push(a);
                outs.push(None);
            }
            Err(e) => outs.push(Some(Err(e.into()))),
        }
    }
    let count = accepts.len();
    // A group refused whole by validation needs no transaction.
    let stored: Vec<Result<Replay, SubmitError>> = if count == 0 {
        Vec::new()
    } else {
        match requests.accept_all(accepts).await {
            Ok(results) => {
                crate::metrics::accept_group(count);
                results
                    .into_iter()
                    .map(|r| r.map_err(SubmitError::from))
                    .collect()
            }
            Err(e) => {
                if !crate::logging::store_unavailable(&e) {
                    tracing::error!(requests = count, error = %e, "a group of requests could not be stored");
                }
                e.for_each_of(count)
                    .into_iter()
                    .map(|e| Err(e.into()))
                    .collect()
            }
        }
    };
    let mut stored = stored.into_iter();
    outs.into_iter()
        .map(|o| {
            o.unwrap_or_else(|| {
                stored.next().unwrap_or_else(|| {
                    Err(SubmitError::Internal("the store answered too few".into()))
                })
            })
        })
        .collect()
}

fn decide(
    p: &Parsed,
    imported: &BTreeMap<String, provd_connector_core::Identity>,
) -> Result<Accept, super::Invalid> {
    let valid = match &p.value {
        Body::Json(v) => validated(v, &Directory::with(&p.config, imported), &p.config, p.now)?,
        Body::Valid(request, identities) => (request.clone(), identities.clone()),
    };
    Ok(to_accept(
        &p.config,
        valid,
        &p.body,
        &p.from,
        p.idempotency_key.as_deref(),
        p.now,
    ))
}
