//! provd's generic REST connector (`type = "rest"`): an API that speaks plain JSON over
//! HTTP, driven without code by one short recipe per operation (see [`recipe`]).
//! A `find_account` recipe makes creation correlate: an account that exists is linked, not
//! created twice. A recipe's `lookup` + `skip_if` makes adds and removes idempotent on APIs
//! that would otherwise create duplicates or answer 404.

mod read;
pub mod recipe;

use std::collections::BTreeMap;
use std::path::Path;

use provd_connector_core::http::{HttpClient, Method, Response, split_settings, url_encode};
use provd_connector_core::template::{self, TemplateError};
use provd_connector_core::{BoxFuture, Connector, ConnectorError, Entitlement, Identity, Outcome};
use recipe::{Recipe, SkipIf, pointer};
use serde::Deserialize;
use serde_json::Value;

/// The REST part of a source file (besides the shared HTTP keys).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestSettings {
    /// Finds an existing account; `id` points at its id (absent/empty list = none).
    #[serde(default)]
    pub find_account: Option<Recipe>,
    pub create_account: Recipe,
    pub add_entitlement: Recipe,
    pub remove_entitlement: Recipe,
    #[serde(default)]
    pub disable_account: Option<Recipe>,
    #[serde(default)]
    pub delete_account: Option<Recipe>,
    /// Makes a disabled account usable again (a rehire, DESIGN §13).
    #[serde(default)]
    pub enable_account: Option<Recipe>,
    /// Sends the identity's synced attributes again (attribute sync, DESIGN §13); the
    /// recipe renders them from the identity as it is now.
    #[serde(default)]
    pub update_account: Option<Recipe>,
    /// How `provd reconcile` reads an account back (DESIGN §17); optional.
    #[serde(default)]
    pub read_account: Option<read::ReadRecipe>,
    /// What `provd check --connect` calls (default: GET /, any answer but 401/403/5xx).
    #[serde(default)]
    pub check: Option<Recipe>,
}

pub type SettingsProblems = Vec<(String, String)>;

pub fn parse(table: &toml::Table) -> Result<RestSettings, SettingsProblems> {
    let (_, rest) = split_settings(table).map_err(|p| vec![p])?;
    let s: RestSettings = toml::Value::Table(rest)
        .try_into()
        .map_err(|e: toml::de::Error| vec![(String::new(), e.to_string().trim().to_string())])?;
    let mut problems = Vec::new();
    let named = [
        ("find_account", s.find_account.as_ref()),
        ("create_account", Some(&s.create_account)),
        ("add_entitlement", Some(&s.add_entitlement)),
        ("remove_entitlement", Some(&s.remove_entitlement)),
        ("disable_account", s.disable_account.as_ref()),
        ("delete_account", s.delete_account.as_ref()),
        ("enable_account", s.enable_account.as_ref()),
        ("update_account", s.update_account.as_ref()),
        ("check", s.check.as_ref()),
    ];
    for (name, r) in named {
        if let Some(r) = r {
            problems.extend(
                recipe::validate(r)
                    .into_iter()
                    .map(|(k, m)| (format!("{name}.{k}"), m)),
            );
        }
    }
    if s.create_account.id.is_none() {
        problems.push((
            "create_account.id".into(),
            "must point at the new account's id (e.g. /id)".into(),
        ));
    }
    if problems.is_empty() {
        Ok(s)
    } else {
        Err(problems)
    }
}

pub struct RestConnector {
    s: RestSettings,
    http: HttpClient,
}

fn template_error(e: TemplateError) -> ConnectorError {
    ConnectorError::permanent(Some("template".into()), e.to_string())
}

/// The placeholders one call can use: the identity's, plus the operation's own.
fn vars(identity: &Identity, extra: &[(&str, Option<&str>)]) -> Identity {
    let mut v = identity.clone();
    for (k, val) in extra {
        if let Some(val) = val {
            v.attributes.insert((*k).to_string(), (*val).to_string());
        }
    }
    v
}

enum Done {
    /// The call answered one of `ok`.
    Ok(Response),
    /// One of `already`, or skipped by the lookup.
    Already,
}

/// Fills a recipe's path. A value that is empty, `.` or `..` would change which resource
/// the path names (`/users/{id}` with `..` is `/`; URL parsers treat `%2E%2E` as `..` too),
/// so it is refused with a permanent error instead of being sent.
fn fill_path(path: &str, v: &Identity) -> Result<String, ConnectorError> {
    for name in template::placeholders(path).map_err(template_error)? {
        if let Some(value) = v.get(&name)
            && matches!(value, "" | "." | "..")
        {
            return Err(ConnectorError::permanent(
                Some("path".into()),
                format!(
                    "path \"{path}\": the value of `{name}` ({value:?}) is not allowed in a URL path (empty, `.` and `..` would change the path)"
                ),
            ));
        }
    }
    template::fill(path, v, url_encode).map_err(template_error)
}

