//! `provd access list` / `GET /access/v1`: what each identity holds now, one row per item
//! and source; and `provd access removals`: the removals removeDates caused, how late.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use crate::clock::rfc3339_ms;
use crate::config::Catalog;
use crate::evidence::export::Seen;
use crate::holdings::gives;
use crate::model::Granted;
use crate::store::audit::{Holding, RemovalRow};
use crate::store::evidence::SnapshotMeta;
use crate::store::rules::AssignmentState;
use crate::store::{Store, StoreError};

/// One holding (DESIGN §21): an entitlement value an identity holds, is getting or is
/// losing on one source, with the items that want it.
#[derive(Debug, Clone, PartialEq)]
pub struct AccessRow {
    pub identity: String,
    /// The entitlement (for a grant with nothing to provision: the item granted).
    pub item_type: String,
    pub item_id: String,
    /// The catalog's display name and description of the item.
    pub item_name: String,
    pub item_description: Option<String>,
    pub source: String,
    /// The identity's account on the source, when provd knows its native id.
    pub account: Option<String>,
    /// The value held there (group DN, role name …): one, or none for source `-`.
    pub values: Vec<String>,
    /// `pending`, `active`, `failed`, `removal_scheduled`, `removing` or `gone`
    /// ([`crate::holdings::derive`]).
    pub state: &'static str,
    /// The account's state there as provd last left it: `enabled` or `disabled` (None:
    /// no account known there).
    pub account_state: Option<&'static str>,
    /// Pending: since requested; active: since granted.
    pub since: i64,
    /// The removeDate, if one ends it.
    pub until: Option<i64>,
    pub request_id: String,
    pub requester: String,
    /// The items that want it, `TYPE:id` (a role, an access profile, the entitlement).
    pub via: Vec<String>,
    /// When provd last saw it on the source, and by what (`job N`, `export #N`,
    /// `read-back #N`): the seen side of DESIGN §21.
    pub seen_at: Option<i64>,
    pub seen_by: Option<String>,
}

/// The latest evidence snapshot of each source, with the accounts it showed.
pub type Evidence = BTreeMap<String, (SnapshotMeta, BTreeMap<String, Seen>)>;

/// The latest evidence snapshot of each source `grants` have values on (none: a source
/// never exported or read back).
pub async fn evidence(store: &Store, grants: &[Holding]) -> Result<Evidence, StoreError> {
    let sources: BTreeSet<String> = grants
        .iter()
        .filter_map(|g| serde_json::from_str::<Vec<Granted>>(&g.entitlements).ok())
        .flatten()
        .map(|v| v.source)
        .collect();
    let mut out = Evidence::new();
    for source in sources {
        if let Some(meta) = store.last_snapshot(source.clone()).await? {
            let seen = crate::evidence::latest(store, &source).await?;
            out.insert(source, (meta, seen));
        }
    }
    Ok(out)
}

/// The holdings of `grants` as rows; with `source`, only that source's; with `item`,
/// only the holdings that give it ([`gives`]): asking by a role, an access profile or an
/// entitlement finds the same people (issue 33, finding 4).
/// `evidence` gives each holding its latest sighting ([`crate::holdings::Held::see`]).
pub fn rows(
    grants: &[Holding],
    evidence: &Evidence,
    source: Option<&str>,
    item: Option<&str>,
    catalog: &Catalog,
) -> Vec<AccessRow> {
    let derived = crate::holdings::derive(grants);
    let nested = nested_rows(&derived, evidence, source, item, catalog);
    derived
        .into_iter()
        .filter(|h| source.is_none_or(|s| s == h.source))
        .filter(|h| item.is_none_or(|i| gives(h, i, catalog)))
        .map(|mut h| {
            let shown = evidence.get(&h.source).and_then(|(meta, accounts)| {
                let row = accounts.get(h.account.as_deref()?)?;
                row.has(&h.attribute, &h.value).then_some(meta)
            });
            if let Some(meta) = shown.filter(|_| h.state != "gone") {
                h.see(&meta.kind, meta.id, meta.as_of);
            }
            let (seen_at, seen_by) = h.seen.take().map(|s| (s.at, s.by)).unzip();
            let (item_name, item_description) = catalog.describe(&h.item_type, &h.item_id);
            AccessRow {
                item_name,
                item_description: item_description.map(str::to_string),
                values: (h.source != "-")
                    .then(|| h.value.clone())
                    .into_iter()
                    .collect(),
                via: h.via.iter().map(ToString::to_string).collect(),
                identity: h.identity,
                item_type: h.item_type,
                item_id: h.item_id,
                source: h.source,
                account: h.account,
                state: h.state,
                account_state: h.account_state,
                since: h.since,
                until: h.until,
                request_id: h.request_id,
                requester: h.requester,
                seen_at,
                seen_by,
            }
        })
        .chain(nested)
        .collect()
}

