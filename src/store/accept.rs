//! Accepting a request: snapshot, plan and write in ONE immediate transaction, so that two
//! concurrent requests for the same identity cannot both miss each other's assignment, and
//! a crash leaves either the whole request or nothing.
//!
//! Requests that arrive together are accepted together (group commit, DESIGN §18): one
//! transaction and one fsync for the group, each request inside a savepoint of its own, so
//! that one that fails leaves nothing behind and the others are stored all the same.

use std::collections::BTreeMap;

use provd_connector_core::Identity;
use serde_json::Value;

use super::{Result, StoreError};
use crate::config::ItemType;
use crate::model::{AssignmentState, Granted, LiveAssignment, Plan, Snapshot};
use crate::model::{Requester, ValidRequest};

/// A request on disk.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub request_id: String,
    /// The 202 body: `{"newRequests":[…],"existingRequests":[…]}`.
    pub response: Value,
    pub job_ids: Vec<i64>,
    /// For a replay, the body stored with the first request (to tell a replay from a
    /// reused idempotency key); None for a request stored now, whose body the caller has.
    pub body: Option<String>,
    /// removeDates this request scheduled, moved or cleared (for the log).
    pub removals: Vec<RemovalChange>,
}

impl Accepted {
    /// A request stored now: its body is the caller's.
    pub fn stored(
        request_id: String,
        response: Value,
        (job_ids, removals): (Vec<i64>, Vec<RemovalChange>),
    ) -> Replay {
        Replay::New(Accepted {
            request_id,
            response,
            job_ids,
            body: None,
            removals,
        })
    }
}

/// A change to when an assignment is removed.
#[derive(Debug, Clone)]
pub struct RemovalChange {
    pub identity: String,
    pub item: String,
    pub assignment: Option<i64>,
    /// `scheduled`, `moved` or `cleared`.
    pub change: &'static str,
    pub remove_at: Option<i64>,
}

/// Whether [`Store::accept`] stored the request or found it stored under the same
/// idempotency key.
#[derive(Debug, Clone)]
pub enum Replay {
    New(Accepted),
    Replayed(Accepted),
}

impl Replay {
    pub fn accepted(&self) -> &Accepted {
        match self {
            Replay::New(a) | Replay::Replayed(a) => a,
        }
    }
}

/// How a request is decided inside the store's transaction: from the request, what its
/// identities hold at that moment and the new request's id, the plan to write and the
/// answer to keep for replays. Planning and answer shaping are their stages' (`plan`,
/// `wire`); the store only runs the decision where its reads and writes are atomic.
pub type Decide = dyn Fn(&ValidRequest, &Snapshot, &str) -> (Plan, Value) + Send + Sync;

/// What `accept` needs besides the request.
#[derive(Clone)]
pub struct Context {
    /// The identities the request names, as they are now (snapshotted into the jobs).
    pub identities: BTreeMap<String, Identity>,
    pub decide: std::sync::Arc<Decide>,
}

impl Context {
    /// The snapshot of an identity a planned job names (the plan only names identities
    /// of the request, all read before it).
    pub(crate) fn identity(&self, id: &str) -> Result<&Identity> {
        self.identities
            .get(id)
            .ok_or_else(|| StoreError::Conflict(format!("identity `{id}` vanished while planning")))
    }
}

/// One request to plan and write, as a backend's accept reads it: borrowed from an
/// [`super::roles::Accept`], or from a removal whose revoke is being planned.
#[derive(Clone, Copy)]
pub struct Submission<'a> {
    pub request: &'a ValidRequest,
    /// The body as received (kept for replays and audits).
    pub body: &'a str,
    pub requester: &'a Requester,
    pub idempotency_key: Option<&'a str>,
    pub ctx: &'a Context,
    pub now: jiff::Timestamp,
    /// An assignment to count as held although no longer live: the one a removal's revoke
    /// takes away (None for any other request).
    pub include: Option<i64>,
}

