//! The auditor's endpoints (DESIGN §14): `GET /access/v1`, `GET /access/v1/removals`,
//! `GET /audit/v1` (cursor pages, JSON or CSV). Shaped by `crate::audit`, like the CLI.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::params::Params;
use super::{AppState, authorized, error, internal};
use crate::audit::{access, trail, write_csv};
use crate::clock::to_ms;
use crate::store::audit::AccessQuery;

fn bad(texts: Vec<String>) -> Response {
    error(StatusCode::BAD_REQUEST, "400.1 Bad request content", &texts)
}

/// Lets the call in (a valid token) and reads its `format`: whether it wants CSV, or the
/// answer refusing it.
fn admit(
    state: &AppState,
    headers: &HeaderMap,
    format: Option<&str>,
) -> Result<bool, Box<Response>> {
    authorized(state, headers, super::auth::Scope::Audit)?;
    csv_wanted(format).map_err(|e| Box::new(bad(vec![e])))
}

/// `format=json` (default) or `format=csv`.
fn csv_wanted(format: Option<&str>) -> Result<bool, String> {
    match format {
        None | Some("json") => Ok(false),
        Some("csv") => Ok(true),
        Some(other) => Err(format!(
            "format: must be json or csv, not `{}`",
            other.escape_debug()
        )),
    }
}

