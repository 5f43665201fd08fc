//! The audit events both backends write, each kind's data built once (DESIGN §14): a
//! backend picks the event its rule calls for and appends it in its dialect, so that an
//! auditor reads the same fields whichever store the agent ran on.

use serde_json::{Value, json};

use super::states::TaskStatus;
use crate::clock::rfc3339_ms;
use crate::store::events::Event;
use crate::store::evidence::SnapshotMeta;
use crate::store::jobs::Job;
use crate::store::schedule::Fired;
use crate::store::triggers::{Answer, CallbackEnd, Invocation, TriggerEvent};

/// A claim: the attempt it starts, who holds the lease, and its fencing epoch.
pub fn job_running(job: &Job, owner: &str) -> Value {
    json!({ "attempt": job.attempt, "owner": owner, "epoch": job.lease_epoch })
}

/// A job given back at shutdown: its attempt is not spent.
pub fn released_at_shutdown() -> Value {
    json!({ "reason": "shutdown" })
}

/// A lease taken back: whose it was, at which attempt and epoch.
pub fn lease_expired(job: &Job) -> Value {
    json!({ "owner": job.lease_owner, "attempt": job.attempt, "epoch": job.lease_epoch })
}

/// `provd identities import`.
pub fn identities_imported(count: usize, actor: &str) -> Event<'_> {
    Event {
        kind: "identities_imported",
        data: json!({ "count": count }),
        actor,
        ..Default::default()
    }
}

/// Something a stage did that is an event of its own, not a step of a job.
#[derive(Debug, Clone, PartialEq)]
pub enum Note {
    /// An identity changed (DESIGN §21): `data` says which attributes, the state left and
    /// entered and the account disables and deletes it brought (what the guard counts).
    IdentityChanged { identity: String, data: Value },
    /// `provd reconcile --fix` took someone provd does not manage out of a group it
    /// manages (`[reconcile] unmanaged_members = "remove"`).
    UnmanagedMemberRemoved {
        source: String,
        member: String,
        attribute: String,
        value: String,
    },
}

/// The event a note is.
pub fn note<'a>(n: &'a Note, actor: &'a str) -> Event<'a> {
    match n {
        Note::IdentityChanged { identity, data } => Event {
            kind: "identity_changed",
            identity: Some(identity),
            data: data.clone(),
            actor,
            ..Default::default()
        },
        Note::UnmanagedMemberRemoved {
            source,
            member,
            attribute,
            value,
        } => Event {
            kind: "unmanaged_member_removed",
            source: Some(source),
            data: json!({ "member": member, "attribute": attribute, "value": value }),
            actor,
            ..Default::default()
        },
    }
}

/// Who writes the removal schedule's events.
pub const SCHEDULE: &str = "schedule";

/// Removals that came due, in one event (phase 1 of firing).
pub fn removals_fired(fired: &[Fired]) -> Event<'static> {
    let list: Vec<Value> = fired
        .iter()
        .map(|f| json!({ "assignment": f.assignment, "identity": f.identity, "item": f.item_id, "due": rfc3339_ms(f.remove_at), "lagMs": f.lag_ms }))
        .collect();
    Event {
        kind: "removals_fired",
        data: json!({ "removals": list }),
        actor: SCHEDULE,
        ..Default::default()
    }
}

/// A fired removal not carried out: a newer grant (`by`) of the same item holds it.
pub fn removal_superseded(f: &Fired, by: i64) -> Event<'_> {
    Event {
        kind: "removal_superseded",
        identity: Some(&f.identity),
        data: json!({ "assignment": f.assignment, "by": by }),
        actor: SCHEDULE,
        ..Default::default()
    }
}

/// How an account snapshot verifies a task it shows done (DESIGN §17).
#[derive(Debug, Clone, PartialEq)]
pub enum Verify {
    /// Still open: the snapshot answers it `VERIFIED`, noted as shown by `note`.
    Answer { note: String },
    /// Answered done already: a `task_verified` event with this data.
    Confirm(Value),
    /// Failed, canceled or verified before: nothing to do.
    Skip,
}

