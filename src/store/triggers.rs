//! SailPoint trigger invocations (DESIGN §16): each "Access Request Submitted" invocation
//! with provd's answer, and for ASYNC (or a DYNAMIC one answered later) the callback still
//! to make: its URL, its secret sealed (never readable here), attempts, deadline.

use serde_json::Value;

use super::Result;
use super::cells::Cells;

/// provd's answer to an invocation, and the rule that gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub approved: bool,
    pub comment: String,
    pub approver: String,
    pub rule: String,
}

/// An invocation as stored.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// `TRIGGER:accessRequestId`: a repeated invocation finds its first answer.
    pub id: String,
    pub trigger: String,
    pub access_request_id: String,
    pub identity: Option<String>,
    /// `SYNC`, `ASYNC` or `DYNAMIC`.
    pub mode: String,
    /// The body as received, its `_metadata.secret` taken out.
    pub body: String,
    /// None: not decided yet (a DYNAMIC invocation that could not be decided at once).
    pub answer: Option<Answer>,
    pub callback_url: Option<String>,
    /// The callback secret, sealed (`triggers::seal`).
    pub sealed_secret: Option<String>,
    /// `answered` (in the HTTP reply), `pending` (a callback to make), `delivered`,
    /// `expired` (the deadline passed), `refused` (SailPoint will never take it).
    pub state: String,
    pub attempts: i64,
    pub next_attempt_at: Option<i64>,
    pub deadline_at: Option<i64>,
    pub received_at: i64,
}

pub(crate) const COLUMNS: &str =
    "id, trigger, access_request_id, identity_id, mode, body, approved, comment, approver, rule,
    callback_url, sealed_secret, state, attempts, next_attempt_at, deadline_at, received_at";

/// How an invocation's callback ended: `delivered` or `expired`, and why not delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallbackEnd {
    pub state: &'static str,
    pub error: Option<String>,
}

/// An audit event of a trigger's own (not about a job): its kind, whom it concerns, and
/// its data.
#[derive(Debug, Clone, PartialEq)]
pub struct TriggerEvent {
    pub kind: &'static str,
    pub identity: Option<String>,
    pub data: Value,
}

/// The audit event of an invocation's answer.
pub fn decision_event(inv: &Invocation, a: &Answer) -> Value {
    serde_json::json!({
        "trigger": inv.trigger, "accessRequestId": inv.access_request_id, "mode": inv.mode,
        "approved": a.approved, "rule": a.rule, "comment": a.comment, "approver": a.approver,
    })
}

/// An invocation from a row of [`COLUMNS`].
pub(crate) fn invocation_from(r: &impl Cells) -> Result<Invocation> {
    let answer = match r.opt_bool(6)? {
        None => None,
        Some(approved) => Some(Answer {
            approved,
            comment: r.text(7)?,
            approver: r.text(8)?,
            rule: r.text(9)?,
        }),
    };
    Ok(Invocation {
        id: r.text(0)?,
        trigger: r.text(1)?,
        access_request_id: r.text(2)?,
        identity: r.opt_text(3)?,
        mode: r.text(4)?,
        body: r.text(5)?,
        answer,
        callback_url: r.opt_text(10)?,
        sealed_secret: r.opt_text(11)?,
        state: r.text(12)?,
        attempts: r.int(13)?,
        next_attempt_at: r.opt_int(14)?,
        deadline_at: r.opt_int(15)?,
        received_at: r.int(16)?,
    })
}
