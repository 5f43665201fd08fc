//! Evidence (DESIGN §17): reading an account back (the entry, its values, its group
//! memberships), and making sure an account still exists before it is given something —
//! an entry deleted by hand would otherwise be left as a group member pointing at nothing.

use ldap3::Scope;
use provd_connector_core::{ConnectorError, Entitlement, Identity, ReadBack};

use crate::account::{holds, read};
use crate::error::{from_ldap, from_result};
use crate::escape::{dn_key, filter_value, split_dn};
use crate::{LdapConnector, settings};

impl LdapConnector {
    /// Whether the entry at `dn` exists (one base-scope read unless confirmed lately).
    async fn exists(&self, dn: &str) -> Result<bool, ConnectorError> {
        if self.confirmed.recent(dn) {
            return Ok(true);
        }
        let found = self
            .run("read account", |mut ldap| {
                let dn = dn.to_string();
                async move { read(&mut ldap, &dn, vec!["1.1"]).await }
            })
            .await?
            .is_some();
        if found {
            self.confirmed.note(dn);
        }
        Ok(found)
    }

    /// Before an add: the account, created again if it was deleted out of band. Returns
    /// the native id to use and whether it had to be re-created.
    pub(crate) async fn ensure_account(
        &self,
        identity: &Identity,
        native_id: Option<&str>,
    ) -> Result<(Option<String>, bool), ConnectorError> {
        let dn = self.account_dn(identity, native_id)?;
        if self.exists(&dn).await? {
            return Ok((native_id.map(str::to_string), false));
        }
        let made = self.create(identity).await?;
        let new = made.native_id().map(str::to_string).unwrap_or(dn);
        self.confirmed.note(&new);
        tracing::warn!(source = %self.source, identity = %identity.id, native_id = %new,
            "account was gone (deleted out of band): created it again before the change");
        Ok((Some(new), true))
    }

