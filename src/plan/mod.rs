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
//! - A failed grant still holds what its jobs did provision (the snapshot gives only
//!   those values): they count as held for both rules above, and a revoke of its item
//!   takes them. A new grant of its item supersedes it.
//! - A lifecycle change's account operations (enable, disable, delete) go to the sources
//!   where the identity has an account.

use std::collections::{BTreeMap, BTreeSet};

use jiff::Timestamp;
use provd_connector_core::Operation;

use crate::config::{Catalog, ItemType, SourceRules};
use crate::model::{RequestType, ValidRequest};

pub use crate::model::{
    AssignmentState, Effect, Granted, JobKind, LiveAssignment, Plan, PlannedItem, PlannedJob,
    Snapshot,
};

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
                max_attempts: crate::model::RetryPolicy::default().max_attempts,
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
            let same = |a: &&&LiveAssignment| a.ty == item.ty && a.item_id == item.id;
            let failed = live
                .iter()
                .find(|a| a.state == AssignmentState::Failed && same(a));
            let holding = live
                .iter()
                .find(|a| a.state != AssignmentState::Failed && same(a));
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
                        planned.effect = Effect::Grant {
                            supersedes: failed.map(|a| a.id),
                        };
                        // Entitlements another assignment has already provisioned need no
                        // new operation (a manual source's owner would get a pointless task).
                        let active: BTreeSet<&Granted> = live
                            .iter()
                            .filter(|a| a.state != AssignmentState::Pending)
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
                    let holding = holding.or(failed);
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
        // A lifecycle change's account operations, on the sources where the identity has
        // an account: after whatever the items remove there (a disable comes last).
        // Only accounts that existed before this request: one it creates is made as the
        // source makes accounts.
        for (source, op) in &req.account_ops {
            if !snapshot
                .accounts
                .contains(&(identity.clone(), source.clone()))
            {
                continue;
            }
            let kind = match op {
                Operation::EnableAccount
                | Operation::UpdateAccount { .. }
                | Operation::ResetPassword => JobKind::Grant,
                _ => JobKind::Revoke,
            };
            let j = jobs.job(identity, source, kind, None);
            // A rehire's account gets a new password before it is usable again (DESIGN
            // §24): the one it had may be known to whoever used it last.
            let reset = *op == Operation::EnableAccount && rules.reset_on_rehire.contains(source);
            for op in reset
                .then_some(&Operation::ResetPassword)
                .into_iter()
                .chain([op])
            {
                if jobs.jobs.get(j).is_some_and(|job| !job.ops.contains(op)) {
                    jobs.push(j, op.clone());
                }
            }
        }
        for (source, op) in &req.repairs {
            let j = jobs.job(identity, source, JobKind::Grant, None);
            if jobs.jobs.get(j).is_some_and(|job| !job.ops.contains(op)) {
                jobs.push(j, op.clone());
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
