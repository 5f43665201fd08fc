//! One model of who holds what (DESIGN §21). The store keeps the grants — what is wanted,
//! through which item, since and until when — with the outcome of each operation provd
//! ran for them. This stage derives from them, in one place, every **holding**: one
//! entitlement value an identity has on one source, with every grant that wants it
//! (`via`) and one state. The access list, "who has X", drift and the evidence checks all
//! read it, so that none keeps its own idea of what a role-granted, half-failed or
//! half-removed value is (issue 33, findings 4–6).

use std::collections::{BTreeMap, BTreeSet};

use crate::config::{Catalog, ItemType};
use crate::model::Granted;
use crate::store::audit::Holding as Grant;
use crate::store::rules::AssignmentState;

/// An item that wants a holding: the role, access profile or entitlement a grant was for.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Via {
    pub item_type: String,
    pub item_id: String,
}

impl std::fmt::Display for Via {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.item_type, self.item_id)
    }
}

/// One entitlement value an identity holds, is getting or is losing on one source.
#[derive(Debug, Clone, PartialEq)]
pub struct Held {
    pub identity: String,
    /// The source, or `-` for a grant of an item with nothing to provision.
    pub source: String,
    /// The catalog entitlement the value is (for an item with nothing to provision: that
    /// item).
    pub item_type: String,
    pub item_id: String,
    pub attribute: String,
    /// The native value (group DN, role name …); empty for source `-`.
    pub value: String,
    /// The identity's account on the source, when provd knows its native id.
    pub account: Option<String>,
    /// `enabled` or `disabled`, as provd last left the account (None: no account known).
    pub account_state: Option<&'static str>,
    /// `pending`, `active`, `failed`, `removal_scheduled`, `removing` or `gone` ([`derive`]).
    pub state: &'static str,
    /// The items that want it (for `removing`/`gone`: the items being removed).
    pub via: Vec<Via>,
    /// Pending: since first requested; else since first granted.
    pub since: i64,
    /// The removeDate that ends it, when every grant that wants it has one.
    pub until: Option<i64>,
    /// The grant the state comes from (the earliest that holds it), and who asked for it.
    pub request_id: String,
    pub requester: String,
    /// The seen side (DESIGN §21): when provd last saw the value on the source, and by
    /// what. Here the latest job of a grant wanting it that succeeded there; a later
    /// evidence snapshot that shows it supersedes that ([`Held::see`]).
    pub seen: Option<Seen>,
}

/// When and by which evidence a holding was seen on its source.
#[derive(Debug, Clone, PartialEq)]
pub struct Seen {
    pub at: i64,
    /// `job N` (a connector's result, or a manual job's tasks answered), `export #N` or
    /// `read-back #N` (an evidence snapshot).
    pub by: String,
}

impl Held {
    /// Provisioned: seen done on the source and still wanted. Only those can be missing.
    pub fn is_held(&self) -> bool {
        matches!(self.state, "active" | "removal_scheduled")
    }

    /// An evidence snapshot (`kind` `import` or `readback`, id, as of) showed the value
    /// on the holding's account: it is the seen side now unless something newer is.
    pub fn see(&mut self, kind: &str, snapshot: i64, as_of: i64) {
        if self.seen.as_ref().is_some_and(|s| s.at >= as_of) {
            return;
        }
        let by = match kind {
            "import" => format!("export #{snapshot}"),
            _ => format!("read-back #{snapshot}"),
        };
        self.seen = Some(Seen { at: as_of, by });
    }
}

/// A grant's state on `source`: a removal under way is `removing` there until its revoke
/// job there succeeds (`gone`); `removal_scheduled` once a removeDate is set; else as the
/// grant's job there went: `active` once it succeeded (whatever the grant's other sources
/// did: issue 33, finding 5), `failed`, or `pending`; a source the grant had no job on
/// (all of it held already) goes with the grant.
pub fn grant_state(g: &Grant, source: &str) -> &'static str {
    let scheduled = g.remove_at.is_some();
    match (g.state, g.job_on(source).as_deref()) {
        (AssignmentState::Revoking, _) => match g.revoke_on(source).as_deref() {
            Some("succeeded") => "gone",
            _ => "removing",
        },
        (_, Some("succeeded")) | (AssignmentState::Active, None) if scheduled => {
            "removal_scheduled"
        }
        (_, Some("succeeded")) | (AssignmentState::Active, None) => "active",
        (_, Some("failed" | "canceled")) | (AssignmentState::Failed, None) => "failed",
        _ => "pending",
    }
}

