//! Access request status, shaped like the upstream's `/access-request-status` items: one
//! per (request, identity, item), its state derived from the jobs that carry it.

use rusqlite::{Connection, params};
use serde_json::{Value, json};

use super::jobs::JobState;
use super::{Result, Store, StoreError};
use crate::clock::rfc3339_ms;

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

fn message(text: &str) -> Value {
    json!({ "locale": "en-US", "localeOrigin": "DEFAULT", "text": text })
}

/// Which status items to list.
#[derive(Debug, Clone, Default)]
pub struct StatusQuery {
    pub request_id: Option<String>,
    pub requested_for: Option<String>,
    pub limit: usize,
    pub offset: usize,
}

fn items(c: &Connection, q: &StatusQuery) -> Result<Vec<Value>> {
    let mut stmt = c.prepare(
        "SELECT ri.id, ri.request_id, ri.identity_id, ri.item_type, ri.item_id, ri.name, ri.disposition, ri.assignment_id,
                ri.client_metadata, r.request_type, r.received_at, r.canceled_at, a.state, a.remove_at
         FROM request_items ri JOIN requests r ON r.id = ri.request_id
         LEFT JOIN assignments a ON a.id = ri.assignment_id
         WHERE (?1 IS NULL OR ri.request_id = ?1) AND (?2 IS NULL OR ri.identity_id = ?2)
         ORDER BY r.seq DESC, ri.id LIMIT ?3 OFFSET ?4",
    )?;
    type RowT = (
        i64,
        String,
        String,
        String,
        String,
        String,
        String,
        Option<i64>,
        String,
        String,
        i64,
        Option<i64>,
        Option<String>,
        Option<i64>,
    );
    let rows: Vec<RowT> = stmt
        .query_map(
            params![
                q.request_id,
                q.requested_for,
                q.limit as i64,
                q.offset as i64
            ],
            |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                    r.get(7)?,
                    r.get(8)?,
                    r.get(9)?,
                    r.get(10)?,
                    r.get(11)?,
                    r.get(12)?,
                    r.get(13)?,
                ))
            },
        )?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut jobs_of = c.prepare_cached(
        "SELECT j.id, j.state, j.errors, j.updated_at, j.source FROM jobs j JOIN item_jobs ij ON ij.job_id = j.id
         WHERE ij.item_id = ? ORDER BY j.id",
    )?;
    let mut tasks_of = c.prepare_cached(
        "SELECT owner, created_at FROM tasks WHERE job_id = ? AND status = 'open' ORDER BY id",
    )?;
    let mut out = Vec::with_capacity(rows.len());
    for (
        item,
        request_id,
        identity,
        ty,
        item_id,
        name,
        disposition,
        _assignment,
        meta,
        req_type,
        received,
        canceled,
        a_state,
        remove_at,
    ) in rows
    {
        let jobs = jobs_of
            .query_map([item], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, String>(4)?,
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let states: Vec<JobState> = jobs.iter().filter_map(|j| JobState::parse(&j.1)).collect();
        let state = if disposition == "existing" {
            assignment_state_to_item(a_state.as_deref().unwrap_or("active"))
        } else {
            item_state(&states, canceled.is_some())
        };
        let mut errors = Vec::new();
        let mut manual = Vec::new();
        let mut modified = received;
        for (job_id, st, errs, updated, _source) in &jobs {
            modified = modified.max(*updated);
            let st = JobState::parse(st);
            if matches!(st, Some(JobState::Failed) | Some(JobState::Retrying)) {
                let errs: Vec<super::jobs::AttemptError> =
                    serde_json::from_str(errs).map_err(|e| StoreError::Corrupt(e.to_string()))?;
                if let Some(last) = errs.last() {
                    let prefix = if st == Some(JobState::Retrying) {
                        "retrying after: "
                    } else {
                        ""
                    };
                    errors.push(json!([message(&format!("{prefix}{}", last.message))]));
                }
            }
            if st == Some(JobState::Manual) {
                for t in tasks_of.query_map([job_id], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
                })? {
                    let (owner, created) = t?;
                    manual.push(json!({
                        "forwarded": false,
                        "originalOwner": { "type": "IDENTITY", "id": owner, "name": owner },
                        "currentOwner": { "type": "IDENTITY", "id": owner, "name": owner },
                        "modified": rfc3339_ms(created),
                        "status": "PENDING",
                    }));
                }
            }
        }
        let meta: Value = serde_json::from_str(&meta).unwrap_or_else(|_| json!({}));
        out.push(json!({
            "id": item_id,
            "accessRequestId": request_id,
            "name": name,
            "type": ty,
            "requestType": req_type,
            "state": state,
            "created": rfc3339_ms(received),
            "modified": rfc3339_ms(modified),
            "removeDate": remove_at.map(rfc3339_ms),
            "requestedFor": { "type": "IDENTITY", "id": identity },
            "errorMessages": if errors.is_empty() { Value::Null } else { Value::Array(errors) },
            "manualWorkItemDetails": if manual.is_empty() { Value::Null } else { Value::Array(manual) },
            "clientMetadata": meta,
        }));
    }
    Ok(out)
}

impl Store {
    pub fn status(&self, q: &StatusQuery) -> Result<Vec<Value>> {
        self.with(|c| items(c, q))
    }

    pub fn request_exists(&self, id: &str) -> Result<bool> {
        self.with(|c| {
            Ok(
                c.query_row("SELECT COUNT(*) FROM requests WHERE id = ?", [id], |r| {
                    r.get::<_, i64>(0)
                })? > 0,
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use JobState::*;

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
}
