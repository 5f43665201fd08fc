//! Pre-approval (DESIGN §16): the local policy applied to one identity's request, counting
//! what the identity holds, has pending, and asks for now. Pure: the caller gathers the
//! holdings and the identity's lifecycle state.

use std::collections::BTreeSet;

use crate::config::Catalog;
use crate::config::policy::{Policy, UnknownItems};
use crate::model::ItemType;

/// One item asked for, as provd knows it (`known`: in the catalog).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Asked {
    pub ty: ItemType,
    pub id: String,
    pub known: bool,
    /// A removal: it adds nothing a rule could object to.
    pub remove: bool,
}

/// The answer, and the rule that gave it (audit events name it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub approved: bool,
    pub comment: String,
    pub approver: String,
    pub rule: String,
}

/// The rule named when nothing denies.
pub const APPROVE: &str = "approve";
/// The rule named when an item is unknown and `unknown_items = "deny"`.
pub const UNKNOWN: &str = "unknown_items";

fn verdict(policy: &Policy, approved: bool, rule: &str, comment: String) -> Verdict {
    Verdict {
        approved,
        comment,
        approver: policy.approver.clone(),
        rule: rule.to_string(),
    }
}

/// Decides for `identity` in lifecycle `state`, holding or awaiting `existing`.
pub fn decide(
    policy: &Policy,
    catalog: &Catalog,
    identity: &str,
    state: Option<&str>,
    existing: &[(ItemType, String)],
    asked: &[Asked],
) -> Verdict {
    let adds: Vec<&Asked> = asked.iter().filter(|a| !a.remove).collect();
    if policy.unknown_items == UnknownItems::Deny
        && let Some(a) = adds.iter().find(|a| !a.known)
    {
        return verdict(
            policy,
            false,
            UNKNOWN,
            format!("`{}` ({}) is not an item provd knows", a.id, a.ty.as_str()),
        );
    }
    let adds: Vec<&Asked> = adds.into_iter().filter(|a| a.known).collect();
    let closure = |items: &mut dyn Iterator<Item = (ItemType, &str)>| -> BTreeSet<String> {
        items.flat_map(|(t, id)| catalog.closure(t, id)).collect()
    };
    let asked_ids = closure(&mut adds.iter().map(|a| (a.ty, a.id.as_str())));
    if let Some(state) = state {
        for rule in policy
            .deny
            .iter()
            .filter(|r| r.when_state.iter().any(|s| s == state))
        {
            let hit = if rule.items.iter().any(|i| i == "*") {
                adds.first().map(|a| a.id.clone())
            } else {
                rule.items.iter().find(|i| asked_ids.contains(*i)).cloned()
            };
            if let Some(item) = hit {
                let name = rule.name.clone().unwrap_or_default();
                return verdict(
                    policy,
                    false,
                    &name,
                    format!(
                        "`{item}` is refused to {identity} in lifecycle state `{state}` (rule `{name}`)"
                    ),
                );
            }
        }
    }
    let held_ids = closure(&mut existing.iter().map(|(t, id)| (*t, id.as_str())));
    for rule in &policy.sod {
        let hit = |side: &[String], ids: &BTreeSet<String>| {
            side.iter().find(|i| ids.contains(*i)).cloned()
        };
        let (left_asked, right_asked) = (hit(&rule.left, &asked_ids), hit(&rule.right, &asked_ids));
        if left_asked.is_none() && right_asked.is_none() {
            // A conflict the identity already has is not this request's doing.
            continue;
        }
        let left = left_asked
            .clone()
            .map(|i| (i, "requested"))
            .or_else(|| hit(&rule.left, &held_ids).map(|i| (i, "held or pending")));
        let right = right_asked
            .clone()
            .map(|i| (i, "requested"))
            .or_else(|| hit(&rule.right, &held_ids).map(|i| (i, "held or pending")));
        if let (Some((l, lw)), Some((r, rw))) = (left, right) {
            return verdict(
                policy,
                false,
                &rule.name,
                format!(
                    "separation of duties `{}`: {identity} would hold `{l}` ({lw}) and `{r}` ({rw})",
                    rule.name
                ),
            );
        }
    }
    verdict(
        policy,
        true,
        APPROVE,
        "no rule of provd's policy denies it".into(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::policy::PolicyFile;

    fn catalog() -> Catalog {
        let f: crate::config::files::CatalogFile = toml::from_str(
            r#"
[[entitlement]]
id = "pay-admin"
source = "s"
attribute = "groups"
value = "A"
[[entitlement]]
id = "pay-approve"
source = "s"
attribute = "groups"
value = "P"
[[entitlement]]
id = "wiki"
source = "s"
attribute = "groups"
value = "W"
[[access_profile]]
id = "ap-pay"
entitlements = ["pay-admin"]
[[role]]
id = "role-clerk"
access_profiles = ["ap-pay"]
"#,
        )
        .unwrap();
        Catalog::build(f, &["s".to_string()].into_iter().collect()).0
    }

    fn policy(unknown: &str) -> Policy {
        let f: PolicyFile = toml::from_str(&format!(
            r#"
approver = "provd-policy"
unknown_items = "{unknown}"
[[sod]]
name = "maker-checker"
left = ["pay-admin"]
right = ["pay-approve"]
[[deny]]
name = "leavers"
items = ["*"]
when_state = ["leaver"]
"#
        ))
        .unwrap();
        let states = ["leaver".to_string()].into_iter().collect();
        crate::config::policy::build(f, &catalog(), &states).0
    }

    fn ask(ty: ItemType, id: &str) -> Asked {
        Asked {
            ty,
            id: id.into(),
            known: true,
            remove: false,
        }
    }

    #[test]
    fn sod_counts_held_pending_and_asked_with_roles_expanded() {
        let (p, c) = (policy("deny"), catalog());
        // Held through a role, asked directly.
        let v = decide(
            &p,
            &c,
            "ada",
            None,
            &[(ItemType::Role, "role-clerk".into())],
            &[ask(ItemType::Entitlement, "pay-approve")],
        );
        assert!(!v.approved);
        assert_eq!(
            (v.rule.as_str(), v.approver.as_str()),
            ("maker-checker", "provd-policy")
        );
        assert!(
            v.comment
                .contains("`pay-admin` (held or pending) and `pay-approve` (requested)"),
            "{}",
            v.comment
        );
        // Both sides inside one request.
        let v = decide(
            &p,
            &c,
            "ada",
            None,
            &[],
            &[
                ask(ItemType::AccessProfile, "ap-pay"),
                ask(ItemType::Entitlement, "pay-approve"),
            ],
        );
        assert!(!v.approved);
        // An unrelated request is not blamed for a conflict already there.
        let held = [
            (ItemType::Entitlement, "pay-admin".to_string()),
            (ItemType::Entitlement, "pay-approve".to_string()),
        ];
        let v = decide(
            &p,
            &c,
            "ada",
            None,
            &held,
            &[ask(ItemType::Entitlement, "wiki")],
        );
        assert_eq!((v.approved, v.rule.as_str()), (true, APPROVE));
    }

    #[test]
    fn states_and_unknown_items_deny_as_configured() {
        let (p, c) = (policy("deny"), catalog());
        let v = decide(
            &p,
            &c,
            "ada",
            Some("leaver"),
            &[],
            &[ask(ItemType::Entitlement, "wiki")],
        );
        assert_eq!((v.approved, v.rule.as_str()), (false, "leavers"));
        let unknown = Asked {
            known: false,
            ..ask(ItemType::Entitlement, "zzz")
        };
        let v = decide(&p, &c, "ada", None, &[], std::slice::from_ref(&unknown));
        assert_eq!((v.approved, v.rule.as_str()), (false, UNKNOWN));
        let v = decide(&policy("approve"), &c, "ada", None, &[], &[unknown]);
        assert!(v.approved);
        // A removal is never denied.
        let removal = Asked {
            remove: true,
            ..ask(ItemType::Entitlement, "pay-approve")
        };
        let v = decide(
            &p,
            &c,
            "ada",
            Some("leaver"),
            &[(ItemType::Entitlement, "pay-admin".into())],
            &[removal],
        );
        assert!(v.approved);
    }
}
