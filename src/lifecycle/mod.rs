//! Joiners, movers and leavers (DESIGN §13): an identity's change of `lifecycleState`,
//! diffed against the identity as stored, becomes requests like any other (requester
//! `lifecycle`), handed to the one [`crate::intake::Intake`]: leaving a state revokes its
//! birthright profiles, entering one grants its profiles, revokes everything when it says
//! so, and enables, disables or deletes accounts. Revokes are reference-counted as any
//! revoke: a group a request also granted stays.
//!
//! The diff is pure; callers (identity imports, `PUT /identities/v1`, reloads) read what
//! the identity holds, submit the requests, then store the identity.

pub mod apply;

use std::collections::{BTreeMap, BTreeSet};

use provd_connector_core::{Identity, Operation, template};

use crate::config::ItemType;
use crate::config::lifecycle::{AccountAction, Lifecycle, STATE_ATTRIBUTE};
use crate::model::{RequestType, ValidItem, ValidRequest};

/// What one identity's change means.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Change {
    pub identity: String,
    /// The state left and the state entered (None: none, or one not configured).
    pub from: Option<String>,
    pub to: Option<String>,
    pub revoke: Vec<(ItemType, String)>,
    /// Birthright access profiles to grant.
    pub grant: Vec<String>,
    /// Account operations per source.
    pub accounts: Vec<(String, Operation)>,
}

impl Change {
    pub fn is_empty(&self) -> bool {
        self.revoke.is_empty() && self.grant.is_empty() && self.accounts.is_empty()
    }

    /// Accounts this change disables or deletes (what the mass-change guard counts).
    pub fn removals(&self) -> usize {
        self.accounts
            .iter()
            .filter(|(_, op)| matches!(op, Operation::DisableAccount | Operation::DeleteAccount))
            .count()
    }

    /// The requests the change is made of: a revoke (with disables and deletes), then a
    /// grant (with enables); either may be missing. `cause`: the `identity_changed`
    /// event they come from, in each request's and item's client metadata.
    pub fn requests(&self, cause: Option<i64>) -> Vec<ValidRequest> {
        let metadata: BTreeMap<String, String> = cause
            .map(|c| BTreeMap::from([("cause".to_string(), c.to_string())]))
            .unwrap_or_default();
        let comment = format!(
            "lifecycle: {} -> {}",
            self.from.as_deref().unwrap_or("(none)"),
            self.to.as_deref().unwrap_or("(none)")
        );
        let item = |ty: ItemType, id: &str| ValidItem {
            ty,
            id: id.to_string(),
            comment: Some(comment.clone()),
            start_at: None,
            remove_at: None,
            client_metadata: metadata.clone(),
        };
        // Disables and deletes go with the revoke; enables and updates with the grant.
        let ops = |grant: bool| -> Vec<(String, Operation)> {
            self.accounts
                .iter()
                .filter(|(_, op)| {
                    matches!(
                        op,
                        Operation::EnableAccount
                            | Operation::UpdateAccount { .. }
                            | Operation::ResetPassword
                    ) == grant
                })
                .cloned()
                .collect()
        };
        let mut out = Vec::new();
        let (revoke_ops, grant_ops) = (ops(false), ops(true));
        if !self.revoke.is_empty() || !revoke_ops.is_empty() {
            out.push(ValidRequest {
                request_type: RequestType::Revoke,
                requested_for: vec![self.identity.clone()],
                items: self.revoke.iter().map(|(ty, id)| item(*ty, id)).collect(),
                client_metadata: metadata.clone(),
                account_ops: revoke_ops,
                repairs: Vec::new(),
            });
        }
        if !self.grant.is_empty() || !grant_ops.is_empty() {
            out.push(ValidRequest {
                request_type: RequestType::Grant,
                requested_for: vec![self.identity.clone()],
                items: self
                    .grant
                    .iter()
                    .map(|p| item(ItemType::AccessProfile, p))
                    .collect(),
                client_metadata: metadata.clone(),
                account_ops: grant_ops,
                repairs: Vec::new(),
            });
        }
        out
    }
}

/// The configured state an identity is in (None: no `lifecycleState`, or an unknown one).
pub fn state_name(lifecycle: &Lifecycle, identity: Option<&Identity>) -> Option<String> {
    let name = identity?
        .attributes
        .get(STATE_ATTRIBUTE)?
        .trim()
        .to_string();
    lifecycle.states.contains_key(&name).then_some(name)
}

/// Per source, the account attributes kept in sync and their templates.
pub type Sync = BTreeMap<String, BTreeMap<String, String>>;

