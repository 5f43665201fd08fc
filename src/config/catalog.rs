//! The catalog of requestable items: roles → access profiles → entitlements (seed 002).

use std::collections::{BTreeMap, BTreeSet};

use super::files::{AccessProfileDef, CatalogFile, EntitlementDef, RoleDef};

pub use crate::model::ItemType;

/// The loaded, cross-checked catalog.
#[derive(Debug, Default, Clone)]
pub struct Catalog {
    entitlements: BTreeMap<String, EntitlementDef>,
    profiles: BTreeMap<String, AccessProfileDef>,
    roles: BTreeMap<String, RoleDef>,
}

/// A problem found in the catalog: the key (`entitlement[2].source`) and what is wrong.
pub type CatalogProblem = (String, String);

impl Catalog {
    /// Builds the catalog, reporting duplicate ids and dangling references (to unknown
    /// sources, entitlements or access profiles) with the key that holds them.
    pub fn build(
        file: CatalogFile,
        source_ids: &BTreeSet<String>,
    ) -> (Catalog, Vec<CatalogProblem>) {
        let mut problems = Vec::new();
        let mut cat = Catalog::default();
        for (i, e) in file.entitlement.into_iter().enumerate() {
            if !source_ids.contains(&e.source) {
                problems.push((
                    format!("entitlement[{i}].source"),
                    format!(
                        "entitlement `{}` names source `{}`, which is not configured",
                        e.id, e.source
                    ),
                ));
            }
            if e.id.trim().is_empty() {
                problems.push((format!("entitlement[{i}].id"), "empty id".into()));
            }
            if cat.entitlements.contains_key(&e.id) {
                problems.push((
                    format!("entitlement[{i}].id"),
                    format!("duplicate entitlement id `{}`", e.id),
                ));
            }
            cat.entitlements.insert(e.id.clone(), e);
        }
        for (i, p) in file.access_profile.into_iter().enumerate() {
            for (j, ent) in p.entitlements.iter().enumerate() {
                if !cat.entitlements.contains_key(ent) {
                    problems.push((
                        format!("access_profile[{i}].entitlements[{j}]"),
                        format!(
                            "access profile `{}` names unknown entitlement `{ent}`",
                            p.id
                        ),
                    ));
                }
            }
            if cat.profiles.contains_key(&p.id) {
                problems.push((
                    format!("access_profile[{i}].id"),
                    format!("duplicate access profile id `{}`", p.id),
                ));
            }
            cat.profiles.insert(p.id.clone(), p);
        }
        for (i, r) in file.role.into_iter().enumerate() {
            for (j, ap) in r.access_profiles.iter().enumerate() {
                if !cat.profiles.contains_key(ap) {
                    problems.push((
                        format!("role[{i}].access_profiles[{j}]"),
                        format!("role `{}` names unknown access profile `{ap}`", r.id),
                    ));
                }
            }
            for (j, ent) in r.entitlements.iter().enumerate() {
                if !cat.entitlements.contains_key(ent) {
                    problems.push((
                        format!("role[{i}].entitlements[{j}]"),
                        format!("role `{}` names unknown entitlement `{ent}`", r.id),
                    ));
                }
            }
            if cat.roles.contains_key(&r.id) {
                problems.push((
                    format!("role[{i}].id"),
                    format!("duplicate role id `{}`", r.id),
                ));
            }
            cat.roles.insert(r.id.clone(), r);
        }
        (cat, problems)
    }

    pub fn contains(&self, ty: ItemType, id: &str) -> bool {
        match ty {
            ItemType::Role => self.roles.contains_key(id),
            ItemType::AccessProfile => self.profiles.contains_key(id),
            ItemType::Entitlement => self.entitlements.contains_key(id),
        }
    }

    /// The item's display name.
    pub fn name(&self, ty: ItemType, id: &str) -> String {
        let name = match ty {
            ItemType::Role => self.roles.get(id).and_then(|r| r.name.clone()),
            ItemType::AccessProfile => self.profiles.get(id).and_then(|p| p.name.clone()),
            ItemType::Entitlement => self
                .entitlements
                .get(id)
                .map(|e| e.name.clone().unwrap_or_else(|| e.value.clone())),
        };
        name.unwrap_or_else(|| id.to_string())
    }

    /// The item's description, if the catalog gives one.
    pub fn description(&self, ty: ItemType, id: &str) -> Option<&str> {
        match ty {
            ItemType::Role => self.roles.get(id).and_then(|r| r.description.as_deref()),
            ItemType::AccessProfile => self.profiles.get(id).and_then(|p| p.description.as_deref()),
            ItemType::Entitlement => self
                .entitlements
                .get(id)
                .and_then(|e| e.description.as_deref()),
        }
    }

    /// Display name and description of an item named by its wire type (`ROLE`, …); an
    /// item the catalog no longer has shows its id.
    pub fn describe(&self, ty: &str, id: &str) -> (String, Option<&str>) {
        match ItemType::parse(ty) {
            Some(t) => (self.name(t, id), self.description(t, id)),
            None => (id.to_string(), None),
        }
    }

