//! The operator's moves on jobs and requests (DESIGN §14): cancel and retry. Each rule
//! reads the job as the backend found it and says what to write, or why not; the backend
//! writes it under a guard on the state it read, and a guard that matched nothing is a
//! race lost to another agent ([`lost_race`]), reported as such and written nowhere.

use serde_json::{Value, json};

use super::states::{JobState, Machine};
use crate::store::jobs::Job;
use crate::store::{Result, StoreError};

/// What canceling a job writes: the job (from the state it was read in) to `canceled`,
/// its open tasks canceled with `reason`, a `job_canceled` event with `data`, and its
/// assignments settled.
#[derive(Debug, Clone, PartialEq)]
pub struct Cancel {
    pub from: JobState,
    pub data: Value,
}

/// Whether `job` may be canceled, and what that writes.
pub fn cancel(job: &Job, reason: &str) -> Result<Cancel> {
    if job.state.can_move(JobState::Canceled) {
        return Ok(Cancel {
            from: job.state,
            data: json!({ "reason": reason, "from": job.state.as_str() }),
        });
    }
    Err(match job.state {
        JobState::Running => running(job.id),
        other => StoreError::Conflict(format!("job {} has already ended ({other})", job.id)),
    })
}

fn running(id: i64) -> StoreError {
    StoreError::Conflict(format!(
        "job {id} is running right now; cancel it once this attempt has ended"
    ))
}

/// What a cancel answers when its guarded write matched nothing: the only move away
/// from a cancelable state another agent can make is a claim.
pub fn cancel_raced(id: i64) -> StoreError {
    running(id)
}

/// The `request_canceled` event's data.
pub fn request_canceled(comment: &str, jobs_canceled: usize) -> Value {
    json!({ "comment": comment, "jobsCanceled": jobs_canceled })
}

/// A request that is not there to cancel.
pub fn no_request(id: &str) -> StoreError {
    StoreError::NotFound(format!("no access request `{id}`"))
}

/// A job that is not there.
pub fn no_job(id: i64) -> StoreError {
    StoreError::NotFound(format!("no job {id}"))
}

/// How a retry moves the job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryMove {
    /// A failed job: back to `queued` with a fresh budget of attempts (counted from zero,
    /// its earlier errors kept), its identity as it is now, and its assignments in
    /// flight again.
    Requeue { max_attempts: u32 },
    /// A retrying job: due now rather than at its backoff's end.
    RunNow,
}

/// What a retry writes: the move, and the `job_retry_requested` event's data.
#[derive(Debug, Clone, PartialEq)]
pub struct Retry {
    pub how: RetryMove,
    pub data: Value,
}

/// Whether `job` may be retried, and what that writes.
pub fn retry(job: &Job, max_attempts: u32) -> Result<Retry> {
    let how = match job.state {
        s if s.can_move(JobState::Queued) && s.is_final() => RetryMove::Requeue { max_attempts },
        JobState::Retrying => RetryMove::RunNow,
        other => {
            return Err(StoreError::Conflict(format!(
                "job {} is {other}; only failed or retrying jobs can be retried",
                job.id
            )));
        }
    };
    Ok(Retry {
        how,
        data: json!({ "from": job.state.as_str(), "attempts_before": job.attempt, "max_attempts": max_attempts }),
    })
}

/// What a retry answers when its guarded write matched nothing: a claim took the job
/// (or an operator moved it) after it was read. Nothing of the retry is written.
pub fn retry_raced(id: i64) -> StoreError {
    StoreError::Conflict(format!(
        "job {id} changed while it was being retried; look at it again (provd jobs show {id})"
    ))
}

/// A guarded write's outcome: `changed` rows, or the race it lost.
pub fn guarded(changed: u64, lost: impl FnOnce() -> StoreError) -> Result<()> {
    if changed == 0 { Err(lost()) } else { Ok(()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(state: JobState) -> Job {
        Job {
            id: 7,
            request_id: "r".into(),
            identity_id: "u".into(),
            source: "s".into(),
            kind: "grant".into(),
            identity: provd_connector_core::Identity {
                id: "u".into(),
                attributes: Default::default(),
            },
            ops: Vec::new(),
            ops_done: 0,
            state,
            attempt: 2,
            max_attempts: 3,
            next_attempt_at: None,
            lease_owner: None,
            lease_expires_at: None,
            errors: Vec::new(),
            created_at: 0,
            window_start: None,
            updated_at: 0,
            finalized_at: None,
            lease_epoch: 0,
            account: None,
        }
    }

    #[test]
    fn only_what_has_not_run_can_be_canceled() {
        use JobState::*;
        for s in [Queued, Retrying, Manual] {
            let c = cancel(&job(s), "no longer needed").map_err(|e| e.to_string());
            assert_eq!(c.map(|c| c.from), Ok(s));
        }
        let e = cancel(&job(Running), "x").err().map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.contains("running right now")));
        for s in [Succeeded, Failed, Canceled] {
            let e = cancel(&job(s), "x").err().map(|e| e.to_string());
            assert_eq!(e, Some(format!("job 7 has already ended ({s})")));
        }
    }

    #[test]
    fn a_retry_requeues_a_failure_and_hurries_a_backoff() {
        use JobState::*;
        let r = retry(&job(Failed), 5).map_err(|e| e.to_string());
        assert_eq!(
            r.map(|r| (r.how, r.data)),
            Ok((
                RetryMove::Requeue { max_attempts: 5 },
                json!({ "from": "failed", "attempts_before": 2, "max_attempts": 5 })
            ))
        );
        assert_eq!(
            retry(&job(Retrying), 5).ok().map(|r| r.how),
            Some(RetryMove::RunNow)
        );
        for s in [Queued, Running, Manual, Succeeded, Canceled] {
            assert!(
                matches!(retry(&job(s), 5), Err(StoreError::Conflict(_))),
                "{s}"
            );
        }
    }

    #[test]
    fn a_guard_that_matched_nothing_lost_a_race() {
        assert!(guarded(1, || retry_raced(7)).is_ok());
        let e = guarded(0, || retry_raced(7)).err().map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.contains("changed while it was being retried")));
    }
}
