//! provd's LDAP connector (`type = "ldap"`): OpenLDAP, 389-DS, Active Directory.
//!
//! Accounts are entries created from the source's `[account]` specification (DN and
//! attribute templates), found first by their correlation attribute under the DN's parent
//! so that an existing account is linked rather than duplicated. Group entitlements
//! (`attribute = "groups"`, value = the group's DN) are values of the group's member
//! attribute; any other attribute is a value on the account entry itself. Creates about
//! to run may have their correlation looked up together first ([`Connector::prefetch`]).
//! Every operation is idempotent: "already there" and "already gone" answers are successes.

mod account;
pub mod ad;
mod error;
pub mod escape;
mod members;
mod nesting;
mod placement;
mod pool;
mod prefetch;
mod readback;
mod rights;
pub mod settings;
mod status;
mod tls;

use std::collections::HashSet;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ldap3::{Ldap, LdapConnSettings, Mod, Scope, SearchEntry};
use provd_connector_core::redact::Redactor;
use provd_connector_core::template::{self, TemplateError};
use provd_connector_core::{BoxFuture, Connector, ConnectorError, Entitlement, Identity, Outcome};
use secrecy::SecretString;

use error::{from_ldap, from_result, is_transport};
use escape::{filter_value, split_dn};
use pool::Pool;
pub use settings::LdapSettings;

/// Problems in a source's LDAP settings, each with its key.
pub type SettingsProblems = Vec<(String, String)>;

pub struct LdapConnector {
    s: LdapSettings,
    pool: Pool,
    op_timeout: Duration,
    /// Correlation answers looked up for a batch of creates (see [`prefetch`]).
    prefetched: prefetch::Cache,
    /// The bind password, scrubbed from whatever the server says back.
    redactor: Arc<Redactor>,
    /// The source's id (for a delivery command's environment).
    source: String,
    /// Entries known to exist lately (an add right after a create needs no second look).
    confirmed: provd_connector_core::confirmed::Confirmed,
    /// Member changes of one group waiting together (see [`members`]).
    members: members::Batcher,
}

/// Parses and validates the settings without reading secrets or connecting (`provd check`).
pub fn parse(table: &toml::Table, base: &Path) -> Result<LdapSettings, SettingsProblems> {
    let s: LdapSettings = toml::Value::Table(table.clone())
        .try_into()
        .map_err(|e: toml::de::Error| vec![(String::new(), e.to_string().trim().to_string())])?;
    let problems = settings::validate(&s, base);
    if problems.is_empty() {
        Ok(s)
    } else {
        Err(problems)
    }
}

fn read_password(s: &LdapSettings, base: &Path) -> Result<SecretString, SettingsProblems> {
    if let Some(f) = &s.bind_password_file {
        let path = settings::resolve(base, f);
        provd_connector_core::http::check_trusted(&path)
            .map_err(|e| vec![("bind_password_file".to_string(), e)])?;
        let text = std::fs::read_to_string(&path).map_err(|e| {
            vec![(
                "bind_password_file".to_string(),
                format!("cannot read {}: {e}", path.display()),
            )]
        })?;
        let first = text.lines().next().unwrap_or("").to_string();
        return Ok(SecretString::from(first));
    }
    if let Some(var) = &s.bind_password_env {
        return std::env::var(var).map(SecretString::from).map_err(|_| {
            vec![(
                "bind_password_env".to_string(),
                format!("environment variable {var} is not set"),
            )]
        });
    }
    Err(vec![(
        "bind_password_file".into(),
        "no bind password configured".into(),
    )])
}

fn template_error(e: TemplateError) -> ConnectorError {
    ConnectorError::permanent(Some("template".into()), e.to_string())
}

