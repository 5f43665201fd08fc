//! Where an account lives (DESIGN §24). `[account] ou` places a new account: the first
//! RDN of the `native_id` template under the rendered OU. When an identity change makes
//! the placement render differently (a department move, a new surname in the CN), the
//! attribute sync's UPDATE_ACCOUNT carries [`PLACEMENT`] and one modrdn moves or renames
//! the entry; provd's link follows the new DN. AD keeps group memberships pointing at it
//! (linked attributes); on other directories provd rewrites them, as OpenLDAP's `refint`
//! overlay would.

use ldap3::Ldap;
use provd_connector_core::operation::PLACEMENT;
use provd_connector_core::template;
use provd_connector_core::{ConnectorError, Identity, Outcome};

use crate::account::{beside, holds, read};
use crate::error::{from_ldap, from_result};
use crate::escape::{dn_key, dn_value, filter_value, split_dn};
use crate::{LdapConnector, template_error};

/// The account attribute an RDN names (`CN` of `CN=Ada Lovelace,…`).
fn rdn_type(dn: &str) -> &str {
    split_dn(dn).0.split_once('=').map_or("", |(t, _)| t.trim())
}

impl LdapConnector {
    /// The DN a new account of `identity` gets.
    pub(crate) fn placed_dn(&self, identity: &Identity) -> Result<String, ConnectorError> {
        let dn = template::fill(&self.s.account.native_id, identity, dn_value)
            .map_err(template_error)?;
        let Some(ou) = &self.s.account.ou else {
            return Ok(dn);
        };
        let ou = template::fill(ou, identity, dn_value).map_err(template_error)?;
        Ok(format!("{},{ou}", split_dn(&dn).0))
    }

    /// Attribute sync on an entry: the attributes replaced (an empty value clears one),
    /// then, when the placement rendered differently, the entry moved. The RDN's own
    /// attribute is left to the modrdn (AD refuses to modify `cn`: notAllowedOnRDN).
    pub(crate) async fn sync_entry(
        &self,
        identity: &Identity,
        dn: &str,
        attributes: &std::collections::BTreeMap<String, String>,
    ) -> Result<Outcome, ConnectorError> {
        let moves = attributes.contains_key(PLACEMENT);
        let placed = self.placed_dn(identity)?;
        let rdn = rdn_type(&placed).to_string();
        let changed: std::collections::BTreeMap<String, String> = attributes
            .iter()
            .filter(|(k, _)| *k != PLACEMENT && !(moves && k.eq_ignore_ascii_case(&rdn)))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if !changed.is_empty() {
            self.replace_values(dn, &changed).await?;
        }
        if !moves {
            return Ok(Outcome::Applied);
        }
        self.relocate(identity, dn, &placed).await
    }

    /// Moves the entry at `dn` to `placed` (or beside it, ` (id)` added, where `placed`
    /// is another person's), unless it is there already or parked where disabled
    /// accounts go (its enable brings it to `placed`).
    async fn relocate(
        &self,
        identity: &Identity,
        dn: &str,
        placed: &str,
    ) -> Result<Outcome, ConnectorError> {
        let parked = self
            .s
            .account
            .disable
            .as_ref()
            .and_then(|d| d.move_to.as_ref());
        if parked.is_some_and(|p| dn_key(p) == dn_key(split_dn(dn).1)) {
            return Ok(Outcome::Unchanged);
        }
        let candidates = [placed.to_string(), beside(placed, &identity.id)];
        if candidates.iter().any(|c| dn_key(c) == dn_key(dn)) {
            return Ok(Outcome::Unchanged);
        }
        let corr = self.s.account.correlation.clone();
        let value = self.correlation_value(identity)?;
        let old = dn.to_string();
        let dn = dn.to_string();
        let out = self
            .run("move account", |mut ldap| {
                let (dn, candidates, corr, value) =
                    (dn.clone(), candidates.clone(), corr.clone(), value.clone());
                async move {
                    for to in &candidates {
                        if let Some(out) = move_to(&mut ldap, &dn, to, &corr, &value).await? {
                            return Ok(out);
                        }
                    }
                    Err(ConnectorError::permanent(
                        Some("68".into()),
                        format!(
                            "cannot move {dn}: {} and {} belong to other accounts",
                            candidates[0], candidates[1]
                        ),
                    ))
                }
            })
            .await?;
        if let Outcome::Moved { native_id } = &out {
            self.follow_members(&old, native_id).await?;
        }
        Ok(out)
    }