/// Attribute sync: for each source, the synced attributes whose rendered value changed
/// from `old` to `new`, as one UPDATE_ACCOUNT (an attribute the identity no longer has
/// renders empty: it is cleared). A new identity's accounts are made with its values.
pub fn updates(sync: &Sync, old: Option<&Identity>, new: &Identity) -> Vec<(String, Operation)> {
    let Some(old) = old else {
        return Vec::new();
    };
    let render =
        |t: &str, i: &Identity| template::fill(t, i, template::verbatim).unwrap_or_default();
    sync.iter()
        .filter_map(|(source, attrs)| {
            let changed: BTreeMap<String, String> = attrs
                .iter()
                .filter_map(|(attr, t)| {
                    let (before, after) = (render(t, old), render(t, new));
                    (before != after).then(|| (attr.clone(), after))
                })
                .collect();
            (!changed.is_empty()).then(|| {
                (
                    source.clone(),
                    Operation::UpdateAccount {
                        attributes: changed,
                    },
                )
            })
        })
        .collect()
}

/// What an `identity_changed` event says of the attributes: the name of each one that
/// changed (added, changed or removed), and the new value of those in `values` (the
/// configured allow-list; a removed one is null).
pub fn changed_fields(
    old: Option<&Identity>,
    new: &Identity,
    values: &BTreeSet<String>,
) -> serde_json::Value {
    let empty = BTreeMap::new();
    let before = old.map_or(&empty, |o| &o.attributes);
    let names: BTreeSet<&String> = before
        .keys()
        .chain(new.attributes.keys())
        .filter(|k| before.get(*k) != new.attributes.get(*k))
        .collect();
    let shown: serde_json::Map<String, serde_json::Value> = names
        .iter()
        .filter(|k| values.contains(k.as_str()))
        .map(|k| ((*k).clone(), serde_json::json!(new.attributes.get(*k))))
        .collect();
    serde_json::json!({ "fields": names, "values": shown })
}

/// What the change from `old` (None: a new identity) to `new` means, given the items the
/// identity holds now (`held`: live assignments) and the sources it has an account on
/// (`accounts`: a state's account actions touch only those; an account that does not
/// exist is neither disabled nor counted by the guard): the state's consequences, and
/// attribute sync. Nothing changed: nothing.
pub fn change(
    lifecycle: &Lifecycle,
    sync: &Sync,
    old: Option<&Identity>,
    new: &Identity,
    held: &[(ItemType, String)],
    accounts: &BTreeSet<String>,
) -> Change {
    let (from, to) = (state_name(lifecycle, old), state_name(lifecycle, Some(new)));
    let mut c = Change {
        identity: new.id.clone(),
        from: from.clone(),
        to: to.clone(),
        accounts: updates(sync, old, new),
        ..Default::default()
    };
    if from == to {
        return c;
    }
    let leaving = from.as_ref().and_then(|f| lifecycle.states.get(f));
    let entering = to.as_ref().and_then(|t| lifecycle.states.get(t));
    let keep: BTreeSet<&str> = entering
        .map(|s| s.access_profiles.iter().map(String::as_str).collect())
        .unwrap_or_default();
    let held_set: BTreeSet<(ItemType, &str)> =
        held.iter().map(|(ty, id)| (*ty, id.as_str())).collect();
    let mut revoke: BTreeSet<(ItemType, String)> = BTreeSet::new();
    if let Some(s) = leaving {
        for p in s
            .access_profiles
            .iter()
            .filter(|p| !keep.contains(p.as_str()))
        {
            if held_set.contains(&(ItemType::AccessProfile, p.as_str())) {
                revoke.insert((ItemType::AccessProfile, p.clone()));
            }
        }
    }
    if let Some(s) = entering {
        if s.remove_all_access {
            revoke.extend(held.iter().cloned());
        }
        c.grant = s
            .access_profiles
            .iter()
            .filter(|p| !held_set.contains(&(ItemType::AccessProfile, p.as_str())))
            .cloned()
            .collect();
        c.accounts.extend(
            s.accounts
                .iter()
                .filter(|(src, _)| accounts.contains(*src))
                .map(|(src, a)| {
                    let op = match a {
                        AccountAction::Enable => Operation::EnableAccount,
                        AccountAction::Disable => Operation::DisableAccount,
                        AccountAction::Delete => Operation::DeleteAccount,
                    };
                    (src.clone(), op)
                }),
        );
    }
    c.revoke = revoke.into_iter().collect();
    c
}