/// Catalog groups a read-back saw accounts in only through nesting (DESIGN §24): held,
/// `via` `group:DN` (the group the account is directly in), wanted by no grant — provd
/// writes direct membership only. Accounts are named through the holdings that know them.
fn nested_rows(
    derived: &[crate::holdings::Held],
    evidence: &Evidence,
    source: Option<&str>,
    item: Option<&str>,
    catalog: &Catalog,
) -> Vec<AccessRow> {
    let owners: BTreeMap<(&str, &str), &str> = derived
        .iter()
        .filter_map(|h| {
            Some((
                (h.source.as_str(), h.account.as_deref()?),
                h.identity.as_str(),
            ))
        })
        .collect();
    let mut out = Vec::new();
    for (src, (meta, accounts)) in evidence {
        if source.is_some_and(|s| s != src) {
            continue;
        }
        for (key, seen) in accounts {
            let Some(who) = owners.get(&(src.as_str(), key.as_str())) else {
                continue;
            };
            for ((attribute, value), via) in &seen.nested {
                let Some(e) = catalog
                    .entitlements_of(src)
                    .find(|e| e.attribute == *attribute && e.value == *value)
                else {
                    continue;
                };
                if item.is_some_and(|i| i != e.id) {
                    continue;
                }
                let (item_name, item_description) = catalog.describe("ENTITLEMENT", &e.id);
                out.push(AccessRow {
                    identity: who.to_string(),
                    item_type: "ENTITLEMENT".into(),
                    item_id: e.id.clone(),
                    item_name,
                    item_description: item_description.map(str::to_string),
                    source: src.clone(),
                    account: Some(key.clone()),
                    values: vec![value.clone()],
                    state: "active",
                    account_state: None,
                    since: meta.as_of,
                    until: None,
                    request_id: String::new(),
                    requester: String::new(),
                    via: vec![format!("group:{via}")],
                    seen_at: Some(meta.as_of),
                    seen_by: Some(format!("read-back #{}", meta.id)),
                });
            }
        }
    }
    out
}

pub const COLUMNS: [&str; 17] = [
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
    "via",
    "seen_at",
    "seen_by",
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
        r.via.join(";"),
        r.seen_at.map(rfc3339_ms).unwrap_or_default(),
        r.seen_by.clone().unwrap_or_default(),
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
        "via": r.via,
        "seenAt": r.seen_at.map(rfc3339_ms),
        "seenBy": r.seen_by,
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
            done: None,
            after_failed_revoke: None,
        }
    }

    /// The seen side (DESIGN §21): a read-back that showed the value on the account is
    /// when and how it was last seen; a value it did not show keeps its job's sighting.
    #[test]
    fn a_holding_is_seen_by_the_latest_snapshot_that_shows_it() {
        let mut grant = holding("active", None);
        grant.done = Some(r#"{"corp":[4,15],"wiki":[5,16]}"#.into());
        let meta = SnapshotMeta {
            id: 3,
            source: "corp".into(),
            kind: "readback".into(),
            sha256: None,
            rows: 1,
            as_of: 50,
            actor: "agent".into(),
            taken_at: 51,
            status_told: false,
        };
        let ada = Seen {
            key: "uid=ada,ou=people".into(),
            values: [("groups".to_string(), "cn=vpn".to_string())].into(),
            disabled: false,
            nested: Default::default(),
        };
        let evidence =
            Evidence::from([("corp".to_string(), (meta, [(ada.key.clone(), ada)].into()))]);
        let rows = rows(&[grant], &evidence, None, None, &Catalog::default());
        let seen: Vec<_> = rows
            .iter()
            .map(|r| (r.values[0].as_str(), r.seen_at, r.seen_by.as_deref()))
            .collect();
        assert_eq!(
            seen,
            [
                ("cn=vpn", Some(50), Some("read-back #3")),
                ("cn=vpn2", Some(15), Some("job 4")),
                ("editor", Some(16), Some("job 5"))
            ]
        );
        let json = to_json(&rows[0]);
        assert_eq!(json["seenBy"], "read-back #3");
    }

    #[test]
    fn one_row_per_value_with_its_items_and_the_state_an_auditor_reads() {
        let rows = rows(
            &[holding("active", None)],
            &Evidence::new(),
            None,
            None,
            &Catalog::default(),
        );
        assert!(
            super::rows(
                &[holding("active", None)],
                &Evidence::new(),
                None,
                Some("other"),
                &Catalog::default()
            )
            .is_empty()
        );
        assert_eq!(rows.len(), 3);
        let values: Vec<_> = rows
            .iter()
            .map(|r| (r.source.as_str(), r.values.clone()))
            .collect();
        assert_eq!(
            values,
            [
                ("corp", vec!["cn=vpn".to_string()]),
                ("corp", vec!["cn=vpn2".to_string()]),
                ("wiki", vec!["editor".to_string()])
            ]
        );
        assert_eq!(rows[0].account.as_deref(), Some("uid=ada,ou=people"));
        assert_eq!(
            (rows[0].item_type.as_str(), rows[0].item_id.as_str()),
            ("ENTITLEMENT", "vpn")
        );
        assert_eq!(rows[0].via, ["ROLE:eng"]);
        assert_eq!(rows[2].account, None);
        assert_eq!((rows[0].state, rows[0].since), ("active", 20));
        assert_eq!(rows[0].requester, "ci-bot");
        // A leaver's rows say what became of the account provd disabled.
        assert_eq!(rows[0].account_state, Some("disabled"));
        assert_eq!(rows[2].account_state, None, "no account known there");
        let only = super::rows(
            &[holding("active", None)],
            &Evidence::new(),
            Some("wiki"),
            Some("eng"),
            &Catalog::default(),
        );
        assert_eq!(only.len(), 1);
        let pending = super::rows(
            &[holding("pending", None)],
            &Evidence::new(),
            None,
            None,
            &Catalog::default(),
        );
        assert_eq!((pending[0].state, pending[0].since), ("pending", 10));
        let csv = cells(&rows[0]);
        assert_eq!(csv.len(), COLUMNS.len());
        let at = |c: &str| COLUMNS.iter().position(|x| *x == c).unwrap();
        assert_eq!(
            (csv[at("values")].as_str(), csv[at("via")].as_str()),
            ("cn=vpn", "ROLE:eng")
        );
        assert_eq!(to_json(&rows[0])["via"][0], "ROLE:eng");
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
