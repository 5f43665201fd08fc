//! An account's status: the `[account.disable]` recipe applied and undone (a leaver, a
//! rehire: DESIGN §13), and what each does when the entry was deleted by hand (§21).
//! Active Directory's ACCOUNTDISABLE bit is `account.rs`'s.

use std::collections::HashSet;

use ldap3::Mod;
use provd_connector_core::{ConnectorError, Identity, Outcome};

use crate::escape::split_dn;
use crate::{LdapConnector, settings};

impl LdapConnector {
    pub(crate) async fn disable(
        &self,
        identity: &Identity,
        native_id: Option<&str>,
    ) -> Result<Outcome, ConnectorError> {
        if self.s.directory == settings::Directory::Ad {
            return self.disable_ad(identity, native_id).await;
        }
        let dn = self.account_dn(identity, native_id)?;
        let d = self.disable_recipe()?;
        if let Some(target) = d.move_to {
            let new_dn = format!("{},{target}", split_dn(&dn).0);
            return self.move_entry("move account", &dn, &new_dn).await;
        }
        let (attr, value) = Self::recipe_value(d)?;
        let set = Mod::Replace(attr, HashSet::from([value]));
        // noSuchObject (32): deleted by hand; nobody can use it, which is what a disable
        // wants (drift reports its access missing, and a repair makes it again disabled).
        self.modify_one("disable account", &dn, set, Some(32)).await
    }

    /// Undoes the `[account.disable]` recipe (a rehire, DESIGN §13): the value it set is
    /// removed, or the entry moves back to where `native_id`'s template puts it. Active
    /// Directory: the ACCOUNTDISABLE bit (`account.rs`), with a fresh password where
    /// `[account.password]` is set.
    pub(crate) async fn enable_generic(
        &self,
        identity: &Identity,
        native_id: Option<&str>,
    ) -> Result<Outcome, ConnectorError> {
        // A rehire whose entry was deleted by hand: made again first (DESIGN §21), and
        // made enabled, so the change below finds nothing to undo.
        let (mut nid, mut recreated) = self.ensure_account(identity, native_id).await?;
        let out = match self.enable_entry(identity, nid.as_deref()).await {
            // Deleted after this connector last saw it (its memory of the entry is
            // recent): looked for again, and made again.
            Err(e) if e.code.as_deref() == Some("32") && !recreated => {
                self.confirmed
                    .forget(&self.account_dn(identity, nid.as_deref())?);
                (nid, recreated) = self.ensure_account(identity, native_id).await?;
                self.enable_entry(identity, nid.as_deref()).await?
            }
            done => done?,
        };
        Ok(match (recreated, nid) {
            (true, Some(dn)) => out.after_recreate(dn),
            _ => out,
        })
    }

    async fn enable_entry(
        &self,
        identity: &Identity,
        native_id: Option<&str>,
    ) -> Result<Outcome, ConnectorError> {
        // AD too: a rehire whose account was deleted by hand failed (`no account at …`,
        // issue 34); made again above, it is enabled here.
        if self.s.directory == settings::Directory::Ad {
            return self.enable(identity, native_id).await;
        }
        let dn = self.account_dn(identity, native_id)?;
        let d = self.disable_recipe()?;
        if d.move_to.is_some() {
            let home = self.account_dn(identity, None)?;
            return self.move_entry("move account back", &dn, &home).await;
        }
        let (attr, value) = Self::recipe_value(d)?;
        // noSuchAttribute (16): not disabled (any more).
        let unset = Mod::Delete(attr, HashSet::from([value]));
        self.modify_one("enable account", &dn, unset, Some(16))
            .await
    }

    fn disable_recipe(&self) -> Result<settings::DisableSettings, ConnectorError> {
        self.s.account.disable.clone().ok_or_else(|| {
            ConnectorError::permanent(
                Some("unsupported".into()),
                "no [account.disable] configured for this source",
            )
        })
    }

    fn recipe_value(d: settings::DisableSettings) -> Result<(String, String), ConnectorError> {
        match (d.attribute, d.value) {
            (Some(a), Some(v)) => Ok((a, v)),
            _ => Err(ConnectorError::permanent(
                None,
                "[account.disable] needs attribute + value or move_to",
            )),
        }
    }
}
