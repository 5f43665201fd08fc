//! provd's SCIM 2.0 connector (`type = "scim"`, RFC 7643/7644).
//!
//! Users are found by their correlation attribute (`filter=userName eq "…"`), created with
//! POST (a 409 uniqueness answer means someone created it meanwhile: look it up and link
//! it), disabled with PATCH `active=false`, deleted with DELETE. Group entitlements
//! (`attribute = "groups"`, value = the group's displayName) are memberships changed with
//! PATCH on the group; the group's id is looked up once and cached. Membership is read
//! first so that adding what is there and removing what is not report `Unchanged`.

mod readback;
pub mod resource;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Mutex;

use provd_connector_core::http::Method;
use provd_connector_core::http::{HttpClient, Response, split_settings, url_encode};
use provd_connector_core::template::{self, TemplateError};
use provd_connector_core::{
    BoxFuture, Connector, ConnectorError, Entitlement, ErrorClass, Identity, Outcome,
};
use serde::Deserialize;
use serde_json::{Map, Value, json};

const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
const PATCH_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

/// The SCIM part of a source file (besides the shared HTTP keys).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScimSettings {
    /// The Create Account specification.
    pub account: AccountSettings,
    /// Path of the Users endpoint under `base_url` (default `/Users`).
    #[serde(default = "default_users")]
    pub users_path: String,
    /// Path of the Groups endpoint under `base_url` (default `/Groups`).
    #[serde(default = "default_groups")]
    pub groups_path: String,
}

