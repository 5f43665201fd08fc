//! `POST /triggers/v1/{name}/access-request-submitted` and `…/access-request-decision`
//! (DESIGN §16): SailPoint's subscriptions, authenticated as the trigger says (a named
//! provd API token, or Basic credentials); nothing is stored for a caller that fails.

use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::AppState;
use crate::config::trigger::{Trigger, TriggerAuth};
use crate::intake::validate::MAX_BODY;
use crate::triggers::{Reply, TriggerError};

fn answer(status: StatusCode, body: serde_json::Value) -> Response {
    (status, axum::Json(body)).into_response()
}

/// A refusal in the API's one error shape (`detailCode`, `messages[].text`).
fn refused(status: StatusCode, message: &str) -> Response {
    let detail = match status {
        StatusCode::BAD_REQUEST => "400.1 Bad request content",
        StatusCode::UNAUTHORIZED => "401 Unauthorized",
        StatusCode::NOT_FOUND => "404 Not found",
        _ => "503 Service unavailable",
    };
    super::error(status, detail, &[message.to_string()])
}

/// Equal in constant time; the digests are compared, so lengths do not show either.
fn same(a: &[u8], b: &[u8]) -> bool {
    super::auth::ct_eq(&Sha256::digest(a), &Sha256::digest(b))
}

/// Whether the request carries the credentials `trigger` expects.
fn authenticated(state: &AppState, trigger: &Trigger, headers: &HeaderMap) -> bool {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match &trigger.auth {
        TriggerAuth::Bearer(name) => super::auth::presented(given, &state.tokens.get())
            .is_some_and(|t| {
                &t.name == name
                    && t.scopes
                        .allows(&super::auth::Scope::Trigger(trigger.name.clone()))
            }),
        TriggerAuth::Basic { user, password } => {
            use secrecy::ExposeSecret;
            // The scheme is case-insensitive (RFC 7235 §2.1), as for bearer tokens.
            let Some(encoded) = given
                .and_then(|g| g.split_once(' '))
                .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
                .map(|(_, rest)| rest)
            else {
                return false;
            };
            let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim())
            else {
                return false;
            };
            let expected = format!("{user}:{}", password.expose_secret());
            same(&decoded, expected.as_bytes())
        }
    }
}

/// The trigger named in the path, authenticated, and the body; or the answer refusing.
async fn admit(
    state: &AppState,
    name: &str,
    req: Request,
) -> Result<(Trigger, axum::body::Bytes), Response> {
    let config = state.live.get();
    let (Some(trigger), Some(_)) = (config.triggers.get(name), &state.triggers) else {
        return Err(refused(StatusCode::NOT_FOUND, "no such trigger"));
    };
    if !authenticated(state, trigger, req.headers()) {
        crate::metrics::auth_failure();
        tracing::warn!(trigger = %name, presented = super::auth::describe_presented(
            req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok())),
            "trigger invocation refused: wrong or missing credentials");
        let mut r = refused(StatusCode::UNAUTHORIZED, "wrong or missing credentials");
        let challenge = match trigger.auth {
            TriggerAuth::Bearer(_) => "Bearer",
            TriggerAuth::Basic { .. } => "Basic realm=\"provd\"",
        };
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static(challenge),
        );
        return Err(r);
    }
    let trigger = trigger.clone();
    match super::read_body(state, req.into_body()).await {
        Ok(b) => Ok((trigger, b)),
        Err(super::BodyError::Late(r)) => Err(r),
        Err(super::BodyError::TooLarge) => Err(refused(
            StatusCode::BAD_REQUEST,
            &format!("body: larger than {MAX_BODY} bytes (1 MiB)"),
        )),
    }
}

fn failed(name: &str, e: TriggerError) -> Response {
    match e {
        TriggerError::Bad(message) => {
            tracing::info!(trigger = %name, error = %message, "trigger body refused");
            refused(StatusCode::BAD_REQUEST, &message)
        }
        e => {
            tracing::error!(trigger = %name, error = %e, "trigger invocation failed");
            refused(
                StatusCode::SERVICE_UNAVAILABLE,
                "provd could not take the invocation; try again",
            )
        }
    }
}

pub(super) async fn submitted(
    State(state): State<AppState>,
    Path(name): Path<String>,
    req: Request,
) -> Response {
    let (trigger, body) = match admit(&state, &name, req).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    let Some(triggers) = &state.triggers else {
        return refused(StatusCode::NOT_FOUND, "no such trigger");
    };
    match triggers.submitted(&trigger, &body).await {
        Ok(Reply::Output(out)) => answer(StatusCode::OK, out),
        Ok(Reply::Later) => answer(StatusCode::OK, json!({})),
        Ok(Reply::Accepted) => answer(StatusCode::ACCEPTED, json!({})),
        Err(e) => failed(&name, e),
    }
}

pub(super) async fn decided(
    State(state): State<AppState>,
    Path(name): Path<String>,
    req: Request,
) -> Response {
    let (trigger, body) = match admit(&state, &name, req).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    let Some(triggers) = &state.triggers else {
        return refused(StatusCode::NOT_FOUND, "no such trigger");
    };
    match triggers.decided(&trigger, &body).await {
        Ok(out) => answer(StatusCode::OK, out),
        Err(e) => failed(&name, e),
    }
}
