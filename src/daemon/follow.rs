//! One journal for every state change. The CLI (`provd submit`, `tasks import`, `jobs
//! cancel|retry`, `identities import`) writes to the store directly, so its changes never
//! passed through the running agent's log: a task import that completed 2,000 jobs logged
//! no `job succeeded`. The agent follows the audit events table and logs, once, every row
//! another process wrote, with the same fields as its own lines plus `actor` (the writer).

use std::future::Future;
use std::time::Duration;

use serde_json::Value;

use crate::store::audit::EventWindow;
use crate::store::{Store, StoredEvent, writer};

/// How often the trail is read.
const POLL: Duration = Duration::from_millis(250);
/// Rows read at a time.
const BATCH: usize = 1000;

/// How a foreign event is logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub warn: bool,
    pub message: String,
    /// The job state the event leaves, for the `state` field.
    pub state: Option<&'static str>,
}

/// The log line for an event, or None for the agent's own bookkeeping (leases, calls).
pub fn line_for(ev: &StoredEvent) -> Option<Line> {
    let info = |message: &str, state: Option<&'static str>| {
        Some(Line {
            warn: false,
            message: message.to_string(),
            state,
        })
    };
    match ev.kind.as_str() {
        "job_succeeded" => info("job succeeded", Some("succeeded")),
        "job_failed" => Some(Line {
            warn: true,
            message: "job failed".into(),
            state: Some("failed"),
        }),
        "job_canceled" => info("job canceled", Some("canceled")),
        "job_queued" => info("job queued", Some("queued")),
        "job_retry_requested" => info("job queued again (retry requested)", Some("queued")),
        "job_replanned" => info("job replanned: it makes the account first", None),
        "job_manual" => info("job waits on manual tasks", Some("manual")),
        "request_accepted" => info("request accepted", None),
        "request_canceled" => info("request canceled", None),
        "task_resolved" => info("task resolved", None),
        "identities_imported" => info("identities imported", None),
        "remove_date_set" => info("removeDate set", None),
        "removals_fired" => info("removeDate reached: removal fired", None),
        // Dispatch's own steps: another agent logs them itself.
        "job_running" | "job_released" | "job_lease_expired" | "connector_call"
        | "job_retrying" => None,
        other => info(&other.replace('_', " "), None),
    }
}

fn text(v: &Value, key: &str) -> String {
    match v.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

fn log(ev: &StoredEvent, line: &Line) {
    let d = &ev.data;
    let error = d.get("error").cloned().unwrap_or(Value::Null);
    let (error_class, error) = (text(&error, "class"), text(&error, "message"));
    // Events older than the actor column name only the process that wrote them.
    let actor = ev
        .actor
        .as_deref()
        .or(ev.writer.as_deref())
        .unwrap_or("unknown");
    let writer = ev.writer.as_deref().unwrap_or("");
    let (request_id, source, identity) = (
        ev.request_id.as_deref().unwrap_or(""),
        ev.source.as_deref().unwrap_or(""),
        ev.identity.as_deref().unwrap_or(""),
    );
    let job_id = ev.job_id.unwrap_or(0);
    let state = line.state.unwrap_or("");
    let (attempt, origin, task, resolution, count) = (
        text(d, "attempt"),
        text(d, "origin"),
        text(d, "task"),
        text(d, "resolution"),
        text(d, "count"),
    );
    if line.warn {
        tracing::warn!(
            request_id,
            job_id,
            source,
            identity,
            state,
            attempt,
            error_class,
            error,
            actor,
            writer,
            event_id = ev.id,
            "{}",
            line.message
        );
    } else {
        tracing::info!(
            request_id,
            job_id,
            source,
            identity,
            state,
            attempt,
            origin,
            task,
            resolution,
            count,
            actor,
            writer,
            event_id = ev.id,
            "{}",
            line.message
        );
    }
}

/// Follows the trail from its current end until `stop`.
pub async fn run(store: Store, stop: impl Future<Output = ()>) {
    tokio::pin!(stop);
    let mut cursor = match store.last_event_id().await {
        Ok(id) => id,
        Err(e) => {
            tracing::error!(error = %e, "cannot read the audit trail; other processes' changes will not be logged");
            return;
        }
    };
    let me = writer();
    loop {
        tokio::select! {
            () = &mut stop => return,
            () = tokio::time::sleep(POLL) => {}
        }
        // The agent's own rows (most of them) are skipped in the query, never parsed.
        let upto = match store.last_event_id().await {
            Ok(id) => id,
            Err(e) => {
                tracing::warn!(error = %e, "reading the audit trail failed");
                continue;
            }
        };
        while cursor < upto {
            let after = cursor;
            let found = store
                .events_between(EventWindow {
                    after,
                    upto,
                    not_by: Some(me.to_string()),
                    limit: BATCH,
                })
                .await;
            let events = match found {
                Ok(e) => e,
                Err(e) => {
                    tracing::warn!(error = %e, "reading the audit trail failed");
                    break;
                }
            };
            for ev in &events {
                if let Some(line) = line_for(ev) {
                    log(ev, &line);
                }
            }
            cursor = match events.last() {
                Some(last) if events.len() == BATCH => last.id,
                _ => upto,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(kind: &str) -> StoredEvent {
        StoredEvent {
            id: 1,
            at: 0,
            kind: kind.into(),
            request_id: None,
            job_id: None,
            source: None,
            identity: None,
            data: Value::Null,
            writer: Some("cli-host:42".into()),
            actor: Some("cli:ada".into()),
        }
    }

    #[test]
    fn state_changes_get_lines_and_dispatch_steps_do_not() {
        let l = line_for(&ev("job_succeeded")).unwrap();
        assert_eq!(
            (l.message.as_str(), l.state),
            ("job succeeded", Some("succeeded"))
        );
        assert!(line_for(&ev("job_failed")).unwrap().warn);
        assert!(line_for(&ev("connector_call")).is_none());
        assert!(line_for(&ev("job_running")).is_none());
        assert_eq!(
            line_for(&ev("upstream_rejected")).unwrap().message,
            "upstream rejected"
        );
    }
}
