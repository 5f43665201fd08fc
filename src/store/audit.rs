//! What an auditor reads (DESIGN §14): what each identity holds now, the removals that
//! came from removeDates, and the audit trail filtered and paged by a cursor. The row
//! types and the SQL both backends run (placeholders aside) live here; shaping them for
//! people (JSON, CSV, tables) is `crate::audit`'s.

use super::rules::AssignmentState;

/// Which holdings to list: in (identity, assignment) order, a page at a time when
/// `limit` is set (the API's pages; the CLI and the planning stages read them all).
#[derive(Debug, Clone, Default)]
pub struct AccessQuery {
    pub identity: Option<String>,
    /// Only holdings after this assignment in that order (the previous page's last).
    pub after: Option<i64>,
    /// At most this many rows.
    pub limit: Option<usize>,
}

impl AccessQuery {
    /// The limit as the SQL takes it (no limit: all).
    pub(crate) fn sql_limit(&self) -> i64 {
        self.limit
            .map_or(i64::MAX, |l| l.min(i64::MAX as usize) as i64)
    }
}

/// An assignment still held, pending, or on its way out (`pending`, `active`,
/// `revoking`), with who asked for it.
#[derive(Debug, Clone, PartialEq)]
pub struct Holding {
    pub assignment: i64,
    pub identity: String,
    pub item_type: String,
    pub item_id: String,
    pub state: AssignmentState,
    /// The granting request and its requester.
    pub request_id: String,
    pub requester: String,
    pub created_at: i64,
    /// When the grant's jobs all succeeded (None while pending).
    pub active_at: Option<i64>,
    pub remove_at: Option<i64>,
    /// What was granted, as stored (`[Granted]` JSON).
    pub entitlements: String,
    /// The identity's accounts: `{source: native id}` JSON.
    pub accounts: Option<String>,
    /// The state of the grant's job on each source: `{source: job state}` JSON. A grant
    /// that failed on one source and succeeded on another is held on the second (issue
    /// 33, finding 5): each source's row says so.
    pub jobs: Option<String>,
    /// A revoking holding's removal: the state of the revoke's job on each source, the
    /// latest where there were several (`{source: job state}` JSON).
    pub revoke_jobs: Option<String>,
    /// Whether provd last disabled each account: `{source: 0|1}` JSON.
    pub disabled: Option<String>,
    /// Where the grant's jobs succeeded: `{source: [job id, ended at]}` JSON — what provd
    /// saw done there, and when (the seen side of DESIGN §21).
    pub done: Option<String>,
    /// A revoking holding whose removal failed on a source: the operations of every later
    /// job of that lane that was not canceled (`{source: [[operation…]…]}` JSON).
    pub after_failed_revoke: Option<String>,
}

impl Holding {
    /// Held or being granted: not on its way out, not failed.
    pub fn is_live(&self) -> bool {
        matches!(
            self.state,
            AssignmentState::Pending | AssignmentState::Active
        )
    }

    /// The grant's job state on `source` (None: it had no job there).
    pub fn job_on(&self, source: &str) -> Option<String> {
        on(self.jobs.as_deref(), source)
    }

    /// Whether the identity's account on `source` was left disabled by provd (None: no
    /// account known there).
    pub fn account_disabled(&self, source: &str) -> Option<bool> {
        let map: std::collections::BTreeMap<String, i64> = self
            .disabled
            .as_deref()
            .and_then(|j| serde_json::from_str(j).ok())
            .unwrap_or_default();
        map.get(source).map(|d| *d != 0)
    }

    /// The grant's job that succeeded on `source`, and when it ended.
    pub fn done_on(&self, source: &str) -> Option<(i64, Option<i64>)> {
        let done: std::collections::BTreeMap<String, (i64, Option<i64>)> = self
            .done
            .as_deref()
            .and_then(|j| serde_json::from_str(j).ok())
            .unwrap_or_default();
        done.get(source).copied()
    }

