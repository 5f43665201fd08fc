//! What the conformance cases stand on: a store with a small catalog and identities, and
//! the calls the cases make through it.

use std::collections::{BTreeMap, BTreeSet};

use provd_connector_core::Identity;

use super::Failure;
use crate::config::files::CatalogFile;
use crate::config::{Catalog, ItemType, SourceRules};
use crate::model::{RequestType, ValidItem, ValidRequest};
use crate::store::jobs::{AttemptError, Job};
use crate::store::status::StatusQuery;
use crate::store::{Claim, Context, Replay, Store, StoreError};

pub(super) struct Fixture {
    pub(super) store: Store,
    pub(super) catalog: Catalog,
    pub(super) identities: BTreeMap<String, Identity>,
}

impl Fixture {
    /// A store with the catalog `toml` over `sources`, and `identities` without
    /// attributes.
    pub(super) fn new(
        store: Store,
        toml: &str,
        sources: &[&str],
        identities: &[&str],
    ) -> Result<Self, Failure> {
        let f: CatalogFile = toml::from_str(toml)?;
        let sources: BTreeSet<String> = sources.iter().map(|s| s.to_string()).collect();
        let catalog = Catalog::build(f, &sources).0;
        let identities = identities
            .iter()
            .map(|i| {
                let identity = Identity {
                    id: i.to_string(),
                    attributes: BTreeMap::new(),
                };
                (i.to_string(), identity)
            })
            .collect();
        Ok(Fixture {
            store,
            catalog,
            identities,
        })
    }
}

pub(super) fn fixture(store: Store) -> Result<Fixture, Failure> {
    let catalog = r#"
        [[entitlement]]
        id = "vpn"
        source = "flat"
        attribute = "groups"
        value = "VPN"
        [[entitlement]]
        id = "git"
        source = "flat"
        attribute = "groups"
        value = "GIT"
        [[access_profile]]
        id = "ap-eng"
        entitlements = ["vpn", "git"]
        [[access_profile]]
        id = "ap-remote"
        entitlements = ["vpn"]
        "#;
    Fixture::new(store, catalog, &["flat"], &["u1", "u2"])
}

pub(super) fn err(attempt: u32) -> AttemptError {
    AttemptError {
        at: "2030-01-01T00:00:00Z".into(),
        attempt,
        class: "retryable".into(),
        code: None,
        message: "down".into(),
    }
}

impl Fixture {
    /// Decides the intake's way: planned against the catalog, answered in SailPoint's shape.
    pub(super) fn ctx(&self) -> Context {
        let catalog = self.catalog.clone();
        Context {
            identities: self.identities.clone(),
            decide: std::sync::Arc::new(move |req, snapshot, request_id| {
                let plan = crate::plan::plan(req, &catalog, snapshot, &SourceRules::default());
                let answer = crate::wire::accepted(request_id, &plan);
                (plan, answer)
            }),
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) async fn submit(
        &self,
        kind: RequestType,
        who: &str,
        id: &str,
        key: Option<&str>,
        remove_at: Option<i64>,
        now: i64,
    ) -> Result<Replay, StoreError> {
        let a = self.accept(kind, who, id, key, remove_at, now);
        self.store.accept(a).await
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn accept(
        &self,
        kind: RequestType,
        who: &str,
        id: &str,
        key: Option<&str>,
        remove_at: Option<i64>,
        now: i64,
    ) -> crate::store::roles::Accept {
        let request = ValidRequest {
            request_type: kind,
            requested_for: vec![who.into()],
            items: vec![ValidItem {
                ty: ItemType::AccessProfile,
                id: id.into(),
                comment: Some("because".into()),
                start_at: None,
                remove_at: remove_at.map(crate::clock::from_ms),
                client_metadata: BTreeMap::new(),
            }],
            client_metadata: BTreeMap::new(),
            account_ops: Vec::new(),
            repairs: Vec::new(),
        };
        crate::store::roles::Accept {
            request,
            body: "{}".into(),
            requester: crate::model::Requester::other("test"),
            idempotency_key: key.map(str::to_string),
            ctx: self.ctx(),
            now: crate::clock::from_ms(now),
        }
    }

    pub(super) async fn grant(
        &self,
        who: &str,
        profile: &str,
        now: i64,
    ) -> Result<String, StoreError> {
        let r = self
            .submit(RequestType::Grant, who, profile, None, None, now)
            .await?;
        Ok(r.accepted().request_id.clone())
    }

    /// The operator (`cli:op`) retries job `id` with `max_attempts` at `now`.
    pub(super) async fn retry(
        &self,
        id: i64,
        max_attempts: u32,
        now: i64,
    ) -> Result<Job, StoreError> {
        let retry = crate::store::jobs::Retry {
            max_attempts,
            identity: None,
        };
        self.store
            .retry_job(id, retry, crate::store::Stamp::new("cli:op", now))
            .await
    }

    pub(super) async fn claim(&self, owner: &str, now: i64) -> Result<Vec<Job>, StoreError> {
        self.claim_until(owner, now, now + 60_000).await
    }

    pub(super) async fn claim_until(
        &self,
        owner: &str,
        now: i64,
        until: i64,
    ) -> Result<Vec<Job>, StoreError> {
        self.store
            .claim(Claim {
                owner: owner.into(),
                limit: 10,
                now,
                lease_until: until,
                ..Default::default()
            })
            .await
    }

    pub(super) async fn first(
        &self,
        owner: &str,
        now: i64,
    ) -> Result<Job, Box<dyn std::error::Error + Send + Sync>> {
        let mut got = self.claim(owner, now).await?;
        if got.is_empty() {
            return Err(format!("nothing to claim at {now}").into());
        }
        Ok(got.remove(0))
    }

    pub(super) async fn succeed(&self, job: &Job, owner: &str, now: i64) -> Result<(), StoreError> {
        self.store
            .succeed(job.clone(), owner.into(), now, Vec::new())
            .await
    }

    pub(super) async fn state_of(
        &self,
        request: &str,
    ) -> Result<String, Box<dyn std::error::Error + Send + Sync>> {
        let q = StatusQuery {
            request_id: Some(request.into()),
            limit: 100,
            ..Default::default()
        };
        let rows = self.store.status(q).await?;
        let row = rows.first().ok_or("no status row")?;
        Ok(crate::wire::status_item(row)["state"]
            .as_str()
            .unwrap_or_default()
            .to_string())
    }

    pub(super) async fn assignment_states(&self) -> Result<Vec<String>, StoreError> {
        let all = self.store.assignments(None).await?;
        Ok(all.into_iter().map(|a| a.state.to_string()).collect())
    }

    /// How many `kind` events the trail holds for `job`.
    pub(super) async fn events_of(&self, job: i64, kind: &str) -> Result<usize, StoreError> {
        let q = crate::store::audit::AuditQuery {
            job: Some(job),
            kinds: vec![kind.into()],
            limit: 1000,
            ..Default::default()
        };
        Ok(self.store.audit(q).await?.len())
    }

    pub(super) async fn job(
        &self,
        id: i64,
    ) -> Result<Job, Box<dyn std::error::Error + Send + Sync>> {
        Ok(self.store.job(id).await?.ok_or("no such job")?)
    }
}
