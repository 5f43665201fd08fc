//! `policy.toml` (`agent.policy`, DESIGN §16): the local rules provd answers SailPoint's
//! pre-approval trigger with: separation of duties, denials by lifecycle state, what to do
//! with items it does not know, and the approver name it answers as.

use std::collections::BTreeSet;

use serde::Deserialize;

use super::Catalog;
use super::catalog::ItemType;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    /// The name the answers carry as `approver` (default "provd"). SailPoint's Decision
    /// trigger fires only when this names an identity of the tenant.
    #[serde(default = "default_approver")]
    pub approver: String,
    /// An item neither in `[trigger.items]` nor in the catalog: "deny" (default) or
    /// "approve".
    #[serde(default)]
    pub unknown_items: UnknownItems,
    /// Separation of duties: no identity may hold an item of each side.
    #[serde(default)]
    pub sod: Vec<SodRule>,
    /// Items refused to identities in some lifecycle states.
    #[serde(default)]
    pub deny: Vec<DenyRule>,
}

fn default_approver() -> String {
    "provd".into()
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnknownItems {
    #[default]
    Deny,
    Approve,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SodRule {
    /// The rule's name: answers and audit events name it.
    pub name: String,
    /// Catalog item ids (roles, access profiles, entitlements) on one side ...
    pub left: Vec<String>,
    /// ... and on the other.
    pub right: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DenyRule {
    /// The rule's name (default `deny[N]`, 1-based).
    #[serde(default)]
    pub name: Option<String>,
    /// Catalog item ids this rule refuses; `"*"` for every item.
    pub items: Vec<String>,
    /// Lifecycle states (lifecycle.toml) in which they are refused.
    pub when_state: Vec<String>,
}

/// The checked policy. The default (no `agent.policy`) approves every known item.
#[derive(Debug, Clone)]
pub struct Policy {
    pub approver: String,
    pub unknown_items: UnknownItems,
    pub sod: Vec<SodRule>,
    pub deny: Vec<DenyRule>,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            approver: default_approver(),
            unknown_items: UnknownItems::Deny,
            sod: Vec::new(),
            deny: Vec::new(),
        }
    }
}

fn known(catalog: &Catalog, id: &str) -> bool {
    [
        ItemType::Role,
        ItemType::AccessProfile,
        ItemType::Entitlement,
    ]
    .into_iter()
    .any(|t| catalog.contains(t, id))
}

/// Checks the file against the catalog and the lifecycle states; problems as (key, message).
pub fn build(
    f: PolicyFile,
    catalog: &Catalog,
    states: &BTreeSet<String>,
) -> (Policy, Vec<(String, String)>) {
    let mut problems = Vec::new();
    if f.approver.trim().is_empty() {
        problems.push(("approver".into(), "must not be empty".into()));
    }
    let mut names = BTreeSet::new();
    for (i, r) in f.sod.iter().enumerate() {
        let at = |k: &str| format!("sod[{}].{k}", i + 1);
        if r.name.trim().is_empty() {
            problems.push((at("name"), "must not be empty".into()));
        } else if !names.insert(r.name.clone()) {
            problems.push((at("name"), format!("`{}` names two rules", r.name)));
        }
        for (side, ids) in [("left", &r.left), ("right", &r.right)] {
            if ids.is_empty() {
                problems.push((at(side), "names no item".into()));
            }
            for id in ids.iter().filter(|id| !known(catalog, id)) {
                problems.push((at(side), format!("`{id}` is not in the catalog")));
            }
        }
    }
    let mut deny = f.deny;
    for (i, r) in deny.iter_mut().enumerate() {
        let at = |k: &str| format!("deny[{}].{k}", i + 1);
        let name = r.name.get_or_insert_with(|| format!("deny[{}]", i + 1));
        if !names.insert(name.clone()) {
            problems.push((at("name"), format!("`{name}` names two rules")));
        }
        if r.items.is_empty() {
            problems.push((at("items"), "names no item (\"*\" for every item)".into()));
        }
        for id in r
            .items
            .iter()
            .filter(|id| *id != "*" && !known(catalog, id))
        {
            problems.push((at("items"), format!("`{id}` is not in the catalog")));
        }
        if r.when_state.is_empty() {
            problems.push((at("when_state"), "names no lifecycle state".into()));
        }
        for s in r.when_state.iter().filter(|s| !states.contains(*s)) {
            problems.push((
                at("when_state"),
                format!("`{s}` is not a lifecycle state (agent.lifecycle)"),
            ));
        }
    }
    (
        Policy {
            approver: f.approver,
            unknown_items: f.unknown_items,
            sod: f.sod,
            deny,
        },
        problems,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog() -> Catalog {
        let f: super::super::files::CatalogFile = toml::from_str(
            r#"
[[entitlement]]
id = "pay-admin"
source = "s"
attribute = "groups"
value = "A"
[[entitlement]]
id = "pay-view"
source = "s"
attribute = "groups"
value = "V"
"#,
        )
        .unwrap();
        let sources = ["s".to_string()].into_iter().collect();
        Catalog::build(f, &sources).0
    }

    #[test]
    fn rules_name_known_items_and_states() {
        let f: PolicyFile = toml::from_str(
            r#"
[[sod]]
name = "maker-checker"
left = ["pay-admin"]
right = ["pay-view", "nope"]
[[deny]]
items = ["*"]
when_state = ["leaver", "gone"]
"#,
        )
        .unwrap();
        let states = ["leaver".to_string()].into_iter().collect();
        let (p, problems) = build(f, &catalog(), &states);
        assert_eq!(
            problems,
            vec![
                (
                    "sod[1].right".to_string(),
                    "`nope` is not in the catalog".to_string()
                ),
                (
                    "deny[1].when_state".to_string(),
                    "`gone` is not a lifecycle state (agent.lifecycle)".to_string()
                ),
            ]
        );
        assert_eq!(p.deny[0].name.as_deref(), Some("deny[1]"));
        assert_eq!(
            (p.approver.as_str(), p.unknown_items),
            ("provd", UnknownItems::Deny)
        );
    }

    #[test]
    fn unknown_keys_and_values_are_refused() {
        assert!(toml::from_str::<PolicyFile>("aprover = \"x\"").is_err());
        assert!(toml::from_str::<PolicyFile>("unknown_items = \"maybe\"").is_err());
    }
}
