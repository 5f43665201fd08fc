//! Accounts: create (with correlation that never links an entry it has not read), and,
//! for Active Directory, enable and disable by the ACCOUNTDISABLE bit with the initial
//! password set and delivered on the way (DESIGN §20).

use std::collections::HashSet;

use ldap3::{Ldap, Mod, Scope, SearchEntry};
use provd_connector_core::template;
use provd_connector_core::{ConnectorError, Identity, Outcome};

use crate::ad;
use crate::error::{from_ldap, from_result};
use crate::escape::{dn_value, filter_value, split_dn};
use crate::prefetch;
use crate::settings::Directory;
use crate::{LdapConnector, template_error};

/// AD's limit on a CN's length (its `rangeUpper`).
const AD_CN_MAX: usize = 64;

/// How many numbered values a `unique(…)` attribute tries (`ada.lovelace` … `ada.lovelace50`)
/// before the create fails: fifty namesakes in one directory means the template needs
/// another part, not a longer search.
const UNIQUE_TRIES: u32 = 50;

/// The first value of `template` (`unique(…)`, DESIGN §24) no entry under `base` holds in
/// `attr`. The correlation search has just found no account for the identity, so a value
/// taken is someone else's.
async fn free_value(
    ldap: &mut Ldap,
    base: &str,
    attr: &str,
    template: &str,
    identity: &Identity,
    ad: bool,
) -> Result<String, ConnectorError> {
    let mut first = None;
    for nth in 1..=UNIQUE_TRIES {
        let v = template::fill_nth(template, identity, template::verbatim, nth)
            .map_err(crate::template_error)?;
        if ad && attr.eq_ignore_ascii_case("sAMAccountName") {
            ad::check_sam(&v).map_err(|e| ConnectorError::permanent(Some(attr.into()), e))?;
        }
        let filter = format!("({attr}={})", filter_value(&v));
        let r = ldap
            .search(base, Scope::Subtree, &filter, vec!["1.1"])
            .await
            .and_then(|r| r.success())
            .map_err(|e| from_ldap("search", e))?;
        if r.0.iter().all(|e| e.is_ref()) {
            return Ok(v);
        }
        first.get_or_insert(v);
    }
    Err(ConnectorError::permanent(
        Some(attr.into()),
        format!(
            "no free {attr}: {} and the next {} numbered values are taken under {base}",
            first.unwrap_or_default(),
            UNIQUE_TRIES - 1
        ),
    ))
}

/// Reads one entry's attributes; None when there is no entry at `dn`.
pub(crate) async fn read(
    ldap: &mut Ldap,
    dn: &str,
    attrs: Vec<&str>,
) -> Result<Option<SearchEntry>, ConnectorError> {
    let r = ldap
        .search(dn, Scope::Base, "(objectClass=*)", attrs)
        .await
        .map_err(|e| from_ldap("read", e))?;
    let (entries, result) = (r.0, r.1);
    match result.rc {
        0 => Ok(entries
            .into_iter()
            .find(|e| !e.is_ref())
            .map(SearchEntry::construct)),
        32 => Ok(None),
        _ => Err(from_result("read", &result)),
    }
}

/// Folds like a caseIgnoreMatch (case, surrounding and repeated spaces).
fn fold(v: &str) -> String {
    v.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// Does the entry hold `value` in `attr`?
pub(crate) fn holds(entry: &SearchEntry, attr: &str, value: &str) -> bool {
    let want = fold(value);
    entry
        .attrs
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case(attr))
        .flat_map(|(_, v)| v.iter())
        .any(|v| fold(v) == want)
}

/// The DN with ` (id)` added to its first RDN's value: where a second "Ada Lovelace" goes.
pub fn beside(dn: &str, id: &str) -> String {
    let (rdn, parent) = split_dn(dn);
    let suffix = dn_value(&format!(" ({id})"));
    // dn_value escapes a leading space; inside a value it needs none.
    let suffix = suffix.strip_prefix('\\').unwrap_or(&suffix);
    if parent.is_empty() {
        format!("{rdn}{suffix}")
    } else {
        format!("{rdn}{suffix},{parent}")
    }
}

/// Characters in the first RDN's value once its escapes are undone (`\,` is one
/// character, `\c3\ab` one `ë`).
pub fn rdn_value_len(dn: &str) -> usize {
    let (rdn, _) = split_dn(dn);
    let value = rdn.split_once('=').map_or(rdn, |(_, v)| v);
    let mut bytes = Vec::with_capacity(value.len());
    let mut chars = value.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            bytes.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
            continue;
        }
        let Some(next) = chars.next() else { break };
        match (next.to_digit(16), chars.peek().and_then(|d| d.to_digit(16))) {
            (Some(hi), Some(lo)) => {
                chars.next();
                bytes.push((hi * 16 + lo) as u8);
            }
            _ => bytes.extend_from_slice(next.encode_utf8(&mut [0; 4]).as_bytes()),
        }
    }
    String::from_utf8_lossy(&bytes).chars().count()
}

