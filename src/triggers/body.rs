//! The bodies SailPoint's triggers send (DESIGN §16), read field by field so that a bad one
//! is refused with the field named (`requestedItems[2].type: …`). `requestedFor` is taken
//! as an object (the trigger docs) or an array of them (the SDK's model).

use secrecy::SecretString;
use serde_json::{Map, Value};

use crate::model::ItemType;

/// A reference to an identity: `{type, id, name}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ref {
    pub id: String,
    pub name: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Add,
    Remove,
}

/// One requested item.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub id: String,
    pub name: Option<String>,
    pub ty: ItemType,
    pub operation: Operation,
    pub comment: Option<String>,
    pub client_metadata: Option<Value>,
    pub remove_date: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Sync,
    Async,
    Dynamic,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Sync => "SYNC",
            Mode::Async => "ASYNC",
            Mode::Dynamic => "DYNAMIC",
        }
    }
}

/// `_metadata`: how to answer. The secret is kept in a `SecretString` so that no Debug
/// output or log line can show it.
#[derive(Debug, Clone)]
pub struct Callback {
    pub url: String,
    pub secret: SecretString,
}

/// An "Access Request Submitted" invocation.
#[derive(Debug, Clone)]
pub struct Submitted {
    pub access_request_id: String,
    pub requested_for: Vec<Ref>,
    pub items: Vec<Item>,
    pub requested_by: Option<Ref>,
    pub mode: Mode,
    /// Present for ASYNC and DYNAMIC.
    pub callback: Option<Callback>,
}

/// One item of an "Access Request Decision" event, with the approvers' verdict.
#[derive(Debug, Clone, PartialEq)]
pub struct DecidedItem {
    pub item: Item,
    /// No approver denied it.
    pub approved: bool,
    /// Who decided, as the event names them.
    pub approvers: Vec<String>,
}

/// An "Access Request Decision" event.
#[derive(Debug, Clone, PartialEq)]
pub struct Decided {
    pub access_request_id: String,
    pub requested_for: Vec<Ref>,
    pub items: Vec<DecidedItem>,
    pub requested_by: Option<Ref>,
}

/// A body that cannot be taken: the field and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct BadField {
    pub field: String,
    pub message: String,
}

fn bad(field: &str, message: &str) -> BadField {
    BadField {
        field: field.to_string(),
        message: message.to_string(),
    }
}

fn object<'a>(v: &'a Value, field: &str) -> Result<&'a Map<String, Value>, BadField> {
    v.as_object().ok_or_else(|| bad(field, "must be an object"))
}

fn string(o: &Map<String, Value>, key: &str, at: &str) -> Result<Option<String>, BadField> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(bad(&format!("{at}{key}"), "must be a string")),
    }
}

fn required(o: &Map<String, Value>, key: &str, at: &str) -> Result<String, BadField> {
    match string(o, key, at)? {
        Some(s) if !s.trim().is_empty() => Ok(s),
        _ => Err(bad(&format!("{at}{key}"), "is required")),
    }
}

fn identity_ref(v: &Value, field: &str) -> Result<Ref, BadField> {
    let o = object(v, field)?;
    let at = format!("{field}.");
    Ok(Ref {
        id: required(o, "id", &at)?,
        name: string(o, "name", &at)?,
    })
}

fn requested_for(o: &Map<String, Value>) -> Result<Vec<Ref>, BadField> {
    match o.get("requestedFor") {
        None | Some(Value::Null) => Err(bad("requestedFor", "is required")),
        Some(Value::Array(a)) if a.is_empty() => Err(bad("requestedFor", "names no identity")),
        Some(Value::Array(a)) => a
            .iter()
            .enumerate()
            .map(|(i, v)| identity_ref(v, &format!("requestedFor[{i}]")))
            .collect(),
        Some(v) => Ok(vec![identity_ref(v, "requestedFor")?]),
    }
}

fn item(v: &Value, field: &str) -> Result<Item, BadField> {
    let o = object(v, field)?;
    let at = format!("{field}.");
    let ty = required(o, "type", &at)?;
    let ty = ItemType::parse(&ty).ok_or_else(|| {
        bad(
            &format!("{at}type"),
            "must be ROLE, ACCESS_PROFILE or ENTITLEMENT",
        )
    })?;
    let operation = match string(o, "operation", &at)?
        .as_deref()
        .map(str::to_ascii_lowercase)
    {
        None => Operation::Add,
        Some(op) if op == "add" => Operation::Add,
        Some(op) if op == "remove" => Operation::Remove,
        Some(_) => return Err(bad(&format!("{at}operation"), "must be Add or Remove")),
    };
    let client_metadata = match o.get("clientMetadata") {
        None | Some(Value::Null) => None,
        Some(v @ Value::Object(_)) => Some(v.clone()),
        Some(_) => return Err(bad(&format!("{at}clientMetadata"), "must be an object")),
    };
    Ok(Item {
        id: required(o, "id", &at)?,
        name: string(o, "name", &at)?,
        ty,
        operation,
        comment: string(o, "comment", &at)?,
        client_metadata,
        remove_date: string(o, "removeDate", &at)?,
    })
}