impl RestConnector {
    pub fn build(table: &toml::Table, base: &Path) -> Result<Self, SettingsProblems> {
        let s = parse(table)?;
        let (http, _) = split_settings(table).map_err(|p| vec![p])?;
        let http = HttpClient::new(&http, base).map_err(|p| vec![p])?;
        Ok(Self { s, http })
    }

    async fn call(
        &self,
        what: &str,
        method: &str,
        path: &str,
        body: Option<&str>,
        v: &Identity,
    ) -> Result<Response, ConnectorError> {
        let path = fill_path(path, v)?;
        let body = match body {
            Some(b) => {
                let json: Value = serde_json::from_str(b).map_err(|e| {
                    ConnectorError::permanent(None, format!("{what}: body is not JSON: {e}"))
                })?;
                Some(
                    recipe::fill_json(&json, &|s| template::fill(s, v, template::verbatim))
                        .map_err(template_error)?,
                )
            }
            None => None,
        };
        let method = Method::from_bytes(method.as_bytes())
            .map_err(|e| ConnectorError::permanent(None, e.to_string()))?;
        self.http.send(method, &path, body.as_ref()).await
    }

    /// Runs a recipe: lookup (if any), skip if already so, the call, status check.
    async fn run(&self, what: &str, r: &Recipe, v: &Identity) -> Result<Done, ConnectorError> {
        let mut v = v.clone();
        if let Some(l) = &r.lookup {
            let resp = self
                .call(&format!("{what} lookup"), &l.method, &l.path, None, &v)
                .await?;
            let found = match resp.status.as_u16() {
                404 => None,
                _ if resp.is_success() => pointer(&resp.body, &l.id),
                _ => return Err(resp.error(&format!("{what} lookup"))),
            };
            match (r.skip_if, &found) {
                (Some(SkipIf::Found), Some(_)) | (Some(SkipIf::Missing), None) => {
                    return Ok(Done::Already);
                }
                _ => {}
            }
            if let Some(f) = found {
                v.attributes.insert("lookup".into(), f);
            }
        }
        let resp = self
            .call(what, &r.method, &r.path, r.body.as_deref(), &v)
            .await?;
        let code = resp.status.as_u16();
        if r.ok.contains(&code) {
            Ok(Done::Ok(resp))
        } else if r.already.contains(&code) {
            Ok(Done::Already)
        } else {
            Err(resp.error(what))
        }
    }

    async fn find(&self, identity: &Identity) -> Result<Option<String>, ConnectorError> {
        let Some(r) = &self.s.find_account else {
            return Ok(None);
        };
        let v = vars(identity, &[]);
        match self.run("find account", r, &v).await? {
            Done::Ok(resp) => Ok(r.id.as_deref().and_then(|p| pointer(&resp.body, p))),
            Done::Already => Ok(None),
        }
    }

    async fn create(&self, identity: &Identity) -> Result<Outcome, ConnectorError> {
        if let Some(id) = self.find(identity).await? {
            return Ok(Outcome::Correlated { native_id: id });
        }
        match self
            .run(
                "create account",
                &self.s.create_account,
                &vars(identity, &[]),
            )
            .await?
        {
            Done::Ok(resp) => {
                let ptr = self.s.create_account.id.as_deref().unwrap_or("/id");
                let id = pointer(&resp.body, ptr).ok_or_else(|| {
                    ConnectorError::permanent(
                        None,
                        format!("create account: no id at {ptr} in the response"),
                    )
                })?;
                Ok(Outcome::Created { native_id: id })
            }
            // "Already exists": link the existing one.
            Done::Already => match self.find(identity).await? {
                Some(id) => Ok(Outcome::Correlated { native_id: id }),
                None => Err(ConnectorError::permanent(
                    None,
                    "create account: the API says the account exists, but find_account does not find it",
                )),
            },
        }
    }

    async fn native(
        &self,
        identity: &Identity,
        native_id: Option<&str>,
    ) -> Result<String, ConnectorError> {
        if let Some(n) = native_id {
            return Ok(n.to_string());
        }
        self.find(identity).await?.ok_or_else(|| {
            ConnectorError::permanent(
                Some("404".into()),
                format!(
                    "no account for identity {} (and no find_account match)",
                    identity.id
                ),
            )
        })
    }

