//! The operator's moves on jobs and requests (DESIGN §14): cancel and retry. Each rule
//! reads the job as the backend found it and says what to write, or why not; the backend
//! writes it under a guard on the state it read, and a guard that matched nothing is a
//! race lost to another agent ([`lost_race`]), reported as such and written nowhere.

use serde_json::{Value, json};

use super::states::{JobState, Machine};
use crate::store::jobs::Job;
use crate::store::{Result, StoreError};
use provd_connector_core::Operation;

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

/// Whether a request may be canceled: only while one of its jobs can still be stopped
/// (queued, retrying or waiting on a task). `open` counts those jobs. A request whose
/// jobs have all ended, or are running right now, has nothing a cancel would stop, so
/// the cancel is refused rather than recorded as if it had done something; the status
/// item's `cancelable` says the same thing beforehand (issue 35).
pub fn cancel_request(request_id: &str, open: usize) -> Result<()> {
    if open > 0 {
        return Ok(());
    }
    Err(StoreError::Conflict(format!(
        "request `{request_id}` has nothing left to cancel: its jobs have ended or are running right now"
    )))
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
    /// flight again. `pending_account`: the job makes its account, whose pending row
    /// the failure dropped; it is pending again, so that a manual job ending well records
    /// the account its tasks named (found by the simulation, issue 33: a badge account
    /// made on a retried job was never known to provd).
    Requeue {
        max_attempts: u32,
        pending_account: bool,
    },
    /// A retrying job: due now rather than at its backoff's end.
    RunNow,
}

/// A job queued after the one being retried, on the same identity and source: what a
/// retry must not undo.
#[derive(Debug, Clone, PartialEq)]
pub struct Later {
    pub id: i64,
    /// A `canceled` one changed nothing on the target, though it says what was wanted.
    pub state: JobState,
    pub ops: Vec<Operation>,
}

impl Later {
    /// A later job that has ended well.
    pub fn live(id: i64, ops: Vec<Operation>) -> Later {
        Later {
            id,
            state: JobState::Succeeded,
            ops,
        }
    }

    fn canceled(&self) -> bool {
        self.state == JobState::Canceled
    }
}

/// What a retry writes: the move, and the `job_retry_requested` event's data.
#[derive(Debug, Clone, PartialEq)]
pub struct Retry {
    pub how: RetryMove,
    pub data: Value,
}