fn default_users() -> String {
    "/Users".into()
}
fn default_groups() -> String {
    "/Groups".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountSettings {
    /// SCIM attribute an existing user is found by (default `userName`); its value is
    /// the one `attributes` gives it.
    #[serde(default = "default_correlation")]
    pub correlation: String,
    /// SCIM attribute paths → templates: `userName = "{id}"`,
    /// `"name.givenName" = "{firstName}"`, `'emails[type eq "work"].value' = "{email}"`.
    pub attributes: BTreeMap<String, String>,
}

fn default_correlation() -> String {
    "userName".into()
}

pub type SettingsProblems = Vec<(String, String)>;

/// Parses and validates the settings without reading secrets (for `provd check`).
pub fn parse(table: &toml::Table) -> Result<ScimSettings, SettingsProblems> {
    let (_, rest) = split_settings(table).map_err(|p| vec![p])?;
    let s: ScimSettings = toml::Value::Table(rest)
        .try_into()
        .map_err(|e: toml::de::Error| vec![(String::new(), e.to_string().trim().to_string())])?;
    let mut problems = Vec::new();
    for (path, t) in &s.account.attributes {
        if let Err(e) = resource::parse(path) {
            problems.push((format!("account.attributes.{path}"), e));
        }
        if let Err(e) = template::placeholders(t) {
            problems.push((format!("account.attributes.{path}"), e.to_string()));
        }
    }
    if !s.account.attributes.contains_key(&s.account.correlation) {
        problems.push((
            "account.correlation".into(),
            format!(
                "`{}` must also be one of [account.attributes]",
                s.account.correlation
            ),
        ));
    }
    if problems.is_empty() {
        Ok(s)
    } else {
        Err(problems)
    }
}

pub struct ScimConnector {
    s: ScimSettings,
    http: HttpClient,
    group_ids: Mutex<HashMap<String, String>>,
    /// Users known to exist lately (DESIGN §17: an add checks the user first).
    confirmed: provd_connector_core::confirmed::Confirmed,
}

fn template_error(e: TemplateError) -> ConnectorError {
    ConnectorError::permanent(Some("template".into()), e.to_string())
}

fn first_id(r: &Response) -> Option<String> {
    r.body
        .get("Resources")?
        .as_array()?
        .first()?
        .get("id")?
        .as_str()
        .map(String::from)
}

fn patch(op: &str, path: &str, value: Option<Value>) -> Value {
    let mut o = json!({ "op": op, "path": path });
    if let (Some(v), Some(m)) = (value, o.as_object_mut()) {
        m.insert("value".into(), v);
    }
    json!({ "schemas": [PATCH_SCHEMA], "Operations": [o] })
}

impl ScimConnector {
    pub fn build(table: &toml::Table, base: &Path) -> Result<Self, SettingsProblems> {
        let s = parse(table)?;
        let (http, _) = split_settings(table).map_err(|p| vec![p])?;
        let http = HttpClient::new(&http, base).map_err(|p| vec![p])?;
        Ok(Self {
            s,
            http,
            group_ids: Mutex::new(HashMap::new()),
            confirmed: Default::default(),
        })
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

    fn filter(attr: &str, value: &str) -> String {
        url_encode(&format!("{attr} eq {}", resource::filter_literal(value)))
    }

    async fn find_user(&self, identity: &Identity) -> Result<Option<String>, ConnectorError> {
        let v = self.correlation_value(identity)?;
        let path = format!(
            "{}?filter={}",
            self.s.users_path,
            Self::filter(&self.s.account.correlation, &v)
        );
        let r = self.http.send(Method::GET, &path, None).await?;
        if !r.is_success() {
            return Err(r.error("find user"));
        }
        Ok(first_id(&r))
    }

    async fn user_id(
        &self,
        identity: &Identity,
        native_id: Option<&str>,
    ) -> Result<String, ConnectorError> {
        if let Some(id) = native_id {
            return Ok(id.to_string());
        }
        self.find_user(identity).await?.ok_or_else(|| {
            ConnectorError::permanent(
                Some("404".into()),
                format!("no SCIM user for identity {}", identity.id),
            )
        })
    }

    async fn create(&self, identity: &Identity) -> Result<Outcome, ConnectorError> {
        if let Some(id) = self.find_user(identity).await? {
            return Ok(Outcome::Correlated { native_id: id });
        }
        let mut body = Map::new();
        body.insert("schemas".into(), json!([USER_SCHEMA]));
        for (path, t) in &self.s.account.attributes {
            let v = template::fill(t, identity, template::verbatim).map_err(template_error)?;
            resource::set(&mut body, path, &v).map_err(|e| ConnectorError::permanent(None, e))?;
        }
        let r = self
            .http
            .send(Method::POST, &self.s.users_path, Some(&Value::Object(body)))
            .await?;
        if r.is_success() {
            let id = r
                .body
                .get("id")
                .and_then(Value::as_str)
                .ok_or_else(|| ConnectorError::permanent(None, "created user has no id"))?;
            return Ok(Outcome::Created {
                native_id: id.to_string(),
            });
        }
        if r.status.as_u16() == 409 {
            // Created between our lookup and our POST: link it.
            if let Some(id) = self.find_user(identity).await? {
                return Ok(Outcome::Correlated { native_id: id });
            }
            // The server says the user exists and its search does not find it: a search
            // index that lags the writes (a user made a moment ago, by a lost attempt of
            // ours or by someone else). A later attempt finds and links it (issue 33, 9).
            return Err(ConnectorError::new(
                ErrorClass::Retryable,
                Some("409".into()),
                format!(
                    "create user: HTTP 409, but no user with {} = {:?} is found yet (the server's search may lag its writes)",
                    self.s.account.correlation,
                    self.correlation_value(identity)?
                ),
            ));
        }
        Err(r.error("create user"))
    }

    async fn group_id(&self, name: &str) -> Result<String, ConnectorError> {
        if let Some(id) = self
            .group_ids
            .lock()
            .ok()
            .and_then(|m| m.get(name).cloned())
        {
            return Ok(id);
        }
        let path = format!(
            "{}?filter={}",
            self.s.groups_path,
            Self::filter("displayName", name)
        );
        let r = self.http.send(Method::GET, &path, None).await?;
        if !r.is_success() {
            return Err(r.error("find group"));
        }
        let id = first_id(&r).ok_or_else(|| {
            ConnectorError::permanent(
                Some("404".into()),
                format!("no SCIM group with displayName `{name}`"),
            )
        })?;
        if let Ok(mut m) = self.group_ids.lock() {
            m.insert(name.to_string(), id.clone());
        }
        Ok(id)
    }

    async fn is_member(&self, group: &str, user: &str) -> Result<bool, ConnectorError> {
        Ok(self
            .members(group)
            .await?
            .iter()
            .any(|m| m.get("value").and_then(Value::as_str) == Some(user)))
    }

    /// The group's `members`, as the server lists them.
    pub(crate) async fn members(&self, group: &str) -> Result<Vec<Value>, ConnectorError> {
        let r = self
            .http
            .send(
                Method::GET,
                &format!("{}/{}", self.s.groups_path, url_encode(group)),
                None,
            )
            .await?;
        if !r.is_success() {
            if r.status.as_u16() == 404
                && let Ok(mut m) = self.group_ids.lock()
            {
                m.retain(|_, id| id != group);
            }
            return Err(r.error("read group"));
        }
        Ok(r.body
            .get("members")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default())
    }

    async fn membership(
        &self,
        identity: &Identity,
        native_id: Option<&str>,
        e: &Entitlement,
        add: bool,
    ) -> Result<Outcome, ConnectorError> {
        let user = match (add, native_id) {
            (true, _) | (_, Some(_)) => self.user_id(identity, native_id).await?,
            // A removal for a user the server does not have: it holds nothing to remove
            // (a revoke that reached the source before the account, say). provd never
            // made or linked such a user, so never granted it anything there.
            (false, None) => match self.find_user(identity).await? {
                Some(u) => u,
                None => return Ok(Outcome::Unchanged),
            },
        };
        if e.attribute != "groups" {
            return self.user_value(&user, e, add).await;
        }
        let group = self.group_id(&e.value).await?;
        if self.is_member(&group, &user).await? == add {
            return Ok(Outcome::Unchanged);
        }
        self.patch_member(&group, &user, add).await
    }

    /// One PATCH of the group `group` (its id): `user` in or out.
    pub(crate) async fn patch_member(
        &self,
        group: &str,
        user: &str,
        add: bool,
    ) -> Result<Outcome, ConnectorError> {
        let body = if add {
            patch("add", "members", Some(json!([{ "value": user }])))
        } else {
            // Some servers refuse the value-list form of remove; the filter form is standard.
            patch(
                "remove",
                &format!("members[value eq {}]", resource::filter_literal(user)),
                None,
            )
        };
        let r = self
            .http
            .send(
                Method::PATCH,
                &format!("{}/{}", self.s.groups_path, url_encode(group)),
                Some(&body),
            )
            .await?;
        if r.is_success() {
            Ok(Outcome::Applied)
        } else {
            Err(r.error(if add { "add member" } else { "remove member" }))
        }
    }

    /// A value of a multi-valued attribute on the user (e.g. `roles`, `entitlements`).
    async fn user_value(
        &self,
        user: &str,
        e: &Entitlement,
        add: bool,
    ) -> Result<Outcome, ConnectorError> {
        let body = if add {
            patch("add", &e.attribute, Some(json!([{ "value": e.value }])))
        } else {
            patch(
                "remove",
                &format!(
                    "{}[value eq {}]",
                    e.attribute,
                    resource::filter_literal(&e.value)
                ),
                None,
            )
        };
        let r = self
            .http
            .send(
                Method::PATCH,
                &format!("{}/{}", self.s.users_path, url_encode(user)),
                Some(&body),
            )
            .await?;
        if r.is_success() {
            Ok(Outcome::Applied)
        } else {
            Err(r.error("change user attribute"))
        }
    }

    /// Attribute sync: one PATCH, a `replace` per attribute (its key is the SCIM path, as
    /// in `[account.attributes]`), a `remove` for an emptied one (RFC 7644 §3.5.2).
    async fn update(
        &self,
        identity: &Identity,
        native_id: Option<&str>,
        attributes: &std::collections::BTreeMap<String, String>,
    ) -> Result<Outcome, ConnectorError> {
        let ops: Vec<Value> = attributes
            .iter()
            .map(|(path, v)| {
                if v.is_empty() {
                    json!({ "op": "remove", "path": path })
                } else {
                    json!({ "op": "replace", "path": path, "value": v })
                }
            })
            .collect();
        let body = json!({ "schemas": [PATCH_SCHEMA], "Operations": ops });
        self.patch_user(identity, native_id, &body, "update user")
            .await
    }

    /// `active` false (disable) or true (enable), by PATCH replace (RFC 7644 §3.5.2).
    async fn set_active(
        &self,
        identity: &Identity,
        native_id: Option<&str>,
        active: bool,
    ) -> Result<Outcome, ConnectorError> {
        let body = patch("replace", "active", Some(Value::Bool(active)));
        let what = if active {
            "enable user"
        } else {
            "disable user"
        };
        self.patch_user(identity, native_id, &body, what).await
    }

    async fn patch_user(
        &self,
        identity: &Identity,
        native_id: Option<&str>,
        body: &Value,
        what: &str,
    ) -> Result<Outcome, ConnectorError> {
        let user = self.user_id(identity, native_id).await?;
        let path = format!("{}/{}", self.s.users_path, url_encode(&user));
        let r = self.http.send(Method::PATCH, &path, Some(body)).await?;
        if r.is_success() {
            Ok(Outcome::Applied)
        } else {
            Err(r.error(what))
        }
    }

    async fn delete(
        &self,
        identity: &Identity,
        native_id: Option<&str>,
    ) -> Result<Outcome, ConnectorError> {
        let Some(user) = (match native_id {
            Some(id) => Some(id.to_string()),
            None => self.find_user(identity).await?,
        }) else {
            return Ok(Outcome::Unchanged);
        };
        let r = self
            .http
            .send(
                Method::DELETE,
                &format!("{}/{}", self.s.users_path, url_encode(&user)),
                None,
            )
            .await?;
        match r.status.as_u16() {
            s if (200..300).contains(&s) => Ok(Outcome::Applied),
            404 => Ok(Outcome::Unchanged),
            _ => Err(r.error("delete user")),
        }
    }
}

impl Connector for ScimConnector {
    fn create_account<'a>(
        &'a self,
        identity: &'a Identity,
    ) -> BoxFuture<'a, Result<Outcome, ConnectorError>> {
        Box::pin(async move {
            let out = self.create(identity).await?;
            if let Some(id) = out.native_id() {
                self.confirmed.note(id);
            }
            Ok(out)
        })
    }

    fn add_entitlement<'a>(
        &'a self,
        identity: &'a Identity,
        native_id: Option<&'a str>,
        e: &'a Entitlement,
    ) -> BoxFuture<'a, Result<Outcome, ConnectorError>> {
        Box::pin(async move {
            let (id, recreated) = self.ensure_user(identity, native_id).await?;
            let out = self.membership(identity, id.as_deref(), e, true).await?;
            Ok(match (recreated, id) {
                (true, Some(id)) => out.after_recreate(id),
                _ => out,
            })
        })
    }

    fn read_account<'a>(
        &'a self,
        identity: &'a Identity,
        native_id: Option<&'a str>,
        candidates: &'a [Entitlement],
    ) -> BoxFuture<'a, Result<Option<provd_connector_core::ReadBack>, ConnectorError>> {
        Box::pin(self.read_back(identity, native_id, candidates))
    }

    fn remove_entitlement<'a>(
        &'a self,
        identity: &'a Identity,
        native_id: Option<&'a str>,
        e: &'a Entitlement,
    ) -> BoxFuture<'a, Result<Outcome, ConnectorError>> {
        Box::pin(self.membership(identity, native_id, e, false))
    }

    fn unmanaged_members<'a>(
        &'a self,
        e: &'a Entitlement,
        managed: &'a [(Identity, String)],
    ) -> BoxFuture<'a, Result<Option<Vec<String>>, ConnectorError>> {
        Box::pin(self.unmanaged(e, managed))
    }

    fn remove_member<'a>(
        &'a self,
        e: &'a Entitlement,
        member: &'a str,
    ) -> BoxFuture<'a, Result<Outcome, ConnectorError>> {
        Box::pin(self.remove_unmanaged(e, member))
    }

    fn disable_account<'a>(
        &'a self,
        identity: &'a Identity,
        native_id: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Outcome, ConnectorError>> {
        Box::pin(self.set_active(identity, native_id, false))
    }

    fn enable_account<'a>(
        &'a self,
        identity: &'a Identity,
        native_id: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Outcome, ConnectorError>> {
        Box::pin(self.set_active(identity, native_id, true))
    }

    fn update_account<'a>(
        &'a self,
        identity: &'a Identity,
        native_id: Option<&'a str>,
        attributes: &'a std::collections::BTreeMap<String, String>,
    ) -> BoxFuture<'a, Result<Outcome, ConnectorError>> {
        Box::pin(self.update(identity, native_id, attributes))
    }

    fn delete_account<'a>(
        &'a self,
        identity: &'a Identity,
        native_id: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Outcome, ConnectorError>> {
        Box::pin(self.delete(identity, native_id))
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
            let r = self
                .http
                .send(Method::GET, &format!("{}?count=1", self.s.users_path), None)
                .await?;
            if r.is_success() {
                Ok(())
            } else {
                Err(r.error("check"))
            }
        })
    }
}
