//! What a plan is made of: what identities hold (the snapshot planning reads) and the
//! jobs and assignment changes it writes. Planning itself is `crate::plan`; the store
//! reads and writes these shapes without knowing how they are decided.

use std::collections::BTreeSet;

use jiff::Timestamp;
use provd_connector_core::{Entitlement, Operation};
use serde::{Deserialize, Serialize};

use super::{ItemType, ValidItem};

/// An entitlement as granted: kept on the assignment so that a later revoke removes what
/// was granted even if the catalog changed since.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Granted {
    pub id: String,
    pub source: String,
    pub attribute: String,
    pub value: String,
}

impl Granted {
    pub fn entitlement(&self) -> Entitlement {
        Entitlement {
            attribute: self.attribute.clone(),
            value: self.value.clone(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AssignmentState {
    /// Granted by a job that has not finished yet (or waits for its startDate).
    Pending,
    /// Provisioned.
    Active,
    /// Its grant ended failed on some source; `entitlements` are only the values it did
    /// provision (where its job succeeded), which the targets hold (issue 33: a revoke of
    /// another item must not take them, a new grant need not add them again).
    Failed,
}

/// A live assignment of one of the request's identities.
#[derive(Debug, Clone)]
pub struct LiveAssignment {
    pub id: i64,
    pub identity: String,
    pub ty: ItemType,
    pub item_id: String,
    pub state: AssignmentState,
    pub request_id: String,
    pub entitlements: Vec<Granted>,
}

/// What the request's identities hold, read in the same transaction the plan is written in.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub assignments: Vec<LiveAssignment>,
    /// (identity, source) pairs that have an account, or one being created.
    pub accounts: BTreeSet<(String, String)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobKind {
    Grant,
    Revoke,
}

impl JobKind {
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Grant => "grant",
            JobKind::Revoke => "revoke",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct PlannedJob {
    pub identity: String,
    pub source: String,
    pub kind: JobKind,
    pub ops: Vec<Operation>,
    /// startDate: the job is not claimed before.
    pub not_before: Option<Timestamp>,
    /// Attempts before the job fails for good (the source's retry policy).
    pub max_attempts: u32,
}

/// What an item does to the assignments.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// A new pending assignment. `supersedes`: the identity's failed grant of the same
    /// item, which ends (`removed`): the new grant carries what it half provisioned.
    Grant { supersedes: Option<i64> },
    /// A duplicate grant: the live assignment's removeDate becomes this one (or none).
    SetRemoveDate {
        assignment: i64,
        remove_at: Option<Timestamp>,
    },
    /// Revoke now; the live assignment (if any) goes to `revoking`.
    Revoke { assignment: Option<i64> },
    /// Revoke at `remove_at` (a REVOKE with removeDate).
    ScheduleRemoval {
        assignment: i64,
        remove_at: Timestamp,
    },
    /// Nothing to do (revoking, at a date, what the identity does not hold).
    Nothing,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PlannedItem {
    pub identity: String,
    pub item: ValidItem,
    pub name: String,
    /// `Some((assignment, request))` when the item duplicates a live assignment.
    pub existing: Option<(i64, String)>,
    pub entitlements: Vec<Granted>,
    pub effect: Effect,
    /// Indexes into [`Plan::jobs`] of the jobs that carry this item's operations.
    pub jobs: Vec<usize>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Plan {
    pub items: Vec<PlannedItem>,
    pub jobs: Vec<PlannedJob>,
}