/// Every holding the grants make, in (identity, source, value) order. Several grants
/// wanting one value make one holding: held when any of them holds it (`active`, or
/// `removal_scheduled` when each that wants it ends at a removeDate: `until` is the
/// latest), else `pending` while any is under way, else `failed`; once none wants it,
/// `removing` until every removal of it succeeded, then `gone`.
pub fn derive(grants: &[Grant]) -> Vec<Held> {
    let mut by_value: BTreeMap<(String, String, String, String), Vec<Reason<'_>>> = BTreeMap::new();
    for g in grants {
        let mut values: Vec<Granted> = serde_json::from_str(&g.entitlements).unwrap_or_default();
        if values.is_empty() {
            values.push(Granted {
                id: g.item_id.clone(),
                source: "-".into(),
                attribute: String::new(),
                value: String::new(),
            });
        }
        for v in values {
            let key = (
                g.identity.clone(),
                v.source.clone(),
                v.attribute.clone(),
                v.value.clone(),
            );
            let state = match grant_state(g, &v.source) {
                "removing" if g.regranted_on(&v.source, &v.attribute, &v.value) => "gone",
                s => s,
            };
            by_value.entry(key).or_default().push((g, state, v));
        }
    }
    by_value
        .into_values()
        .filter_map(|reasons| combine(&reasons))
        .collect()
}

/// A grant that wants a value, with its state on the value's source.
type Reason<'a> = (&'a Grant, &'static str, Granted);

fn combine(reasons: &[Reason<'_>]) -> Option<Held> {
    let live: Vec<&Reason> = reasons
        .iter()
        .filter(|r| !matches!(r.1, "removing" | "gone"))
        .collect();
    let held: Vec<&Reason> = live
        .iter()
        .copied()
        .filter(|r| matches!(r.1, "active" | "removal_scheduled"))
        .collect();
    let undated = live.iter().any(|r| r.0.remove_at.is_none());
    let (state, wanting): (&'static str, Vec<&Reason>) = if !held.is_empty() {
        let state = if undated {
            "active"
        } else {
            "removal_scheduled"
        };
        (state, live.clone())
    } else if !live.is_empty() {
        let pending = live.iter().any(|r| r.1 == "pending");
        (if pending { "pending" } else { "failed" }, live.clone())
    } else {
        let removing = reasons.iter().any(|r| r.1 == "removing");
        (
            if removing { "removing" } else { "gone" },
            reasons.iter().collect(),
        )
    };
    // The grant that holds it (the earliest), else the earliest that wants it.
    let from: &Reason = held.first().or(wanting.first()).copied()?;
    let (grant, value) = (from.0, &from.2);
    let until = match state {
        "removing" | "gone" => grant.remove_at,
        _ if undated => None,
        _ => live.iter().filter_map(|r| r.0.remove_at).max(),
    };
    let since = match state {
        "active" | "removal_scheduled" => held
            .iter()
            .map(|r| r.0.active_at.unwrap_or(r.0.created_at))
            .min(),
        _ => wanting.iter().map(|r| r.0.created_at).min(),
    }
    .unwrap_or(grant.created_at);
    let via: BTreeSet<Via> = wanting
        .iter()
        .map(|r| Via {
            item_type: r.0.item_type.clone(),
            item_id: r.0.item_id.clone(),
        })
        .collect();
    let accounts: BTreeMap<String, String> = grant
        .accounts
        .as_deref()
        .and_then(|a| serde_json::from_str(a).ok())
        .unwrap_or_default();
    let account = accounts.get(&value.source).cloned();
    let nothing = value.source == "-";
    let seen = held
        .iter()
        .filter_map(|r| {
            let (job, at) = r.0.done_on(&value.source)?;
            Some(Seen {
                at: at?,
                by: format!("job {job}"),
            })
        })
        .max_by_key(|s| s.at);
    Some(Held {
        identity: grant.identity.clone(),
        source: value.source.clone(),
        item_type: if nothing {
            grant.item_type.clone()
        } else {
            "ENTITLEMENT".into()
        },
        item_id: value.id.clone(),
        attribute: value.attribute.clone(),
        value: value.value.clone(),
        account_state: account
            .as_ref()
            .map(|_| match grant.account_disabled(&value.source) {
                Some(true) => "disabled",
                _ => "enabled",
            }),
        account,
        state,
        via: via.into_iter().collect(),
        since,
        until,
        request_id: grant.request_id.clone(),
        requester: grant.requester.clone(),
        seen,
    })
}

/// Whether holding `h` gives `item`: it is that entitlement, or an item that wants it
/// contains `item` (a role's access profile, say) and `item` grants this value. Asking by
/// a role, an access profile or an entitlement so finds the same people (DESIGN §21;
/// issue 33, finding 4).
pub fn gives(h: &Held, item: &str, catalog: &Catalog) -> bool {
    // Granted through `item` itself: whatever the catalog says of it now.
    if h.item_id == item || h.via.iter().any(|v| v.item_id == item) {
        return true;
    }
    // Through a larger item that contains `item`: the values `item` grants.
    let within = |v: &Via| {
        ItemType::parse(&v.item_type)
            .is_some_and(|ty| catalog.closure(ty, &v.item_id).contains(item))
    };
    h.via.iter().any(within) && entitlements_in(catalog, item).contains(&h.item_id)
}

/// The entitlements `item` grants (whatever kind of item it is), by id.
fn entitlements_in(catalog: &Catalog, item: &str) -> BTreeSet<String> {
    [
        ItemType::Entitlement,
        ItemType::AccessProfile,
        ItemType::Role,
    ]
    .into_iter()
    .flat_map(|ty| catalog.expand(ty, item))
    .map(|e| e.id.clone())
    .collect()
}

#[cfg(test)]
mod tests;