    /// Groups that name the entry by its old DN name it by its new one. AD does this
    /// itself, `memberUid` names the account by its key (which does not move), and a
    /// retried attempt finds the work done ("already so" answers: 20, 16).
    async fn follow_members(&self, old: &str, new: &str) -> Result<(), ConnectorError> {
        let attr = self.s.groups.member_attribute.clone();
        if self.is_ad() || attr == "memberUid" || dn_key(old) == dn_key(new) {
            return Ok(());
        }
        let base = naming_context(new)
            .or(self.s.account.search_base.clone())
            .unwrap_or_else(|| split_dn(new).1.to_string());
        let filter = format!("({attr}={})", filter_value(old));
        let (old, new) = (old.to_string(), new.to_string());
        self.run("follow memberships", |mut ldap| {
            let (base, filter, attr, old, new) = (
                base.clone(),
                filter.clone(),
                attr.clone(),
                old.clone(),
                new.clone(),
            );
            async move {
                let (entries, _) = ldap
                    .search(&base, ldap3::Scope::Subtree, &filter, vec!["1.1"])
                    .await
                    .and_then(|r| r.success())
                    .map_err(|e| from_ldap("search", e))?;
                for e in entries.into_iter().filter(|e| !e.is_ref()) {
                    let group = ldap3::SearchEntry::construct(e).dn;
                    for (m, ok) in [
                        (ldap3::Mod::Add(attr.clone(), [new.clone()].into()), 20),
                        (ldap3::Mod::Delete(attr.clone(), [old.clone()].into()), 16),
                    ] {
                        let r = ldap
                            .modify(&group, vec![m])
                            .await
                            .map_err(|e| from_ldap("modify", e))?;
                        if r.rc != 0 && r.rc != ok {
                            return Err(from_result("modify", &r));
                        }
                    }
                }
                Ok(())
            }
        })
        .await
    }
}

/// The directory's root under which a DN lies: from its first `dc=` RDN on.
pub(crate) fn naming_context(dn: &str) -> Option<String> {
    let mut rest = dn;
    while !rest.is_empty() {
        if rdn_type(rest).eq_ignore_ascii_case("dc") {
            return Some(rest.to_string());
        }
        rest = split_dn(rest).1;
    }
    None
}

/// One modrdn of `dn` to `to`; None when `to` is another account's. A retried attempt
/// whose first move went through finds the entry at `to` already.
async fn move_to(
    ldap: &mut Ldap,
    dn: &str,
    to: &str,
    corr: &str,
    value: &str,
) -> Result<Option<Outcome>, ConnectorError> {
    let (rdn, parent) = split_dn(to);
    let r = ldap
        .modifydn(dn, rdn, true, Some(parent))
        .await
        .map_err(|e| from_ldap("modifydn", e))?;
    let ours = |e: Option<ldap3::SearchEntry>| e.is_some_and(|e| holds(&e, corr, value));
    match r.rc {
        0 => Ok(Some(Outcome::Moved {
            native_id: to.to_string(),
        })),
        32 | 68 if ours(read(ldap, to, vec![corr]).await?) => Ok(Some(Outcome::Moved {
            native_id: to.to_string(),
        })),
        68 => Ok(None),
        _ => Err(from_result("modifydn", &r)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_naming_context_starts_at_the_first_dc() {
        assert_eq!(
            naming_context("uid=a,ou=eng,dc=example,dc=com").as_deref(),
            Some("dc=example,dc=com")
        );
        assert_eq!(naming_context("cn=a,o=corp"), None);
    }

    #[test]
    fn the_rdn_type_is_the_first_rdns() {
        assert_eq!(rdn_type("CN=Doe\\, John,OU=Sales,DC=x"), "CN");
        assert_eq!(rdn_type("uid=ada,ou=people"), "uid");
    }
}
