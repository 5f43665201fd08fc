//! The HTTP API (DESIGN §9 contract), shaped like SailPoint's Access Requests v1 so that
//! existing clients can talk to it.

mod audit;
pub mod auth;
mod identities;
mod params;
mod scope;
pub mod serve;
pub mod token_file;
mod triggers;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use params::Params;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::clock::{SharedClock, to_ms};
use crate::intake::SubmitError;
use crate::intake::validate::MAX_BODY;
use crate::store::jobs::JobState;
use crate::store::status::StatusQuery;
use crate::store::tasks::TaskFilter;
use crate::store::{Stamp, Store, StoreError, new_id};

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    /// The configuration in force (replaced on reload).
    pub live: Arc<crate::config::Live>,
    pub clock: SharedClock,
    /// The API tokens in force (replaced on SIGHUP).
    pub tokens: Arc<auth::Keyring>,
    /// How requests come in (validate, plan, store, log, wake dispatch).
    pub intake: crate::intake::Intake,
    /// SailPoint trigger subscriptions (None: none configured at start).
    pub triggers: Option<crate::triggers::Triggers>,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/access-requests/v1", post(create))
        .route("/access-requests/v1/cancel", post(cancel))
        .route("/access-request-status/v1", get(status))
        .route("/tasks/v1", get(tasks))
        .route("/tasks/v1.xlsx", get(tasks_xlsx))
        .route("/access/v1", get(audit::holdings))
        .route("/access/v1/removals", get(audit::removals))
        .route("/audit/v1", get(audit::trail))
        .route("/identities/v1/{id}", axum::routing::put(identities::put))
        .route(
            "/triggers/v1/{name}/access-request-submitted",
            post(triggers::submitted),
        )
        .route(
            "/triggers/v1/{name}/access-request-decision",
            post(triggers::decided),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        // The 1 MiB rule is enforced (with a 400 naming it) by reading the body ourselves.
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

/// The upstream's error shape: `{detailCode, trackingId, messages:[{locale, localeOrigin, text}]}`.
pub fn error(status: StatusCode, detail: &str, texts: &[String]) -> Response {
    let messages: Vec<Value> = texts
        .iter()
        .map(|t| json!({ "locale": "en-US", "localeOrigin": "DEFAULT", "text": t }))
        .collect();
    let body = json!({ "detailCode": detail, "trackingId": new_id(), "messages": messages });
    (status, axum::Json(body)).into_response()
}

pub(crate) fn unauthorized() -> Response {
    let mut r = error(
        StatusCode::UNAUTHORIZED,
        "401 Unauthorized",
        &["a valid bearer token is required".into()],
    );
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    r
}

/// A token outside its scopes: 403 naming the scope the call needs (DESIGN §25).
pub(crate) fn forbidden(needed: &auth::Scope) -> Response {
    error(
        StatusCode::FORBIDDEN,
        "403 Forbidden",
        &[format!("this token lacks the scope `{needed}`")],
    )
}

/// The name of the token the request presents (its requester), if it is valid and has
/// the scope `needed`; else the 401 or 403 answer.
pub(crate) fn authorized(
    state: &AppState,
    headers: &HeaderMap,
    needed: auth::Scope,
) -> Result<String, Box<Response>> {
    match presented(state, headers) {
        None => Err(Box::new(unauthorized())),
        Some((name, scopes)) if scopes.allows(&needed) => Ok(name),
        Some((name, _)) => {
            tracing::warn!(actor = %name, scope = %needed, "API call outside the token's scopes");
            Err(Box::new(forbidden(&needed)))
        }
    }
}

/// The token the request presents (name and scopes), or None: not a valid token.
pub(crate) fn presented(state: &AppState, headers: &HeaderMap) -> Option<(String, auth::Scopes)> {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if let Some(t) = auth::presented(given, &state.tokens.get()) {
        return Some((t.name.clone(), t.scopes.clone()));
    }
    crate::metrics::auth_failure();
    static LOG: std::sync::Mutex<auth::FailureLog> =
        std::sync::Mutex::new(auth::FailureLog::new(auth::FAILURE_LOG_EVERY_MS));
    let logged = LOG
        .lock()
        .ok()
        .and_then(|mut l| l.note(to_ms(state.clock.now())));
    if let Some(suppressed) = logged {
        let presented = if headers.contains_key(header::AUTHORIZATION) && given.is_none() {
            "unreadable"
        } else {
            auth::describe_presented(given)
        };
        tracing::warn!(
            presented,
            unlogged_since_last = suppressed,
            "API authentication failed"
        );
    }
    None
}

/// How many request bodies may be read and worked on at once. Each may be 1 MiB, and
/// its parsed JSON several times that: without a cap, a burst of large bodies in
/// parallel decides the agent's memory from outside. Others wait their turn (within
/// the server's read deadline).
const BODIES_AT_ONCE: usize = 8;
static BODIES: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(BODIES_AT_ONCE);

/// A place to read and handle one body, held until the answer is built.
pub(crate) async fn body_turn() -> Option<tokio::sync::SemaphorePermit<'static>> {
    // The semaphore is never closed; None would only mean it had been.
    BODIES.acquire().await.ok()
}

