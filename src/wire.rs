//! The SailPoint-shaped answers provd gives (DESIGN §9): the 202 body of an accepted
//! request. One module, so that the API and the CLI print the same thing and the store
//! only keeps what it is handed.

use serde_json::{Value, json};

use crate::clock::rfc3339_ms;
use crate::clock::to_ms;
use crate::model::{ItemType, Plan};
use crate::store::StoredEvent;
use crate::store::jobs::{Job, JobState};
use crate::store::status::{StatusJob, StatusRow};

/// FNV-1a, 64 bits: a stable content hash (spool idempotency keys, attribute hashes).
/// Not for anything an attacker must not forge.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// A stable 32-bit hash of what an entry asks for, for the upstream's `attributesHash`.
fn attributes_hash(identity: &str, ty: ItemType, id: &str, remove_at: Option<i64>) -> i32 {
    let text = format!("{identity}\u{0}{}\u{0}{id}\u{0}{remove_at:?}", ty.as_str());
    fnv1a64(text.as_bytes()) as i32
}

/// The 202 body: `{"newRequests":[…],"existingRequests":[…]}`, one entry per (identity,
/// item), duplicates under `existingRequests` with the request that holds them.
pub fn accepted(request_id: &str, plan: &Plan) -> Value {
    let mut new = Vec::new();
    let mut existing = Vec::new();
    for item in &plan.items {
        let remove_at = item.item.remove_at.map(to_ms);
        let entry = |ids: Vec<&str>| {
            json!({
                "requestedFor": item.identity,
                "requestedItemsDetails": [{ "type": item.item.ty.as_str(), "id": item.item.id }],
                "attributesHash": attributes_hash(&item.identity, item.item.ty, &item.item.id, remove_at),
                "accessRequestIds": ids,
            })
        };
        match &item.existing {
            Some((_, original)) => existing.push(entry(vec![original.as_str()])),
            None => new.push(entry(vec![request_id])),
        }
    }
    json!({ "newRequests": new, "existingRequests": existing })
}

/// DESIGN §9 contract: the request item states.
pub fn item_state(jobs: &[JobState], request_canceled: bool) -> &'static str {
    if jobs.iter().any(|s| !s.is_final()) {
        return "EXECUTING";
    }
    if jobs.is_empty() {
        return if request_canceled {
            "CANCELLED"
        } else {
            "REQUEST_COMPLETED"
        };
    }
    let ok = jobs.iter().filter(|s| **s == JobState::Succeeded).count();
    let canceled = jobs.iter().filter(|s| **s == JobState::Canceled).count();
    if canceled == jobs.len() {
        "CANCELLED"
    } else if ok == jobs.len() {
        "REQUEST_COMPLETED"
    } else if ok == 0 && canceled == 0 {
        "PROVISIONING_FAILED"
    } else {
        "NOT_ALL_ITEMS_PROVISIONED"
    }
}

fn assignment_state_to_item(state: &str) -> &'static str {
    match state {
        "pending" => "EXECUTING",
        "failed" => "PROVISIONING_FAILED",
        "canceled" => "CANCELLED",
        _ => "REQUEST_COMPLETED",
    }
}

/// The sources where a new grant's jobs ended on an account that is disabled now.
fn disabled_sources(row: &StatusRow) -> Vec<&str> {
    if row.request_type != "GRANT_ACCESS" || row.disposition != "new" {
        return Vec::new();
    }
    let mut out: Vec<&str> = row
        .jobs
        .iter()
        .filter(|j| j.account_disabled)
        .map(|j| j.source.as_str())
        .collect();
    // One job per source per item, so no source twice; sorted for a stable message.
    out.sort_unstable();
    out
}

fn message(text: &str) -> Value {
    json!({ "locale": "en-US", "localeOrigin": "DEFAULT", "text": text })
}

