//! The audit trail: every state change and every connector call, appended, never changed.

use std::sync::LazyLock;

use serde_json::Value;

/// This process, as recorded in every event it writes: `HOST:PID`.
static WRITER: LazyLock<String> =
    LazyLock::new(|| format!("{}:{}", hostname(), std::process::id()));

/// The name events written by this process carry.
pub fn writer() -> &'static str {
    &WRITER
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it
    // or truncates.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "localhost".into();
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// One audit event.
#[derive(Debug, Clone, Default)]
pub struct Event<'a> {
    pub kind: &'a str,
    pub request_id: Option<&'a str>,
    pub job_id: Option<i64>,
    pub source: Option<&'a str>,
    pub identity: Option<&'a str>,
    pub data: Value,
    /// Who did it (DESIGN §14): a requester's name, `cli:USER`, `agent:NAME`, a task's
    /// owner, `schedule`, `upstream:NAME`.
    pub actor: &'a str,
}

impl<'a> Event<'a> {
    /// An event about `job` (its request, source and identity filled in).
    pub fn of_job(kind: &'a str, job: &'a super::Job, actor: &'a str, data: Value) -> Self {
        Event {
            kind,
            request_id: Some(&job.request_id),
            job_id: Some(job.id),
            source: Some(&job.source),
            identity: Some(&job.identity_id),
            data,
            actor,
        }
    }

    /// A request stored: the first event of every accept, on either store.
    /// A lifecycle request's `cause` (the identity_changed event's id) is kept in it, so
    /// that the trail and `provd status` link the request to the change.
    pub fn request_accepted(
        request_id: &'a str,
        from: &'a crate::model::Requester,
        req: &crate::model::ValidRequest,
        jobs: usize,
    ) -> Self {
        let mut data = serde_json::json!({ "origin": from.origin, "requestType": req.request_type.as_str(), "jobs": jobs });
        if let Some(cause) = req.client_metadata.get("cause") {
            data["cause"] = cause.as_str().into();
        }
        Event {
            kind: "request_accepted",
            request_id: Some(request_id),
            data,
            actor: &from.name,
            ..Default::default()
        }
    }

    /// A job queued by an accept, stored under `job_id`.
    pub fn job_queued(
        request_id: &'a str,
        job_id: i64,
        job: &'a crate::model::PlannedJob,
        actor: &'a str,
    ) -> Self {
        Event {
            kind: "job_queued",
            request_id: Some(request_id),
            job_id: Some(job_id),
            source: Some(&job.source),
            identity: Some(&job.identity),
            data: serde_json::json!({ "kind": job.kind.as_str(), "operations": job.ops, "notBefore": job.not_before.map(|t| t.to_string()) }),
            actor,
        }
    }

    /// An assignment's removeDate set (or cleared: None), in ms.
    pub fn remove_date_set(
        request_id: &'a str,
        identity: &'a str,
        assignment: i64,
        remove_at: Option<i64>,
        actor: &'a str,
    ) -> Self {
        Event {
            kind: "remove_date_set",
            request_id: Some(request_id),
            identity: Some(identity),
            data: serde_json::json!({ "assignment": assignment, "removeDate": remove_at.map(crate::clock::rfc3339_ms) }),
            actor,
            ..Default::default()
        }
    }

    /// The data column's text: an event without data stores `{}`.
    pub fn data_text(&self) -> String {
        if self.data.is_null() {
            "{}".to_string()
        } else {
            self.data.to_string()
        }
    }
}

/// The actor column: None when a writer left it empty (older rows have none either).
pub fn actor<'a>(e: &Event<'a>) -> Option<&'a str> {
    (!e.actor.is_empty()).then_some(e.actor)
}

/// An event as stored, for whoever follows the trail.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    pub id: i64,
    pub at: i64,
    pub kind: String,
    pub request_id: Option<String>,
    pub job_id: Option<i64>,
    pub source: Option<String>,
    pub identity: Option<String>,
    pub data: Value,
    /// The process that wrote it (`HOST:PID`); None for events older than the column.
    pub writer: Option<String>,
    /// Who did it; None for events older than the column.
    pub actor: Option<String>,
}