fn items<'a>(o: &'a Map<String, Value>, key: &str) -> Result<Vec<&'a Value>, BadField> {
    match o.get(key) {
        None | Some(Value::Null) => Err(bad(key, "is required")),
        Some(Value::Array(a)) if a.is_empty() => Err(bad(key, "names no item")),
        Some(Value::Array(a)) => Ok(a.iter().collect()),
        Some(_) => Err(bad(key, "must be an array")),
    }
}

fn requested_by(o: &Map<String, Value>) -> Result<Option<Ref>, BadField> {
    match o.get("requestedBy") {
        None | Some(Value::Null) => Ok(None),
        Some(v) => identity_ref(v, "requestedBy").map(Some),
    }
}

fn metadata(o: &Map<String, Value>) -> Result<(Mode, Option<Callback>), BadField> {
    let Some(m) = o.get("_metadata").filter(|v| !v.is_null()) else {
        return Ok((Mode::Sync, None));
    };
    let m = object(m, "_metadata")?;
    let mode = match string(m, "responseMode", "_metadata.")?
        .as_deref()
        .map(str::to_ascii_uppercase)
        .as_deref()
    {
        None | Some("SYNC") => Mode::Sync,
        Some("ASYNC") => Mode::Async,
        Some("DYNAMIC") => Mode::Dynamic,
        Some(_) => {
            return Err(bad(
                "_metadata.responseMode",
                "must be SYNC, ASYNC or DYNAMIC",
            ));
        }
    };
    if mode == Mode::Sync {
        return Ok((mode, None));
    }
    let url = required(m, "callbackURL", "_metadata.")?;
    if !(url.starts_with("https://") || url.starts_with("http://")) {
        return Err(bad("_metadata.callbackURL", "must be an http(s) URL"));
    }
    let secret = required(m, "secret", "_metadata.")?;
    Ok((
        mode,
        Some(Callback {
            url,
            secret: SecretString::from(secret),
        }),
    ))
}

/// Reads an "Access Request Submitted" body.
pub fn submitted(body: &Value) -> Result<Submitted, BadField> {
    let o = object(body, "body")?;
    let (mode, callback) = metadata(o)?;
    Ok(Submitted {
        access_request_id: required(o, "accessRequestId", "")?,
        requested_for: requested_for(o)?,
        items: items(o, "requestedItems")?
            .into_iter()
            .enumerate()
            .map(|(i, v)| item(v, &format!("requestedItems[{i}]")))
            .collect::<Result<_, _>>()?,
        requested_by: requested_by(o)?,
        mode,
        callback,
    })
}