    /// The description of the entitlement granting `value` in `attribute` on `source`.
    pub fn value_description(&self, source: &str, attribute: &str, value: &str) -> Option<&str> {
        self.entitlement_for(source, attribute, value)
            .and_then(|e| e.description.as_deref())
    }

    pub fn entitlement(&self, id: &str) -> Option<&EntitlementDef> {
        self.entitlements.get(id)
    }

    /// The display name of the entitlement granting `value` in `attribute` on `source`
    /// (what a task names), if the catalog has one.
    pub fn value_name(&self, source: &str, attribute: &str, value: &str) -> Option<&str> {
        self.entitlement_for(source, attribute, value)
            .and_then(|e| e.name.as_deref())
    }

    /// The entitlement granting `value` in `attribute` on `source`.
    pub fn entitlement_for(
        &self,
        source: &str,
        attribute: &str,
        value: &str,
    ) -> Option<&EntitlementDef> {
        self.entitlements
            .values()
            .find(|e| e.source == source && e.attribute == attribute && e.value == value)
    }

    /// Every entitlement the item grants, each once, in id order.
    pub fn expand(&self, ty: ItemType, id: &str) -> Vec<&EntitlementDef> {
        let mut ids: BTreeSet<&str> = BTreeSet::new();
        match ty {
            ItemType::Entitlement => {
                ids.insert(id);
            }
            ItemType::AccessProfile => {
                if let Some(p) = self.profiles.get(id) {
                    ids.extend(p.entitlements.iter().map(String::as_str));
                }
            }
            ItemType::Role => {
                if let Some(r) = self.roles.get(id) {
                    ids.extend(r.entitlements.iter().map(String::as_str));
                    for ap in &r.access_profiles {
                        if let Some(p) = self.profiles.get(ap) {
                            ids.extend(p.entitlements.iter().map(String::as_str));
                        }
                    }
                }
            }
        }
        ids.into_iter()
            .filter_map(|i| self.entitlements.get(i))
            .collect()
    }

    /// The item's id with every access profile and entitlement it grants (what a
    /// separation-of-duties rule may name at any level).
    pub fn closure(&self, ty: ItemType, id: &str) -> BTreeSet<String> {
        let mut out = BTreeSet::from([id.to_string()]);
        if let ItemType::Role = ty
            && let Some(r) = self.roles.get(id)
        {
            out.extend(r.access_profiles.iter().cloned());
        }
        out.extend(self.expand(ty, id).into_iter().map(|e| e.id.clone()));
        out
    }

    /// The entitlements that live on `source`.
    pub fn entitlements_of<'a>(
        &'a self,
        source: &'a str,
    ) -> impl Iterator<Item = &'a EntitlementDef> + 'a {
        self.entitlements
            .values()
            .filter(move |e| e.source == source)
    }

    /// Entitlements per source, for `provd check` summaries.
    pub fn entitlement_count(&self) -> usize {
        self.entitlements.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file() -> CatalogFile {
        toml::from_str(
            r#"
            [[entitlement]]
            id = "vpn"
            source = "ldap"
            attribute = "groups"
            value = "cn=vpn"
            [[entitlement]]
            id = "git"
            source = "ldap"
            attribute = "groups"
            value = "cn=git"
            [[entitlement]]
            id = "wiki"
            source = "flat"
            attribute = "groups"
            value = "editors"
            [[access_profile]]
            id = "ap-eng"
            entitlements = ["vpn", "git"]
            [[role]]
            id = "eng"
            access_profiles = ["ap-eng"]
            entitlements = ["wiki", "vpn"]
            "#,
        )
        .unwrap()
    }

    fn sources() -> BTreeSet<String> {
        ["ldap", "flat"].into_iter().map(String::from).collect()
    }

    #[test]
    fn role_expands_through_profiles_once_each() {
        let (cat, problems) = Catalog::build(file(), &sources());
        assert!(problems.is_empty(), "{problems:?}");
        let ids: Vec<_> = cat
            .expand(ItemType::Role, "eng")
            .iter()
            .map(|e| e.id.as_str())
            .collect();
        assert_eq!(ids, ["git", "vpn", "wiki"]);
        let ids: Vec<_> = cat
            .expand(ItemType::AccessProfile, "ap-eng")
            .iter()
            .map(|e| e.id.as_str())
            .collect();
        assert_eq!(ids, ["git", "vpn"]);
        assert!(cat.expand(ItemType::Role, "nope").is_empty());
        assert_eq!(cat.name(ItemType::Entitlement, "vpn"), "cn=vpn");
    }

    #[test]
    fn dangling_references_and_duplicates_are_reported_with_keys() {
        let mut f = file();
        f.entitlement[2].source = "gone".into();
        f.access_profile[0].entitlements.push("nope".into());
        f.role[0].access_profiles.push("ap-x".into());
        let dup = f.entitlement[0].clone();
        f.entitlement.push(dup);
        let (_, problems) = Catalog::build(f, &sources());
        let keys: Vec<_> = problems.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "entitlement[2].source",
                "entitlement[3].id",
                "access_profile[0].entitlements[2]",
                "role[0].access_profiles[1]"
            ]
        );
    }
}