impl LdapConnector {
    /// Builds the connector from the source file's table; `base` is the file's directory.
    pub fn build(table: &toml::Table, base: &Path) -> Result<Self, SettingsProblems> {
        let s = parse(table, base)?;
        let password = read_password(&s, base)?;
        let mut conn = LdapConnSettings::new().set_starttls(s.starttls);
        let ca = s.tls_ca_file.as_ref().map(|ca| settings::resolve(base, ca));
        if let Some(cfg) = tls::client_config(ca.as_deref(), s.tls_server_name.as_deref())
            .map_err(|e| vec![("tls_ca_file".to_string(), e)])?
        {
            conn = conn.set_config(cfg);
        }
        let connect_timeout = settings::parse_duration(&s.connect_timeout)
            .map_err(|e| vec![("connect_timeout".to_string(), e)])?;
        let op_timeout = settings::parse_duration(&s.operation_timeout)
            .map_err(|e| vec![("operation_timeout".to_string(), e)])?;
        let redactor = Arc::new(Redactor::new([password.clone()]));
        let file = s
            .bind_password_file
            .as_ref()
            .map(|f| settings::resolve(base, f));
        let pool = Pool::new(
            s.url.clone(),
            conn,
            pool::Bind {
                dn: s.bind_dn.clone(),
                secret: provd_connector_core::gate::Secret::new(password, file),
                redactor: redactor.clone(),
            },
            connect_timeout,
            s.pool_size,
            s.pipeline,
        );
        Ok(Self {
            redactor,
            source: String::new(),
            s,
            pool,
            op_timeout,
            prefetched: prefetch::Cache::default(),
            confirmed: Default::default(),
            members: Default::default(),
        })
    }

