//! `lifecycle.toml` (`agent.lifecycle`, DESIGN §13 contract): what an identity's
//! `lifecycleState` means: whether it may request access, its birthright access profiles,
//! whether it keeps any access at all, and what happens to its accounts.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

use super::catalog::{Catalog, ItemType};
use super::duration::Dur;

/// The identity attribute that names the state.
pub const STATE_ATTRIBUTE: &str = "lifecycleState";

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LifecycleFile {
    /// The states, by name.
    #[serde(default)]
    pub state: Vec<StateSection>,
    /// More account disables and deletes than this within `guard_window`, whatever
    /// brought them (imports, PUTs, reloads), are held until confirmed (`--confirm`,
    /// `Provd-Confirm: true`).
    #[serde(default = "default_max_changes")]
    pub max_changes: usize,
    /// How far back the guard counts (DESIGN §21): five leaver PUTs in a row are one
    /// burst, not five small changes.
    #[serde(default = "default_guard_window")]
    pub guard_window: Dur,
    /// Identity attributes whose values an `identity_changed` event records; any other
    /// changed attribute is named without its value (personal data stays out of the
    /// audit trail unless asked for).
    #[serde(default = "default_audit_values")]
    pub audit_values: Vec<String>,
}

fn default_max_changes() -> usize {
    25
}

fn default_guard_window() -> Dur {
    Dur(std::time::Duration::from_secs(600))
}

fn default_audit_values() -> Vec<String> {
    vec![STATE_ATTRIBUTE.to_string()]
}

/// `[[state]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateSection {
    /// The value of `lifecycleState` that selects it.
    pub name: String,
    /// false: GRANT requests for identities in this state are refused.
    #[serde(default = "default_true")]
    pub requestable: bool,
    /// Birthright: granted while in this state, revoked on leaving it.
    #[serde(default)]
    pub access_profiles: Vec<String>,
    /// Revoke every assignment on entering this state.
    #[serde(default)]
    pub remove_all_access: bool,
    /// What happens to the identity's accounts on entering this state.
    #[serde(default)]
    pub account: Vec<AccountSection>,
}

fn default_true() -> bool {
    true
}

/// `[[state.account]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountSection {
    /// `ENABLE`, `DISABLE` or `DELETE`.
    pub action: String,
    /// `"all"` or a list of source ids.
    pub sources: SourceList,
    /// Sources left out of `sources`.
    #[serde(default)]
    pub exclude: Vec<String>,
}

/// `"all"` or `["a", "b"]`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum SourceList {
    All(String),
    Some(Vec<String>),
}

/// What entering a state does to an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum AccountAction {
    Enable,
    Disable,
    Delete,
}

impl AccountAction {
    fn parse(s: &str) -> Option<Self> {
        match s {
            "ENABLE" => Some(Self::Enable),
            "DISABLE" => Some(Self::Disable),
            "DELETE" => Some(Self::Delete),
            _ => None,
        }
    }
}

/// A state, checked and resolved against the sources.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct State {
    pub requestable: bool,
    pub access_profiles: Vec<String>,
    pub remove_all_access: bool,
    /// Per source, the action taken on entering the state (the last one named wins).
    pub accounts: BTreeMap<String, AccountAction>,
}

/// The states in force.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Lifecycle {
    pub states: BTreeMap<String, State>,
    pub max_changes: usize,
    pub guard_window: std::time::Duration,
    pub audit_values: BTreeSet<String>,
}

impl Lifecycle {
    /// The state an identity's attributes select (None: no state, or one not configured).
    pub fn state_of<'a>(&'a self, attributes: &BTreeMap<String, String>) -> Option<&'a State> {
        attributes
            .get(STATE_ATTRIBUTE)
            .and_then(|s| self.states.get(s.trim()))
    }

    /// Whether the attributes name a state that is configured: a typo (`leavr`) would
    /// otherwise be stored as "no state", skip the leaver's actions and undo them later.
    /// Without any configured state the attribute is free text.
    pub fn check_state(&self, attributes: &BTreeMap<String, String>) -> Result<(), String> {
        match attributes.get(STATE_ATTRIBUTE) {
            Some(s) if !self.states.is_empty() && !self.states.contains_key(s.trim()) => {
                let known: Vec<&str> = self.states.keys().map(String::as_str).collect();
                Err(format!(
                    "{STATE_ATTRIBUTE}: `{}` is not a configured lifecycle state ({})",
                    s.escape_debug(),
                    known.join(", ")
                ))
            }
            _ => Ok(()),
        }
    }
}