/// How long a client is asked to wait while the store is unavailable.
const RETRY_AFTER_S: u64 = 10;

/// A store error as the API's answer: 503 with `Retry-After` while the store is
/// unavailable (the client should send again: nothing was accepted), else 500. The
/// unavailable case is logged at most once per 10 s with a count, as a down database
/// would otherwise log every request.
pub(crate) fn store_failed(e: StoreError) -> Response {
    if !e.is_unavailable() {
        return internal(e);
    }
    crate::logging::throttled_store_error(&e);
    let mut r = error(
        StatusCode::SERVICE_UNAVAILABLE,
        "503 Store unavailable",
        &[format!(
            "the store is unavailable; nothing was changed: try again in {RETRY_AFTER_S} s"
        )],
    );
    r.headers_mut().insert(
        header::RETRY_AFTER,
        header::HeaderValue::from(RETRY_AFTER_S),
    );
    r
}

/// Why a body was not read.
pub(crate) enum BodyError {
    /// Over the 1 MiB limit: each endpoint says so in its words.
    TooLarge,
    /// Not all there within `api.body_read_timeout`: the 408 to send.
    Late(Response),
}

/// Reads a whole body within `api.body_read_timeout` and the 1 MiB limit: a client that
/// sends its body a byte at a time cannot hold a connection (and its memory) for ever.
pub(crate) async fn read_body(
    state: &AppState,
    body: Body,
) -> Result<axum::body::Bytes, BodyError> {
    let deadline = state.live.get().api.body_read_timeout;
    match tokio::time::timeout(deadline, axum::body::to_bytes(body, MAX_BODY)).await {
        Ok(Ok(b)) => Ok(b),
        Ok(Err(_)) => Err(BodyError::TooLarge),
        Err(_) => Err(BodyError::Late(error(
            StatusCode::REQUEST_TIMEOUT,
            "408 Request Timeout",
            &[format!(
                "body: not received in full within {} s",
                deadline.as_secs()
            )],
        ))),
    }
}

pub(crate) fn internal(e: impl std::fmt::Display) -> Response {
    tracing::error!(error = %e, "request failed");
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "500.0 Internal Fault",
        &["internal error; see the agent's log".into()],
    )
}

