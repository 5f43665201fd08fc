//! Planning: what a valid request means for each (identity, source). Pure: the caller
//! reads a [`Snapshot`] of what the identities hold and writes the [`Plan`] back, both
//! inside one store transaction.
//!
//! - Roles and access profiles expand to entitlements; one job per (identity, source,
//!   startDate), its operations in order: create the account (if the identity has none
//!   there), then add each entitlement.
//! - A GRANT for an item the identity already holds or has pending is a duplicate: not
//!   provisioned again, reported under `existingRequests`, its removeDate replacing the
//!   scheduled one.
//! - A REVOKE removes only what no other live assignment of the identity still grants
//!   (reference counting); with a removeDate it schedules the removal instead.

use std::collections::{BTreeMap, BTreeSet};

use jiff::Timestamp;
use provd_connector_core::{Entitlement, Operation};
use serde::{Deserialize, Serialize};

use crate::config::{Catalog, ItemType, SourceRules};
use crate::intake::validate::{RequestType, ValidItem, ValidRequest};

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
    fn entitlement(&self) -> Entitlement {
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
}

/// What an item does to the assignments.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// A new pending assignment.
    Grant,
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

fn granted(catalog: &Catalog, ty: ItemType, id: &str) -> Vec<Granted> {
    catalog
        .expand(ty, id)
        .into_iter()
        .map(|e| Granted {
            id: e.id.clone(),
            source: e.source.clone(),
            attribute: e.attribute.clone(),
            value: e.value.clone(),
        })
        .collect()
}

/// Collects operations per job key while keeping the first-seen order of jobs.
#[derive(Default)]
struct JobBuilder {
    jobs: Vec<PlannedJob>,
    index: BTreeMap<(String, String, Option<Timestamp>), usize>,
}

impl JobBuilder {
    fn job(
        &mut self,
        identity: &str,
        source: &str,
        kind: JobKind,
        not_before: Option<Timestamp>,
    ) -> usize {
        let key = (identity.to_string(), source.to_string(), not_before);
        *self.index.entry(key).or_insert_with(|| {
            self.jobs.push(PlannedJob {
                identity: identity.to_string(),
                source: source.to_string(),
                kind,
                ops: Vec::new(),
                not_before,
            });
            self.jobs.len() - 1
        })
    }

    fn push(&mut self, job: usize, op: Operation) {
        if let Some(j) = self.jobs.get_mut(job)
            && !j.ops.contains(&op)
        {
            j.ops.push(op);
        }
    }
}