impl LdapConnector {
    pub(crate) fn is_ad(&self) -> bool {
        self.s.directory == Directory::Ad
    }

    /// Where the correlation search looks: `[account] search_base`, else the DN's parent.
    pub(crate) fn search_base(&self, dn: &str) -> String {
        self.s
            .account
            .search_base
            .clone()
            .unwrap_or_else(|| split_dn(dn).1.to_string())
    }

    pub(crate) async fn create(&self, identity: &Identity) -> Result<Outcome, ConnectorError> {
        let dn = self.account_dn(identity, None)?;
        let mut attrs: Vec<(String, HashSet<String>)> = vec![(
            "objectClass".into(),
            self.s.account.object_classes.iter().cloned().collect(),
        )];
        // `unique(…)` values are chosen once the correlation search found no account.
        let mut uniques = Vec::new();
        for (name, t) in &self.s.account.attributes {
            if template::is_unique(t).map_err(template_error)? {
                uniques.push((name.clone(), t.clone()));
                continue;
            }
            let v = template::fill(t, identity, template::verbatim).map_err(template_error)?;
            if self.is_ad() && name.eq_ignore_ascii_case("sAMAccountName") {
                ad::check_sam(&v)
                    .map_err(|e| ConnectorError::permanent(Some("sAMAccountName".into()), e))?;
            }
            attrs.push((name.clone(), HashSet::from([v])));
        }
        let value = self.correlation_value(identity)?;
        let corr = self.s.account.correlation.clone();
        let filter = format!("({corr}={})", filter_value(&value));
        let base = self.search_base(&dn);
        // A batch lookup may have answered already (see `prefetch`).
        let known = self
            .prefetched
            .take(&base, &value, std::time::Instant::now());
        if let Some(prefetch::Known::Found(found)) = known {
            return Ok(Outcome::Correlated { native_id: found });
        }
        let search = known.is_none();
        let id = identity.id.clone();
        let ad = self.is_ad();
        self.run("create account", |mut ldap| {
            let (dn, mut attrs, filter, base, corr, value, id) = (
                dn.clone(), attrs.clone(), filter.clone(), base.clone(), corr.clone(), value.clone(), id.clone(),
            );
            let uniques = uniques.clone();
            async move {
                if search {
                    let r = ldap
                        .search(&base, Scope::Subtree, &filter, vec!["1.1"])
                        .await
                        .and_then(|r| r.success())
                        .map_err(|e| from_ldap("search", e))?;
                    // Search references (AD's ForestDnsZones and the like) are not accounts.
                    let found: Vec<String> = r.0.into_iter().filter(|e| !e.is_ref()).map(|e| SearchEntry::construct(e).dn).collect();
                    match found.len() {
                        0 => {}
                        1 => return Ok(Outcome::Correlated { native_id: found.into_iter().next().unwrap_or_default() }),
                        n => {
                            return Err(ConnectorError::permanent(
                                Some("ambiguous".into()),
                                format!("correlation {filter} matches {n} entries under {base}; refusing to guess"),
                            ));
                        }
                    }
                }
                for (name, t) in &uniques {
                    let v = free_value(&mut ldap, &base, name, t, identity, ad).await?;
                    attrs.push((name.clone(), HashSet::from([v])));
                }
                let r = ldap.add(&dn, attrs.clone()).await.map_err(|e| from_ldap("add", e))?;
                match r.rc {
                    0 => return Ok(Outcome::Created { native_id: dn }),
                    68 => {}
                    _ => return Err(from_result("add", &r)),
                }
                // "Already exists": link it only if it is this identity's account.
                let said = format!("{} ({})", r.text, r.rc);
                match read(&mut ldap, &dn, vec![corr.as_str()]).await? {
                    Some(e) if holds(&e, &corr, &value) => return Ok(Outcome::Correlated { native_id: dn }),
                    Some(_) => {}
                    None => {
                        // AD: the sAMAccountName is taken by an entry elsewhere.
                        return Err(ConnectorError::permanent(
                            Some("68".into()),
                            format!(
                                "add {dn}: the directory says the account exists ({said}), but not at that DN and not under {base}; set [account] search_base to where accounts live"
                            ),
                        ));
                    }
                }
                // The DN belongs to someone else (two people with one name).
                let other = beside(&dn, &id);
                if ad && rdn_value_len(&other) > AD_CN_MAX {
                    return Err(ConnectorError::permanent(
                        Some("68".into()),
                        format!("{dn} belongs to another account, and {other} would pass AD's {AD_CN_MAX}-character CN limit"),
                    ));
                }
                let r = ldap.add(&other, attrs).await.map_err(|e| from_ldap("add", e))?;
                match r.rc {
                    0 => Ok(Outcome::CreatedElsewhere { native_id: other, taken: dn }),
                    68 => match read(&mut ldap, &other, vec![corr.as_str()]).await? {
                        Some(e) if holds(&e, &corr, &value) => Ok(Outcome::Correlated { native_id: other }),
                        _ => Err(ConnectorError::permanent(
                            Some("68".into()),
                            format!("{dn} and {other} both belong to other accounts; give this identity a DN by hand"),
                        )),
                    },
                    _ => Err(from_result("add", &r)),
                }
            }
        })
        .await
    }

