//! Every rule of DESIGN §4 for an access request body. Pure: what the agent knows
//! (identities, catalog) and the time come in as arguments.

use std::collections::{BTreeMap, BTreeSet};

use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde_json::{Map, Value};

use super::dates;
use crate::config::ItemType;

/// The largest body taken in, from any intake.
pub const MAX_BODY: usize = 1024 * 1024;
pub const MAX_IDENTITIES: usize = 10;
pub const MAX_ENTITLEMENTS: usize = 25;

pub use crate::model::{RequestType, ValidItem, ValidRequest};

/// One broken rule, with the field it is about (`requestedItems[1].removeDate`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Why a request was refused: every broken rule found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Invalid(pub Vec<FieldError>);

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let lines: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&lines.join("; "))
    }
}

/// What the agent knows, for the "unknown id" rules.
pub trait Known {
    fn identity_exists(&self, id: &str) -> bool;
    fn item_exists(&self, ty: ItemType, id: &str) -> bool;
    /// The lifecycle state of `id` when that state may not request access (DESIGN §13).
    fn not_requestable(&self, id: &str) -> Option<String> {
        let _ = id;
        None
    }
}

/// The most problems one refusal names: a body naming 100,000 unknown ids must not turn
/// into a 10 MB answer (and a log line as long). The rest are counted.
pub const MAX_PROBLEMS: usize = 100;

/// The problems found so far: the first [`MAX_PROBLEMS`], and how many more.
struct Errors(Vec<FieldError>, usize);

impl Errors {
    const fn new() -> Self {
        Self(Vec::new(), 0)
    }

    fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        if self.0.len() >= MAX_PROBLEMS {
            self.1 += 1;
            return;
        }
        self.0.push(FieldError {
            field: field.into(),
            message: message.into(),
        });
    }

    /// How many were found in all (also those not kept).
    fn count(&self) -> usize {
        self.0.len() + self.1
    }

    fn invalid(mut self) -> Invalid {
        if self.1 > 0 {
            self.0.push(FieldError {
                field: "body".into(),
                message: format!("{} more problems not listed", self.1),
            });
        }
        Invalid(self.0)
    }
}

const TOP_KEYS: [&str; 4] = [
    "requestedFor",
    "requestType",
    "requestedItems",
    "clientMetadata",
];
const ITEM_KEYS: [&str; 6] = [
    "type",
    "id",
    "comment",
    "startDate",
    "removeDate",
    "clientMetadata",
];

pub fn validate(
    body: &[u8],
    known: &dyn Known,
    agent_zone: &TimeZone,
    now: Timestamp,
) -> Result<ValidRequest, Invalid> {
    validate_parsed(&parse(body)?, known, agent_zone, now)
}

/// The body as JSON: within the size limit, well formed, no duplicate keys.
pub fn parse(body: &[u8]) -> Result<Value, Invalid> {
    let mut errs = Errors::new();
    if body.len() > MAX_BODY {
        errs.add(
            "body",
            format!("is {} bytes; the limit is {MAX_BODY} (1 MiB)", body.len()),
        );
        return Err(errs.invalid());
    }
    match super::json::parse_strict(body) {
        Ok(v) => Ok(v),
        Err(e) if e.to_string().starts_with("duplicate key") => {
            errs.add("body", e.to_string());
            Err(errs.invalid())
        }
        Err(e) => {
            errs.add("body", format!("malformed JSON: {e}"));
            Err(errs.invalid())
        }
    }
}