/// `rules.disable_on_last`: sources where removing an identity's last entitlement is done
/// by disabling the account instead (a manual source's owner gets one DISABLE_ACCOUNT
/// task). `rules.enable_after_create`: sources whose new accounts are enabled by an
/// ENABLE_ACCOUNT right after the CREATE_ACCOUNT.
pub fn plan(
    req: &ValidRequest,
    catalog: &Catalog,
    snapshot: &Snapshot,
    rules: &SourceRules,
) -> Plan {
    let disable_on_last = &rules.disable_on_last;
    let mut jobs = JobBuilder::default();
    let mut items = Vec::new();
    let mut accounts = snapshot.accounts.clone();
    for identity in &req.requested_for {
        let live: Vec<&LiveAssignment> = snapshot
            .assignments
            .iter()
            .filter(|a| &a.identity == identity)
            .collect();
        // Items this request revokes do not keep their entitlements alive.
        let revoked_here: BTreeSet<(ItemType, &str)> = match req.request_type {
            RequestType::Revoke => req
                .items
                .iter()
                .filter(|i| i.remove_at.is_none())
                .map(|i| (i.ty, i.id.as_str()))
                .collect(),
            RequestType::Grant => BTreeSet::new(),
        };
        for item in &req.items {
            let holding = live
                .iter()
                .find(|a| a.ty == item.ty && a.item_id == item.id);
            let mut planned = PlannedItem {
                identity: identity.clone(),
                item: item.clone(),
                name: catalog.name(item.ty, &item.id),
                existing: holding.map(|a| (a.id, a.request_id.clone())),
                entitlements: Vec::new(),
                effect: Effect::Nothing,
                jobs: Vec::new(),
            };
            match req.request_type {
                RequestType::Grant => {
                    if let Some(a) = holding {
                        planned.entitlements = a.entitlements.clone();
                        planned.effect = Effect::SetRemoveDate {
                            assignment: a.id,
                            remove_at: item.remove_at,
                        };
                    } else {
                        planned.entitlements = granted(catalog, item.ty, &item.id);
                        planned.effect = Effect::Grant;
                        // Entitlements another assignment has already provisioned need no
                        // new operation (a manual source's owner would get a pointless task).
                        let active: BTreeSet<&Granted> = live
                            .iter()
                            .filter(|a| a.state == AssignmentState::Active)
                            .flat_map(|a| a.entitlements.iter())
                            .collect();
                        for g in planned.entitlements.iter().filter(|g| !active.contains(g)) {
                            let j = jobs.job(identity, &g.source, JobKind::Grant, item.start_at);
                            if accounts.insert((identity.clone(), g.source.clone())) {
                                jobs.push(j, Operation::CreateAccount);
                                if rules.enable_after_create.contains(&g.source) {
                                    jobs.push(j, Operation::EnableAccount);
                                }
                            }
                            jobs.push(j, Operation::AddEntitlement(g.entitlement()));
                            if !planned.jobs.contains(&j) {
                                planned.jobs.push(j);
                            }
                        }
                    }
                }
                RequestType::Revoke => {
                    planned.existing = None;
                    match (item.remove_at, holding) {
                        (Some(at), Some(a)) => {
                            planned.entitlements = a.entitlements.clone();
                            planned.effect = Effect::ScheduleRemoval {
                                assignment: a.id,
                                remove_at: at,
                            };
                        }
                        (Some(_), None) => planned.effect = Effect::Nothing,
                        (None, _) => {
                            planned.entitlements = holding
                                .map(|a| a.entitlements.clone())
                                .unwrap_or_else(|| granted(catalog, item.ty, &item.id));
                            planned.effect = Effect::Revoke {
                                assignment: holding.map(|a| a.id),
                            };
                            let kept: BTreeSet<&Granted> = live
                                .iter()
                                .filter(|a| !revoked_here.contains(&(a.ty, a.item_id.as_str())))
                                .flat_map(|a| a.entitlements.iter())
                                .collect();
                            for g in planned.entitlements.iter().filter(|g| !kept.contains(g)) {
                                let j = jobs.job(identity, &g.source, JobKind::Revoke, None);
                                jobs.push(j, Operation::RemoveEntitlement(g.entitlement()));
                                if !planned.jobs.contains(&j) {
                                    planned.jobs.push(j);
                                }
                            }
                        }
                    }
                }
            }
            items.push(planned);
        }
        if req.request_type == RequestType::Revoke && !disable_on_last.is_empty() {
            let kept: BTreeSet<&str> = live
                .iter()
                .filter(|a| !revoked_here.contains(&(a.ty, a.item_id.as_str())))
                .flat_map(|a| a.entitlements.iter().map(|g| g.source.as_str()))
                .collect();
            // "Last removal" means the last value provd had granted there goes now: a
            // revoke of something the identity never held removes nothing provd granted,
            // so it must not disable an account (its values are still removed, in case
            // they were given by hand).
            let ending: BTreeSet<&str> = live
                .iter()
                .filter(|a| revoked_here.contains(&(a.ty, a.item_id.as_str())))
                .flat_map(|a| a.entitlements.iter().map(|g| g.source.as_str()))
                .collect();
            for job in jobs.jobs.iter_mut().filter(|j| &j.identity == identity) {
                let source = job.source.as_str();
                if disable_on_last.contains(source)
                    && ending.contains(source)
                    && !kept.contains(source)
                {
                    job.ops = vec![Operation::DisableAccount];
                }
            }
        }
    }
    Plan {
        items,
        jobs: jobs.jobs,
    }
}

#[cfg(test)]
mod tests;
