//! Building a SCIM resource from attribute paths (RFC 7644 §3.10 path syntax, the subset a
//! Create Account specification needs): `userName`, `name.givenName`, and a multi-valued
//! attribute selected by a filter, `emails[type eq "work"].value`.

use serde_json::{Map, Value};

/// One parsed path.
#[derive(Debug, PartialEq, Eq)]
pub enum Path<'a> {
    /// `a` or `a.b`
    Plain(Vec<&'a str>),
    /// `a[key eq "v"].sub`
    Filtered {
        attr: &'a str,
        key: &'a str,
        value: String,
        sub: &'a str,
    },
}

pub fn parse(path: &str) -> Result<Path<'_>, String> {
    let bad = || {
        format!(
            "`{path}` is not an attribute path like userName, name.givenName or emails[type eq \"work\"].value"
        )
    };
    if let Some(open) = path.find('[') {
        let close = path.find(']').ok_or_else(bad)?;
        let attr = &path[..open];
        let inner = path[open + 1..close].trim();
        let sub = path[close + 1..].strip_prefix('.').ok_or_else(bad)?;
        let mut parts = inner.splitn(3, ' ');
        let (key, op, lit) = (
            parts.next().ok_or_else(bad)?,
            parts.next().ok_or_else(bad)?,
            parts.next().ok_or_else(bad)?,
        );
        if op != "eq" || attr.is_empty() || sub.is_empty() || sub.contains('.') {
            return Err(bad());
        }
        let value: String = serde_json::from_str(lit).map_err(|_| bad())?;
        return Ok(Path::Filtered {
            attr,
            key,
            value,
            sub,
        });
    }
    let parts: Vec<&str> = path.split('.').collect();
    if parts.iter().any(|p| p.is_empty()) || parts.len() > 2 {
        return Err(bad());
    }
    Ok(Path::Plain(parts))
}

/// Sets `value` at `path` in `obj`.
pub fn set(obj: &mut Map<String, Value>, path: &str, value: &str) -> Result<(), String> {
    match parse(path)? {
        Path::Plain(parts) => {
            let mut cur = obj;
            for (i, p) in parts.iter().enumerate() {
                if i + 1 == parts.len() {
                    cur.insert((*p).to_string(), Value::String(value.to_string()));
                } else {
                    let next = cur
                        .entry((*p).to_string())
                        .or_insert_with(|| Value::Object(Map::new()));
                    cur = next
                        .as_object_mut()
                        .ok_or_else(|| format!("`{path}`: `{p}` is not an object"))?;
                }
            }
        }
        Path::Filtered {
            attr,
            key,
            value: selector,
            sub,
        } => {
            let list = obj
                .entry(attr.to_string())
                .or_insert_with(|| Value::Array(Vec::new()));
            let list = list
                .as_array_mut()
                .ok_or_else(|| format!("`{path}`: `{attr}` is not a list"))?;
            let pos = list
                .iter()
                .position(|v| v.get(key).and_then(Value::as_str) == Some(selector.as_str()));
            let item = match pos {
                Some(i) => &mut list[i],
                None => {
                    let mut m = Map::new();
                    m.insert(key.to_string(), Value::String(selector.clone()));
                    list.push(Value::Object(m));
                    let last = list.len() - 1;
                    &mut list[last]
                }
            };
            if let Some(m) = item.as_object_mut() {
                m.insert(sub.to_string(), Value::String(value.to_string()));
            }
        }
    }
    Ok(())
}

/// A value for a SCIM filter string literal: `"` and `\` escaped (RFC 7644 §3.4.2.2 uses
/// JSON string syntax).
pub fn filter_literal(value: &str) -> String {
    Value::String(value.to_string()).to_string()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn builds_nested_and_filtered_attributes() {
        let mut m = Map::new();
        set(&mut m, "userName", "ada").unwrap();
        set(&mut m, "name.givenName", "Ada").unwrap();
        set(&mut m, "name.familyName", "Lovelace").unwrap();
        set(&mut m, "emails[type eq \"work\"].value", "ada@x").unwrap();
        set(&mut m, "emails[type eq \"home\"].value", "ada@home").unwrap();
        set(&mut m, "emails[type eq \"work\"].primary", "true").unwrap();
        assert_eq!(
            Value::Object(m),
            json!({ "userName": "ada", "name": { "givenName": "Ada", "familyName": "Lovelace" },
                    "emails": [{ "type": "work", "value": "ada@x", "primary": "true" }, { "type": "home", "value": "ada@home" }] })
        );
    }

    #[test]
    fn bad_paths_are_refused() {
        for bad in [
            "",
            "a..b",
            "a.b.c",
            "emails[type eq work].value",
            "emails[type co \"w\"].value",
            "emails[type eq \"w\"]",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn filter_literals_are_json_strings() {
        assert_eq!(filter_literal("a\"b\\c"), "\"a\\\"b\\\\c\"");
    }
}