    async fn op(
        &self,
        what: &str,
        r: Option<&Recipe>,
        identity: &Identity,
        native_id: Option<&str>,
        e: Option<&Entitlement>,
    ) -> Result<Outcome, ConnectorError> {
        let r = r.ok_or_else(|| {
            ConnectorError::permanent(
                None,
                format!("no [{what}] recipe configured for this source"),
            )
        })?;
        let native = self.native(identity, native_id).await?;
        let v = vars(
            identity,
            &[
                ("native_id", Some(&native)),
                ("value", e.map(|e| e.value.as_str())),
                ("attribute", e.map(|e| e.attribute.as_str())),
            ],
        );
        Ok(match self.run(what, r, &v).await? {
            Done::Ok(_) => Outcome::Applied,
            Done::Already => Outcome::Unchanged,
        })
    }
}

impl Connector for RestConnector {
    fn create_account<'a>(
        &'a self,
        identity: &'a Identity,
    ) -> BoxFuture<'a, Result<Outcome, ConnectorError>> {
        Box::pin(self.create(identity))
    }

    fn read_account<'a>(
        &'a self,
        identity: &'a Identity,
        native_id: Option<&'a str>,
        candidates: &'a [Entitlement],
    ) -> BoxFuture<'a, Result<Option<provd_connector_core::ReadBack>, ConnectorError>> {
        Box::pin(self.read_back(identity, native_id, candidates))
    }

    fn add_entitlement<'a>(
        &'a self,
        identity: &'a Identity,
        native_id: Option<&'a str>,
        e: &'a Entitlement,
    ) -> BoxFuture<'a, Result<Outcome, ConnectorError>> {
        Box::pin(self.op(
            "add_entitlement",
            Some(&self.s.add_entitlement),
            identity,
            native_id,
            Some(e),
        ))
    }

    fn remove_entitlement<'a>(
        &'a self,
        identity: &'a Identity,
        native_id: Option<&'a str>,
        e: &'a Entitlement,
    ) -> BoxFuture<'a, Result<Outcome, ConnectorError>> {
        Box::pin(self.op(
            "remove_entitlement",
            Some(&self.s.remove_entitlement),
            identity,
            native_id,
            Some(e),
        ))
    }

    fn disable_account<'a>(
        &'a self,
        identity: &'a Identity,
        native_id: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Outcome, ConnectorError>> {
        Box::pin(self.op(
            "disable_account",
            self.s.disable_account.as_ref(),
            identity,
            native_id,
            None,
        ))
    }

    fn delete_account<'a>(
        &'a self,
        identity: &'a Identity,
        native_id: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Outcome, ConnectorError>> {
        Box::pin(self.op(
            "delete_account",
            self.s.delete_account.as_ref(),
            identity,
            native_id,
            None,
        ))
    }

    fn enable_account<'a>(
        &'a self,
        identity: &'a Identity,
        native_id: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Outcome, ConnectorError>> {
        Box::pin(self.op(
            "enable_account",
            self.s.enable_account.as_ref(),
            identity,
            native_id,
            None,
        ))
    }

    fn update_account<'a>(
        &'a self,
        identity: &'a Identity,
        native_id: Option<&'a str>,
        _attributes: &'a std::collections::BTreeMap<String, String>,
    ) -> BoxFuture<'a, Result<Outcome, ConnectorError>> {
        Box::pin(self.op(
            "update_account",
            self.s.update_account.as_ref(),
            identity,
            native_id,
            None,
        ))
    }

    fn remember_failures(
        &self,
        memory: std::sync::Arc<dyn provd_connector_core::gate::GateMemory>,
        source: &str,
    ) {
        self.http.remember_failures(memory, source);
    }

    fn check(&self) -> BoxFuture<'_, Result<(), ConnectorError>> {
        Box::pin(async move {
            let empty = Identity {
                id: String::new(),
                attributes: BTreeMap::new(),
            };
            match &self.s.check {
                Some(r) => self.run("check", r, &empty).await.map(|_| ()),
                None => {
                    let resp = self.http.send(Method::GET, "/", None).await?;
                    let code = resp.status.as_u16();
                    if code == 401 || code == 403 || code >= 500 {
                        Err(resp.error("check"))
                    } else {
                        Ok(())
                    }
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(id: &str) -> Identity {
        Identity {
            id: id.into(),
            attributes: BTreeMap::new(),
        }
    }

    #[test]
    fn dot_segments_never_change_the_path() {
        for id in ["..", ".", ""] {
            let e = fill_path("/users/{id}", &who(id)).unwrap_err();
            assert_eq!(e.class, provd_connector_core::ErrorClass::Permanent);
            assert!(e.message.contains("`id`"), "{e}");
        }
        assert_eq!(fill_path("/users/{id}", &who("a.b")).unwrap(), "/users/a.b");
        assert_eq!(
            fill_path("/users/{id}", &who("../x")).unwrap(),
            "/users/..%2Fx"
        );
        assert_eq!(
            fill_path("/users/{id}", &who("%2e%2e")).unwrap(),
            "/users/%252e%252e"
        );
    }
}
