//! Time-bound access in the store. A removal fires in two phases:
//!
//! 1. **Record** (at the due moment): one batched UPDATE moves due assignments to
//!    `revoking` with `fired_at`, and one audit event lists them. From here on they no
//!    longer count for reference counting, and granting the item again makes a new
//!    assignment. This is cheap (a few index entries per removal), so a burst of removals
//!    is recorded on time.
//! 2. **Plan** (right behind): each fired assignment becomes a REVOKE planned and written by
//!    the same code as any request (refcounting, status and settling unchanged), keyed
//!    `schedule:<assignment>:<due>`. If the same item was granted again in between, the
//!    new grant wins and the fired assignment is simply closed.
//!
//! Each phase is one transaction per batch; a crash after phase 1 leaves `revoke_planned
//! = 0` rows that phase 2 picks up at the next start. Nothing fires twice.

use super::rules::AssignmentState;
use crate::config::ItemType;
use crate::model::ValidRequest;

/// A fired removal (phase 1).
#[derive(Debug, Clone)]
pub struct Fired {
    pub assignment: i64,
    pub identity: String,
    pub ty: ItemType,
    pub item_id: String,
    pub remove_at: i64,
    pub lag_ms: i64,
    /// The request that granted the access, and its item's `clientMetadata` (JSON text):
    /// the revoke names the grant it ends and carries its ticket.
    pub grant_request: String,
    pub grant_metadata: Option<String>,
}

/// The revoke a fired removal becomes, as the schedule stage words it.
#[derive(Debug, Clone)]
pub struct Removal {
    pub fired: Fired,
    pub request: ValidRequest,
    /// The request as stored (verbatim body).
    pub body: String,
    /// Its idempotency key: one revoke per fired removal, however often phase 2 runs.
    pub key: String,
}

impl Removal {
    /// The revoke this removal becomes, as the schedule requests it.
    pub fn submission<'a>(
        &'a self,
        from: &'a crate::model::Requester,
        ctx: &'a super::accept::Context,
        now: jiff::Timestamp,
    ) -> super::accept::Submission<'a> {
        super::accept::Submission {
            request: &self.request,
            body: &self.body,
            requester: from,
            idempotency_key: Some(&self.key),
            ctx,
            now,
            include: Some(self.fired.assignment),
        }
    }
}

/// A planned removal (phase 2).
#[derive(Debug, Clone)]
pub struct Planned {
    pub assignment: i64,
    pub identity: String,
    pub item_id: String,
    /// None: superseded by a newer grant of the same item.
    pub request_id: Option<String>,
    pub jobs: usize,
}

/// An assignment as stored: who holds (or held) which item, since which request, until when.
#[derive(Debug, Clone, PartialEq)]
pub struct Assignment {
    pub id: i64,
    pub identity: String,
    pub ty: ItemType,
    pub item_id: String,
    pub state: AssignmentState,
    pub request_id: String,
    pub remove_at: Option<i64>,
}