    /// Whatever the server said, without the bind password.
    fn scrubbed<'a, T>(
        &'a self,
        call: impl Future<Output = Result<T, ConnectorError>> + Send + 'a,
    ) -> BoxFuture<'a, Result<T, ConnectorError>> {
        Box::pin(async move { call.await.map_err(|e| e.redacted(&self.redactor)) })
    }

    /// Names the source this connector serves (the id is not among its own keys).
    pub fn with_source(mut self, id: &str) -> Self {
        self.source = id.to_string();
        self
    }

    /// Runs `f` on a pooled connection. A transport failure on a connection that sat in the
    /// pool (the server may have closed it) is tried once more on a fresh one.
    async fn run<T, F, Fut>(&self, what: &str, f: F) -> Result<T, ConnectorError>
    where
        F: Fn(Ldap) -> Fut,
        Fut: Future<Output = Result<T, ConnectorError>>,
    {
        for round in 0..2 {
            let conn = self.pool.get().await?;
            let result = match tokio::time::timeout(self.op_timeout, f(conn.ldap.clone())).await {
                Ok(r) => r,
                Err(_) => Err(ConnectorError::retryable(
                    Some("timeout".into()),
                    format!("{what}: no answer within {:?}", self.op_timeout),
                )),
            };
            match result {
                Ok(v) => {
                    self.pool.release(conn);
                    return Ok(v);
                }
                Err(e) if is_transport(&e) => {
                    let reused = conn.reused;
                    self.pool.clear(conn);
                    if reused && round == 0 {
                        continue;
                    }
                    return Err(e);
                }
                Err(e) => {
                    self.pool.release(conn);
                    return Err(e);
                }
            }
        }
        Err(ConnectorError::retryable(
            Some("connection".into()),
            format!("{what}: no usable connection"),
        ))
    }

    fn account_dn(
        &self,
        identity: &Identity,
        native_id: Option<&str>,
    ) -> Result<String, ConnectorError> {
        match native_id {
            Some(dn) => Ok(dn.to_string()),
            None => self.placed_dn(identity),
        }
    }

    fn correlation_value(&self, identity: &Identity) -> Result<String, ConnectorError> {
        let t = self
            .s
            .account
            .attributes
            .get(&self.s.account.correlation)
            .ok_or_else(|| {
                ConnectorError::permanent(
                    None,
                    format!(
                        "correlation attribute `{}` has no template",
                        self.s.account.correlation
                    ),
                )
            })?;
        template::fill(t, identity, template::verbatim).map_err(template_error)
    }

    /// The value written into a group's member attribute for this account.
    fn member_value(
        &self,
        identity: &Identity,
        native_id: Option<&str>,
    ) -> Result<String, ConnectorError> {
        if self.s.groups.member_attribute == "memberUid" {
            self.correlation_value(identity)
        } else {
            self.account_dn(identity, native_id)
        }
    }

    /// One search per search base (and [`prefetch::CHUNK`] values) for many creates.
    async fn prefetch_many(&self, identities: Vec<Identity>) {
        let mut by_base: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        for identity in &identities {
            let (Ok(dn), Ok(value)) = (
                self.account_dn(identity, None),
                self.correlation_value(identity),
            ) else {
                continue;
            };
            by_base
                .entry(self.search_base(&dn))
                .or_default()
                .push(value);
        }
        let attr = self.s.account.correlation.clone();
        for (base, values) in by_base {
            for chunk in values.chunks(prefetch::CHUNK) {
                if chunk.len() < 2 {
                    continue; // no better than the create's own search
                }
                let terms: String = chunk
                    .iter()
                    .map(|v| format!("({attr}={})", filter_value(v)))
                    .collect();
                let filter = format!("(|{terms})");
                let found = self
                    .run("prefetch", |mut ldap| {
                        let (base, filter, attr) = (base.clone(), filter.clone(), attr.clone());
                        async move {
                            let (entries, _) = ldap
                                .search(&base, Scope::Subtree, &filter, vec![attr.as_str()])
                                .await
                                .and_then(|r| r.success())
                                .map_err(|e| from_ldap("search", e))?;
                            Ok(entries
                                .into_iter()
                                .map(|e| {
                                    let e = SearchEntry::construct(e);
                                    let vals = e
                                        .attrs
                                        .iter()
                                        .filter(|(k, _)| k.eq_ignore_ascii_case(&attr))
                                        .flat_map(|(_, v)| v.iter().cloned())
                                        .collect();
                                    (e.dn, vals)
                                })
                                .collect::<Vec<_>>())
                        }
                    })
                    .await;
                match found {
                    Ok(entries) => {
                        let answers = prefetch::resolve(chunk, &entries);
                        tracing::debug!(base = %base, accounts = chunk.len(), entries = entries.len(),
                            answered = answers.len(), "correlation looked up in one search");
                        self.prefetched
                            .put(&base, answers, std::time::Instant::now());
                    }
                    // The creates will search for themselves and report what is wrong.
                    Err(e) => tracing::debug!(error = %e, "correlation prefetch failed"),
                }
            }
        }
    }

    /// Adds (`add = true`) or removes one value of `attr` on `dn`, idempotently.
    async fn change_value(
        &self,
        dn: &str,
        attr: &str,
        value: &str,
        add: bool,
    ) -> Result<Outcome, ConnectorError> {
        let placeholder = self.s.groups.placeholder_member.clone();
        let is_group = attr == self.s.groups.member_attribute;
        let ad = self.s.directory == settings::Directory::Ad;
        self.run(if add { "add value" } else { "remove value" }, |mut ldap| {
            let (dn, attr, value, placeholder) = (dn.to_string(), attr.to_string(), value.to_string(), placeholder.clone());
            async move {
                let m = if add {
                    Mod::Add(attr.clone(), HashSet::from([value.clone()]))
                } else {
                    Mod::Delete(attr.clone(), HashSet::from([value.clone()]))
                };
                let r = ldap.modify(&dn, vec![m]).await.map_err(|e| from_ldap("modify", e))?;
                match (r.rc, add) {
                    (0, _) => Ok(Outcome::Applied),
                    (20, true) | (16, false) => Ok(Outcome::Unchanged),
                    // AD: a member that is there is 68, one that is not 53 (16 when the
                    // group has no members at all): already so.
                    (68, true) | (53, false) if ad && is_group => Ok(Outcome::Unchanged),
                    // groupOfNames must keep a member: put the placeholder in, atomically.
                    (65, false) if is_group => match placeholder {
                        Some(p) => {
                            let r = ldap
                                .modify(&dn, vec![Mod::Add(attr.clone(), HashSet::from([p])), Mod::Delete(attr, HashSet::from([value]))])
                                .await
                                .map_err(|e| from_ldap("modify", e))?;
                            if r.rc == 0 { Ok(Outcome::Applied) } else { Err(from_result("modify", &r)) }
                        }
                        None => {
                            let mut e = from_result("modify", &r);
                            e.message.push_str(" (the group would be left empty; set [groups] placeholder_member)");
                            Err(e)
                        }
                    },
                    _ => Err(from_result("modify", &r)),
                }
            }
        })
        .await
    }

    async fn entitlement(
        &self,
        identity: &Identity,
        native_id: Option<&str>,
        e: &Entitlement,
        add: bool,
    ) -> Result<Outcome, ConnectorError> {
        if add {
            // An entry deleted by hand is made again first (DESIGN §17).
            let (mut nid, mut recreated) = self.ensure_account(identity, native_id).await?;
            let out = match self.change(identity, nid.as_deref(), e, true).await {
                // Deleted since this connector last saw it (its memory of the entry is
                // recent; AD then refuses the member: noSuchObject): looked for again,
                // and made again. A missing group fails the same way the second time.
                Err(err) if err.code.as_deref() == Some("32") && !recreated => {
                    self.confirmed
                        .forget(&self.account_dn(identity, nid.as_deref())?);
                    (nid, recreated) = self.ensure_account(identity, native_id).await?;
                    if !recreated {
                        return Err(err);
                    }
                    self.change(identity, nid.as_deref(), e, true).await?
                }
                done => done?,
            };
            return Ok(match (recreated, nid) {
                (true, Some(dn)) => out.after_recreate(dn),
                _ => out,
            });
        }
        self.change(identity, native_id, e, false).await
    }

    async fn change(
        &self,
        identity: &Identity,
        native_id: Option<&str>,
        e: &Entitlement,
        add: bool,
    ) -> Result<Outcome, ConnectorError> {
        if e.attribute == "groups" {
            let member = self.member_value(identity, native_id)?;
            self.change_member(&e.value, &member, add).await
        } else {
            let dn = self.account_dn(identity, native_id)?;
            self.change_value(&dn, &e.attribute, &e.value, add).await
        }
    }

    /// Moves the entry at `dn` to `to`; a retried attempt finds it there already.
    async fn move_entry(&self, what: &str, dn: &str, to: &str) -> Result<Outcome, ConnectorError> {
        if dn == to {
            return Ok(Outcome::Unchanged);
        }
        let (rdn, parent) = split_dn(to);
        let (dn, rdn, parent, to) = (
            dn.to_string(),
            rdn.to_string(),
            parent.to_string(),
            to.to_string(),
        );
        self.run(what, |mut ldap| {
            let (dn, rdn, parent, to) = (dn.clone(), rdn.clone(), parent.clone(), to.clone());
            async move {
                let r = ldap
                    .modifydn(&dn, &rdn, true, Some(&parent))
                    .await
                    .map_err(|e| from_ldap("modifydn", e))?;
                match r.rc {
                    // 32/68: moved before (a retried attempt): it is where it should be.
                    0 | 32 | 68 => Ok(Outcome::Moved { native_id: to }),
                    _ => Err(from_result("modifydn", &r)),
                }
            }
        })
        .await
    }

    /// One modification of the entry at `dn`; `unchanged`: a result code meaning "so
    /// already".
    async fn modify_one(
        &self,
        what: &str,
        dn: &str,
        m: Mod<String>,
        unchanged: Option<u32>,
    ) -> Result<Outcome, ConnectorError> {
        self.run(what, |mut ldap| {
            let (dn, m) = (dn.to_string(), m.clone());
            async move {
                let r = ldap
                    .modify(&dn, vec![m])
                    .await
                    .map_err(|e| from_ldap("modify", e))?;
                match r.rc {
                    0 => Ok(Outcome::Applied),
                    rc if Some(rc) == unchanged => Ok(Outcome::Unchanged),
                    _ => Err(from_result("modify", &r)),
                }
            }
        })
        .await
    }

    /// Attribute sync ([`Self::sync_entry`]).
    async fn update(
        &self,
        identity: &Identity,
        native_id: Option<&str>,
        attributes: &std::collections::BTreeMap<String, String>,
    ) -> Result<Outcome, ConnectorError> {
        let dn = self.account_dn(identity, native_id)?;
        self.sync_entry(identity, &dn, attributes).await
    }

    /// Each attribute replaced by its new value; an empty one removes the attribute
    /// (replace with no values: RFC 4511 §4.6, fine when it is absent).
    async fn replace_values(
        &self,
        dn: &str,
        attributes: &std::collections::BTreeMap<String, String>,
    ) -> Result<Outcome, ConnectorError> {
        let dn = dn.to_string();
        let mods: Vec<Mod<String>> = attributes
            .iter()
            .map(|(k, v)| {
                let values = if v.is_empty() {
                    HashSet::new()
                } else {
                    HashSet::from([v.clone()])
                };
                Mod::Replace(k.clone(), values)
            })
            .collect();
        self.run("update account", |mut ldap| {
            let (dn, mods) = (dn.clone(), mods.clone());
            async move {
                let r = ldap
                    .modify(&dn, mods)
                    .await
                    .map_err(|e| from_ldap("modify", e))?;
                if r.rc == 0 {
                    Ok(Outcome::Applied)
                } else {
                    Err(from_result("modify", &r))
                }
            }
        })
        .await
    }

    async fn delete(
        &self,
        identity: &Identity,
        native_id: Option<&str>,
    ) -> Result<Outcome, ConnectorError> {
        let dn = self.account_dn(identity, native_id)?;
        self.run("delete account", |mut ldap| {
            let dn = dn.clone();
            async move {
                let r = ldap.delete(&dn).await.map_err(|e| from_ldap("delete", e))?;
                match r.rc {
                    0 => Ok(Outcome::Applied),
                    32 => Ok(Outcome::Unchanged),
                    _ => Err(from_result("delete", &r)),
                }
            }
        })
        .await
    }
}