/// One `/access-request-status` item (DESIGN §9): state from the jobs that carry it,
/// the last error of each failed or retrying job, the open manual work items.
pub fn status_item(row: &StatusRow) -> Value {
    let states: Vec<JobState> = row.jobs.iter().filter_map(|j| j.state).collect();
    let state = if row.disposition == "existing" {
        assignment_state_to_item(row.assignment_state.as_deref().unwrap_or("active"))
    } else {
        item_state(&states, row.canceled_at.is_some())
    };
    let mut errors = Vec::new();
    // A grant that ended on a disabled account is not usable yet (an AD account made
    // without `[account.password]`, or disabled since): EXECUTING, and why (issue 34).
    let disabled = disabled_sources(row);
    let state = if state == "REQUEST_COMPLETED" && !disabled.is_empty() {
        errors.push(json!([message(&format!(
            "the account on {} is disabled: the access cannot be used until it is enabled",
            disabled.join(", ")
        ))]));
        "EXECUTING"
    } else {
        state
    };
    let mut manual = Vec::new();
    let mut modified = row.received_at;
    for job in &row.jobs {
        modified = modified.max(job.updated_at);
        if let Some(last) = &job.last_error {
            let prefix = if job.state == Some(JobState::Retrying) {
                "retrying after: "
            } else {
                ""
            };
            errors.push(json!([message(&format!("{prefix}{last}"))]));
        }
        for (owner, created) in &job.open_tasks {
            manual.push(json!({
                "forwarded": false,
                "originalOwner": { "type": "IDENTITY", "id": owner, "name": owner },
                "currentOwner": { "type": "IDENTITY", "id": owner, "name": owner },
                "modified": rfc3339_ms(*created),
                "status": "PENDING",
            }));
        }
    }
    let meta: Value = serde_json::from_str(&row.client_metadata).unwrap_or_else(|_| json!({}));
    json!({
        "id": row.item_id,
        "accessRequestId": row.request_id,
        "name": row.name,
        "type": row.item_type,
        "requestType": row.request_type,
        "state": state,
        "created": rfc3339_ms(row.received_at),
        "modified": rfc3339_ms(modified),
        "removeDate": row.remove_at.map(rfc3339_ms),
        "requestedFor": { "type": "IDENTITY", "id": row.identity },
        "errorMessages": if errors.is_empty() { Value::Null } else { Value::Array(errors) },
        "manualWorkItemDetails": if manual.is_empty() { Value::Null } else { Value::Array(manual) },
        "clientMetadata": meta,
        "requester": { "type": "IDENTITY", "id": row.requester, "name": row.requester },
        "requesterComment": row.comment.as_ref().map(|c| json!({
            "comment": c,
            "author": { "type": "IDENTITY", "id": row.requester, "name": row.requester },
            "created": rfc3339_ms(row.received_at),
        })),
        "grantRequestId": row.grant_request,
        "cancelable": row.cancelable,
        "cancelledRequestDetails": cancelled_details(row),
    })
}

/// `cancelledRequestDetails`: the last cancel's comment, who gave it (as SailPoint's
/// `OwnerDto`) and when; null for a request nobody canceled.
fn cancelled_details(row: &StatusRow) -> Value {
    match (&row.cancel, row.canceled_at) {
        (Some((comment, actor)), Some(at)) => json!({
            "comment": comment,
            "owner": { "type": "IDENTITY", "id": actor, "name": actor },
            "modified": rfc3339_ms(at),
        }),
        _ => Value::Null,
    }
}