    /// A revoking holding's removal job state on `source` (None: none there, or not
    /// revoking).
    pub fn revoke_on(&self, source: &str) -> Option<String> {
        on(self.revoke_jobs.as_deref(), source)
    }

    /// Whether a later job of the lane adds `attribute=value` on `source` again after this
    /// grant's removal of it failed there. The value is then the later grant's: the failed
    /// removal is moot (`jobs retry` refuses it as such) and no longer says the value is
    /// being removed (PostgreSQL simulation seed 157: a role's badge zone read `removing`
    /// for good after the zone, granted again and revoked again, was long gone).
    pub fn regranted_on(&self, source: &str, attribute: &str, value: &str) -> bool {
        let later: std::collections::BTreeMap<String, Vec<Vec<serde_json::Value>>> = self
            .after_failed_revoke
            .as_deref()
            .and_then(|j| serde_json::from_str(j).ok())
            .unwrap_or_default();
        later.get(source).into_iter().flatten().flatten().any(|op| {
            op["op"] == "ADD_ENTITLEMENT" && op["attribute"] == attribute && op["value"] == value
        })
    }
}

/// A holding from a row of the holdings query (both backends' columns are these).
/// `source`'s entry of a `{source: job state}` JSON object; the last one where a source
/// appears twice (the aggregates list jobs in id order).
fn on(jobs: Option<&str>, source: &str) -> Option<String> {
    let jobs: std::collections::BTreeMap<String, String> = jobs
        .and_then(|j| serde_json::from_str(j).ok())
        .unwrap_or_default();
    jobs.get(source).cloned()
}

pub(crate) fn holding_from(r: &impl super::cells::Cells) -> super::Result<Holding> {
    let state = r.text(4)?;
    Ok(Holding {
        assignment: r.int(0)?,
        identity: r.text(1)?,
        item_type: r.text(2)?,
        item_id: r.text(3)?,
        state: super::rules::states::parse_stored(&state, format!("assignment {}", r.int(0)?))?,
        request_id: r.text(5)?,
        requester: r.text(6)?,
        created_at: r.int(7)?,
        active_at: r.opt_int(8)?,
        remove_at: r.opt_int(9)?,
        entitlements: r.text(10)?,
        accounts: r.opt_text(11)?,
        jobs: r.opt_text(12)?,
        revoke_jobs: r.opt_text(13)?,
        disabled: r.opt_text(14)?,
        done: r.opt_text(15)?,
        after_failed_revoke: r.opt_text(16)?,
    })
}

pub(crate) const HOLDINGS_POSTGRES: &str = "SELECT a.id, a.identity_id, a.item_type, a.item_id, a.state, a.request_id,
        COALESCE(r.requester, r.origin, ''), a.created_at, a.active_at, a.remove_at, a.entitlements,
        (SELECT json_object_agg(source, native_id)::TEXT FROM accounts WHERE identity_id = a.identity_id AND native_id IS NOT NULL),
        (SELECT json_object_agg(j.source, j.state)::TEXT FROM request_items ri
            JOIN item_jobs ij ON ij.item_id = ri.id JOIN jobs j ON j.id = ij.job_id
            WHERE ri.assignment_id = a.id AND ri.request_id = a.request_id),
        (SELECT json_object_agg(j.source, j.state ORDER BY j.id)::TEXT FROM request_items ri
            JOIN item_jobs ij ON ij.item_id = ri.id JOIN jobs j ON j.id = ij.job_id
            WHERE a.state = 'revoking' AND ri.assignment_id = a.id AND ri.request_id <> a.request_id),
        (SELECT json_object_agg(source, disabled)::TEXT FROM accounts WHERE identity_id = a.identity_id AND native_id IS NOT NULL),
        (SELECT json_object_agg(j.source, json_build_array(j.id, j.finalized_at))::TEXT FROM request_items ri
            JOIN item_jobs ij ON ij.item_id = ri.id JOIN jobs j ON j.id = ij.job_id
            WHERE ri.assignment_id = a.id AND ri.request_id = a.request_id AND j.state = 'succeeded'),
        (SELECT json_object_agg(j.source, (SELECT COALESCE(json_agg(l.operations::json ORDER BY l.id), '[]'::json)
                FROM jobs l WHERE l.identity_id = j.identity_id AND l.source = j.source AND l.id > j.id AND l.state <> 'canceled'))::TEXT
            FROM request_items ri JOIN item_jobs ij ON ij.item_id = ri.id JOIN jobs j ON j.id = ij.job_id
            WHERE a.state = 'revoking' AND ri.assignment_id = a.id AND ri.request_id <> a.request_id AND j.state = 'failed')
     FROM assignments a LEFT JOIN requests r ON r.id = a.request_id
     WHERE a.state IN ('pending','active','revoking','failed') AND ($1::TEXT IS NULL OR a.identity_id = $1)
       AND ($2::BIGINT IS NULL OR (a.identity_id, a.id) > ((SELECT identity_id FROM assignments WHERE id = $2), $2))
     ORDER BY a.identity_id, a.id LIMIT $3";