fn csv_response(header_row: &[&str], rows: impl IntoIterator<Item = Vec<String>>) -> Response {
    let mut body = Vec::new();
    match write_csv(&mut body, header_row, rows) {
        Ok(()) => ([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], body).into_response(),
        Err(e) => internal(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AccessParams {
    identity: Option<String>,
    source: Option<String>,
    item: Option<String>,
    format: Option<String>,
    after: Option<String>,
    limit: Option<String>,
}

/// The most holdings one page of `/access/v1` lists; the default is [`ACCESS_PAGE`].
const MAX_ACCESS_PAGE: usize = 10_000;
const ACCESS_PAGE: usize = 1_000;

/// `/access/v1`: a page of holdings (the array of the contract), with a `Link: <…>;
/// rel="next"` header while more follow, as `/audit/v1` pages: the whole list of a large
/// site would otherwise be built in memory for one answer.
pub(super) async fn holdings(
    State(state): State<AppState>,
    headers: HeaderMap,
    Params(p): Params<AccessParams>,
    uri: axum::http::Uri,
) -> Response {
    let csv = match admit(&state, &headers, p.format.as_deref()) {
        Ok(c) => c,
        Err(refused) => return *refused,
    };
    let limit = super::number("limit", p.limit.as_deref(), ACCESS_PAGE, MAX_ACCESS_PAGE);
    let after = match p.after.as_deref().map(str::parse::<i64>) {
        None => Ok(None),
        Some(Ok(n)) if n >= 0 => Ok(Some(n)),
        Some(_) => Err("after: must be a whole number (the `Link` header's cursor)".to_string()),
    };
    let (limit, after) = match (limit, after) {
        (Ok(l), Ok(a)) if l > 0 => (l, a),
        (l, a) => {
            let mut texts: Vec<String> = [l.err(), a.err()].into_iter().flatten().collect();
            if texts.is_empty() {
                texts.push(format!(
                    "limit: must be a whole number from 1 to {MAX_ACCESS_PAGE}"
                ));
            }
            return bad(texts);
        }
    };
    let q = AccessQuery {
        identity: p.identity.filter(|i| !i.is_empty()),
        after,
        limit: Some(limit),
    };
    let mut holdings = match state.store.holdings(q).await {
        Ok(h) => h,
        Err(e) => return super::store_failed(e),
    };
    let full = holdings.len() == limit;
    // A page ends with an identity's last grant: one value wanted by two of its grants
    // is one holding (DESIGN §21), never half on each page.
    if let Some(last) = holdings.last().filter(|_| full) {
        let rest = AccessQuery {
            identity: Some(last.identity.clone()),
            after: Some(last.assignment),
            limit: None,
        };
        match state.store.holdings(rest).await {
            Ok(rest) => holdings.extend(rest),
            Err(e) => return super::store_failed(e),
        }
    }
    let evidence = match access::evidence(&state.store, &holdings).await {
        Ok(e) => e,
        Err(e) => return super::store_failed(e),
    };
    let nonempty = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
    let rows = access::rows(
        &holdings,
        &evidence,
        nonempty(&p.source).as_deref(),
        nonempty(&p.item).as_deref(),
        &state.live.get().catalog,
    );
    // A full page may have more behind it; the cursor is the last holding read.
    let next = holdings.last().filter(|_| full).map(|h| h.assignment);
    let response = if csv {
        csv_response(&access::COLUMNS, rows.iter().map(access::cells))
    } else {
        axum::Json(rows.iter().map(access::to_json).collect::<Vec<_>>()).into_response()
    };
    with_next(response, &uri, next)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RemovalParams {
    since: Option<String>,
    until: Option<String>,
    limit: Option<String>,
    format: Option<String>,
}

/// The most removals one answer lists (ask again with a later `since`).
const MAX_REMOVALS: usize = 10_000;

pub(super) async fn removals(
    State(state): State<AppState>,
    headers: HeaderMap,
    Params(p): Params<RemovalParams>,
) -> Response {
    let csv = match admit(&state, &headers, p.format.as_deref()) {
        Ok(c) => c,
        Err(refused) => return *refused,
    };
    let zone = state.live.get().agent.time_zone.clone();
    let mut problems = Vec::new();
    let mut at = |name: &str, v: Option<&str>, default: i64| match v {
        None => default,
        Some(t) => crate::intake::dates::resolve(t, &zone)
            .map(to_ms)
            .unwrap_or_else(|e| {
                problems.push(format!("{name}: {e}"));
                default
            }),
    };
    let since = at("since", p.since.as_deref(), 0);
    let until = at(
        "until",
        p.until.as_deref(),
        to_ms(state.clock.now()).saturating_add(1),
    );
    let limit =
        super::number("limit", p.limit.as_deref(), 1_000, MAX_REMOVALS).unwrap_or_else(|e| {
            problems.push(e);
            0
        });
    if !problems.is_empty() {
        return bad(problems);
    }
    let rows = match state.store.removals(since, until, limit).await {
        Ok(r) => r,
        Err(e) => return super::store_failed(e),
    };
    if csv {
        return csv_response(
            &access::REMOVAL_COLUMNS,
            rows.iter().map(access::removal_cells),
        );
    }
    axum::Json(rows.iter().map(access::removal_json).collect::<Vec<_>>()).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AuditParams {
    identity: Option<String>,
    request: Option<String>,
    source: Option<String>,
    job: Option<String>,
    kind: Option<String>,
    since: Option<String>,
    until: Option<String>,
    after: Option<String>,
    limit: Option<String>,
    format: Option<String>,
}

/// One page of the trail: JSON `{items, next}` or CSV; either way a `Link: <…>;
/// rel="next"` header (RFC 8288) while more pages follow, carrying the same filters.
pub(super) async fn trail(
    State(state): State<AppState>,
    headers: HeaderMap,
    Params(p): Params<AuditParams>,
    uri: axum::http::Uri,
) -> Response {
    let csv = match admit(&state, &headers, p.format.as_deref()) {
        Ok(c) => c,
        Err(refused) => return *refused,
    };
    let filters = trail::Filters {
        identity: p.identity,
        request: p.request,
        source: p.source,
        job: p.job,
        kind: p.kind,
        since: p.since,
        until: p.until,
        after: p.after,
        limit: p.limit,
    };
    let q = match trail::query(&filters, &state.live.get().agent.time_zone) {
        Ok(q) => q,
        Err(problems) => return bad(problems),
    };
    let page = match state.store.audit(q.clone()).await {
        Ok(page) => page,
        Err(e) => return super::store_failed(e),
    };
    let next = trail::next(&page, q.limit);
    let response = if csv {
        csv_response(&trail::COLUMNS, page.iter().map(trail::cells))
    } else {
        let items: Vec<_> = page.iter().map(trail::to_json).collect();
        axum::Json(json!({ "items": items, "next": next.map(|n| n.to_string()) })).into_response()
    };
    with_next(response, &uri, next)
}

/// `response` with a `Link: <…>; rel="next"` header (RFC 8288) for the page after
/// `next`, when there is one: the same path and filters, `after` moved on.
fn with_next(mut response: Response, uri: &axum::http::Uri, next: Option<i64>) -> Response {
    if let Some(after) = next
        && let Ok(link) = HeaderValue::from_str(&format!(
            "<{}>; rel=\"next\"",
            next_link(uri.path(), uri.query().unwrap_or(""), after)
        ))
    {
        response.headers_mut().insert(header::LINK, link);
    }
    response
}

/// The same query with `after` replaced.
fn next_link(path: &str, query: &str, after: i64) -> String {
    let mut parts: Vec<&str> = query
        .split('&')
        .filter(|kv| !kv.is_empty() && !kv.starts_with("after="))
        .collect();
    let after = format!("after={after}");
    parts.push(&after);
    format!("{path}?{}", parts.join("&"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_next_link_keeps_the_filters_and_moves_the_cursor() {
        assert_eq!(
            super::next_link("/audit/v1", "identity=ada&after=5&limit=2", 9),
            "/audit/v1?identity=ada&limit=2&after=9"
        );
        assert_eq!(super::next_link("/audit/v1", "", 3), "/audit/v1?after=3");
    }
}