async fn create(State(state): State<AppState>, req: Request) -> Response {
    let token = match authorized(&state, req.headers(), auth::Scope::Intake) {
        Ok(t) => t,
        Err(r) => return *r,
    };
    let key = match idempotency_key(req.headers()) {
        Ok(k) => k.map(|k| format!("api:{k}")),
        Err(text) => {
            return error(
                StatusCode::BAD_REQUEST,
                "400.1 Bad request content",
                &[text],
            );
        }
    };
    let body = match read_body(&state, req.into_body()).await {
        Ok(b) => b,
        Err(BodyError::Late(r)) => return r,
        Err(BodyError::TooLarge) => {
            return error(
                StatusCode::BAD_REQUEST,
                "400.1 Bad request content",
                &[format!("body: larger than {MAX_BODY} bytes (1 MiB)")],
            );
        }
    };
    // The body is in: wait for a turn to parse and plan it (bodies are read outside the
    // turns, so slow senders cannot hold them).
    let _turn = body_turn().await;
    let result = state
        .intake
        .submit(&body, &crate::model::Requester::api(&token), key.as_deref())
        .await;
    match result {
        Ok(replay) => (
            StatusCode::ACCEPTED,
            axum::Json(replay.accepted().response.clone()),
        )
            .into_response(),
        Err(SubmitError::Invalid(inv)) => {
            let texts: Vec<String> = inv.0.iter().map(ToString::to_string).collect();
            tracing::info!(origin = "api", error = %inv, "request refused");
            error(StatusCode::BAD_REQUEST, "400.1 Bad request content", &texts)
        }
        Err(e @ SubmitError::KeyReused { .. }) => {
            tracing::info!(origin = "api", error = %e, "request refused");
            error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "422 Idempotency key reused",
                &[e.to_string()],
            )
        }
        Err(SubmitError::Store(e)) => store_failed(e),
        Err(e @ SubmitError::Internal(_)) => internal(e),
    }
}

/// The longest `Idempotency-Key` taken (Stripe allows 255).
const MAX_KEY_LEN: usize = 255;

/// The `Idempotency-Key` header: absent, or 1–255 printable ASCII characters. A key that
/// is present but unusable is refused rather than ignored: ignoring it would turn the
/// client's retry into a second request.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, String> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let k = v
        .to_str()
        .map_err(|_| "Idempotency-Key: must be printable ASCII".to_string())?
        .trim();
    if k.is_empty() {
        return Err("Idempotency-Key: must not be empty".into());
    }
    if k.len() > MAX_KEY_LEN {
        return Err(format!(
            "Idempotency-Key: longer than {MAX_KEY_LEN} characters"
        ));
    }
    if !k.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
        return Err("Idempotency-Key: must be printable ASCII".into());
    }
    Ok(Some(k.to_string()))
}

#[derive(Deserialize)]
struct CancelBody {
    #[serde(rename = "accessRequestId")]
    access_request_id: Option<Value>,
    comment: Option<Value>,
}