/// Reads an "Access Request Decision" body: an item is approved unless an approver
/// denied it.
pub fn decided(body: &Value) -> Result<Decided, BadField> {
    let o = object(body, "body")?;
    let mut out = Vec::new();
    for (i, v) in items(o, "requestedItemsStatus")?.into_iter().enumerate() {
        let field = format!("requestedItemsStatus[{i}]");
        let it = item(v, &field)?;
        let mut approved = true;
        let mut approvers = Vec::new();
        if let Some(info) = object(v, &field)?
            .get("approvalInfo")
            .filter(|v| !v.is_null())
        {
            let info = info
                .as_array()
                .ok_or_else(|| bad(&format!("{field}.approvalInfo"), "must be an array"))?;
            for (j, a) in info.iter().enumerate() {
                let at = format!("{field}.approvalInfo[{j}].");
                let a = object(a, at.trim_end_matches('.'))?;
                match required(a, "approvalDecision", &at)?
                    .to_ascii_uppercase()
                    .as_str()
                {
                    "APPROVED" => {}
                    "DENIED" => approved = false,
                    _ => {
                        return Err(bad(
                            &format!("{at}approvalDecision"),
                            "must be APPROVED or DENIED",
                        ));
                    }
                }
                approvers.extend(string(a, "approverName", &at)?);
            }
        }
        out.push(DecidedItem {
            item: it,
            approved,
            approvers,
        });
    }
    Ok(Decided {
        access_request_id: required(o, "accessRequestId", "")?,
        requested_for: requested_for(o)?,
        items: out,
        requested_by: requested_by(o)?,
    })
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;
    use serde_json::json;

    use super::*;

    fn body() -> Value {
        json!({
            "accessRequestId": "2c91808b",
            "requestedFor": { "type": "IDENTITY", "id": "ada", "name": "Ada" },
            "requestedItems": [
                { "id": "ent-view", "name": "View", "type": "ENTITLEMENT", "operation": "Add", "comment": "needed" }
            ],
            "requestedBy": { "type": "IDENTITY", "id": "boss", "name": "Boss" }
        })
    }

    #[test]
    fn requested_for_is_an_object_or_an_array() {
        let s = submitted(&body()).unwrap();
        assert_eq!(s.requested_for[0].id, "ada");
        assert_eq!((s.mode, s.items[0].operation), (Mode::Sync, Operation::Add));
        let mut b = body();
        b["requestedFor"] = json!([{ "id": "ada" }, { "id": "grace" }]);
        assert_eq!(submitted(&b).unwrap().requested_for.len(), 2);
    }

    #[test]
    fn a_bad_field_is_named() {
        let cases = [
            (
                "/accessRequestId",
                json!(null),
                "accessRequestId: is required",
            ),
            (
                "/requestedFor",
                json!([]),
                "requestedFor: names no identity",
            ),
            (
                "/requestedItems/0/type",
                json!("GROUP"),
                "requestedItems[0].type: must be ROLE, ACCESS_PROFILE or ENTITLEMENT",
            ),
            (
                "/requestedItems/0/operation",
                json!("Modify"),
                "requestedItems[0].operation: must be Add or Remove",
            ),
            (
                "/requestedItems/0/id",
                json!(7),
                "requestedItems[0].id: must be a string",
            ),
        ];
        for (pointer, value, want) in cases {
            let mut b = body();
            *b.pointer_mut(pointer).unwrap() = value;
            assert_eq!(submitted(&b).unwrap_err().to_string(), want);
        }
    }

    #[test]
    fn async_needs_a_callback_and_a_secret() {
        let mut b = body();
        b["_metadata"] =
            json!({ "responseMode": "async", "callbackURL": "https://sp/cb", "secret": "s3" });
        let s = submitted(&b).unwrap();
        assert_eq!(s.mode, Mode::Async);
        let cb = s.callback.unwrap();
        assert_eq!(
            (cb.url.as_str(), cb.secret.expose_secret()),
            ("https://sp/cb", "s3")
        );
        assert!(!format!("{:?}", submitted(&b).unwrap()).contains("s3\""));
        b["_metadata"] = json!({ "responseMode": "ASYNC", "callbackURL": "https://sp/cb" });
        assert_eq!(submitted(&b).unwrap_err().field, "_metadata.secret");
        b["_metadata"] = json!({ "responseMode": "LATER" });
        assert_eq!(submitted(&b).unwrap_err().field, "_metadata.responseMode");
    }

    #[test]
    fn a_decision_item_is_approved_unless_an_approver_denied_it() {
        let b = json!({
            "accessRequestId": "r1",
            "requestedFor": { "id": "ada" },
            "requestedItemsStatus": [
                { "id": "ent-view", "type": "ENTITLEMENT", "operation": "Add",
                  "approvalInfo": [{ "approvalDecision": "APPROVED", "approverName": "Stephen" }] },
                { "id": "ent-admin", "type": "ENTITLEMENT", "operation": "Add",
                  "approvalInfo": [{ "approvalDecision": "APPROVED", "approverName": "a" },
                                   { "approvalDecision": "DENIED", "approverName": "b" }] },
                { "id": "role-x", "type": "ROLE", "operation": "Remove" }
            ]
        });
        let d = decided(&b).unwrap();
        let verdicts: Vec<bool> = d.items.iter().map(|i| i.approved).collect();
        assert_eq!(verdicts, [true, false, true]);
        assert_eq!(d.items[0].approvers, ["Stephen"]);
        assert_eq!(d.items[2].item.operation, Operation::Remove);
        let mut b = b;
        b["requestedItemsStatus"][0]["approvalInfo"][0]["approvalDecision"] = json!("MAYBE");
        assert_eq!(
            decided(&b).unwrap_err().field,
            "requestedItemsStatus[0].approvalInfo[0].approvalDecision"
        );
    }
}