/// Whether `job` may be retried, and what that writes. `grants`: how many assignments
/// the job grants and how many of them are still wanted. A grant job none of whose
/// grants is wanted any more (revoked, or ended by its removeDate, while it had failed)
/// is not run again: it would give access nobody wants (found by the simulation, issue
/// 33: a badge job retried after its removeDate left the zone on the badge). Nor is a
/// job that disables or enables an account once a `later` job (id, operations) on the
/// same account set its state: it would undo that (a leaver's failed DISABLE retried
/// after the rehire's ENABLE disabled the rehired person). Nor a job that removes a value
/// a `later` job adds again: the value was granted again since, and taking it would leave
/// the new grant's access gone while provd says it is held. Nor a job that makes the
/// account once a later job — even one canceled because this one's failure left it no
/// account ([`orphaned`]) — was to set the account's state: the account would be made
/// in the state this job was planned for (a leaver's failed grant, retried, made an
/// enabled account with access: found by the simulation, issue 33, PostgreSQL seed 32).
pub fn retry(job: &Job, max_attempts: u32, grants: (i64, i64), later: &[Later]) -> Result<Retry> {
    let moot = |why: String| {
        StoreError::Conflict(format!(
            "job {} is moot: {why}; nothing was retried",
            job.id
        ))
    };
    if job.state.is_final() {
        if job.kind == "grant" && grants.0 > 0 && grants.1 == 0 {
            return Err(moot(
                "the access it granted has been revoked or has ended since; submit a new request if it is still wanted".into(),
            ));
        }
        // One job of a lane at a time: requeued now, this one would run beside (or ask
        // an owner beside) a later one still out, in no order.
        if let Some(out) = later
            .iter()
            .find(|l| matches!(l.state, JobState::Running | JobState::Manual))
        {
            return Err(StoreError::Conflict(format!(
                "job {} of the same identity and source is {} right now; retry job {} once it has ended",
                out.id, out.state, job.id
            )));
        }
        // A later job that removes what this one adds, not run yet, would undo it once
        // it ran first (PostgreSQL simulation seed 55: a failed badge grant retried while
        // a role's removal of the same zone waited in the lane; the zone went, the grant
        // said it was held). Once that job has ended, the add comes after it.
        if let Some((next, value)) = undone_by(job, later) {
            return Err(StoreError::Conflict(format!(
                "job {next} of the same identity and source is to remove {value}, which this one adds; retry job {} once it has ended",
                job.id
            )));
        }
        let live = || later.iter().filter(|l| !l.canceled());
        if job.ops.iter().any(sets_status)
            && let Some(next) = live().find(|l| l.ops.iter().any(sets_status))
        {
            return Err(moot(format!(
                "job {} set the account's state since, and running this one again would undo that",
                next.id
            )));
        }
        if job.ops.contains(&Operation::CreateAccount)
            && let Some(next) = later.iter().find(|l| l.ops.iter().any(sets_status))
        {
            return Err(moot(format!(
                "job {} was to set the account's state since, and the account this one makes would not be in it; submit a new request if the access is still wanted",
                next.id
            )));
        }
        if let Some((next, value)) = regranted(job, later) {
            return Err(moot(format!(
                "job {next} granted {value} again since, and running this one again would take it away; revoke what is still unwanted with a new request"
            )));
        }
    }
    let how = match job.state {
        // The account it makes, or the one it adds to and that its failure dropped (it
        // was handed this job by a withdrawn create: found by the simulation, issue 33,
        // seed 47), is pending again; an account already known stays as it is.
        s if s.can_move(JobState::Queued) && s.is_final() => RetryMove::Requeue {
            max_attempts,
            pending_account: job
                .ops
                .iter()
                .any(|op| matches!(op, Operation::CreateAccount | Operation::AddEntitlement(_))),
        },
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

/// The first later job, not yet run, that removes a value `job` adds, and that value.
fn undone_by(job: &Job, later: &[Later]) -> Option<(i64, String)> {
    job.ops.iter().find_map(|op| {
        let Operation::AddEntitlement(e) = op else {
            return None;
        };
        later
            .iter()
            .filter(|l| matches!(l.state, JobState::Queued | JobState::Retrying))
            .find_map(|l| {
                l.ops
                    .contains(&Operation::RemoveEntitlement(e.clone()))
                    .then(|| (l.id, format!("{}={}", e.attribute, e.value)))
            })
    })
}

/// The first later job that adds a value `job` removes, and that value.
fn regranted(job: &Job, later: &[Later]) -> Option<(i64, String)> {
    job.ops.iter().find_map(|op| {
        let Operation::RemoveEntitlement(e) = op else {
            return None;
        };
        later.iter().filter(|l| !l.canceled()).find_map(|l| {
            l.ops
                .contains(&Operation::AddEntitlement(e.clone()))
                .then(|| (l.id, format!("{}={}", e.attribute, e.value)))
        })
    })
}

/// Whether a job waiting in its lane acts only on an account's state (disable, enable,
/// update, delete): once the job before it that was to make the account failed or was
/// canceled, and nothing else will make it, such a job has nothing to act on and is
/// canceled ([`orphan_reason`]) — the planner plans none of these for someone with no
/// account. Sent out, it asked an owner to disable an account that did not exist, and
/// the answer could never be verified (found by the simulation, issue 33, PostgreSQL
/// seed 32).
pub fn orphaned(ops: &[Operation]) -> bool {
    !ops.is_empty()
        && ops.iter().all(|op| {
            matches!(
                op,
                Operation::DisableAccount
                    | Operation::EnableAccount
                    | Operation::DeleteAccount
                    | Operation::UpdateAccount { .. }
                    | Operation::ResetPassword
            )
        })
}

/// Why an [`orphaned`] job was canceled: `maker` was to make its account.
pub fn orphan_reason(maker: i64) -> String {
    format!("no account to act on: job {maker}, which was to make it, failed or was canceled")
}

/// An operation that leaves the account enabled, disabled or gone.
fn sets_status(op: &Operation) -> bool {
    matches!(
        op,
        Operation::DisableAccount | Operation::EnableAccount | Operation::DeleteAccount
    )
}

/// What a retry answers when its guarded write matched nothing: a claim took the job
/// (or an operator moved it) after it was read. Nothing of the retry is written.
pub fn retry_raced(id: i64) -> StoreError {
    StoreError::Conflict(format!(
        "job {id} changed while it was being retried; look at it again (provd jobs show {id})"
    ))
}

/// The operations of `heir`, the next job of a lane, once a failed or canceled job (whose
/// operations were `from`) handed it the account it was to create: the heir was planned
/// without a create because the account was on its way, so it now makes it first, as
/// `from` would have (its create and the enable that follows it). Without this an owner
/// was asked to add to an account that does not exist (found by the simulation, issue
/// 33). None when nothing changes: `from` made no account, or the heir creates already
/// or has begun.
pub fn inherit_create(from: &[Operation], heir: &Job) -> Option<Vec<Operation>> {
    let start = from.iter().position(|op| *op == Operation::CreateAccount)?;
    if heir.ops.contains(&Operation::CreateAccount)
        || heir.ops_done > 0
        || !matches!(heir.state, JobState::Queued | JobState::Retrying)
    {
        return None;
    }
    let enable = from.get(start + 1) == Some(&Operation::EnableAccount);
    let mut ops = vec![Operation::CreateAccount];
    ops.extend(enable.then_some(Operation::EnableAccount));
    ops.extend(heir.ops.iter().cloned());
    Some(ops)
}

/// The `job_replanned` event's data once an heir took over a create (see
/// [`inherit_create`]): the job whose account it makes, and its operations now.
pub fn replanned(from: &Job, ops: &[Operation]) -> Value {
    json!({
        "reason": format!("job {}, which was to make the account, {}", from.id, from.state),
        "operations": ops,
    })
}

/// A guarded write's outcome: `changed` rows, or the race it lost.
pub fn guarded(changed: u64, lost: impl FnOnce() -> StoreError) -> Result<()> {
    if changed == 0 { Err(lost()) } else { Ok(()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(state: JobState) -> Job {
        Job::sample("u", "s", state)
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
        let r = retry(&job(Failed), 5, (1, 1), &[]).map_err(|e| e.to_string());
        assert_eq!(
            r.map(|r| (r.how, r.data)),
            Ok((
                RetryMove::Requeue {
                    max_attempts: 5,
                    pending_account: false
                },
                json!({ "from": "failed", "attempts_before": 2, "max_attempts": 5 })
            ))
        );
        assert_eq!(
            retry(&job(Retrying), 5, (0, 0), &[]).ok().map(|r| r.how),
            Some(RetryMove::RunNow)
        );
        for s in [Queued, Running, Manual, Succeeded, Canceled] {
            assert!(
                matches!(retry(&job(s), 5, (0, 0), &[]), Err(StoreError::Conflict(_))),
                "{s}"
            );
        }
    }

    #[test]
    fn the_heir_of_a_withdrawn_create_makes_the_account_first() {
        use Operation::*;
        let add = |v: &str| {
            AddEntitlement(provd_connector_core::Entitlement {
                attribute: "groups".into(),
                value: v.into(),
            })
        };
        let mut heir = job(JobState::Queued);
        heir.ops = vec![add("B")];
        let from = [CreateAccount, EnableAccount, add("A")];
        assert_eq!(
            inherit_create(&from, &heir),
            Some(vec![CreateAccount, EnableAccount, add("B")])
        );
        assert_eq!(
            inherit_create(&[CreateAccount, add("A")], &heir),
            Some(vec![CreateAccount, add("B")])
        );
        assert_eq!(inherit_create(&[add("A")], &heir), None, "made no account");
        heir.state = JobState::Manual;
        assert_eq!(inherit_create(&from, &heir), None, "has begun");
        heir.state = JobState::Retrying;
        heir.ops = vec![CreateAccount, add("B")];
        assert_eq!(inherit_create(&from, &heir), None, "creates already");
    }

    #[test]
    fn a_failed_grant_nobody_wants_any_more_is_not_run_again() {
        let mut failed = job(JobState::Failed);
        failed.kind = "grant".into();
        let e = retry(&failed, 5, (2, 0), &[]).err().map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.contains("is moot: the access it granted has been revoked")));
        assert!(
            retry(&failed, 5, (2, 1), &[]).is_ok(),
            "one grant still wanted"
        );
        failed.kind = "revoke".into();
        assert!(retry(&failed, 5, (0, 0), &[]).is_ok());
    }

    #[test]
    fn a_failed_disable_is_not_run_again_after_a_later_job_set_the_account_state() {
        let mut failed = job(JobState::Failed);
        failed.ops = vec![Operation::DisableAccount];
        let grant = Later::live(9, vec![Operation::CreateAccount]);
        let enable = Later::live(12, vec![Operation::EnableAccount]);
        assert!(retry(&failed, 5, (0, 0), std::slice::from_ref(&grant)).is_ok());
        let e = retry(&failed, 5, (0, 0), &[grant, enable])
            .err()
            .map(|e| e.to_string());
        assert!(
            e.is_some_and(|e| e.contains("job 7 is moot: job 12 set the account's state since"))
        );
    }

    #[test]
    fn a_failed_removal_is_not_run_again_after_a_later_job_granted_the_value_again() {
        use provd_connector_core::Entitlement;
        let group = |v: &str| Entitlement {
            attribute: "groups".into(),
            value: v.into(),
        };
        let mut failed = job(JobState::Failed);
        failed.kind = "revoke".into();
        failed.ops = vec![Operation::RemoveEntitlement(group("cn=vpn"))];
        let other = Later::live(9, vec![Operation::AddEntitlement(group("cn=git"))]);
        assert!(retry(&failed, 5, (0, 0), std::slice::from_ref(&other)).is_ok());
        let again = Later::live(11, vec![Operation::AddEntitlement(group("cn=vpn"))]);
        let e = retry(&failed, 5, (0, 0), &[other, again])
            .err()
            .map(|e| e.to_string());
        assert!(e.is_some_and(|e| {
            e.contains("job 7 is moot: job 11 granted groups=cn=vpn again since")
        }),);
    }

    #[test]
    fn a_failed_create_is_not_run_again_once_a_later_job_was_to_set_the_account_state() {
        use Operation::*;
        let mut failed = job(JobState::Failed);
        failed.ops = vec![CreateAccount, EnableAccount];
        let other = Later::live(
            9,
            vec![UpdateAccount {
                attributes: Default::default(),
            }],
        );
        assert!(retry(&failed, 5, (1, 1), std::slice::from_ref(&other)).is_ok());
        let disable = Later {
            id: 11,
            state: JobState::Canceled,
            ops: vec![DisableAccount],
        };
        let e = retry(&failed, 5, (1, 1), &[other, disable])
            .err()
            .map(|e| e.to_string());
        assert!(
            e.is_some_and(|e| e.contains("job 7 is moot: job 11 was to set the account's state")),
        );
    }

    #[test]
    fn a_failed_job_waits_for_a_later_one_of_its_lane_that_is_out() {
        let failed = job(JobState::Failed);
        for state in [JobState::Running, JobState::Manual] {
            let out = Later {
                id: 9,
                state,
                ops: Vec::new(),
            };
            let e = retry(&failed, 5, (0, 0), &[out])
                .err()
                .map(|e| e.to_string());
            assert_eq!(
                e,
                Some(format!(
                    "job 9 of the same identity and source is {state} right now; retry job 7 once it has ended"
                )),
            );
        }
        let queued = Later {
            id: 9,
            state: JobState::Queued,
            ops: Vec::new(),
        };
        assert!(retry(&failed, 5, (0, 0), &[queued]).is_ok(), "runs first");
    }

    #[test]
    fn a_failed_add_waits_for_a_later_removal_of_its_value_to_run() {
        use provd_connector_core::Entitlement;
        let hq = Entitlement {
            attribute: "zones".into(),
            value: "HQ".into(),
        };
        let mut failed = job(JobState::Failed);
        failed.ops = vec![
            Operation::CreateAccount,
            Operation::AddEntitlement(hq.clone()),
        ];
        let mut removal = Later {
            id: 15,
            state: JobState::Queued,
            ops: vec![Operation::RemoveEntitlement(hq)],
        };
        let e = retry(&failed, 5, (1, 1), std::slice::from_ref(&removal))
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            e,
            Some("job 15 of the same identity and source is to remove zones=HQ, which this one adds; retry job 7 once it has ended".into())
        );
        removal.state = JobState::Succeeded;
        assert!(
            retry(&failed, 5, (1, 1), &[removal]).is_ok(),
            "the add comes after it"
        );
    }

    #[test]
    fn only_a_job_that_acts_on_the_account_alone_is_left_with_nothing_to_act_on() {
        use Operation::*;
        let add = AddEntitlement(provd_connector_core::Entitlement {
            attribute: "zones".into(),
            value: "HQ".into(),
        });
        assert!(orphaned(&[DisableAccount]));
        assert!(orphaned(&[EnableAccount, DeleteAccount]));
        assert!(!orphaned(&[]));
        assert!(!orphaned(&[DisableAccount, add.clone()]), "gives access");
        assert!(!orphaned(&[CreateAccount, DisableAccount]), "makes its own");
    }

    #[test]
    fn a_retried_job_that_gives_access_makes_its_account_pending_again() {
        let mut failed = job(JobState::Failed);
        failed.ops = vec![Operation::AddEntitlement(
            provd_connector_core::Entitlement {
                attribute: "zones".into(),
                value: "HQ".into(),
            },
        )];
        let how = retry(&failed, 5, (1, 1), &[]).ok().map(|r| r.how);
        assert_eq!(
            how,
            Some(RetryMove::Requeue {
                max_attempts: 5,
                pending_account: true
            })
        );
        failed.ops = vec![Operation::DisableAccount];
        let how = retry(&failed, 5, (0, 0), &[]).ok().map(|r| r.how);
        assert!(matches!(
            how,
            Some(RetryMove::Requeue {
                pending_account: false,
                ..
            })
        ));
    }

    #[test]
    fn a_guard_that_matched_nothing_lost_a_race() {
        assert!(guarded(1, || retry_raced(7)).is_ok());
        let e = guarded(0, || retry_raced(7)).err().map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.contains("changed while it was being retried")));
    }
}