    /// The members of the group `e` that are none of `managed` (DESIGN §21). The
    /// placeholder member and the account provd binds as are the connector's own, never
    /// unmanaged.
    pub(crate) async fn unmanaged(
        &self,
        e: &Entitlement,
        managed: &[(Identity, String)],
    ) -> Result<Option<Vec<String>>, ConnectorError> {
        if e.attribute != "groups" {
            return Ok(None);
        }
        let attr = self.s.groups.member_attribute.clone();
        let mut known: std::collections::HashSet<String> = managed
            .iter()
            .filter_map(|(i, native)| self.member_value(i, Some(native)).ok())
            .map(|v| dn_key(&v))
            .collect();
        known.extend(self.s.groups.placeholder_member.as_deref().map(dn_key));
        known.insert(dn_key(&self.s.bind_dn));
        let entry = self
            .run("read group", |mut ldap| {
                let (dn, attr) = (e.value.clone(), attr.clone());
                async move { read(&mut ldap, &dn, vec![attr.as_str()]).await }
            })
            .await?;
        // A group that is not there has no members.
        let Some(entry) = entry else {
            return Ok(Some(Vec::new()));
        };
        let members: Vec<String> = entry
            .attrs
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(&attr))
            .flat_map(|(_, v)| v.iter())
            .filter(|v| !known.contains(&dn_key(v)))
            .cloned()
            .collect();
        if attr == "memberUid" || members.is_empty() {
            return Ok(Some(members));
        }
        // A group nested in the group is how its members hold it (DESIGN §24), not
        // someone provd does not manage: told apart, never taken out.
        let people = self
            .run("read members", |mut ldap| {
                let members = members.clone();
                async move {
                    let mut people = Vec::new();
                    for m in members {
                        let r = ldap
                            .search(&m, Scope::Base, GROUP_CLASSES, vec!["1.1"])
                            .await
                            .map_err(|e| from_ldap("read member", e))?;
                        let group = r.1.rc == 0 && r.0.iter().any(|x| !x.is_ref());
                        if !group {
                            people.push(m);
                        }
                    }
                    Ok(people)
                }
            })
            .await?;
        Ok(Some(people))
    }

    /// Takes a member provd does not manage out of the group `e`.
    pub(crate) async fn remove_unmanaged(
        &self,
        e: &Entitlement,
        member: &str,
    ) -> Result<provd_connector_core::Outcome, ConnectorError> {
        if e.attribute != "groups" {
            return Err(ConnectorError::permanent(
                None,
                format!("`{}` is not a group attribute", e.attribute),
            ));
        }
        self.change_member(&e.value, member, false).await
    }

    /// Reads the account back: None when the entry is gone.
    pub(crate) async fn read_back(
        &self,
        identity: &Identity,
        native_id: Option<&str>,
        candidates: &[Entitlement],
    ) -> Result<Option<ReadBack>, ConnectorError> {
        let dn = self.account_dn(identity, native_id)?;
        let member = self.member_value(identity, Some(&dn))?;
        let member_attr = self.s.groups.member_attribute.clone();
        let ad = self.s.directory == settings::Directory::Ad;
        let disable = self.s.account.disable.clone();
        let mut attrs: Vec<String> = candidates
            .iter()
            .filter(|e| e.attribute != "groups")
            .map(|e| e.attribute.clone())
            .collect();
        if ad {
            attrs.push("userAccountControl".into());
        } else if let Some(a) = disable.as_ref().and_then(|d| d.attribute.clone()) {
            attrs.push(a);
        }
        if attrs.is_empty() {
            attrs.push("1.1".into());
        }
        let candidates = candidates.to_vec();
        // Nesting is read under the directory's root, where groups of groups may be.
        let root = crate::placement::naming_context(&dn)
            .or(self.s.account.search_base.clone())
            .unwrap_or_else(|| split_dn(&dn).1.to_string());
        self.run("read account back", |mut ldap| {
            let root = root.clone();
            let (dn, member, member_attr, attrs, candidates, disable) = (
                dn.clone(),
                member.clone(),
                member_attr.clone(),
                attrs.clone(),
                candidates.clone(),
                disable.clone(),
            );
            async move {
                let Some(entry) =
                    read(&mut ldap, &dn, attrs.iter().map(String::as_str).collect()).await?
                else {
                    return Ok(None);
                };
                let mut values = Vec::new();
                for e in &candidates {
                    let has = if e.attribute == "groups" {
                        let filter = format!("({member_attr}={})", filter_value(&member));
                        let r = ldap
                            .search(&e.value, Scope::Base, &filter, vec!["1.1"])
                            .await
                            .map_err(|err| from_ldap("read group", err))?;
                        match r.1.rc {
                            0 => r.0.iter().any(|x| !x.is_ref()),
                            32 => false,
                            _ => return Err(from_result("read group", &r.1)),
                        }
                    } else {
                        holds(&entry, &e.attribute, &e.value)
                    };
                    if has {
                        values.push(e.clone());
                    }
                }
                let nested = nested(
                    &mut ldap,
                    &root,
                    &member_attr,
                    &member,
                    &candidates,
                    &values,
                    ad,
                )
                .await?;
                let disabled = if ad {
                    entry
                        .attrs
                        .iter()
                        .find(|(k, _)| k.eq_ignore_ascii_case("userAccountControl"))
                        .and_then(|(_, v)| v.first())
                        .and_then(|v| v.parse::<u32>().ok())
                        .map(|uac| uac & 2 != 0)
                } else {
                    match disable {
                        Some(d) => match (d.move_to, d.attribute, d.value) {
                            (Some(to), _, _) => Some(split_dn(&dn).1.eq_ignore_ascii_case(&to)),
                            (None, Some(a), Some(v)) => Some(holds(&entry, &a, &v)),
                            _ => None,
                        },
                        None => None,
                    }
                };
                Ok(Some(ReadBack {
                    values,
                    disabled,
                    nested,
                }))
            }
        })
        .await
    }
}

/// Object classes of groups, as a filter.
const GROUP_CLASSES: &str =
    "(|(objectClass=group)(objectClass=groupOfNames)(objectClass=groupOfUniqueNames))";

/// The candidate groups `member` is in only through nesting, each with the group it is
/// directly in on the way. AD first asks the DC whether any is (one search); the path,
/// and all of it elsewhere, comes from walking up ([`crate::nesting::above`]).
/// `memberUid` groups do not nest.
async fn nested(
    ldap: &mut ldap3::Ldap,
    root: &str,
    attr: &str,
    member: &str,
    candidates: &[Entitlement],
    direct: &[Entitlement],
    ad: bool,
) -> Result<Vec<(Entitlement, String)>, ConnectorError> {
    let wanted: Vec<&Entitlement> = candidates
        .iter()
        .filter(|e| e.attribute == "groups" && !direct.contains(e))
        .collect();
    if wanted.is_empty() || attr == "memberUid" {
        return Ok(Vec::new());
    }
    if ad {
        let chain: Vec<String> = crate::nesting::in_chain(ldap, root, attr, member)
            .await?
            .iter()
            .map(|g| dn_key(g))
            .collect();
        if !wanted.iter().any(|e| chain.contains(&dn_key(&e.value))) {
            return Ok(Vec::new());
        }
    }
    let above = crate::nesting::above(ldap, root, attr, member).await?;
    Ok(wanted
        .into_iter()
        .filter_map(|e| {
            let via = above.get(&dn_key(&e.value))?;
            (dn_key(via) != dn_key(&e.value)).then(|| (e.clone(), via.clone()))
        })
        .collect())
}