    /// The account's `userAccountControl`.
    async fn uac(&self, dn: &str) -> Result<u32, ConnectorError> {
        self.run("read account", |mut ldap| {
            let dn = dn.to_string();
            async move {
                let e = read(&mut ldap, &dn, vec!["userAccountControl"])
                    .await?
                    .ok_or_else(|| {
                        ConnectorError::permanent(Some("32".into()), format!("no account at {dn}"))
                    })?;
                e.attrs
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case("userAccountControl"))
                    .and_then(|(_, v)| v.first())
                    .and_then(|v| v.parse::<u32>().ok())
                    .ok_or_else(|| {
                        ConnectorError::permanent(
                            None,
                            format!("{dn} has no userAccountControl: not an AD account"),
                        )
                    })
            }
        })
        .await
    }

    async fn modify(
        &self,
        what: &str,
        dn: &str,
        mods: Vec<Mod<Vec<u8>>>,
    ) -> Result<(), ConnectorError> {
        self.run(what, |mut ldap| {
            let (dn, mods, what) = (dn.to_string(), mods.clone(), what.to_string());
            async move {
                let r = ldap
                    .modify(&dn, mods)
                    .await
                    .map_err(|e| from_ldap(&what, e))?;
                if r.rc == 0 {
                    Ok(())
                } else {
                    Err(from_result(&what, &r))
                }
            }
        })
        .await
    }

    fn set_uac(uac: u32) -> Mod<Vec<u8>> {
        Mod::Replace(
            b"userAccountControl".to_vec(),
            HashSet::from([uac.to_string().into_bytes()]),
        )
    }

    /// AD: make a disabled account usable. With `[account.password]`, an account that has
    /// no password of provd's yet (PASSWD_NOTREQD: made by provd's create) first gets one
    /// ([`Self::set_password`]), and only then the ACCOUNTDISABLE bit goes (and
    /// PASSWD_NOTREQD). An account that has a password keeps it: a rehire's new one is
    /// RESET_PASSWORD's, planned before this where `on_rehire = "reset"`. An enabled
    /// account is left as it is.
    pub(crate) async fn enable(
        &self,
        identity: &Identity,
        native_id: Option<&str>,
    ) -> Result<Outcome, ConnectorError> {
        if !self.is_ad() {
            return Err(ConnectorError::permanent(
                Some("unsupported".into()),
                "enabling accounts needs directory = \"ad\" on this source",
            ));
        }
        let dn = self.account_dn(identity, native_id)?;
        let uac = self.uac(&dn).await?;
        if uac & ad::ACCOUNTDISABLE == 0 {
            return Ok(Outcome::Unchanged);
        }
        let Some(p) = self.s.account.password.clone() else {
            self.modify(
                "enable account",
                &dn,
                vec![Self::set_uac(ad::enabled(uac, false))],
            )
            .await?;
            return Ok(Outcome::Applied);
        };
        if uac & ad::PASSWD_NOTREQD != 0 {
            // Not delivered: the account stays disabled; the next attempt sets a new one.
            self.set_password(
                identity,
                &dn,
                &p,
                "initial password",
                "the account stays disabled",
            )
            .await?;
        }
        self.modify(
            "enable account",
            &dn,
            vec![Self::set_uac(ad::enabled(uac, true))],
        )
        .await?;
        Ok(Outcome::Applied)
    }

    /// AD: a new delivered password for an existing account (RESET_PASSWORD, DESIGN §24).
    pub(crate) async fn reset_ad_password(
        &self,
        identity: &Identity,
        native_id: Option<&str>,
    ) -> Result<Outcome, ConnectorError> {
        let Some(p) = self.s.account.password.clone().filter(|_| self.is_ad()) else {
            return Err(ConnectorError::permanent(
                Some("unsupported".into()),
                "resetting passwords needs directory = \"ad\" and [account.password] on this source",
            ));
        };
        let dn = self.account_dn(identity, native_id)?;
        // Read first: a reset of an account that is gone fails naming it.
        self.uac(&dn).await?;
        self.set_password(
            identity,
            &dn,
            &p,
            "new password",
            "the old one was replaced",
        )
        .await?;
        Ok(Outcome::Applied)
    }

    /// Sets a fresh random password (and `pwdLastSet = 0` where it must be changed), then
    /// delivers it. AD's password policy may refuse one (`0000052D`: history, a name
    /// in it): a second is tried once, then the refusal is permanent with AD's text. A
    /// failed delivery is retryable: the next attempt sets another password, so none
    /// that nobody received stays in use longer than the retry.
    async fn set_password(
        &self,
        identity: &Identity,
        dn: &str,
        p: &crate::settings::PasswordSettings,
        what: &str,
        undelivered: &str,
    ) -> Result<(), ConnectorError> {
        let sam = self
            .s
            .account
            .attributes
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("sAMAccountName"))
            .and_then(|(_, t)| template::fill(t, identity, template::verbatim).ok())
            .unwrap_or_default();
        let mut tries = 0;
        let password = loop {
            let password = ad::random_password(p.length, &sam)
                .map_err(|e| ConnectorError::permanent(None, e))?;
            let mut mods = vec![Mod::Replace(
                b"unicodePwd".to_vec(),
                HashSet::from([ad::unicode_pwd(&password)]),
            )];
            if p.must_change {
                mods.push(Mod::Replace(
                    b"pwdLastSet".to_vec(),
                    HashSet::from([b"0".to_vec()]),
                ));
            }
            match self.modify(&format!("set {what}"), dn, mods).await {
                Ok(()) => break password,
                Err(e) if ad::policy_refused(&e.message) && tries == 0 => tries += 1,
                Err(e) if ad::policy_refused(&e.message) => {
                    return Err(ConnectorError::permanent(
                        e.code.clone(),
                        format!(
                            "{} (AD's password policy refused two fresh passwords)",
                            e.message
                        ),
                    ));
                }
                Err(e) => return Err(e),
            }
        };
        if let Some(command) = &p.deliver_command {
            let d = ad::Delivery {
                command,
                identity,
                source: &self.source,
                dn,
            };
            if let Err(e) = ad::deliver(&d, &password).await {
                return Err(ConnectorError::retryable(
                    Some("delivery".into()),
                    format!("{what} not delivered, {undelivered}: {e}"),
                ));
            }
        }
        Ok(())
    }

    /// AD: disable by setting the ACCOUNTDISABLE bit, keeping every other bit.
    pub(crate) async fn disable_ad(
        &self,
        identity: &Identity,
        native_id: Option<&str>,
    ) -> Result<Outcome, ConnectorError> {
        let dn = self.account_dn(identity, native_id)?;
        let uac = match self.uac(&dn).await {
            // Deleted by hand: nobody can use it, which is what a disable wants (issue
            // 34: a leaver after a manual delete failed, `no account at …`); the read-back
            // reports the access missing, and a rehire makes the account again.
            Err(e) if e.code.as_deref() == Some("32") => return Ok(Outcome::Unchanged),
            read => read?,
        };
        if uac & ad::ACCOUNTDISABLE != 0 {
            return Ok(Outcome::Unchanged);
        }
        self.modify(
            "disable account",
            &dn,
            vec![Self::set_uac(ad::disabled(uac))],
        )
        .await?;
        Ok(Outcome::Applied)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_taken_dn_gets_the_id_in_its_first_rdn() {
        assert_eq!(
            beside("CN=Ada Lovelace,OU=Staff,DC=example,DC=test", "ada2"),
            "CN=Ada Lovelace (ada2),OU=Staff,DC=example,DC=test"
        );
        assert_eq!(
            beside("cn=Doe\\, John,ou=people,dc=x", "j+1"),
            "cn=Doe\\, John (j\\+1),ou=people,dc=x"
        );
    }

    #[test]
    fn cn_length_counts_escapes_once() {
        assert_eq!(rdn_value_len("CN=Ada Lovelace (ada2),OU=x"), 19);
        assert_eq!(rdn_value_len("cn=Doe\\, John,ou=x"), 9);
        assert_eq!(
            rdn_value_len("cn=Zo\\c3\\ab,ou=x"),
            3,
            "hex pairs make one ë"
        );
    }
}