/// Checks a parsed body (see [`parse`]) against every rule.
pub fn validate_parsed(
    value: &Value,
    known: &dyn Known,
    agent_zone: &TimeZone,
    now: Timestamp,
) -> Result<ValidRequest, Invalid> {
    let mut errs = Errors::new();
    let Some(obj) = value.as_object() else {
        errs.add("body", "must be a JSON object");
        return Err(errs.invalid());
    };
    for key in obj.keys() {
        if !TOP_KEYS.contains(&key.as_str()) {
            errs.add(
                key.clone(),
                format!("unknown field (expected one of {})", TOP_KEYS.join(", ")),
            );
        }
    }

    let request_type = match obj.get("requestType") {
        None | Some(Value::Null) => RequestType::Grant,
        Some(Value::String(s)) if s == "GRANT_ACCESS" => RequestType::Grant,
        Some(Value::String(s)) if s == "REVOKE_ACCESS" => RequestType::Revoke,
        Some(other) => {
            errs.add(
                "requestType",
                format!("must be GRANT_ACCESS or REVOKE_ACCESS, not {other}"),
            );
            RequestType::Grant
        }
    };
    let client_metadata = metadata(obj.get("clientMetadata"), "clientMetadata", &mut errs);
    let request_zone = zone_of(&client_metadata, "clientMetadata.timeZone", &mut errs);

    let mut requested_for = Vec::new();
    match obj.get("requestedFor") {
        None | Some(Value::Null) => errs.add("requestedFor", "is required"),
        Some(Value::Array(list)) if list.is_empty() => {
            errs.add("requestedFor", "must name at least one identity")
        }
        Some(Value::Array(list)) => {
            if list.len() > MAX_IDENTITIES {
                errs.add(
                    "requestedFor",
                    format!(
                        "names {} identities; at most {MAX_IDENTITIES} are allowed",
                        list.len()
                    ),
                );
            }
            let mut seen = BTreeSet::new();
            for (i, v) in list.iter().enumerate() {
                let field = format!("requestedFor[{i}]");
                match v.as_str() {
                    Some(id) if !id.trim().is_empty() => {
                        if !seen.insert(id.to_string()) {
                            errs.add(field, format!("identity `{id}` is named twice"));
                        } else if !known.identity_exists(id) {
                            errs.add(field, format!("unknown identity `{id}`"));
                        } else if let Some(state) = known
                            .not_requestable(id)
                            .filter(|_| request_type == RequestType::Grant)
                        {
                            errs.add(
                                field,
                                format!("identity `{id}` is in lifecycle state `{state}`, which may not be granted access"),
                            );
                        } else {
                            requested_for.push(id.to_string());
                        }
                    }
                    Some(_) => errs.add(field, "must not be empty"),
                    None => errs.add(field, format!("must be a string identity id, not {v}")),
                }
            }
        }
        Some(other) => errs.add(
            "requestedFor",
            format!("must be a list of identity ids, not {other}"),
        ),
    }
    let named = obj
        .get("requestedFor")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    if request_type == RequestType::Revoke && named > 1 {
        errs.add(
            "requestedFor",
            "a REVOKE_ACCESS request is for exactly one identity",
        );
    }

    let mut items = Vec::new();
    match obj.get("requestedItems") {
        None | Some(Value::Null) => errs.add("requestedItems", "is required"),
        Some(Value::Array(list)) if list.is_empty() => {
            errs.add("requestedItems", "must name at least one item")
        }
        Some(Value::Array(list)) => {
            let mut seen = BTreeSet::new();
            for (i, v) in list.iter().enumerate() {
                let base = format!("requestedItems[{i}]");
                let Some(item) = v.as_object() else {
                    errs.add(base, "must be an object with `type` and `id`");
                    continue;
                };
                if let Some(ok) = validate_item(
                    item,
                    &base,
                    request_type,
                    known,
                    request_zone.as_ref().unwrap_or(agent_zone),
                    now,
                    &mut errs,
                ) {
                    if !seen.insert((ok.ty, ok.id.clone())) {
                        errs.add(
                            format!("{base}.id"),
                            format!("{} `{}` is requested twice", ok.ty.as_str(), ok.id),
                        );
                    } else {
                        items.push(ok);
                    }
                }
            }
            let entitlements = list
                .iter()
                .filter(|v| v.get("type").and_then(Value::as_str) == Some("ENTITLEMENT"))
                .count();
            if entitlements > MAX_ENTITLEMENTS {
                errs.add("requestedItems", format!("requests {entitlements} entitlements; at most {MAX_ENTITLEMENTS} are allowed"));
            }
        }
        Some(other) => errs.add(
            "requestedItems",
            format!("must be a list of items, not {other}"),
        ),
    }

    if errs.0.is_empty() {
        Ok(ValidRequest {
            request_type,
            requested_for,
            items,
            client_metadata,
            account_ops: Vec::new(),
            repairs: Vec::new(),
        })
    } else {
        Err(errs.invalid())
    }
}

