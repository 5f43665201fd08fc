//! The comparisons evidence rests on (DESIGN §17), pure: does a snapshot show a task's
//! effect, and where does it disagree with what provd granted (drift).

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::export::{ANY, Seen};
use crate::store::tasks::Task;

/// Whether `seen` (the source's accounts by key) shows what `task` asked for. DISABLE and
/// ENABLE need a status column (`has_status`); UPDATE_ACCOUNT and RESET_PASSWORD are
/// never shown. `now`: the
/// key the task's account has now, where a rename done since changed it: the owner may
/// have done both before one export (a retried task answered with a mover's rename, found
/// by the simulation, issue 33), and the export shows the account under its new key.
pub fn shows(
    task: &Task,
    now: Option<&str>,
    seen: &BTreeMap<String, Seen>,
    has_status: bool,
) -> bool {
    let row = seen
        .get(&task.account)
        .or_else(|| now.and_then(|k| seen.get(k)));
    match task.operation.as_str() {
        "CREATE_ACCOUNT" => row.is_some(),
        "ADD_ENTITLEMENT" => row.is_some_and(|r| r.has(&task.attribute, &task.value)),
        "REMOVE_ENTITLEMENT" => row.is_none_or(|r| !r.has(&task.attribute, &task.value)),
        "DISABLE_ACCOUNT" => has_status && row.is_some_and(|r| r.disabled),
        "ENABLE_ACCOUNT" => has_status && row.is_some_and(|r| !r.disabled),
        // Gone under the key it was deleted by; an account under another key is not it.
        "DELETE_ACCOUNT" => !seen.contains_key(&task.account),
        _ => false,
    }
}

/// One value provd granted an identity on the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub identity: String,
    /// The identity's account key on the source, when known.
    pub account: Option<String>,
    /// The key the identity's attributes give now, where it differs from `account`: a
    /// mover whose key attribute attribute sync changed (issue 33, finding 3). The
    /// account is the same; a snapshot may show it under either key.
    pub alias: Option<String>,
    pub attribute: String,
    pub value: String,
    /// Provisioned (not still pending): only those can be missing.
    pub active: bool,
}

impl Grant {
    /// The key `seen` shows the account under: its recorded key, else its alias, else
    /// (shown under neither) the recorded key.
    pub fn key_in<'a>(&'a self, seen: &BTreeMap<String, Seen>) -> Option<&'a str> {
        let account = self.account.as_deref()?;
        match &self.alias {
            Some(alias) if !seen.contains_key(account) && seen.contains_key(alias) => Some(alias),
            _ => Some(account),
        }
    }
}

/// A disagreement between a snapshot and the grants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Drift {
    pub source: String,
    /// `missing` (granted, not there), `unexpected` (a managed account holds what
    /// nothing grants it), `unmanaged_member` (an account provd does not manage holds a
    /// value it does), `enabled_unexpectedly` or `disabled_unexpectedly` (DESIGN §21).
    pub kind: &'static str,
    pub identity: Option<String>,
    pub account: String,
    pub attribute: String,
    pub value: String,
    /// `group:DN` for access held only through a nested group (DESIGN §24).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
}

/// The counts an operator reads first: `N missing, N unexpected, N unmanaged, N status`.
pub fn summary(drift: &[Drift]) -> String {
    let count = |kinds: &[&str]| drift.iter().filter(|d| kinds.contains(&d.kind)).count();
    format!(
        "{} missing, {} unexpected, {} unmanaged, {} status",
        count(&["missing"]),
        count(&["unexpected"]),
        count(&["unmanaged_member"]),
        count(&["enabled_unexpectedly", "disabled_unexpectedly"]),
    )
}

/// What an identity's lifecycle state wants of its account's status on a source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WantStatus {
    pub identity: String,
    pub account: String,
    /// true: disabled (a leaver); false: enabled.
    pub disabled: bool,
}

/// Accounts whose status contradicts what their identity's state wants (DESIGN §21):
/// `enabled_unexpectedly` (a leaver's account re-enabled by hand) or
/// `disabled_unexpectedly`. `status`: the status a snapshot tells, per account key
/// (disabled or not); an account it says nothing of is not judged.
pub fn status_drift(
    source: &str,
    wants: &[WantStatus],
    status: &BTreeMap<String, bool>,
) -> Vec<Drift> {
    wants
        .iter()
        .filter_map(|w| {
            let disabled = *status.get(&w.account)?;
            (disabled != w.disabled).then(|| Drift {
                source: source.into(),
                kind: if disabled {
                    "disabled_unexpectedly"
                } else {
                    "enabled_unexpectedly"
                },
                identity: Some(w.identity.clone()),
                account: w.account.clone(),
                attribute: "status".into(),
                value: if disabled { "disabled" } else { "enabled" }.into(),
                via: None,
            })
        })
        .collect()
}

