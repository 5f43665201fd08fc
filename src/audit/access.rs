//! `provd access list` / `GET /access/v1`: what each identity holds now, one row per item
//! and source; and `provd access removals`: the removals removeDates caused, how late.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use crate::clock::rfc3339_ms;
use crate::config::{Catalog, ItemType};
use crate::model::Granted;
use crate::store::audit::{Holding, RemovalRow};
use crate::store::rules::AssignmentState;

/// One item an identity holds (or is getting, or is losing) on one source.
#[derive(Debug, Clone, PartialEq)]
pub struct AccessRow {
    pub identity: String,
    pub item_type: String,
    pub item_id: String,
    /// The catalog's display name and description of the item.
    pub item_name: String,
    pub item_description: Option<String>,
    pub source: String,
    /// The identity's account on the source, when provd knows its native id.
    pub account: Option<String>,
    /// The values granted there (group DNs, role names …).
    pub values: Vec<String>,
    /// `pending`, `active`, `failed`, `removal_scheduled`, `removing` or `gone`, on this
    /// source ([`state`]).
    pub state: &'static str,
    /// The account's state there as provd last left it: `enabled` or `disabled` (None:
    /// no account known there).
    pub account_state: Option<&'static str>,
    /// Pending: since requested; active: since granted.
    pub since: i64,
    /// The removeDate, if one is set.
    pub until: Option<i64>,
    pub request_id: String,
    pub requester: String,
}