/// Checks the file against the catalog and the sources; problems as (key, message).
pub fn build(
    file: LifecycleFile,
    catalog: &Catalog,
    sources: &BTreeSet<String>,
) -> (Lifecycle, Vec<(String, String)>) {
    let mut problems = Vec::new();
    let mut states = BTreeMap::new();
    for (i, s) in file.state.into_iter().enumerate() {
        let at = |k: &str| format!("state[{i}]{k}");
        let name = s.name.trim().to_string();
        if name.is_empty() {
            problems.push((at(".name"), "must not be empty".into()));
        }
        for p in &s.access_profiles {
            if !catalog.contains(ItemType::AccessProfile, p) {
                problems.push((
                    at(".access_profiles"),
                    format!("no access profile `{p}` in the catalog"),
                ));
            }
        }
        if !s.requestable && !s.access_profiles.is_empty() {
            problems.push((
                at(".access_profiles"),
                "a state that is not requestable cannot have birthright access (its grants would be refused)".into(),
            ));
        }
        let mut accounts = BTreeMap::new();
        for (j, a) in s.account.iter().enumerate() {
            let key = |k: &str| at(&format!(".account[{j}]{k}"));
            let Some(action) = AccountAction::parse(&a.action) else {
                problems.push((
                    key(".action"),
                    format!("`{}` is not ENABLE, DISABLE or DELETE", a.action),
                ));
                continue;
            };
            if action == AccountAction::Delete && !s.remove_all_access {
                problems.push((
                    key(".action"),
                    "DELETE only in a state with remove_all_access = true".into(),
                ));
            }
            let named: Vec<String> = match &a.sources {
                SourceList::All(all) if all == "all" => sources.iter().cloned().collect(),
                SourceList::All(other) => {
                    problems.push((
                        key(".sources"),
                        format!("`{other}`: write \"all\" or a list of source ids"),
                    ));
                    Vec::new()
                }
                SourceList::Some(list) => list.clone(),
            };
            for src in named.iter().chain(&a.exclude) {
                if !sources.contains(src) {
                    problems.push((key(".sources"), format!("no source `{src}`")));
                }
            }
            for src in named.into_iter().filter(|s| !a.exclude.contains(s)) {
                accounts.insert(src, action);
            }
        }
        let state = State {
            requestable: s.requestable,
            access_profiles: s.access_profiles,
            remove_all_access: s.remove_all_access,
            accounts,
        };
        if states.insert(name.clone(), state).is_some() {
            problems.push((at(".name"), format!("state `{name}` is defined twice")));
        }
    }
    (
        Lifecycle {
            states,
            max_changes: file.max_changes,
            guard_window: file.guard_window.0,
            audit_values: file.audit_values.into_iter().collect(),
        },
        problems,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::files::CatalogFile;

    fn catalog() -> Catalog {
        let f: CatalogFile = toml::from_str(
            "[[entitlement]]\nid = \"e\"\nsource = \"corp\"\nattribute = \"groups\"\nvalue = \"G\"\n[[access_profile]]\nid = \"ap-base\"\nentitlements = [\"e\"]\n",
        )
        .unwrap();
        Catalog::build(f, &BTreeSet::from(["corp".to_string()])).0
    }

    fn sources() -> BTreeSet<String> {
        ["corp", "hr-feed", "wiki"].map(String::from).into()
    }

    #[test]
    fn the_contract_example_builds() {
        let f: LifecycleFile = toml::from_str(
            r#"
            [[state]]
            name = "active"
            requestable = true
            access_profiles = ["ap-base"]
            [[state.account]]
            action = "ENABLE"
            sources = "all"
            exclude = ["hr-feed"]
            [[state]]
            name = "leaver"
            requestable = false
            remove_all_access = true
            [[state.account]]
            action = "DISABLE"
            sources = "all"
            [[state.account]]
            action = "DELETE"
            sources = ["wiki"]
            "#,
        )
        .unwrap();
        let (l, problems) = build(f, &catalog(), &sources());
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(l.max_changes, 25);
        let active = &l.states["active"];
        assert_eq!(
            active.accounts.keys().collect::<Vec<_>>(),
            ["corp", "wiki"],
            "all but the excluded"
        );
        let leaver = &l.states["leaver"];
        assert_eq!(leaver.accounts["corp"], AccountAction::Disable);
        assert_eq!(
            leaver.accounts["wiki"],
            AccountAction::Delete,
            "the later entry wins"
        );
        let attrs = BTreeMap::from([(STATE_ATTRIBUTE.to_string(), "leaver".to_string())]);
        assert!(!l.state_of(&attrs).unwrap().requestable);
    }

    #[test]
    fn problems_name_their_key() {
        let f: LifecycleFile = toml::from_str(
            r#"
            [[state]]
            name = "x"
            access_profiles = ["nope"]
            [[state.account]]
            action = "DELETE"
            sources = ["ghost"]
            [[state.account]]
            action = "PAUSE"
            sources = "every"
            [[state]]
            name = "x"
            requestable = false
            access_profiles = ["ap-base"]
            "#,
        )
        .unwrap();
        let (_, problems) = build(f, &catalog(), &sources());
        let keys: Vec<&str> = problems.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "state[0].access_profiles",
                "state[0].account[0].action",
                "state[0].account[0].sources",
                "state[0].account[1].action",
                "state[1].access_profiles",
                "state[1].name"
            ],
            "{problems:?}"
        );
        assert!(toml::from_str::<LifecycleFile>("[[state]]\nname = \"a\"\ncolour = 1\n").is_err());
    }
}

#[cfg(test)]
mod state_check {
    use super::*;

    #[test]
    fn only_configured_states_are_taken() {
        let attrs = |s: &str| BTreeMap::from([(STATE_ATTRIBUTE.to_string(), s.to_string())]);
        let none = Lifecycle::default();
        assert!(
            none.check_state(&attrs("anything")).is_ok(),
            "no states: free text"
        );
        let mut l = Lifecycle::default();
        l.states.insert("leaver".into(), State::default());
        assert!(l.check_state(&attrs("leaver")).is_ok());
        assert!(l.check_state(&BTreeMap::new()).is_ok(), "no state at all");
        let e = l.check_state(&attrs("leavr")).unwrap_err();
        assert!(e.contains("`leavr`") && e.contains("(leaver)"), "{e}");
    }
}
