//! Evidence (DESIGN §17) on SCIM: reading a user back (`GET /Users/{id}`, its groups and
//! multi-valued attributes, `active`), and, before an add, making sure the user still
//! exists: a 404 unlinks it, correlates again, and creates it if nothing correlates.

use provd_connector_core::http::{Method, url_encode};
use provd_connector_core::{ConnectorError, Entitlement, Identity, Outcome, ReadBack};
use serde_json::Value;

use crate::ScimConnector;

impl ScimConnector {
    /// The user resource, or None on 404.
    async fn get_user(&self, id: &str) -> Result<Option<Value>, ConnectorError> {
        let r = self
            .http
            .send(
                Method::GET,
                &format!("{}/{}", self.s.users_path, url_encode(id)),
                None,
            )
            .await?;
        match r.status.as_u16() {
            404 => Ok(None),
            _ if r.is_success() => {
                self.confirmed.note(id);
                Ok(Some(r.body))
            }
            _ => Err(r.error("read user")),
        }
    }

    /// Before an add: the user id to use, and whether the user had to be made again.
    pub(crate) async fn ensure_user(
        &self,
        identity: &Identity,
        native_id: Option<&str>,
    ) -> Result<(Option<String>, bool), ConnectorError> {
        let Some(id) = native_id else {
            return Ok((None, false));
        };
        if self.confirmed.recent(id) || self.get_user(id).await?.is_some() {
            return Ok((Some(id.to_string()), false));
        }
        let made = self.create(identity).await?;
        let new = made
            .native_id()
            .map(str::to_string)
            .ok_or_else(|| ConnectorError::permanent(None, "re-created user has no id"))?;
        self.confirmed.note(&new);
        tracing::warn!(identity = %identity.id, old = %id, native_id = %new,
            "SCIM user was gone (deleted out of band): unlinked, correlated or created again");
        Ok((Some(new), true))
    }

    /// The users in the group `e` (a displayName) that are none of `managed` (DESIGN
    /// §21); nested groups are the server's structure, not people, and are left out.
    pub(crate) async fn unmanaged(
        &self,
        e: &Entitlement,
        managed: &[(Identity, String)],
    ) -> Result<Option<Vec<String>>, ConnectorError> {
        if e.attribute != "groups" {
            return Ok(None);
        }
        let group = match self.group_id(&e.value).await {
            Ok(g) => g,
            Err(err) if err.code.as_deref() == Some("404") => return Ok(Some(Vec::new())),
            Err(err) => return Err(err),
        };
        let known: std::collections::HashSet<&str> =
            managed.iter().map(|(_, id)| id.as_str()).collect();
        Ok(Some(
            self.members(&group)
                .await?
                .iter()
                .filter(|m| m.get("type").and_then(Value::as_str) != Some("Group"))
                .filter_map(|m| m.get("value").and_then(Value::as_str))
                .filter(|id| !known.contains(id))
                .map(str::to_string)
                .collect(),
        ))
    }

    /// Takes a user provd does not manage out of the group `e`.
    pub(crate) async fn remove_unmanaged(
        &self,
        e: &Entitlement,
        member: &str,
    ) -> Result<Outcome, ConnectorError> {
        if e.attribute != "groups" {
            return Err(ConnectorError::permanent(
                None,
                format!("`{}` is not a group attribute", e.attribute),
            ));
        }
        let group = self.group_id(&e.value).await?;
        self.patch_member(&group, member, false).await
    }

    pub(crate) async fn read_back(
        &self,
        identity: &Identity,
        native_id: Option<&str>,
        candidates: &[Entitlement],
    ) -> Result<Option<ReadBack>, ConnectorError> {
        let id = match native_id {
            Some(id) => id.to_string(),
            None => match self.find_user(identity).await? {
                Some(id) => id,
                None => return Ok(None),
            },
        };
        let Some(user) = self.get_user(&id).await? else {
            return Ok(None);
        };
        let mut values = Vec::new();
        for e in candidates {
            let has = if e.attribute == "groups" {
                match self.group_id(&e.value).await {
                    Ok(g) => self.is_member(&g, &id).await?,
                    // A group that does not exist has no members.
                    Err(err) if err.code.as_deref() == Some("404") => false,
                    Err(err) => return Err(err),
                }
            } else {
                user.get(&e.attribute)
                    .and_then(Value::as_array)
                    .is_some_and(|vs| {
                        vs.iter().any(|v| {
                            v.get("value").and_then(Value::as_str) == Some(e.value.as_str())
                        })
                    })
            };
            if has {
                values.push(e.clone());
            }
        }
        let disabled = user.get("active").and_then(Value::as_bool).map(|a| !a);
        Ok(Some(ReadBack {
            values,
            disabled,
            nested: Vec::new(),
        }))
    }
}
