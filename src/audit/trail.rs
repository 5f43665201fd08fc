//! `provd audit` / `GET /audit/v1`: the audit trail filtered, in id order, in pages that
//! a cursor (the last event id seen) continues. Every event names its actor.

use jiff::tz::TimeZone;
use serde_json::{Value, json};

use crate::clock::{rfc3339_ms, to_ms};
use crate::store::StoredEvent;
use crate::store::audit::AuditQuery;

/// Events per page when none is asked for, and the most a page holds.
pub const DEFAULT_LIMIT: usize = 100;
pub const MAX_LIMIT: usize = 1_000;

/// The filters as given (CLI flags, query parameters), before checking.
#[derive(Debug, Clone, Default)]
pub struct Filters {
    pub identity: Option<String>,
    pub request: Option<String>,
    pub source: Option<String>,
    /// A job id.
    pub job: Option<String>,
    /// Comma-separated event kinds.
    pub kind: Option<String>,
    pub since: Option<String>,
    pub until: Option<String>,
    pub after: Option<String>,
    pub limit: Option<String>,
}

/// Checks the filters; every problem is named (by the parameter it is in).
pub fn query(f: &Filters, zone: &TimeZone) -> Result<AuditQuery, Vec<String>> {
    let mut problems = Vec::new();
    let mut time = |name: &str, v: &Option<String>| -> Option<i64> {
        let t = v.as_deref()?;
        match crate::intake::dates::resolve(t, zone) {
            Ok(ts) => Some(to_ms(ts)),
            Err(e) => {
                problems.push(format!("{name}: {e}"));
                None
            }
        }
    };
    let since = time("since", &f.since);
    let until = time("until", &f.until);
    let after = match f.after.as_deref() {
        None => 0,
        Some(a) => a
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .unwrap_or_else(|| {
                problems.push(
                    "after: must be an event id (a whole number) from a previous page".into(),
                );
                0
            }),
    };
    let job = f.job.as_deref().and_then(|j| {
        j.parse::<i64>().ok().or_else(|| {
            problems.push("job: must be a job id (a whole number)".into());
            None
        })
    });
    let limit = match f.limit.as_deref() {
        None => DEFAULT_LIMIT,
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .unwrap_or_else(|| {
                problems.push(format!(
                    "limit: must be a whole number from 1 to {MAX_LIMIT}"
                ));
                DEFAULT_LIMIT
            }),
    };
    let kinds: Vec<String> = f
        .kind
        .as_deref()
        .map(|k| {
            k.split(',')
                .map(str::trim)
                .filter(|k| !k.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    if let (Some(s), Some(u)) = (since, until)
        && u <= s
    {
        problems.push("until: must be later than since".into());
    }
    let text = |v: &Option<String>| v.as_ref().filter(|s| !s.is_empty()).cloned();
    if problems.is_empty() {
        Ok(AuditQuery {
            identity: text(&f.identity),
            request: text(&f.request),
            source: text(&f.source),
            job,
            kinds,
            since,
            until,
            after,
            limit,
        })
    } else {
        Err(problems)
    }
}

/// The cursor of the page after `page` (None: that was the last one).
pub fn next(page: &[StoredEvent], limit: usize) -> Option<i64> {
    (page.len() >= limit)
        .then(|| page.last().map(|e| e.id))
        .flatten()
}

/// Events older than the actor column name only the process that wrote them.
fn actor(e: &StoredEvent) -> String {
    e.actor
        .clone()
        .or_else(|| e.writer.as_ref().map(|w| format!("process:{w}")))
        .unwrap_or_else(|| "unknown".into())
}

pub fn to_json(e: &StoredEvent) -> Value {
    json!({
        "id": e.id,
        "at": rfc3339_ms(e.at),
        "kind": e.kind,
        "actor": actor(e),
        "requestId": e.request_id,
        "jobId": e.job_id,
        "source": e.source,
        "identity": e.identity,
        "data": e.data,
        "writer": e.writer,
    })
}

pub const COLUMNS: [&str; 10] = [
    "id",
    "at",
    "kind",
    "actor",
    "request_id",
    "job_id",
    "source",
    "identity",
    "data",
    "writer",
];

pub fn cells(e: &StoredEvent) -> Vec<String> {
    vec![
        e.id.to_string(),
        rfc3339_ms(e.at),
        e.kind.clone(),
        actor(e),
        e.request_id.clone().unwrap_or_default(),
        e.job_id.map(|j| j.to_string()).unwrap_or_default(),
        e.source.clone().unwrap_or_default(),
        e.identity.clone().unwrap_or_default(),
        e.data.to_string(),
        e.writer.clone().unwrap_or_default(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_are_checked_and_named() {
        let zone = TimeZone::UTC;
        let q = query(
            &Filters {
                identity: Some("ada".into()),
                kind: Some("job_succeeded, job_failed".into()),
                since: Some("2026-07-01".into()),
                until: Some("2026-10-01T00:00:00Z".into()),
                after: Some("42".into()),
                ..Default::default()
            },
            &zone,
        )
        .unwrap();
        assert_eq!(q.kinds, vec!["job_succeeded", "job_failed"]);
        assert_eq!(q.since, Some(1_782_864_000_000));
        assert_eq!((q.after, q.limit), (42, DEFAULT_LIMIT));
        let e = query(
            &Filters {
                since: Some("yesterday".into()),
                until: Some("2026-01-01".into()),
                after: Some("-1".into()),
                limit: Some("5000".into()),
                ..Default::default()
            },
            &zone,
        )
        .unwrap_err();
        assert_eq!(e.len(), 3, "{e:?}");
        assert!(e[0].starts_with("since:") && e[1].starts_with("after:"));
        assert!(e[2].starts_with("limit:"));
        let e = query(
            &Filters {
                since: Some("2026-02-01".into()),
                until: Some("2026-01-01".into()),
                ..Default::default()
            },
            &zone,
        )
        .unwrap_err();
        assert!(e[0].starts_with("until:"));
    }

    #[test]
    fn a_full_page_has_a_next_cursor() {
        let ev = |id| StoredEvent {
            id,
            at: 0,
            kind: "k".into(),
            request_id: None,
            job_id: None,
            source: None,
            identity: None,
            data: Value::Null,
            writer: Some("h:1".into()),
            actor: None,
        };
        assert_eq!(next(&[ev(3), ev(9)], 2), Some(9));
        assert_eq!(next(&[ev(3)], 2), None);
        assert_eq!(to_json(&ev(1))["actor"], "process:h:1");
    }
}