async fn cancel(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    let token = match authorized(&state, &headers, auth::Scope::Intake) {
        Ok(t) => t,
        Err(r) => return *r,
    };
    let bytes = match read_body(&state, body).await {
        Ok(b) => b,
        Err(BodyError::Late(r)) => return r,
        Err(BodyError::TooLarge) => {
            return error(
                StatusCode::BAD_REQUEST,
                "400.1 Bad request content",
                &["body: larger than 1 MiB".into()],
            );
        }
    };
    let _turn = body_turn().await;
    let parsed: CancelBody =
        match crate::intake::json::parse_strict(&bytes).and_then(serde_json::from_value) {
            Ok(b) => b,
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "400.1 Bad request content",
                    &[format!("body: malformed JSON: {e}")],
                );
            }
        };
    let mut problems = Vec::new();
    let id = match parsed.access_request_id {
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s),
        _ => {
            problems.push("accessRequestId: is required (a string)".to_string());
            None
        }
    };
    let comment = match parsed.comment {
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s),
        _ => {
            problems.push("comment: is required (a string)".to_string());
            None
        }
    };
    let (Some(id), Some(comment)) = (id, comment) else {
        return error(
            StatusCode::BAD_REQUEST,
            "400.1 Bad request content",
            &problems,
        );
    };
    let now = to_ms(state.clock.now());
    match state
        .store
        .cancel_request(id.clone(), comment, Stamp::new(token.clone(), now))
        .await
    {
        Ok(n) => {
            tracing::info!(request_id = %id, jobs_canceled = n, actor = %token, "request canceled");
            (StatusCode::ACCEPTED, axum::Json(json!({}))).into_response()
        }
        Err(StoreError::NotFound(m)) => error(
            StatusCode::NOT_FOUND,
            "404 Not found",
            &[format!("accessRequestId: {m}")],
        ),
        // Nothing left to stop: what the status item's `cancelable: false` announced.
        Err(StoreError::Conflict(m)) => error(
            StatusCode::BAD_REQUEST,
            "400.1 Bad request content",
            &[format!("accessRequestId: {m}")],
        ),
        Err(e) => store_failed(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StatusParams {
    #[serde(rename = "requested-for")]
    requested_for: Option<String>,
    limit: Option<String>,
    offset: Option<String>,
}

pub(crate) fn number(
    name: &str,
    v: Option<&str>,
    default: usize,
    max: usize,
) -> Result<usize, String> {
    match v {
        None => Ok(default),
        Some(s) => s
            .parse::<usize>()
            .ok()
            .filter(|n| *n <= max)
            .ok_or_else(|| format!("{name}: must be a whole number from 0 to {max}")),
    }
}

async fn status(
    State(state): State<AppState>,
    headers: HeaderMap,
    Params(p): Params<StatusParams>,
) -> Response {
    if let Err(r) = authorized(&state, &headers, auth::Scope::Status) {
        return *r;
    }
    let limit = number("limit", p.limit.as_deref(), 250, 250);
    // The store counts in i64: a larger offset would wrap to -1, which SQLite reads as
    // "no offset" and answers with the first page.
    let offset = number("offset", p.offset.as_deref(), 0, i64::MAX as usize);
    let (limit, offset) = match (limit, offset) {
        (Ok(l), Ok(o)) => (l, o),
        (l, o) => {
            let texts: Vec<String> = [l.err(), o.err()].into_iter().flatten().collect();
            return error(StatusCode::BAD_REQUEST, "400.1 Bad request content", &texts);
        }
    };
    let q = StatusQuery {
        request_id: None,
        requested_for: p.requested_for,
        limit,
        offset,
    };
    match state.store.status(q).await {
        Ok(rows) => {
            axum::Json(crate::wire::status_items(&rows, &state.live.get().catalog)).into_response()
        }
        Err(e) => store_failed(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TaskParams {
    source: Option<String>,
    status: Option<String>,
}

async fn tasks(state: State<AppState>, headers: HeaderMap, p: Params<TaskParams>) -> Response {
    task_list(state, headers, p, false).await
}

/// `GET /tasks/v1.xlsx`: the same tasks as the owners' workbook (DESIGN §15).
async fn tasks_xlsx(state: State<AppState>, headers: HeaderMap, p: Params<TaskParams>) -> Response {
    task_list(state, headers, p, true).await
}

async fn task_list(
    State(state): State<AppState>,
    headers: HeaderMap,
    Params(p): Params<TaskParams>,
    xlsx: bool,
) -> Response {
    if let Err(r) = authorized(&state, &headers, auth::Scope::Tasks) {
        return *r;
    }
    let open_only = match p.status.as_deref() {
        None | Some("open") => true,
        Some("all") => false,
        Some(other) => {
            return error(
                StatusCode::BAD_REQUEST,
                "400.1 Bad request content",
                &[format!("status: must be open or all, not `{other}`")],
            );
        }
    };
    let f = TaskFilter {
        source: p.source,
        owner: None,
        open_only,
        ..Default::default()
    };
    let tasks = match state.store.tasks(f).await {
        Ok(t) => t,
        Err(e) => return store_failed(e),
    };
    if !xlsx {
        return axum::Json(crate::tasks::row::rows(&tasks)).into_response();
    }
    let config = state.live.get();
    match crate::tasks::xlsx_out::write(&tasks, &config.catalog, &config.agent.time_zone) {
        Ok(bytes) => (
            [
                (
                    header::CONTENT_TYPE,
                    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
                ),
                (
                    header::CONTENT_DISPOSITION,
                    "attachment; filename=\"tasks.xlsx\"",
                ),
            ],
            bytes,
        )
            .into_response(),
        Err(e) => internal(e),
    }
}

async fn readyz(State(state): State<AppState>) -> Response {
    let now = to_ms(state.clock.now());
    match ready(&state.store, now).await {
        // Upstream health is reported, not failed on: the agent still serves what it has.
        Ok(upstreams) => {
            let config = state.live.get();
            // Agents alive: their heartbeat (every third of a lease at most) seen within
            // one leader lease. A dead one leaves the count once that has passed.
            let since = now - config.agent.leader_lease.as_millis() as i64;
            let leader = state
                .store
                .leader(crate::store::SINGLETON.into())
                .await
                .ok()
                .flatten();
            let agents = state.store.agents(since).await.unwrap_or_default();
            axum::Json(json!({
                "store": "ok",
                "agent": config.agent.name,
                "leader": leader.filter(|l| l.expires_at >= now).map(|l| l.holder),
                "agents": agents.len(),
                "sources": config.sources.keys().collect::<Vec<_>>(),
                // Sources whose jobs wait on provd's side (credentials refused, TLS not
                // trusted), with why: reported, not failed on, as upstreams are.
                "held": crate::metrics::held_sources(),
                "upstreams": upstreams,
            }))
            .into_response()
        }
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({ "store": e.to_string() })),
        )
            .into_response(),
    }
}

/// The store answers, has room, and (at most once a second, so that polling cannot load
/// it) takes a committed write: a store that reads but cannot commit (full disk,
/// read-only file system) would fail every POST.
async fn ready(store: &Store, now: i64) -> Result<Vec<crate::store::upstream::Health>, StoreError> {
    use std::sync::atomic::{AtomicI64, Ordering};
    static LAST_OK: AtomicI64 = AtomicI64::new(i64::MIN);
    store.ping().await?;
    store.check_free_space().await?;
    if now.saturating_sub(LAST_OK.load(Ordering::Relaxed)) >= 1_000 {
        store.probe_write(now).await?;
        LAST_OK.store(now, Ordering::Relaxed);
    }
    store.upstream_health().await
}

async fn metrics(State(state): State<AppState>) -> Response {
    let counts = async {
        Ok::<_, StoreError>((
            state.store.job_counts().await?,
            state.store.open_task_count().await?,
        ))
    }
    .await;
    let (jobs, open_tasks) = match counts {
        Ok(c) => c,
        Err(e) => return store_failed(e),
    };
    let mut out =
        String::from("# HELP provd_jobs Jobs by source and state.\n# TYPE provd_jobs gauge\n");
    for (source, st, n) in &jobs {
        out.push_str(&format!(
            "provd_jobs{{source=\"{}\",state=\"{st}\"}} {n}\n",
            prom_escape(source)
        ));
    }
    let depth: i64 = jobs
        .iter()
        .filter(|(_, st, _)| matches!(st, JobState::Queued | JobState::Retrying))
        .map(|(_, _, n)| n)
        .sum();
    out.push_str(&format!("# HELP provd_queue_depth Jobs waiting to run.\n# TYPE provd_queue_depth gauge\nprovd_queue_depth {depth}\n"));
    out.push_str(&format!("# HELP provd_manual_tasks_open Open manual tasks.\n# TYPE provd_manual_tasks_open gauge\nprovd_manual_tasks_open {open_tasks}\n"));
    let (store, config, now) = (
        state.store.clone(),
        state.live.get(),
        state.clock.now().as_millisecond(),
    );
    if let Ok(overdue) = crate::tasks::remind::overdue(&store, &config, now).await {
        out.push_str("# HELP provd_manual_tasks_overdue Open manual tasks older than their source's remind_after.\n# TYPE provd_manual_tasks_overdue gauge\n");
        let mut per_source: std::collections::BTreeMap<String, i64> = state
            .live
            .get()
            .sources
            .values()
            .filter(|s| s.manual.as_ref().is_some_and(|m| m.remind_after.is_some()))
            .map(|s| (s.id.clone(), 0))
            .collect();
        for o in overdue {
            *per_source.entry(o.source).or_default() += o.count;
        }
        for (source, n) in per_source {
            out.push_str(&format!(
                "provd_manual_tasks_overdue{{source=\"{}\"}} {n}\n",
                prom_escape(&source)
            ));
        }
    }
    crate::schedule::FIRE_LAG.render(&mut out);
    let sources: Vec<String> = state.live.get().sources.keys().cloned().collect();
    crate::metrics::render(&mut out, &sources);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

fn prom_escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