/// A row of a backend's snapshot query: `(id, identity, item type, item id, state,
/// request id, entitlements JSON, {source: job state} JSON of its grant's jobs)`.
pub(crate) type SnapshotRow = (
    i64,
    String,
    String,
    String,
    String,
    String,
    String,
    Option<String>,
);

/// The assignment a snapshot row is to the planner. A failed grant keeps only the values
/// its jobs did provision (its job on their source succeeded), as `holdings::grant_state`
/// says it holds them. A revoking one (a removal being planned) counts as active, less
/// the values its grant's jobs failed to give.
pub(crate) fn live_assignment(row: SnapshotRow) -> Result<LiveAssignment> {
    let (id, identity, ty, item_id, state, request_id, ents, jobs) = row;
    let corrupt = |what: String| StoreError::Corrupt(format!("assignment {id}: {what}"));
    let ty = ItemType::parse(&ty).ok_or_else(|| corrupt(format!("type {ty}")))?;
    let mut entitlements: Vec<Granted> =
        serde_json::from_str(&ents).map_err(|e| corrupt(e.to_string()))?;
    let jobs: BTreeMap<String, String> = match jobs.as_deref() {
        Some(j) => serde_json::from_str(j).map_err(|e| corrupt(e.to_string()))?,
        None => BTreeMap::new(),
    };
    let job_on = |g: &Granted| jobs.get(&g.source).map(String::as_str);
    let state = match state.as_str() {
        "pending" => AssignmentState::Pending,
        "failed" => {
            entitlements.retain(|g| job_on(g) == Some("succeeded"));
            AssignmentState::Failed
        }
        _ => {
            entitlements.retain(|g| !matches!(job_on(g), Some("failed" | "canceled")));
            AssignmentState::Active
        }
    };
    Ok(LiveAssignment {
        id,
        identity,
        ty,
        item_id,
        state,
        request_id,
        entitlements,
    })
}

/// A new grant of an item ends the identity's failed grant of it (`Effect::Grant`'s
/// `supersedes`): parameters (now, assignment).
pub(crate) fn supersede_sql(p: fn(usize) -> String) -> String {
    format!(
        "UPDATE assignments SET state = 'removed', updated_at = {} WHERE id = {} AND state = 'failed'",
        p(1),
        p(2)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(state: &str, jobs: Option<&str>) -> SnapshotRow {
        let ents = r#"[{"id":"vpn","source":"ldap","attribute":"groups","value":"cn=vpn"},
                       {"id":"wiki","source":"flat","attribute":"groups","value":"editors"}]"#;
        let (ty, item) = ("ROLE".to_string(), "eng".to_string());
        let jobs = jobs.map(String::from);
        (
            1,
            "u1".into(),
            ty,
            item,
            state.into(),
            "r1".into(),
            ents.into(),
            jobs,
        )
    }

    fn sources(a: &LiveAssignment) -> Vec<&str> {
        a.entitlements.iter().map(|g| g.source.as_str()).collect()
    }

    #[test]
    fn a_failed_grant_holds_only_where_its_job_succeeded() {
        let jobs = Some(r#"{"ldap":"succeeded","flat":"failed"}"#);
        let a = live_assignment(row("failed", jobs)).unwrap();
        assert_eq!(
            (a.state, sources(&a)),
            (AssignmentState::Failed, vec!["ldap"])
        );
        let a = live_assignment(row("failed", None)).unwrap();
        assert!(a.entitlements.is_empty());
        // A removal of it being planned takes what it gave, not what it failed to give.
        let a = live_assignment(row("revoking", jobs)).unwrap();
        assert_eq!(
            (a.state, sources(&a)),
            (AssignmentState::Active, vec!["ldap"])
        );
        let a = live_assignment(row("active", None)).unwrap();
        assert_eq!(sources(&a), ["ldap", "flat"]);
        assert!(live_assignment(row("pending", Some("{"))).is_err());
    }
}