impl Connector for LdapConnector {
    fn create_account<'a>(
        &'a self,
        identity: &'a Identity,
    ) -> BoxFuture<'a, Result<Outcome, ConnectorError>> {
        self.scrubbed(async move {
            let out = self.create(identity).await?;
            if let (true, Outcome::Correlated { native_id }) = (self.is_ad(), &out) {
                self.may_manage(native_id).await?;
            }
            if let Some(dn) = out.native_id() {
                self.confirmed.note(dn);
            }
            Ok(out)
        })
    }

    fn read_account<'a>(
        &'a self,
        identity: &'a Identity,
        native_id: Option<&'a str>,
        candidates: &'a [Entitlement],
    ) -> BoxFuture<'a, Result<Option<provd_connector_core::ReadBack>, ConnectorError>> {
        self.scrubbed(self.read_back(identity, native_id, candidates))
    }

    fn unmanaged_members<'a>(
        &'a self,
        e: &'a Entitlement,
        managed: &'a [(Identity, String)],
    ) -> BoxFuture<'a, Result<Option<Vec<String>>, ConnectorError>> {
        self.scrubbed(self.unmanaged(e, managed))
    }

    fn remove_member<'a>(
        &'a self,
        e: &'a Entitlement,
        member: &'a str,
    ) -> BoxFuture<'a, Result<Outcome, ConnectorError>> {
        self.scrubbed(self.remove_unmanaged(e, member))
    }

    fn add_entitlement<'a>(
        &'a self,
        identity: &'a Identity,
        native_id: Option<&'a str>,
        e: &'a Entitlement,
    ) -> BoxFuture<'a, Result<Outcome, ConnectorError>> {
        self.scrubbed(self.entitlement(identity, native_id, e, true))
    }

    fn remove_entitlement<'a>(
        &'a self,
        identity: &'a Identity,
        native_id: Option<&'a str>,
        e: &'a Entitlement,
    ) -> BoxFuture<'a, Result<Outcome, ConnectorError>> {
        self.scrubbed(self.entitlement(identity, native_id, e, false))
    }

    fn disable_account<'a>(
        &'a self,
        identity: &'a Identity,
        native_id: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Outcome, ConnectorError>> {
        self.scrubbed(self.disable(identity, native_id))
    }

    fn delete_account<'a>(
        &'a self,
        identity: &'a Identity,
        native_id: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Outcome, ConnectorError>> {
        self.scrubbed(self.delete(identity, native_id))
    }

    fn enable_account<'a>(
        &'a self,
        identity: &'a Identity,
        native_id: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Outcome, ConnectorError>> {
        self.scrubbed(self.enable_generic(identity, native_id))
    }

    fn update_account<'a>(
        &'a self,
        identity: &'a Identity,
        native_id: Option<&'a str>,
        attributes: &'a std::collections::BTreeMap<String, String>,
    ) -> BoxFuture<'a, Result<Outcome, ConnectorError>> {
        self.scrubbed(self.update(identity, native_id, attributes))
    }

    fn reset_password<'a>(
        &'a self,
        identity: &'a Identity,
        native_id: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Outcome, ConnectorError>> {
        self.scrubbed(self.reset_ad_password(identity, native_id))
    }

    fn prefetch(&self, identities: Vec<Identity>) -> BoxFuture<'_, ()> {
        Box::pin(self.prefetch_many(identities))
    }

    fn remember_failures(
        &self,
        memory: std::sync::Arc<dyn provd_connector_core::gate::GateMemory>,
        source: &str,
    ) {
        self.pool.remember_failures(memory, source);
    }

    fn check(&self) -> BoxFuture<'_, Result<(), ConnectorError>> {
        Box::pin(async move {
            let conn = self
                .pool
                .get()
                .await
                .map_err(|e| e.redacted(&self.redactor))?;
            self.pool.release(conn);
            Ok(())
        })
    }
}
