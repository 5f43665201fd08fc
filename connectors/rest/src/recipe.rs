//! A recipe: one HTTP call per operation, described in the source file.
//!
//! Placeholders: identity attributes (`{id}`, `{firstName}`, …), `{native_id}` (the
//! account's id on the API), `{value}` and `{attribute}` (the entitlement), and `{lookup}`
//! (what the recipe's lookup step found). Values are URL-encoded in paths. A body is JSON
//! whose string values may hold placeholders: it is parsed first and filled string by
//! string, so braces in the JSON never clash with placeholders and a value can never
//! break out of its string.

use serde::Deserialize;
use serde_json::Value;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    /// HTTP method (default GET).
    #[serde(default = "default_method")]
    pub method: String,
    /// Path under `base_url`, with placeholders.
    pub path: String,
    /// JSON body; placeholders inside its strings.
    #[serde(default)]
    pub body: Option<String>,
    /// Statuses that mean success (default 200, 201, 204).
    #[serde(default = "default_ok")]
    pub ok: Vec<u16>,
    /// Statuses that mean "already so": a success without change (e.g. 409 on create, 404
    /// on delete).
    #[serde(default)]
    pub already: Vec<u16>,
    /// JSON pointer to the account's id in the response (`/id`, `/0/id`, `/data/id`).
    #[serde(default)]
    pub id: Option<String>,
    /// A lookup made first; its result is `{lookup}`.
    #[serde(default)]
    pub lookup: Option<Lookup>,
    /// `found`: skip the call (already so) when the lookup found something; `missing`:
    /// skip it when the lookup found nothing.
    #[serde(default)]
    pub skip_if: Option<SkipIf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lookup {
    #[serde(default = "default_method")]
    pub method: String,
    pub path: String,
    /// JSON pointer to the found item's id; absent (or an empty list) = not found.
    pub id: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SkipIf {
    Found,
    Missing,
}

fn default_method() -> String {
    "GET".into()
}
fn default_ok() -> Vec<u16> {
    vec![200, 201, 204]
}

/// The value a JSON pointer names, as a string (numbers too: json-server ids are numbers).
pub fn pointer(body: &Value, ptr: &str) -> Option<String> {
    match body.pointer(ptr)? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn walk_strings(v: &Value, f: &mut dyn FnMut(&str)) {
    match v {
        Value::String(s) => f(s),
        Value::Array(a) => a.iter().for_each(|x| walk_strings(x, f)),
        Value::Object(m) => m.values().for_each(|x| walk_strings(x, f)),
        _ => {}
    }
}

/// Fills every string of a JSON body with `fill`.
pub fn fill_json<E>(v: &Value, fill: &dyn Fn(&str) -> Result<String, E>) -> Result<Value, E> {
    Ok(match v {
        Value::String(s) => Value::String(fill(s)?),
        Value::Array(a) => Value::Array(
            a.iter()
                .map(|x| fill_json(x, fill))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, x)| Ok((k.clone(), fill_json(x, fill)?)))
                .collect::<Result<_, E>>()?,
        ),
        other => other.clone(),
    })
}

const METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];

/// Problems with one recipe, keys relative to it.
pub fn validate(r: &Recipe) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if !METHODS.contains(&r.method.as_str()) {
        out.push((
            "method".into(),
            format!("`{}` is not one of {}", r.method, METHODS.join(", ")),
        ));
    }
    if !r.path.starts_with('/') {
        out.push(("path".into(), "must start with /".into()));
    }
    if let Err(e) = provd_connector_core::template::placeholders(&r.path) {
        out.push(("path".into(), e.to_string()));
    }
    if let Some(body) = &r.body {
        match serde_json::from_str::<Value>(body) {
            Err(e) => out.push(("body".into(), format!("is not JSON: {e}"))),
            Ok(v) => {
                let mut bad = None;
                walk_strings(&v, &mut |s| {
                    if let Err(e) = provd_connector_core::template::placeholders(s) {
                        bad.get_or_insert(e.to_string());
                    }
                });
                if let Some(e) = bad {
                    out.push(("body".into(), e));
                }
            }
        }
    }
    for (key, ptr) in [
        ("id", r.id.as_deref()),
        ("lookup.id", r.lookup.as_ref().map(|l| l.id.as_str())),
    ] {
        if let Some(p) = ptr
            && !p.is_empty()
            && !p.starts_with('/')
        {
            out.push((
                key.into(),
                format!("`{p}` is not a JSON pointer (like /id or /0/id)"),
            ));
        }
    }
    if r.skip_if.is_some() && r.lookup.is_none() {
        out.push(("skip_if".into(), "needs a lookup".into()));
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn recipe(toml_text: &str) -> Recipe {
        toml::from_str(toml_text).unwrap()
    }

    #[test]
    fn pointers_read_strings_and_numbers() {
        let body = json!([{ "id": 7 }, { "id": "x" }]);
        assert_eq!(pointer(&body, "/0/id").as_deref(), Some("7"));
        assert_eq!(pointer(&body, "/1/id").as_deref(), Some("x"));
        assert_eq!(pointer(&json!([]), "/0/id"), None);
    }

    #[test]
    fn bodies_are_filled_inside_strings_only() {
        let body: Value = serde_json::from_str(
            r#"{"name": "{first} \"x\"", "n": 1, "tags": ["{first}"], "on": true}"#,
        )
        .unwrap();
        let filled = fill_json(&body, &|s: &str| {
            Ok::<_, ()>(s.replace("{first}", "Zoë \"}\""))
        })
        .unwrap();
        assert_eq!(
            filled,
            json!({ "name": "Zoë \"}\" \"x\"", "n": 1, "tags": ["Zoë \"}\""], "on": true })
        );
    }

    #[test]
    fn recipes_are_checked_before_use() {
        assert!(
            validate(&recipe(
                "path = \"/users\"\nmethod = \"POST\"\nbody = '{\"name\": \"{firstName}\"}'"
            ))
            .is_empty()
        );
        let keys = |t: &str| {
            validate(&recipe(t))
                .into_iter()
                .map(|(k, _)| k)
                .collect::<Vec<_>>()
        };
        assert_eq!(keys("path = \"users\""), ["path"]);
        assert_eq!(keys("path = \"/u\"\nmethod = \"FETCH\""), ["method"]);
        assert_eq!(
            keys("path = \"/u\"\nbody = '{\"name\": {firstName}}'"),
            ["body"],
            "a placeholder outside a string"
        );
        assert_eq!(
            keys("path = \"/u\"\nbody = '{\"name\": \"{firstName\"}'"),
            ["body"],
            "an unclosed placeholder"
        );
        assert_eq!(keys("path = \"/u\"\nid = \"id\""), ["id"]);
        assert_eq!(keys("path = \"/u\"\nskip_if = \"found\""), ["skip_if"]);
    }
}