/// A removal a removeDate caused: when it was due, when it fired, the revoke it became
/// and when that ended.
#[derive(Debug, Clone, PartialEq)]
pub struct RemovalRow {
    pub assignment: i64,
    pub identity: String,
    pub item_type: String,
    pub item_id: String,
    pub due_at: i64,
    pub fired_at: i64,
    pub grant_request: String,
    /// The revoke request (None: not planned yet, or superseded by a new grant).
    pub revoke_request: Option<String>,
    /// Jobs of the revoke: how many, how many ended, how many failed, the last end.
    pub jobs: i64,
    pub jobs_ended: i64,
    pub jobs_failed: i64,
    pub done_at: Option<i64>,
    /// The assignment's state now (`revoking`, `removed`, `active` when re-granted …).
    pub state: AssignmentState,
}

/// Removals due in [since, until), oldest due first. The revoke is found through its
/// idempotency key (`schedule:ASSIGNMENT:DUE`, unique and indexed).
pub(crate) fn removals_sql(p: fn(usize) -> String) -> String {
    format!(
        "SELECT a.id, a.identity_id, a.item_type, a.item_id, a.remove_at, a.fired_at, a.request_id, r.id,
            (SELECT COUNT(*) FROM jobs j WHERE j.request_id = r.id),
            (SELECT COUNT(*) FROM jobs j WHERE j.request_id = r.id AND j.finalized_at IS NOT NULL),
            (SELECT COUNT(*) FROM jobs j WHERE j.request_id = r.id AND j.state = 'failed'),
            (SELECT MAX(j.finalized_at) FROM jobs j WHERE j.request_id = r.id),
            a.state
         FROM assignments a
         LEFT JOIN requests r ON r.idempotency_key = 'schedule:' || a.id || ':' || a.remove_at
         WHERE a.fired_at IS NOT NULL AND a.remove_at >= {} AND a.remove_at < {}
         ORDER BY a.remove_at, a.id LIMIT {}",
        p(1),
        p(2),
        p(3)
    )
}

/// Which events to read: all filters apply together; `after` is the cursor (an event
/// id), pages are in id order.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub identity: Option<String>,
    pub request: Option<String>,
    pub source: Option<String>,
    /// One job's events.
    pub job: Option<i64>,
    /// Event kinds (any of).
    pub kinds: Vec<String>,
    /// Events at or after this time (ms).
    pub since: Option<i64>,
    /// Events before this time (ms).
    pub until: Option<i64>,
    pub after: i64,
    pub limit: usize,
}

/// Events in (after, upto], at most `limit`, leaving out those written by `not_by` (a
/// mirror's own writes, which it must not copy back).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventWindow {
    pub after: i64,
    pub upto: i64,
    pub not_by: Option<String>,
    pub limit: usize,
}

/// A bound value of an audit query.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Param {
    Int(i64),
    Text(String),
}