/// What a snapshot (`by`, its description) does to a task found `status` (None: no
/// such task, or verified before).
pub fn verify(task: i64, status: Option<TaskStatus>, by: &str) -> Verify {
    match status {
        Some(TaskStatus::Open) => Verify::Answer {
            note: format!("shown by {by}"),
        },
        Some(TaskStatus::Done) => Verify::Confirm(json!({ "task": format!("T{task}"), "by": by })),
        _ => Verify::Skip,
    }
}

/// How a snapshot names itself in what it verifies: `import:#7`.
pub fn snapshot_by(meta: &SnapshotMeta, id: i64) -> String {
    format!("{}:#{id}", meta.kind)
}

/// A done task the snapshot confirmed ([`Verify::Confirm`]'s data).
pub fn task_verified(meta: &SnapshotMeta, data: Value) -> Event<'_> {
    Event {
        kind: "task_verified",
        source: Some(&meta.source),
        data,
        actor: &meta.actor,
        ..Default::default()
    }
}

/// A snapshot recorded, with how many tasks it verified.
pub fn accounts_snapshot(id: i64, meta: &SnapshotMeta, verified: usize) -> Event<'_> {
    Event {
        kind: "accounts_snapshot",
        source: Some(&meta.source),
        data: json!({ "snapshot": id, "kind": meta.kind, "sha256": meta.sha256, "rows": meta.rows,
            "asOf": rfc3339_ms(meta.as_of), "verified": verified }),
        actor: &meta.actor,
        ..Default::default()
    }
}

/// The actor of an upstream's events.
pub fn upstream_actor(name: &str) -> String {
    format!("upstream:{name}")
}

/// A pulled request refused for `reason`.
pub fn upstream_rejected<'a>(
    name: &str,
    id: &str,
    reason: Option<&str>,
    actor: &'a str,
) -> Event<'a> {
    Event {
        kind: "upstream_rejected",
        data: json!({ "upstream": name, "upstreamId": id, "reason": reason }),
        actor,
        ..Default::default()
    }
}

/// An outcome written back to the upstream.
pub fn upstream_written_back<'a>(name: &str, id: &str, message: &str, actor: &'a str) -> Event<'a> {
    Event {
        kind: "upstream_written_back",
        data: json!({ "upstream": name, "upstreamId": id, "message": message }),
        actor,
        ..Default::default()
    }
}

/// A trigger's callback delivered or given up.
pub fn trigger_callback<'a>(inv: &'a Invocation, end: &CallbackEnd, actor: &'a str) -> Event<'a> {
    Event {
        kind: "trigger_callback",
        identity: inv.identity.as_deref(),
        data: json!({ "trigger": inv.trigger, "accessRequestId": inv.access_request_id, "outcome": end.state, "attempts": inv.attempts + 1, "error": end.error }),
        actor,
        ..Default::default()
    }
}

/// An invocation's answer decided after it was stored.
pub fn trigger_decision<'a>(inv: &'a Invocation, a: &Answer, actor: &'a str) -> Event<'a> {
    Event {
        kind: "trigger_decision",
        identity: inv.identity.as_deref(),
        data: crate::store::triggers::decision_event(inv, a),
        actor,
        ..Default::default()
    }
}

/// An event of a trigger's own.
pub fn trigger_event<'a>(e: &'a TriggerEvent, actor: &'a str) -> Event<'a> {
    Event {
        kind: e.kind,
        identity: e.identity.as_deref(),
        data: e.data.clone(),
        actor,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_answers_open_tasks_and_confirms_done_ones() {
        assert_eq!(
            verify(3, Some(TaskStatus::Open), "import x"),
            Verify::Answer {
                note: "shown by import x".into()
            }
        );
        assert_eq!(
            verify(3, Some(TaskStatus::Done), "import x"),
            Verify::Confirm(json!({ "task": "T3", "by": "import x" }))
        );
        for s in [None, Some(TaskStatus::Failed), Some(TaskStatus::Canceled)] {
            assert_eq!(verify(3, s, "import x"), Verify::Skip);
        }
    }
}