/// A held change: how many accounts it would disable or delete, per state entered.
pub fn summary(changes: &[Change]) -> String {
    let mut by_state: std::collections::BTreeMap<&str, (usize, usize)> = Default::default();
    for c in changes.iter().filter(|c| c.removals() > 0) {
        let e = by_state
            .entry(c.to.as_deref().unwrap_or("(none)"))
            .or_default();
        e.0 += 1;
        e.1 += c.removals();
    }
    by_state
        .iter()
        .map(|(s, (ids, accounts))| {
            format!("{ids} identities entering `{s}`: {accounts} accounts disabled or deleted")
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::files::CatalogFile;
    use crate::config::lifecycle::{LifecycleFile, build};

    /// Every source has an account.
    fn all() -> BTreeSet<String> {
        BTreeSet::from(["corp".to_string(), "wiki".to_string()])
    }

    fn lifecycle() -> Lifecycle {
        let cat: CatalogFile = toml::from_str(
            "[[entitlement]]\nid = \"e\"\nsource = \"corp\"\nattribute = \"g\"\nvalue = \"G\"\n\
             [[access_profile]]\nid = \"ap-base\"\nentitlements = [\"e\"]\n\
             [[access_profile]]\nid = \"ap-contractor\"\nentitlements = [\"e\"]\n",
        )
        .unwrap();
        let sources = BTreeSet::from(["corp".to_string(), "wiki".to_string()]);
        let catalog = crate::config::Catalog::build(cat, &sources).0;
        let f: LifecycleFile = toml::from_str(
            r#"
            [[state]]
            name = "active"
            access_profiles = ["ap-base"]
            [[state.account]]
            action = "ENABLE"
            sources = "all"
            [[state]]
            name = "contractor"
            access_profiles = ["ap-base", "ap-contractor"]
            [[state]]
            name = "leaver"
            requestable = false
            remove_all_access = true
            [[state.account]]
            action = "DISABLE"
            sources = ["corp"]
            [[state.account]]
            action = "DELETE"
            sources = ["wiki"]
            "#,
        )
        .unwrap();
        let (l, problems) = build(f, &catalog, &sources);
        assert!(problems.is_empty(), "{problems:?}");
        l
    }

    fn who(state: &str) -> Identity {
        Identity {
            id: "ada".into(),
            attributes: BTreeMap::from([(STATE_ATTRIBUTE.to_string(), state.to_string())]),
        }
    }

    fn ap(id: &str) -> (ItemType, String) {
        (ItemType::AccessProfile, id.to_string())
    }

    #[test]
    fn an_identity_change_names_every_field_and_shows_only_allowed_values() {
        let old = Identity {
            id: "ada".into(),
            attributes: BTreeMap::from([
                ("lifecycleState".into(), "active".into()),
                ("lastName".into(), "Byron".into()),
                ("phone".into(), "123".into()),
            ]),
        };
        let mut new = old.clone();
        new.attributes
            .insert("lifecycleState".into(), "leaver".into());
        new.attributes.insert("lastName".into(), "Lovelace".into());
        new.attributes.remove("phone");
        let allowed = BTreeSet::from(["lifecycleState".to_string(), "phone".to_string()]);
        let v = changed_fields(Some(&old), &new, &allowed);
        assert_eq!(
            v,
            serde_json::json!({
                "fields": ["lastName", "lifecycleState", "phone"],
                "values": { "lifecycleState": "leaver", "phone": null },
            })
        );
        let joiner = changed_fields(None, &old, &allowed);
        assert_eq!(joiner["fields"].as_array().unwrap().len(), 3);
        assert!(
            changed_fields(Some(&old), &old, &allowed)["fields"]
                .as_array()
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn account_actions_touch_only_sources_with_an_account() {
        let l = lifecycle();
        let leaver = change(
            &l,
            &Sync::new(),
            Some(&who("active")),
            &who("leaver"),
            &[],
            &BTreeSet::from(["corp".to_string()]),
        );
        assert_eq!(
            leaver.accounts,
            vec![("corp".to_string(), Operation::DisableAccount)]
        );
        assert_eq!(leaver.removals(), 1);
        let none = change(
            &l,
            &Sync::new(),
            Some(&who("active")),
            &who("leaver"),
            &[],
            &BTreeSet::new(),
        );
        assert_eq!(none.removals(), 0);
    }

    #[test]
    fn a_joiner_gets_birthright_and_a_leaver_loses_everything() {
        let l = lifecycle();
        let joiner = change(&l, &Sync::new(), None, &who("active"), &[], &all());
        assert_eq!(joiner.grant, ["ap-base"]);
        assert_eq!(
            joiner.accounts.len(),
            2,
            "enable everywhere (planned where accounts exist)"
        );
        let reqs = joiner.requests(None);
        assert_eq!(reqs.len(), 1);
        assert_eq!(reqs[0].request_type, RequestType::Grant);

        let held = [ap("ap-base"), (ItemType::Role, "eng".to_string())];
        let leaver = change(
            &l,
            &Sync::new(),
            Some(&who("active")),
            &who("leaver"),
            &held,
            &all(),
        );
        assert_eq!(
            leaver.revoke,
            [(ItemType::Role, "eng".to_string()), ap("ap-base")]
        );
        assert!(leaver.grant.is_empty());
        assert_eq!(leaver.removals(), 2);
        let reqs = leaver.requests(None);
        assert_eq!(reqs.len(), 1);
        assert_eq!(reqs[0].request_type, RequestType::Revoke);
        assert_eq!(
            reqs[0].account_ops,
            [
                ("corp".to_string(), Operation::DisableAccount),
                ("wiki".to_string(), Operation::DeleteAccount)
            ]
        );
        assert!(
            reqs[0].items[0]
                .comment
                .as_deref()
                .unwrap()
                .contains("active -> leaver")
        );
    }

    #[test]
    fn a_mover_keeps_what_both_states_grant_and_nothing_changes_without_a_new_state() {
        let l = lifecycle();
        let mover = change(
            &l,
            &Sync::new(),
            Some(&who("active")),
            &who("contractor"),
            &[ap("ap-base")],
            &all(),
        );
        assert!(mover.revoke.is_empty(), "ap-base is birthright in both");
        assert_eq!(mover.grant, ["ap-contractor"]);
        let back = change(
            &l,
            &Sync::new(),
            Some(&who("contractor")),
            &who("active"),
            &[ap("ap-base"), ap("ap-contractor")],
            &all(),
        );
        assert_eq!(back.revoke, [ap("ap-contractor")]);
        assert!(back.grant.is_empty(), "held already");
        assert!(
            change(
                &l,
                &Sync::new(),
                Some(&who("active")),
                &who("active"),
                &[],
                &all()
            )
            .is_empty()
        );
        // A state provd does not know is no state: leaving `active` for it revokes.
        let unknown = change(
            &l,
            &Sync::new(),
            Some(&who("active")),
            &who("sabbatical"),
            &[ap("ap-base")],
            &all(),
        );
        assert_eq!(
            (unknown.to, unknown.revoke.clone()),
            (None, vec![ap("ap-base")])
        );
        // Not held: nothing to revoke (a revoke of what is not held would still clean up).
        assert!(
            change(
                &l,
                &Sync::new(),
                Some(&who("contractor")),
                &who("active"),
                &[],
                &all()
            )
            .revoke
            .is_empty()
        );
        let rehire = change(
            &l,
            &Sync::new(),
            Some(&who("leaver")),
            &who("active"),
            &[],
            &all(),
        );
        assert_eq!(rehire.grant, ["ap-base"]);
        assert_eq!(rehire.removals(), 0);
        assert_eq!(
            summary(&[change(
                &l,
                &Sync::new(),
                Some(&who("active")),
                &who("leaver"),
                &[],
                &all()
            )]),
            "1 identities entering `leaver`: 2 accounts disabled or deleted"
        );
    }

    #[test]
    fn synced_attributes_that_changed_become_one_update_per_source() {
        let sync: Sync = BTreeMap::from([
            (
                "corp".to_string(),
                BTreeMap::from([
                    ("cn".to_string(), "{firstName} {lastName}".to_string()),
                    ("sn".to_string(), "{lastName}".to_string()),
                    ("title".to_string(), "{title}".to_string()),
                ]),
            ),
            (
                "wiki".to_string(),
                BTreeMap::from([("mail".to_string(), "{email}".to_string())]),
            ),
        ]);
        let mut old = who("active");
        old.attributes.extend([
            ("firstName".to_string(), "Ada".to_string()),
            ("lastName".to_string(), "Byron".to_string()),
            ("title".to_string(), "Countess".to_string()),
        ]);
        let mut new = old.clone();
        new.attributes.insert("lastName".into(), "Lovelace".into());
        new.attributes.remove("title");
        let u = updates(&sync, Some(&old), &new);
        assert_eq!(u.len(), 1, "nothing wiki syncs changed");
        let Operation::UpdateAccount { attributes } = &u[0].1 else {
            panic!("{u:?}")
        };
        assert_eq!(
            attributes,
            &BTreeMap::from([
                ("cn".to_string(), "Ada Lovelace".to_string()),
                ("sn".to_string(), "Lovelace".to_string()),
                ("title".to_string(), String::new()),
            ])
        );
        assert!(
            updates(&sync, None, &new).is_empty(),
            "a joiner's accounts are made new"
        );
        let c = change(&lifecycle(), &sync, Some(&old), &new, &[], &all());
        assert_eq!(c.requests(None).len(), 1);
        assert_eq!(
            c.requests(None)[0].request_type,
            RequestType::Grant,
            "updates go with grants"
        );
    }
}