/// The audit query's SQL (`p(n)` writes placeholder n) and its values in order. Each
/// filter reaches the events the way the indexes allow: a request's job events through
/// its jobs, its own events through `events_request`; an identity's by the events' own
/// identity and the requests naming it (`request_items_identity`).
pub(crate) fn audit_sql(q: &AuditQuery, p: fn(usize) -> String) -> (String, Vec<Param>) {
    let mut params = vec![Param::Int(q.after)];
    let next = |v: Param, params: &mut Vec<Param>| {
        params.push(v);
        p(params.len())
    };
    let mut sql = String::from(
        "SELECT id, at, kind, request_id, job_id, source, identity_id, data, writer, actor FROM events e WHERE e.id > ",
    );
    sql.push_str(&p(1));
    if let Some(r) = &q.request {
        let n = next(Param::Text(r.clone()), &mut params);
        sql.push_str(&format!(
            " AND (e.job_id IN (SELECT id FROM jobs WHERE request_id = {n}) OR (e.job_id IS NULL AND e.request_id = {n}))"
        ));
    }
    if let Some(j) = q.job {
        let n = next(Param::Int(j), &mut params);
        sql.push_str(&format!(" AND e.job_id = {n}"));
    }
    if let Some(i) = &q.identity {
        let n = next(Param::Text(i.clone()), &mut params);
        sql.push_str(&format!(
            " AND (e.identity_id = {n} OR (e.job_id IS NULL AND e.request_id IN (SELECT request_id FROM request_items WHERE identity_id = {n})))"
        ));
    }
    if let Some(s) = &q.source {
        let n = next(Param::Text(s.clone()), &mut params);
        sql.push_str(&format!(
            " AND (e.source = {n} OR (e.job_id IS NULL AND e.request_id IN (SELECT request_id FROM jobs WHERE source = {n})))"
        ));
    }
    if !q.kinds.is_empty() {
        let list: Vec<String> = q
            .kinds
            .iter()
            .map(|k| next(Param::Text(k.clone()), &mut params))
            .collect();
        sql.push_str(&format!(" AND e.kind IN ({})", list.join(",")));
    }
    if let Some(t) = q.since {
        let n = next(Param::Int(t), &mut params);
        sql.push_str(&format!(" AND e.at >= {n}"));
    }
    if let Some(t) = q.until {
        let n = next(Param::Int(t), &mut params);
        sql.push_str(&format!(" AND e.at < {n}"));
    }
    let n = next(Param::Int(q.limit as i64), &mut params);
    sql.push_str(&format!(" ORDER BY e.id LIMIT {n}"));
    (sql, params)
}

/// SQLite's placeholders.
pub(crate) fn sqlite_param(n: usize) -> String {
    format!("?{n}")
}

/// PostgreSQL's placeholders.
pub(crate) fn postgres_param(n: usize) -> String {
    format!("${n}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_bind_in_order_and_reuse_their_placeholder() {
        let q = AuditQuery {
            identity: Some("ada".into()),
            request: Some("r1".into()),
            kinds: vec!["job_succeeded".into(), "job_failed".into()],
            since: Some(5),
            after: 7,
            limit: 100,
            ..Default::default()
        };
        let (sql, params) = audit_sql(&q, sqlite_param);
        assert_eq!(
            params,
            vec![
                Param::Int(7),
                Param::Text("r1".into()),
                Param::Text("ada".into()),
                Param::Text("job_succeeded".into()),
                Param::Text("job_failed".into()),
                Param::Int(5),
                Param::Int(100)
            ]
        );
        assert!(sql.contains("request_id = ?2) OR (e.job_id IS NULL AND e.request_id = ?2)"));
        assert!(sql.contains("e.identity_id = ?3"));
        assert!(sql.contains("e.kind IN (?4,?5)"));
        assert!(sql.contains("e.at >= ?6") && sql.ends_with("ORDER BY e.id LIMIT ?7"));
        assert!(!sql.contains("e.at <"));
        let (pg, _) = audit_sql(&AuditQuery::default(), postgres_param);
        assert!(pg.contains("e.id > $1") && pg.ends_with("LIMIT $2"));
    }
}