/// A request with no item (a lifecycle change's account operations, say) as status rows:
/// one per job, `type` `ACCOUNT`, named by its operations and source; its requester,
/// type and `cause` from the request's `request_accepted` event (`accepted`).
pub fn account_rows(accepted: Option<&StoredEvent>, jobs: &[Job]) -> Vec<StatusRow> {
    let data = accepted.map(|e| &e.data);
    let text = |k: &str| {
        data.and_then(|d| d.get(k))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let meta = match data.and_then(|d| d.get("cause")) {
        Some(cause) => json!({ "cause": cause }),
        None => json!({}),
    };
    // A cancel of the request stops every job of it that has not started.
    let open = jobs.iter().any(|j| {
        matches!(
            j.state,
            JobState::Queued | JobState::Retrying | JobState::Manual
        )
    });
    jobs.iter()
        .map(|j| {
            let ops: Vec<&str> = j.ops.iter().map(|o| o.kind().as_str()).collect();
            StatusRow {
                item_id: format!("{}:{}", j.source, ops.join("+")),
                request_id: j.request_id.clone(),
                identity: j.identity_id.clone(),
                item_type: "ACCOUNT".into(),
                name: format!("{} on {}", ops.join(", "), j.source),
                disposition: "new".into(),
                request_type: text("requestType"),
                received_at: accepted.map_or(j.created_at, |e| e.at),
                canceled_at: None,
                cancel: None,
                cancelable: open,
                assignment_state: None,
                remove_at: None,
                client_metadata: meta.to_string(),
                requester: accepted.and_then(|e| e.actor.clone()).unwrap_or_default(),
                comment: None,
                grant_request: None,
                jobs: vec![StatusJob {
                    id: j.id,
                    state: Some(j.state),
                    last_error: matches!(j.state, JobState::Failed | JobState::Retrying)
                        .then(|| j.errors.last().map(|e| e.message.clone()))
                        .flatten(),
                    updated_at: j.updated_at,
                    open_tasks: Vec::new(),
                    source: j.source.clone(),
                    account_disabled: false,
                }],
            }
        })
        .collect()
}

/// The status items of `rows`, in their order, each with its catalog description (as
/// SailPoint's items carry one; null when the catalog gives none).
pub fn status_items(rows: &[StatusRow], catalog: &crate::config::Catalog) -> Vec<Value> {
    rows.iter()
        .map(|r| {
            let mut item = status_item(r);
            item["description"] = catalog.describe(&r.item_type, &r.item_id).1.into();
            item
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use JobState::*;

    #[test]
    fn fnv_is_stable() {
        assert_eq!(super::fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(super::fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn item_states() {
        assert_eq!(item_state(&[], false), "REQUEST_COMPLETED");
        assert_eq!(item_state(&[Succeeded, Running], false), "EXECUTING");
        assert_eq!(item_state(&[Manual], false), "EXECUTING");
        assert_eq!(item_state(&[Retrying], false), "EXECUTING");
        assert_eq!(
            item_state(&[Succeeded, Succeeded], false),
            "REQUEST_COMPLETED"
        );
        assert_eq!(item_state(&[Failed], false), "PROVISIONING_FAILED");
        assert_eq!(
            item_state(&[Succeeded, Failed], false),
            "NOT_ALL_ITEMS_PROVISIONED"
        );
        assert_eq!(item_state(&[Canceled, Canceled], true), "CANCELLED");
        assert_eq!(
            item_state(&[Succeeded, Canceled], true),
            "NOT_ALL_ITEMS_PROVISIONED"
        );
    }

    /// Issue 34: a grant whose account is disabled read REQUEST_COMPLETED.
    #[test]
    fn a_grant_on_a_disabled_account_is_not_complete() {
        let job = |source: &str, disabled: bool| StatusJob {
            id: 1,
            state: Some(Succeeded),
            last_error: None,
            updated_at: 0,
            open_tasks: Vec::new(),
            source: source.into(),
            account_disabled: disabled,
        };
        let mut row = StatusRow {
            item_id: "ent-vpn".into(),
            request_id: "r1".into(),
            identity: "ada".into(),
            item_type: "ENTITLEMENT".into(),
            name: "VPN".into(),
            disposition: "new".into(),
            request_type: "GRANT_ACCESS".into(),
            received_at: 0,
            canceled_at: None,
            cancel: None,
            cancelable: false,
            assignment_state: Some("active".into()),
            remove_at: None,
            client_metadata: "{}".into(),
            requester: "x".into(),
            comment: None,
            grant_request: None,
            jobs: vec![job("corp-ad", true), job("flat", false)],
        };
        let item = status_item(&row);
        assert_eq!(item["state"], "EXECUTING");
        let said = item["errorMessages"][0][0]["text"].as_str().unwrap();
        assert!(said.contains("corp-ad is disabled"), "{said}");
        row.jobs = vec![job("corp-ad", false)];
        assert_eq!(status_item(&row)["state"], "REQUEST_COMPLETED");
        // A revoke's end is not about a usable account.
        row.jobs = vec![job("corp-ad", true)];
        row.request_type = "REVOKE_ACCESS".into();
        assert_eq!(status_item(&row)["state"], "REQUEST_COMPLETED");
    }
}