/// Accounts provd manages, whose status their state wants, that a snapshot able to tell
/// status does not show at all: deleted out of band. `missing` with attribute
/// `account` and the status wanted as value. A leaver's disable that found its account
/// gone succeeded ("already so"); this is where it is told (issue 34, item 10).
pub fn gone_accounts(
    source: &str,
    wants: &[WantStatus],
    seen: &BTreeMap<String, Seen>,
) -> Vec<Drift> {
    wants
        .iter()
        .filter(|w| !seen.contains_key(&w.account))
        .map(|w| Drift {
            source: source.into(),
            kind: "missing",
            identity: Some(w.identity.clone()),
            account: w.account.clone(),
            attribute: ACCOUNT.into(),
            value: if w.disabled { "disabled" } else { "enabled" }.into(),
            via: None,
        })
        .collect()
}

/// The attribute of a drift row about the account itself, not one of its values.
pub const ACCOUNT: &str = "account";

/// Missing, unexpected and unmanaged access on `source`. Only values the catalog knows on
/// the source (`known`: (attribute, value)) count as access; other columns are the
/// source's business. `managed`: the accounts provd manages there (key -> identity), so
/// that an account with no grant left is still told from one provd never managed.
pub fn drift(
    source: &str,
    grants: &[Grant],
    seen: &BTreeMap<String, Seen>,
    known: &BTreeSet<(String, String)>,
    managed: &BTreeMap<String, String>,
) -> Vec<Drift> {
    let mut out = Vec::new();
    for g in grants.iter().filter(|g| g.active) {
        let Some(account) = g.key_in(seen) else {
            continue;
        };
        if !seen
            .get(account)
            .is_some_and(|r| r.has(&g.attribute, &g.value))
        {
            out.push(Drift {
                source: source.into(),
                kind: "missing",
                identity: Some(g.identity.clone()),
                account: account.to_string(),
                attribute: g.attribute.clone(),
                value: g.value.clone(),
                via: None,
            });
        }
    }
    let owner: BTreeMap<&str, &str> = grants
        .iter()
        .filter_map(|g| g.key_in(seen).map(|a| (a, g.identity.as_str())))
        .collect();
    for (account, row) in seen {
        for (attribute, value) in &row.values {
            // The catalog's attribute for a value read from an "any attribute" column.
            let Some((attr, _)) = known
                .iter()
                .find(|(a, v)| v == value && (attribute == ANY || a == attribute))
            else {
                continue;
            };
            let granted = grants.iter().any(|g| {
                g.key_in(seen) == Some(account.as_str())
                    && &g.attribute == attr
                    && &g.value == value
            });
            if !granted {
                let identity = owner
                    .get(account.as_str())
                    .copied()
                    .or_else(|| managed.get(account).map(String::as_str));
                out.push(Drift {
                    source: source.into(),
                    kind: if identity.is_some() {
                        "unexpected"
                    } else {
                        "unmanaged_member"
                    },
                    identity: identity.map(str::to_string),
                    account: account.clone(),
                    attribute: attr.clone(),
                    value: value.clone(),
                    via: None,
                });
            }
        }
        // Held through a nested group (DESIGN §24) by a managed account, and granted by
        // nothing: unexpected, `via` that group. provd writes direct members only, so
        // `--fix` leaves it to whoever nested the groups.
        let Some(identity) = owner
            .get(account.as_str())
            .copied()
            .or_else(|| managed.get(account).map(String::as_str))
        else {
            continue;
        };
        for ((attribute, value), via) in &row.nested {
            let granted = grants.iter().any(|g| {
                g.key_in(seen) == Some(account.as_str())
                    && &g.attribute == attribute
                    && &g.value == value
            });
            if !granted && known.contains(&(attribute.clone(), value.clone())) {
                out.push(Drift {
                    source: source.into(),
                    kind: "unexpected",
                    identity: Some(identity.to_string()),
                    account: account.clone(),
                    attribute: attribute.clone(),
                    value: value.clone(),
                    via: Some(format!("group:{via}")),
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(key: &str, values: &[&str], disabled: bool) -> (String, Seen) {
        (
            key.into(),
            Seen {
                key: key.into(),
                values: values
                    .iter()
                    .map(|v| (ANY.to_string(), v.to_string()))
                    .collect(),
                disabled,
                nested: Default::default(),
            },
        )
    }

    fn task(op: &str, account: &str, value: &str) -> Task {
        Task {
            operation: op.into(),
            account: account.into(),
            attribute: "groups".into(),
            value: value.into(),
            ..Task::sample(1)
        }
    }

    #[test]
    fn each_operation_is_shown_by_its_own_effect() {
        let s: BTreeMap<_, _> = [seen("ada", &["VIEW"], false), seen("bob", &[], true)].into();
        let shown =
            |op: &str, account: &str, value: &str| shows(&task(op, account, value), None, &s, true);
        assert!(shown("CREATE_ACCOUNT", "ada", ""));
        assert!(!shown("CREATE_ACCOUNT", "zoe", ""));
        assert!(shown("ADD_ENTITLEMENT", "ada", "VIEW"));
        assert!(!shown("ADD_ENTITLEMENT", "ada", "ADMIN"));
        assert!(shown("REMOVE_ENTITLEMENT", "ada", "ADMIN"));
        assert!(shown("REMOVE_ENTITLEMENT", "zoe", "VIEW"));
        assert!(shown("DISABLE_ACCOUNT", "bob", ""));
        assert!(
            !shows(&task("DISABLE_ACCOUNT", "bob", ""), None, &s, false),
            "no status column, no evidence"
        );
        assert!(shown("ENABLE_ACCOUNT", "ada", ""));
        assert!(shown("DELETE_ACCOUNT", "zoe", ""));
        assert!(!shown("UPDATE_ACCOUNT", "ada", ""));
    }

    #[test]
    fn a_task_is_shown_under_the_key_a_later_rename_gave_its_account() {
        let s: BTreeMap<_, _> = [seen("ada.1", &["VIEW"], false)].into();
        let renamed =
            |op: &str, value: &str| shows(&task(op, "ada", value), Some("ada.1"), &s, true);
        assert!(renamed("ENABLE_ACCOUNT", ""));
        assert!(
            !shows(&task("ENABLE_ACCOUNT", "ada", ""), None, &s, true),
            "the old key alone does not find it"
        );
        assert!(renamed("ADD_ENTITLEMENT", "VIEW"));
        assert!(
            !renamed("REMOVE_ENTITLEMENT", "VIEW"),
            "still there, renamed"
        );
        assert!(renamed("DELETE_ACCOUNT", ""), "judged by its own key");
    }

    /// Issue 34, item 9: membership through a nested group that nothing grants is
    /// unexpected `via` the group; one granted is not drift, nor is a stranger's.
    #[test]
    fn nested_membership_is_unexpected_via_its_group() {
        let known: BTreeSet<_> = [("groups".to_string(), "cn=all".to_string())].into();
        let nest = |key: &str| {
            let (k, mut s) = seen(key, &[], false);
            s.nested
                .insert(("groups".into(), "cn=all".into()), "cn=team".into());
            (k, s)
        };
        let grant = Grant {
            identity: "bob".into(),
            account: Some("uid=bob".into()),
            alias: None,
            attribute: "groups".into(),
            value: "cn=all".into(),
            active: true,
        };
        let s: BTreeMap<_, _> = [nest("uid=ada"), nest("uid=bob"), nest("uid=eve")].into();
        let managed = [
            ("uid=ada".to_string(), "ada".to_string()),
            ("uid=bob".to_string(), "bob".to_string()),
        ]
        .into();
        let d = drift("corp", &[grant], &s, &known, &managed);
        let got: Vec<_> = d
            .iter()
            .map(|d| (d.kind, d.account.as_str(), d.via.as_deref()))
            .collect();
        assert_eq!(
            got,
            [
                ("missing", "uid=bob", None),
                ("unexpected", "uid=ada", Some("group:cn=team"))
            ]
        );
    }

    #[test]
    fn drift_finds_missing_and_unexpected_known_values() {
        let known: BTreeSet<_> = [
            ("groups".to_string(), "VIEW".to_string()),
            ("groups".into(), "ADMIN".into()),
        ]
        .into();
        let grant = |who: &str, acc: &str, v: &str, active| Grant {
            identity: who.into(),
            account: Some(acc.into()),
            alias: None,
            attribute: "groups".into(),
            value: v.into(),
            active,
        };
        let grants = [
            grant("ada", "ada@x", "VIEW", true),
            grant("bob", "bob@x", "VIEW", true),
            grant("cy", "cy@x", "VIEW", false),
        ];
        let s: BTreeMap<_, _> = [
            seen("ada@x", &["VIEW", "ADMIN", "LUNCH"], false),
            seen("eve@x", &["ADMIN"], false),
            seen("cy@x", &["ADMIN"], false),
            seen("old@x", &["VIEW"], false),
        ]
        .into();
        // old@x: a managed account whose grants were all revoked.
        let managed = [("old@x".to_string(), "olga".to_string())].into();
        let d = drift("payroll", &grants, &s, &known, &managed);
        let got: Vec<(&str, &str, &str)> = d
            .iter()
            .map(|d| (d.kind, d.account.as_str(), d.value.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("missing", "bob@x", "VIEW"),
                ("unexpected", "ada@x", "ADMIN"),
                ("unexpected", "cy@x", "ADMIN"),
                ("unmanaged_member", "eve@x", "ADMIN"),
                ("unexpected", "old@x", "VIEW"),
            ]
        );
        assert_eq!(d[1].identity.as_deref(), Some("ada"));
        assert_eq!(d[3].identity, None, "an account provd does not manage");
        assert_eq!(d[4].identity.as_deref(), Some("olga"));
    }

    /// Issue 34, item 10: an account deleted out of band is drift even when nothing but
    /// its status is wanted (a leaver's).
    #[test]
    fn an_account_gone_is_missing() {
        let want = |who: &str, disabled| WantStatus {
            identity: who.into(),
            account: format!("uid={who}"),
            disabled,
        };
        let seen: BTreeMap<String, Seen> = [seen("uid=ada", &[], false)].into();
        let d = gone_accounts("corp", &[want("ada", false), want("bob", true)], &seen);
        assert_eq!(d.len(), 1);
        assert_eq!(
            (
                d[0].kind,
                d[0].account.as_str(),
                d[0].attribute.as_str(),
                d[0].value.as_str()
            ),
            ("missing", "uid=bob", ACCOUNT, "disabled")
        );
    }

    /// Issue 33, finding 6: a leaver's account enabled again by hand is drift.
    #[test]
    fn a_status_contradicting_the_lifecycle_state_is_drift() {
        let want = |who: &str, disabled| WantStatus {
            identity: who.into(),
            account: format!("uid={who}"),
            disabled,
        };
        let wants = [want("ada", true), want("bob", false), want("cy", true)];
        let status: BTreeMap<String, bool> = [
            ("uid=ada".to_string(), false),
            ("uid=bob".to_string(), false),
        ]
        .into();
        let d = status_drift("corp", &wants, &status);
        assert_eq!(d.len(), 1, "cy's status is not told: not judged");
        assert_eq!(
            (d[0].kind, d[0].identity.as_deref(), d[0].value.as_str()),
            ("enabled_unexpectedly", Some("ada"), "enabled")
        );
        let d = status_drift(
            "corp",
            &[want("bob", false)],
            &[("uid=bob".into(), true)].into(),
        );
        assert_eq!(d[0].kind, "disabled_unexpectedly");
    }

    /// Issue 33, finding 3: a mover's account renamed by attribute sync is shown under
    /// its new key; it is the same account, neither missing nor unexpected.
    #[test]
    fn a_renamed_account_is_matched_under_its_new_key() {
        let known: BTreeSet<_> = [("groups".to_string(), "VIEW".to_string())].into();
        let moved = Grant {
            identity: "ada".into(),
            account: Some("ada@old".into()),
            alias: Some("ada@new".into()),
            attribute: "groups".into(),
            value: "VIEW".into(),
            active: true,
        };
        let s: BTreeMap<_, _> = [seen("ada@new", &["VIEW"], false)].into();
        assert!(
            drift(
                "flat",
                std::slice::from_ref(&moved),
                &s,
                &known,
                &BTreeMap::new()
            )
            .is_empty()
        );
        assert_eq!(moved.key_in(&s), Some("ada@new"));
        // Shown under neither: missing under the key provd recorded.
        let d = drift("flat", &[moved], &BTreeMap::new(), &known, &BTreeMap::new());
        assert_eq!((d[0].kind, d[0].account.as_str()), ("missing", "ada@old"));
    }
}