fn validate_item(
    item: &Map<String, Value>,
    base: &str,
    request_type: RequestType,
    known: &dyn Known,
    zone: &TimeZone,
    now: Timestamp,
    errs: &mut Errors,
) -> Option<ValidItem> {
    let before = errs.count();
    for key in item.keys() {
        if !ITEM_KEYS.contains(&key.as_str()) {
            errs.add(
                format!("{base}.{key}"),
                format!("unknown field (expected one of {})", ITEM_KEYS.join(", ")),
            );
        }
    }
    let ty = match item.get("type") {
        Some(Value::String(s)) => ItemType::parse(s).or_else(|| {
            errs.add(
                format!("{base}.type"),
                format!("must be ROLE, ACCESS_PROFILE or ENTITLEMENT, not `{s}`"),
            );
            None
        }),
        None | Some(Value::Null) => {
            errs.add(format!("{base}.type"), "is required");
            None
        }
        Some(other) => {
            errs.add(
                format!("{base}.type"),
                format!("must be a string, not {other}"),
            );
            None
        }
    };
    let id = match item.get("id") {
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s.clone()),
        Some(Value::String(_)) => {
            errs.add(format!("{base}.id"), "must not be empty");
            None
        }
        None | Some(Value::Null) => {
            errs.add(format!("{base}.id"), "is required");
            None
        }
        Some(other) => {
            errs.add(
                format!("{base}.id"),
                format!("must be a string, not {other}"),
            );
            None
        }
    };
    if let (Some(ty), Some(id)) = (ty, &id)
        && !known.item_exists(ty, id)
    {
        errs.add(
            format!("{base}.id"),
            format!("unknown {} `{id}`", ty.as_str()),
        );
    }
    let comment = match item.get("comment") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => {
            errs.add(
                format!("{base}.comment"),
                format!("must be a string, not {other}"),
            );
            None
        }
    };
    if request_type == RequestType::Revoke && comment.as_deref().is_none_or(|c| c.trim().is_empty())
    {
        errs.add(
            format!("{base}.comment"),
            "is required on a REVOKE_ACCESS request",
        );
    }
    let client_metadata = metadata(
        item.get("clientMetadata"),
        &format!("{base}.clientMetadata"),
        errs,
    );
    let item_zone = zone_of(
        &client_metadata,
        &format!("{base}.clientMetadata.timeZone"),
        errs,
    );
    let zone = item_zone.as_ref().unwrap_or(zone);
    let start_at = date(item, "startDate", base, zone, now, errs);
    let remove_at = date(item, "removeDate", base, zone, now, errs);
    if start_at.is_some() && request_type == RequestType::Revoke {
        errs.add(
            format!("{base}.startDate"),
            "is not allowed on a REVOKE_ACCESS request",
        );
    }
    if let (Some(s), Some(r)) = (start_at, remove_at)
        && r <= s
    {
        errs.add(format!("{base}.removeDate"), "must be after startDate");
    }
    if errs.count() > before {
        return None;
    }
    Some(ValidItem {
        ty: ty?,
        id: id?,
        comment,
        start_at,
        remove_at,
        client_metadata,
    })
}

fn date(
    item: &Map<String, Value>,
    key: &str,
    base: &str,
    zone: &TimeZone,
    now: Timestamp,
    errs: &mut Errors,
) -> Option<Timestamp> {
    let field = format!("{base}.{key}");
    match item.get(key) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => match dates::resolve(s, zone) {
            Ok(t) if t <= now => {
                errs.add(field, format!("`{s}` is not in the future"));
                None
            }
            Ok(t) => Some(t),
            Err(e) => {
                errs.add(field, e);
                None
            }
        },
        Some(other) => {
            errs.add(field, format!("must be a date string, not {other}"));
            None
        }
    }
}

fn metadata(v: Option<&Value>, field: &str, errs: &mut Errors) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    match v {
        None | Some(Value::Null) => {}
        Some(Value::Object(m)) => {
            for (k, v) in m {
                match v.as_str() {
                    Some(s) => {
                        out.insert(k.clone(), s.to_string());
                    }
                    None => errs.add(format!("{field}.{k}"), format!("must be a string, not {v}")),
                }
            }
        }
        Some(other) => errs.add(field, format!("must be an object of strings, not {other}")),
    }
    out
}

fn zone_of(meta: &BTreeMap<String, String>, field: &str, errs: &mut Errors) -> Option<TimeZone> {
    let name = meta.get("timeZone")?;
    match TimeZone::get(name) {
        Ok(tz) => Some(tz),
        Err(_) => {
            errs.add(
                field,
                format!("`{name}` is not an IANA time zone name (e.g. Europe/Berlin)"),
            );
            None
        }
    }
}

#[cfg(test)]
mod tests;
