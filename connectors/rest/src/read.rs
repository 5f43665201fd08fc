//! The optional `[read_account]` recipe (DESIGN §17): how `provd reconcile` reads an
//! account back from a REST API. One GET; 404 means the account is gone; JSON pointers
//! name its values and, if the API tells, whether it is disabled.

use provd_connector_core::http::Method;
use provd_connector_core::{ConnectorError, Entitlement, Identity, ReadBack};
use serde::Deserialize;
use serde_json::Value;

use crate::{RestConnector, fill_path, vars};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadRecipe {
    /// The account under `base_url` (`/users/{native_id}`): 404 means it is gone.
    pub path: String,
    /// Where its values are when the account does not hold them (a memberships
    /// collection: `/memberships?userId={native_id}`); default: the account itself.
    #[serde(default)]
    pub values_path: Option<String>,
    /// JSON pointer to the account's values: an array of strings, or of objects holding
    /// the value under `value_key` (`/roles`). Matched with the catalog's values here.
    pub values: String,
    /// The key of each value in an array of objects (default `value`).
    #[serde(default = "default_value_key")]
    pub value_key: String,
    /// JSON pointer to a boolean that is true when the account is disabled
    /// (`/disabled`); or give `active`.
    #[serde(default)]
    pub disabled: Option<String>,
    /// JSON pointer to a boolean that is true when the account is usable (`/active`).
    #[serde(default)]
    pub active: Option<String>,
}

fn default_value_key() -> String {
    "value".into()
}

/// The strings of the array at `ptr` (plain strings, or objects' `key`).
fn strings(body: &Value, ptr: &str, key: &str) -> Vec<String> {
    body.pointer(ptr)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| match v {
                    Value::String(s) => Some(s.clone()),
                    other => other.get(key).and_then(Value::as_str).map(str::to_string),
                })
                .collect()
        })
        .unwrap_or_default()
}

impl RestConnector {
    pub(crate) async fn read_back(
        &self,
        identity: &Identity,
        native_id: Option<&str>,
        candidates: &[Entitlement],
    ) -> Result<Option<ReadBack>, ConnectorError> {
        let r = self.s.read_account.as_ref().ok_or_else(|| {
            ConnectorError::permanent(
                Some("unsupported".into()),
                "no [read_account] recipe configured for this source",
            )
        })?;
        let native = match native_id {
            Some(n) => n.to_string(),
            None => match self.find(identity).await? {
                Some(n) => n,
                None => return Ok(None),
            },
        };
        let v = vars(identity, &[("native_id", Some(&native))]);
        let path = fill_path(&r.path, &v)?;
        let resp = self.http.send(Method::GET, &path, None).await?;
        if resp.status.as_u16() == 404 {
            return Ok(None);
        }
        if !resp.is_success() {
            return Err(resp.error("read account"));
        }
        let have = match &r.values_path {
            None => strings(&resp.body, &r.values, &r.value_key),
            Some(p) => {
                let more = self
                    .http
                    .send(Method::GET, &fill_path(p, &v)?, None)
                    .await?;
                if !more.is_success() {
                    return Err(more.error("read account values"));
                }
                strings(&more.body, &r.values, &r.value_key)
            }
        };
        let values = candidates
            .iter()
            .filter(|e| have.contains(&e.value))
            .cloned()
            .collect();
        let flag = |ptr: &Option<String>| {
            ptr.as_deref()
                .and_then(|p| resp.body.pointer(p))
                .and_then(Value::as_bool)
        };
        let disabled = flag(&r.disabled).or_else(|| flag(&r.active).map(|a| !a));
        Ok(Some(ReadBack {
            values,
            disabled,
            nested: Vec::new(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn values_are_strings_or_objects_with_a_value() {
        let body = json!({ "roles": ["sales", { "value": "ops" }, 7], "m": [{ "role": "x" }] });
        assert_eq!(strings(&body, "/roles", "value"), ["sales", "ops"]);
        assert_eq!(strings(&body, "/m", "role"), ["x"]);
        assert!(strings(&body, "/nope", "value").is_empty());
    }
}
