//! `PUT /identities/v1/{id}` (DESIGN §13): an identity's attributes, replaced whole by the
//! body's object of strings. A changed `lifecycleState` is planned at once (requester
//! `lifecycle`) before the identity is stored; a change that would disable or delete more
//! accounts than `max_changes` is refused with 409 unless `Provd-Confirm: true`.

use std::collections::BTreeMap;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use provd_connector_core::Identity;
use serde_json::{Value, json};

use super::{AppState, authorized, error, internal};
use crate::clock::to_ms;
use crate::lifecycle::apply::{ApplyError, apply};
use crate::store::Stamp;

fn bad(texts: Vec<String>) -> Response {
    error(StatusCode::BAD_REQUEST, "400.1 Bad request content", &texts)
}

/// The body as attributes: an object of strings (an empty string leaves the attribute
/// out, as an empty CSV cell does); every bad key is named.
fn attributes(id: &str, body: &[u8]) -> Result<BTreeMap<String, String>, Vec<String>> {
    let value = crate::intake::json::parse_strict(body)
        .map_err(|e| vec![format!("body: malformed JSON: {e}")])?;
    let Value::Object(obj) = value else {
        return Err(vec![
            "body: must be an object of attribute names and string values".into(),
        ]);
    };
    let mut problems = Vec::new();
    let mut out = BTreeMap::new();
    for (k, v) in obj {
        match v {
            Value::String(s) if k == "id" && s != id => problems.push(format!(
                "id: `{s}` is not the identity in the path (`{id}`)"
            )),
            Value::String(_) if k == "id" => {}
            Value::String(s) if s.is_empty() => {}
            Value::String(s) => {
                out.insert(k, s);
            }
            other => problems.push(format!("{k}: must be a string, not {other}")),
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

pub(super) async fn put(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let token = match authorized(&state, &headers, super::auth::Scope::Identities) {
        Ok(t) => t,
        Err(r) => return *r,
    };
    if let Err(e) = crate::model::ident::check_identity_id(&id) {
        return bad(vec![format!("id: {e}")]);
    }
    let bytes = match super::read_body(&state, body).await {
        Ok(b) => b,
        Err(super::BodyError::Late(r)) => return r,
        Err(super::BodyError::TooLarge) => return bad(vec!["body: larger than 1 MiB".into()]),
    };
    let _turn = super::body_turn().await;
    let attributes = match attributes(&id, &bytes) {
        Ok(a) => a,
        Err(problems) => return bad(problems),
    };
    if let Err(e) = state.live.get().lifecycle.check_state(&attributes) {
        return bad(vec![e]);
    }
    let confirm = headers
        .get("provd-confirm")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let identity = Identity { id, attributes };
    let id = identity.id.clone();
    let config = state.live.get();
    let now = to_ms(state.clock.now());
    let applied = match apply(
        &config,
        &*state.store,
        &state.intake,
        vec![identity],
        false,
        Stamp::new(token.clone(), now),
        confirm,
    )
    .await
    {
        Ok(a) => a,
        Err(e @ ApplyError::Held { .. }) => {
            return error(
                StatusCode::CONFLICT,
                "409 Held",
                &[format!("{e} (send Provd-Confirm: true)")],
            );
        }
        Err(e) => return internal(e),
    };
    tracing::info!(identity = %id, actor = %token, lifecycle_requests = applied.requests, "identity updated");
    let change = applied.changes.first().map(|c| {
        json!({ "from": c.from, "to": c.to,
            "revoked": c.revoke.iter().map(|(ty, i)| json!({ "type": ty.as_str(), "id": i })).collect::<Vec<_>>(),
            "granted": c.grant, "accountOperations": c.accounts.iter()
                .map(|(s, op)| json!({ "source": s, "op": op.kind().as_str() })).collect::<Vec<_>>() })
    });
    (
        StatusCode::OK,
        axum::Json(json!({ "id": id, "lifecycle": change, "requests": applied.requests })),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::attributes;

    #[test]
    fn the_body_is_an_object_of_strings() {
        let a = attributes("ada", br#"{"id":"ada","lastName":"King","title":""}"#).unwrap();
        assert_eq!(a.len(), 1);
        assert_eq!(a["lastName"], "King");
        let e = attributes("ada", br#"{"id":"bob","n":1}"#).unwrap_err();
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(attributes("ada", b"[1]").is_err());
    }
}
