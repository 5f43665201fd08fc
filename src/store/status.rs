//! What the status of access requests is made of: one row per (request, identity, item)
//! with the jobs that carry it. Shaping it like the upstream's `/access-request-status`
//! items is `crate::wire`'s.

use super::jobs::{AttemptError, JobState};
use super::{Result, StoreError};

/// Which status items to list.
#[derive(Debug, Clone, Default)]
pub struct StatusQuery {
    pub request_id: Option<String>,
    pub requested_for: Option<String>,
    pub limit: usize,
    pub offset: usize,
}

/// One (request, identity, item) as stored.
#[derive(Debug, Clone)]
pub struct StatusRow {
    /// The catalog item's id.
    pub item_id: String,
    pub request_id: String,
    pub identity: String,
    pub item_type: String,
    pub name: String,
    /// `new`, or `existing` (a duplicate of an item already held or pending).
    pub disposition: String,
    pub request_type: String,
    pub received_at: i64,
    pub canceled_at: Option<i64>,
    /// The last cancel's comment and who gave it (for `cancelledRequestDetails`).
    pub cancel: Option<(String, String)>,
    /// Whether a cancel of the request would be accepted now (some job of it is still
    /// queued, retrying or waiting on a task: `rules::operator::cancel_request`).
    pub cancelable: bool,
    /// The assignment's state (for duplicates, what the item's state is).
    pub assignment_state: Option<String>,
    pub remove_at: Option<i64>,
    /// The item's `clientMetadata`, as JSON text.
    pub client_metadata: String,
    /// Who asked (the request's requester; its origin for requests older than that).
    pub requester: String,
    /// The comment the requester gave the item.
    pub comment: Option<String>,
    /// The request that granted the access this item concerns, when another one did (a
    /// revoke's grant, or what a duplicate found).
    pub grant_request: Option<String>,
    pub jobs: Vec<StatusJob>,
}

/// The status query's cancel columns, after the row's own (`r` is the request): the last
/// cancel's comment and actor, and whether a cancel would be accepted. The same words on
/// both backends; the actor is read from the request's `request_canceled` event, which
/// has no job (the partial index on PostgreSQL).
pub const CANCEL_COLUMNS: &str = "r.cancel_comment,
    CASE WHEN r.canceled_at IS NOT NULL THEN (SELECT e.actor FROM events e
        WHERE e.request_id = r.id AND e.job_id IS NULL AND e.kind = 'request_canceled'
        ORDER BY e.id DESC LIMIT 1) END,
    EXISTS (SELECT 1 FROM jobs cj WHERE cj.request_id = r.id AND cj.state IN ('queued','retrying','manual'))";

/// The cancel details a status row carries, from the columns of [`CANCEL_COLUMNS`].
pub fn cancel_of(
    canceled_at: Option<i64>,
    comment: Option<String>,
    actor: Option<String>,
) -> Option<(String, String)> {
    canceled_at?;
    Some((comment.unwrap_or_default(), actor.unwrap_or_default()))
}

/// A job that carries an item.
#[derive(Debug, Clone)]
pub struct StatusJob {
    pub id: i64,
    pub state: Option<JobState>,
    /// The last attempt's error (for failed and retrying jobs).
    pub last_error: Option<String>,
    pub updated_at: i64,
    /// Open manual tasks: (owner, created_at).
    pub open_tasks: Vec<(String, i64)>,
    /// The job's source.
    pub source: String,
    /// The person's account on that source is known to be disabled now.
    pub account_disabled: bool,
}

impl StatusJob {
    /// A job as its row stores it (`errors`: its attempts' errors, JSON); the caller adds
    /// the open tasks of one that [`StatusJob::waits_on_tasks`].
    /// `source`: the job's; `account_disabled`: its account there is disabled now.
    pub fn from_row(
        id: i64,
        state: &str,
        errors: &str,
        updated_at: i64,
        source: String,
        account_disabled: bool,
    ) -> Result<StatusJob> {
        let state = JobState::parse(state);
        let last_error = if matches!(state, Some(JobState::Failed | JobState::Retrying)) {
            let errs: Vec<AttemptError> =
                serde_json::from_str(errors).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            errs.last().map(|e| e.message.clone())
        } else {
            None
        };
        Ok(StatusJob {
            id,
            state,
            last_error,
            updated_at,
            open_tasks: Vec::new(),
            source,
            account_disabled,
        })
    }

    /// A manual job: its open tasks say whom it waits on.
    pub fn waits_on_tasks(&self) -> bool {
        self.state == Some(JobState::Manual)
    }
}