/// The holding's state on `source` (DESIGN §21): a removal under way is `removing` there
/// until its revoke job there succeeds (`gone`); `removal_scheduled` once a removeDate is
/// set; else as the grant's job there went: `active` once it succeeded
/// (whatever the grant's other sources did: issue 33, finding 5), `failed`, or `pending`;
/// a source the grant had no job on (all of it held already) goes with the grant.
pub fn state(h: &Holding, source: &str) -> &'static str {
    let scheduled = h.remove_at.is_some();
    match (h.state, h.job_on(source).as_deref()) {
        (AssignmentState::Revoking, _) => match h.revoke_on(source).as_deref() {
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

/// Whether holding `h` (which granted `granted`) gives `item`: it is that item, or the
/// item is part of it (an access profile of a role, an entitlement of either, as the
/// catalog says or as it was granted). Asking by a role, an access profile or an
/// entitlement so finds the same people (DESIGN §21; issue 33 finding 4).
pub fn gives(h: &Holding, granted: &[Granted], item: &str, catalog: &Catalog) -> bool {
    h.item_id == item
        || ItemType::parse(&h.item_type)
            .is_some_and(|ty| catalog.closure(ty, &h.item_id).contains(item))
        || granted.iter().any(|g| g.id == item)
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
    .chain(std::iter::once(item.to_string()))
    .collect()
}

/// Holdings as rows, one per source each touches; with `source`, only that source's;
/// with `item`, only the holdings that give it ([`gives`]), showing of a larger item only
/// what `item` grants. An item with nothing to provision (all of it already held) shows
/// once, source `-`.
pub fn rows(
    holdings: &[Holding],
    source: Option<&str>,
    item: Option<&str>,
    catalog: &Catalog,
) -> Vec<AccessRow> {
    let mut out = Vec::new();
    let wanted = item.map(|i| entitlements_in(catalog, i));
    for h in holdings {
        let mut granted: Vec<Granted> = serde_json::from_str(&h.entitlements).unwrap_or_default();
        if let Some(i) = item {
            if !gives(h, &granted, i, catalog) {
                continue;
            }
            if h.item_id != i
                && let Some(w) = &wanted
            {
                granted.retain(|g| w.contains(&g.id));
            }
        }
        let accounts: BTreeMap<String, String> = h
            .accounts
            .as_deref()
            .and_then(|a| serde_json::from_str(a).ok())
            .unwrap_or_default();
        let mut by_source: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for g in &granted {
            by_source
                .entry(g.source.as_str())
                .or_default()
                .push(g.value.clone());
        }
        if by_source.is_empty() {
            by_source.insert("-", Vec::new());
        }
        let since = match h.state {
            AssignmentState::Pending => h.created_at,
            _ => h.active_at.unwrap_or(h.created_at),
        };
        let (item_name, item_description) = catalog.describe(&h.item_type, &h.item_id);
        for (src, values) in by_source {
            if source.is_some_and(|s| s != src) {
                continue;
            }
            out.push(AccessRow {
                identity: h.identity.clone(),
                item_type: h.item_type.clone(),
                item_id: h.item_id.clone(),
                item_name: item_name.clone(),
                item_description: item_description.map(str::to_string),
                source: src.to_string(),
                account: accounts.get(src).cloned(),
                account_state: accounts
                    .contains_key(src)
                    .then(|| match h.account_disabled(src) {
                        Some(true) => "disabled",
                        _ => "enabled",
                    }),
                values,
                state: state(h, src),
                since,
                until: h.remove_at,
                request_id: h.request_id.clone(),
                requester: h.requester.clone(),
            });
        }
    }
    out
}

pub const COLUMNS: [&str; 14] = [
    "identity",
    "item_type",
    "item_id",
    "source",
    "account",
    "values",
    "state",
    "since",
    "until",
    "request_id",
    "requester",
    "item_name",
    "item_description",
    "account_state",
];

pub fn cells(r: &AccessRow) -> Vec<String> {
    vec![
        r.identity.clone(),
        r.item_type.clone(),
        r.item_id.clone(),
        r.source.clone(),
        r.account.clone().unwrap_or_default(),
        r.values.join(";"),
        r.state.to_string(),
        rfc3339_ms(r.since),
        r.until.map(rfc3339_ms).unwrap_or_default(),
        r.request_id.clone(),
        r.requester.clone(),
        r.item_name.clone(),
        r.item_description.clone().unwrap_or_default(),
        r.account_state.unwrap_or_default().to_string(),
    ]
}

pub fn to_json(r: &AccessRow) -> Value {
    json!({
        "identity": r.identity,
        "itemType": r.item_type,
        "itemId": r.item_id,
        "itemName": r.item_name,
        "itemDescription": r.item_description,
        "source": r.source,
        "account": r.account,
        "accountState": r.account_state,
        "values": r.values,
        "state": r.state,
        "since": rfc3339_ms(r.since),
        "until": r.until.map(rfc3339_ms),
        "requestId": r.request_id,
        "requester": r.requester,
    })
}

/// What became of a removal: `done` (the revoke succeeded), `in_progress`, `failed`,
/// `not_planned` (fired, revoke not written yet) or `superseded` (granted again before
/// the revoke was planned).
pub fn outcome(r: &RemovalRow) -> &'static str {
    match &r.revoke_request {
        // Granted again before the revoke was planned.
        None if r.state.is_live() || r.state == AssignmentState::Removed => "superseded",
        None => "not_planned",
        Some(_) if r.jobs_failed > 0 => "failed",
        Some(_) if r.jobs_ended == r.jobs => "done",
        Some(_) => "in_progress",
    }
}

/// When the access was gone: the revoke's last job end (a revoke with nothing to do on
/// any source is done when it fired).
pub fn done_at(r: &RemovalRow) -> Option<i64> {
    match outcome(r) {
        "done" => r.done_at.or(Some(r.fired_at)),
        _ => None,
    }
}

pub const REMOVAL_COLUMNS: [&str; 11] = [
    "identity",
    "item_type",
    "item_id",
    "due",
    "fired",
    "done",
    "late_ms",
    "outcome",
    "grant_request_id",
    "revoke_request_id",
    "assignment",
];

pub fn removal_cells(r: &RemovalRow) -> Vec<String> {
    let done = done_at(r);
    vec![
        r.identity.clone(),
        r.item_type.clone(),
        r.item_id.clone(),
        rfc3339_ms(r.due_at),
        rfc3339_ms(r.fired_at),
        done.map(rfc3339_ms).unwrap_or_default(),
        done.map(|d| (d - r.due_at).to_string()).unwrap_or_default(),
        outcome(r).to_string(),
        r.grant_request.clone(),
        r.revoke_request.clone().unwrap_or_default(),
        r.assignment.to_string(),
    ]
}

pub fn removal_json(r: &RemovalRow) -> Value {
    let done = done_at(r);
    json!({
        "identity": r.identity,
        "itemType": r.item_type,
        "itemId": r.item_id,
        "due": rfc3339_ms(r.due_at),
        "fired": rfc3339_ms(r.fired_at),
        "done": done.map(rfc3339_ms),
        "lateMs": done.map(|d| d - r.due_at),
        "outcome": outcome(r),
        "grantRequestId": r.grant_request,
        "revokeRequestId": r.revoke_request,
        "assignment": r.assignment,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Catalog;

    fn holding(state: &str, remove_at: Option<i64>) -> Holding {
        Holding {
            assignment: 1,
            identity: "ada".into(),
            item_type: "ROLE".into(),
            item_id: "eng".into(),
            state: state.parse().unwrap(),
            request_id: "r1".into(),
            requester: "ci-bot".into(),
            created_at: 10,
            active_at: (state != "pending").then_some(20),
            remove_at,
            entitlements: r#"[{"id":"vpn","source":"corp","attribute":"groups","value":"cn=vpn"},
                {"id":"wiki","source":"wiki","attribute":"role","value":"editor"},
                {"id":"vpn2","source":"corp","attribute":"groups","value":"cn=vpn2"}]"#
                .into(),
            accounts: Some(r#"{"corp":"uid=ada,ou=people"}"#.into()),
            jobs: None,
            revoke_jobs: None,
            disabled: Some(r#"{"corp":1}"#.into()),
        }
    }

    #[test]
    fn one_row_per_source_with_its_values_and_the_state_an_auditor_reads() {
        let rows = rows(&[holding("active", None)], None, None, &Catalog::default());
        assert!(
            super::rows(
                &[holding("active", None)],
                None,
                Some("other"),
                &Catalog::default()
            )
            .is_empty()
        );
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].source, "corp");
        assert_eq!(rows[0].values, vec!["cn=vpn", "cn=vpn2"]);
        assert_eq!(rows[0].account.as_deref(), Some("uid=ada,ou=people"));
        assert_eq!(rows[1].account, None);
        assert_eq!((rows[0].state, rows[0].since), ("active", 20));
        assert_eq!(rows[0].requester, "ci-bot");
        // A leaver's rows say what became of the account provd disabled.
        let corp = rows.iter().find(|r| r.source == "corp").unwrap();
        assert_eq!(corp.account_state, Some("disabled"));
        let wiki = rows.iter().find(|r| r.source == "wiki").unwrap();
        assert_eq!(wiki.account_state, None, "no account known there");
        let only = super::rows(
            &[holding("active", None)],
            Some("wiki"),
            Some("eng"),
            &Catalog::default(),
        );
        assert_eq!(only.len(), 1);
        assert_eq!(state(&holding("pending", Some(5)), "corp"), "pending");
        assert_eq!(
            state(&holding("active", Some(5)), "corp"),
            "removal_scheduled"
        );
        let mut revoking = holding("revoking", None);
        assert_eq!(state(&revoking, "corp"), "removing");
        // Two revokes, the first canceled: the later one's job counts.
        revoking.revoke_jobs = Some(r#"{"corp":"canceled","corp":"succeeded"}"#.into());
        assert_eq!(state(&revoking, "corp"), "gone");
        assert_eq!(state(&revoking, "wiki"), "removing");
        let pending = super::rows(&[holding("pending", None)], None, None, &Catalog::default());
        assert_eq!(pending[0].since, 10);
        let csv = cells(&rows[0]);
        assert_eq!(csv.len(), COLUMNS.len());
        let values = COLUMNS.iter().position(|c| *c == "values").unwrap();
        assert_eq!(csv[values], "cn=vpn;cn=vpn2");
    }

    /// Issue 33 finding 4: "who has vpn?" found only those granted `vpn` itself, never
    /// those who got it through a role or an access profile.
    #[test]
    fn asking_by_a_role_a_profile_or_an_entitlement_finds_the_same_people() {
        let file: crate::config::files::CatalogFile = toml::from_str(
            r#"
            [[entitlement]]
            id = "vpn"
            source = "corp"
            attribute = "groups"
            value = "cn=vpn"
            [[entitlement]]
            id = "wiki"
            source = "wiki"
            attribute = "role"
            value = "editor"
            [[access_profile]]
            id = "ap-remote"
            entitlements = ["vpn"]
            [[role]]
            id = "eng"
            access_profiles = ["ap-remote"]
            entitlements = ["wiki"]
            "#,
        )
        .unwrap();
        let sources = BTreeSet::from(["corp".to_string(), "wiki".to_string()]);
        let (catalog, problems) = Catalog::build(file, &sources);
        assert!(problems.is_empty(), "{problems:?}");
        let held = [holding("active", None)];
        for item in ["eng", "ap-remote", "vpn", "wiki"] {
            let found = rows(&held, None, Some(item), &catalog);
            assert!(!found.is_empty(), "asking by {item} finds ada");
            assert!(found.iter().all(|r| r.identity == "ada"));
        }
        // Asked by an entitlement, a role's row shows that entitlement, not the rest.
        let vpn = rows(&held, None, Some("vpn"), &catalog);
        assert_eq!(vpn.len(), 1);
        assert_eq!(
            (vpn[0].source.as_str(), vpn[0].item_id.as_str()),
            ("corp", "eng")
        );
        assert_eq!(vpn[0].values, vec!["cn=vpn"]);
        assert!(rows(&held, None, Some("nothing"), &catalog).is_empty());
    }

    #[test]
    fn a_removal_is_late_by_its_revoke_end_minus_its_due_time() {
        let mut r = RemovalRow {
            assignment: 3,
            identity: "ada".into(),
            item_type: "ENTITLEMENT".into(),
            item_id: "vpn".into(),
            due_at: 1_000,
            fired_at: 1_020,
            grant_request: "g".into(),
            revoke_request: Some("v".into()),
            jobs: 1,
            jobs_ended: 1,
            jobs_failed: 0,
            done_at: Some(1_500),
            state: AssignmentState::Removed,
        };
        assert_eq!(outcome(&r), "done");
        assert_eq!(removal_json(&r)["lateMs"], 500);
        r.jobs_ended = 0;
        assert_eq!(outcome(&r), "in_progress");
        assert_eq!(removal_json(&r)["lateMs"], Value::Null);
        r.jobs_failed = 1;
        assert_eq!(outcome(&r), "failed");
        r.revoke_request = None;
        r.state = AssignmentState::Revoking;
        assert_eq!(outcome(&r), "not_planned");
        r.state = AssignmentState::Active;
        assert_eq!(outcome(&r), "superseded");
        assert_eq!(removal_cells(&r).len(), REMOVAL_COLUMNS.len());
    }
}
