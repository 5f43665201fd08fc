//! The store conformance suite: what every backend must do, written once against the role
//! traits and run on each backend (SQLite in `store::tests`, PostgreSQL in the integration
//! tests, which start a throwaway cluster). Each case gets a fresh, empty store.
//!
//! Compiled into the library (hidden) so that both runners can reach it; the cases return
//! errors instead of unwrapping, and check with `assert!`, which a failing case should do.

mod ends;
mod fixture;
mod races;
mod surface;

use fixture::{Fixture, err, fixture};

use super::audit::{AccessQuery, AuditQuery};
use super::jobs::{Job, JobFilter, JobState};
use super::tasks::{NewTask, TaskAnswer, TaskFilter};
use super::{BoxFuture, Replay, Stamp, Store, StoreError};
use crate::model::RequestType;

pub type Failure = Box<dyn std::error::Error + Send + Sync>;
pub type Outcome = Result<(), Failure>;
type Case = fn(Store) -> BoxFuture<Outcome>;

/// Every case, by name.
pub const CASES: &[(&str, Case)] = &[
    ("one_lane_runs_one_job_at_a_time_in_acceptance_order", |s| {
        Box::pin(one_lane(s))
    }),
    ("a_failed_job_retried_heads_its_lane_again", |s| {
        Box::pin(retried_heads_lane(s))
    }),
    (
        "an_expired_lease_returns_the_job_and_fences_the_old_owner",
        |s| Box::pin(expired_lease(s)),
    ),
    ("start_up_takes_back_every_foreign_lease_at_once", |s| {
        Box::pin(foreign_leases(s))
    }),
    ("release_spends_no_attempt", |s| Box::pin(release(s))),
    ("retrying_then_failing_keeps_every_attempt_error", |s| {
        Box::pin(attempt_errors(s))
    }),
    (
        "success_activates_the_assignment_and_a_duplicate_is_existing",
        |s| Box::pin(duplicate(s)),
    ),
    ("a_revoke_settles_the_assignment_as_removed", |s| {
        Box::pin(revoke(s))
    }),
    ("the_same_idempotency_key_stores_once", |s| {
        Box::pin(idempotency(s))
    }),
    ("a_group_commit_stores_each_request_or_nothing_of_it", |s| {
        Box::pin(group(s))
    }),
    ("canceling_a_request_cancels_what_has_not_run", |s| {
        Box::pin(cancel_request(s))
    }),
    ("a_running_or_finished_job_cannot_be_canceled", |s| {
        Box::pin(cancel_job(s))
    }),
    ("manual_jobs_open_one_task_per_operation_once", |s| {
        Box::pin(manual_tasks(s))
    }),
    ("a_removal_fires_once_and_its_revoke_is_planned_once", |s| {
        Box::pin(removal(s))
    }),
    (
        "a_grant_between_firing_and_planning_supersedes_the_removal",
        |s| Box::pin(superseded(s)),
    ),
    ("events_are_read_in_order_and_counted", |s| {
        Box::pin(events(s))
    }),
    ("a_group_of_ends_writes_nothing_of_a_lost_one", |s| {
        Box::pin(ends::lost_in_a_group(s))
    }),
    ("an_item_whose_jobs_end_in_one_group_settles_once", |s| {
        Box::pin(ends::one_item_two_jobs_in_a_group(s))
    }),
    ("a_failed_grant_is_removed_where_it_holds", |s| {
        Box::pin(ends::a_failed_grant_is_removed_where_it_holds(s))
    }),
    ("a_delete_keeps_the_account_a_later_job_makes", |s| {
        Box::pin(ends::a_delete_keeps_the_account_a_later_job_makes(s))
    }),
    (
        "a_withdrawn_create_hands_its_account_to_the_next_job",
        |s| {
            Box::pin(ends::a_withdrawn_create_hands_its_account_to_the_next_job(
                s,
            ))
        },
    ),
    ("a_failed_revoke_of_an_item_granted_again_ends", |s| {
        Box::pin(ends::a_failed_revoke_of_an_item_granted_again_ends(s))
    }),
    ("a_retry_racing_a_claim_moves_the_job_once", |s| {
        Box::pin(races::retry_against_claim(s))
    }),
    ("a_cancel_racing_a_claim_moves_the_job_once", |s| {
        Box::pin(races::cancel_against_claim(s))
    }),
    ("two_agents_answering_one_job_close_each_task_once", |s| {
        Box::pin(races::two_answer_one_job(s))
    }),
    ("a_cancel_racing_the_last_answer_ends_the_job_once", |s| {
        Box::pin(races::cancel_against_last_answer(s))
    }),
    ("identities_import_whole_and_accounts_are_found", |s| {
        Box::pin(surface::accounts(s))
    }),
    ("upstream_bookkeeping_records_each_pull_once", |s| {
        Box::pin(surface::upstream(s))
    }),
    (
        "a_trigger_invocation_is_answered_and_called_back_once",
        |s| Box::pin(surface::triggers(s)),
    ),
    ("a_snapshot_verifies_what_it_shows_once", |s| {
        Box::pin(surface::evidence(s))
    }),
    ("an_import_answers_each_row_in_its_place", |s| {
        Box::pin(surface::task_imports(s))
    }),
    ("leases_are_renewed_counted_and_reclaimed", |s| {
        Box::pin(surface::lease_upkeep(s))
    }),
    ("the_leader_lease_and_the_stores_health", |s| {
        Box::pin(surface::leadership_and_admin(s))
    }),
];

/// The cases to run: all, or (to watch one fail against a backend broken on purpose)
/// those whose name contains `PROVD_CONFORMANCE_CASE`.
pub fn selected() -> impl Iterator<Item = &'static (&'static str, Case)> {
    let only = std::env::var("PROVD_CONFORMANCE_CASE").unwrap_or_default();
    CASES
        .iter()
        .filter(move |(name, _)| name.contains(only.as_str()))
}

fn ids(jobs: &[Job]) -> Vec<i64> {
    jobs.iter().map(|j| j.id).collect()
}

async fn one_lane(store: Store) -> Outcome {
    let f = fixture(store)?;
    f.grant("u1", "ap-eng", 1_000).await?;
    f.grant("u1", "ap-remote", 1_001).await?;
    f.grant("u2", "ap-eng", 1_002).await?;
    let first = f.claim("a", 2_000).await?;
    let lanes: Vec<(&str, i64)> = first
        .iter()
        .map(|j| (j.identity_id.as_str(), j.id))
        .collect();
    assert_eq!(
        lanes,
        [("u1", 1), ("u2", 3)],
        "u1's second job waits for its first"
    );
    assert!(f.claim("a", 2_001).await?.is_empty());
    f.succeed(&first[0], "a", 2_002).await?;
    assert_eq!(ids(&f.claim("a", 2_003).await?), [2]);
    Ok(())
}

async fn retried_heads_lane(store: Store) -> Outcome {
    let f = fixture(store)?;
    f.grant("u1", "ap-eng", 1_000).await?;
    f.grant("u1", "ap-remote", 1_001).await?;
    let first = f.first("a", 2_000).await?;
    f.store
        .fail_attempt(first.clone(), "a".into(), 2_001, err(1), None)
        .await?;
    // The operator retries job 1 before job 2 ran: job 1 goes first again.
    f.retry(first.id, 3, 2_002).await?;
    let next = f.claim("a", 2_003).await?;
    assert_eq!(ids(&next), [first.id]);
    f.succeed(&next[0], "a", 2_004).await?;
    assert_eq!(ids(&f.claim("a", 2_005).await?), [2]);
    Ok(())
}

async fn expired_lease(store: Store) -> Outcome {
    let f = fixture(store)?;
    f.grant("u1", "ap-eng", 1_000).await?;
    let job = f.claim_until("dead", 2_000, 3_000).await?.remove(0);
    assert_eq!(job.attempt, 1);
    assert!(
        f.store
            .expire_leases(2_500, None, "me".into())
            .await?
            .is_empty(),
        "not yet expired"
    );
    assert_eq!(
        f.store.expire_leases(3_001, None, "me".into()).await?.len(),
        1
    );
    let again = f.first("alive", 3_002).await?;
    assert_eq!(again.id, job.id);
    assert_eq!(again.attempt, 2, "the first attempt still counts");
    assert_eq!(again.errors.len(), 1);
    assert_eq!(again.errors[0].class, "lease");
    let stale = f.succeed(&job, "dead", 3_003).await;
    assert!(
        matches!(stale, Err(StoreError::LeaseLost { job_id }) if job_id == job.id),
        "stale owner is fenced: {stale:?}"
    );
    f.succeed(&again, "alive", 3_004).await?;
    assert_eq!(f.job(job.id).await?.state, JobState::Succeeded);
    Ok(())
}

async fn foreign_leases(store: Store) -> Outcome {
    let f = fixture(store)?;
    f.grant("u1", "ap-eng", 1_000).await?;
    f.claim_until("dead", 2_000, 999_999).await?;
    assert_eq!(
        f.store
            .expire_leases(2_001, Some("me".into()), "me".into())
            .await?
            .len(),
        1
    );
    assert_eq!(f.claim("me", 2_002).await?.len(), 1);
    Ok(())
}

async fn release(store: Store) -> Outcome {
    let f = fixture(store)?;
    f.grant("u1", "ap-eng", 1_000).await?;
    let job = f.first("a", 2_000).await?;
    f.store.release(job.clone(), "a".into(), 2_001).await?;
    let j = f.job(job.id).await?;
    assert_eq!((j.state, j.attempt), (JobState::Queued, 0));
    Ok(())
}

async fn attempt_errors(store: Store) -> Outcome {
    let f = fixture(store)?;
    let rid = f.grant("u1", "ap-eng", 1_000).await?;
    let job = f.first("a", 2_000).await?;
    f.store
        .fail_attempt(job, "a".into(), 2_001, err(1), Some(5_000))
        .await?;
    assert!(f.claim("a", 4_999).await?.is_empty(), "not due yet");
    assert_eq!(f.store.next_due().await?, Some(5_000));
    let job = f.first("a", 5_000).await?;
    assert_eq!(job.attempt, 2);
    f.store
        .fail_attempt(job.clone(), "a".into(), 5_001, err(2), None)
        .await?;
    let j = f.job(job.id).await?;
    assert_eq!(j.state, JobState::Failed);
    assert_eq!(j.errors.len(), 2);
    assert_eq!(f.state_of(&rid).await?, "PROVISIONING_FAILED");
    assert_eq!(f.assignment_states().await?, ["failed"]);
    f.retry(job.id, 10, 6_000).await?;
    let j = f.job(job.id).await?;
    // A fresh budget of the source's max_attempts, counted from zero; history kept.
    assert_eq!(
        (j.state, j.max_attempts, j.attempt),
        (JobState::Queued, 10, 0)
    );
    assert_eq!(j.errors.len(), 2);
    assert_eq!(f.assignment_states().await?, ["pending"]);
    assert_eq!(f.state_of(&rid).await?, "EXECUTING");
    Ok(())
}

async fn duplicate(store: Store) -> Outcome {
    let f = fixture(store)?;
    let rid = f.grant("u1", "ap-eng", 1_000).await?;
    let job = f.first("a", 2_000).await?;
    f.succeed(&job, "a", 2_001).await?;
    assert_eq!(f.assignment_states().await?, ["active"]);
    assert_eq!(f.state_of(&rid).await?, "REQUEST_COMPLETED");
    let dup = f
        .submit(RequestType::Grant, "u1", "ap-eng", None, None, 3_000)
        .await?;
    let a = dup.accepted();
    assert!(a.job_ids.is_empty());
    assert_eq!(a.response["newRequests"].as_array().map(Vec::len), Some(0));
    assert_eq!(
        a.response["existingRequests"][0]["accessRequestIds"][0],
        rid.as_str()
    );
    Ok(())
}

async fn revoke(store: Store) -> Outcome {
    let f = fixture(store)?;
    f.grant("u1", "ap-eng", 1_000).await?;
    f.grant("u1", "ap-remote", 1_001).await?;
    for t in [2_000, 2_002] {
        let j = f.first("a", t).await?;
        f.succeed(&j, "a", t + 1).await?;
    }
    let r = f
        .submit(RequestType::Revoke, "u1", "ap-eng", None, None, 3_000)
        .await?;
    let job = f.job(r.accepted().job_ids[0]).await?;
    assert_eq!(
        job.ops.len(),
        1,
        "only GIT goes: VPN is still granted by ap-remote"
    );
    assert_eq!(f.assignment_states().await?, ["revoking", "active"]);
    let j = f.first("a", 3_001).await?;
    f.succeed(&j, "a", 3_002).await?;
    assert_eq!(f.assignment_states().await?, ["removed", "active"]);
    Ok(())
}

async fn idempotency(store: Store) -> Outcome {
    let f = fixture(store)?;
    let a = f
        .submit(RequestType::Grant, "u1", "ap-eng", Some("k1"), None, 1_000)
        .await?;
    let b = f
        .submit(RequestType::Grant, "u1", "ap-eng", Some("k1"), None, 1_001)
        .await?;
    assert!(matches!(a, Replay::New(_)));
    assert!(matches!(b, Replay::Replayed(_)));
    assert_eq!(a.accepted().request_id, b.accepted().request_id);
    assert_eq!(a.accepted().response, b.accepted().response);
    assert_eq!(
        f.store
            .by_idempotency_key("k1".into())
            .await?
            .map(|a| a.request_id),
        Some(a.accepted().request_id.clone())
    );
    assert_eq!(f.store.jobs(JobFilter::default()).await?.len(), 1);
    Ok(())
}

/// One transaction for several requests: each decided after those before it, a replayed
/// key answered from inside the group, and a request that fails leaving no trace.
async fn group(store: Store) -> Outcome {
    let f = fixture(store)?;
    let mut broken = f.accept(RequestType::Grant, "u2", "ap-eng", None, None, 1_000);
    // Its identity is missing from the context: writing its jobs fails half-way.
    broken.ctx.identities.clear();
    let batch = vec![
        f.accept(RequestType::Grant, "u1", "ap-eng", Some("k1"), None, 1_000),
        broken,
        f.accept(RequestType::Grant, "u1", "ap-eng", Some("k1"), None, 1_000),
        f.accept(RequestType::Grant, "u1", "ap-eng", None, None, 1_000),
    ];
    let out = f.store.accept_all(batch).await?;
    assert_eq!(out.len(), 4);
    let first = match &out[0] {
        Ok(Replay::New(a)) => a.clone(),
        other => return Err(format!("first: {other:?}").into()),
    };
    assert!(
        matches!(out[1], Err(StoreError::Conflict(_))),
        "{:?}",
        out[1]
    );
    match &out[2] {
        Ok(Replay::Replayed(a)) => assert_eq!(a.request_id, first.request_id),
        other => return Err(format!("replay: {other:?}").into()),
    }
    // Decided after the first: the same access is already being granted, nothing to run.
    match &out[3] {
        Ok(Replay::New(a)) => {
            assert!(a.job_ids.is_empty(), "{a:?}");
            assert!(
                a.response.to_string().contains(&first.request_id),
                "{}",
                a.response
            );
        }
        other => return Err(format!("fourth: {other:?}").into()),
    }
    let rows = f.store.row_counts().await?;
    assert_eq!(rows.get("requests"), Some(&2), "{rows:?}");
    let jobs = f.store.jobs(JobFilter::default()).await?;
    assert!(jobs.iter().all(|j| j.identity_id == "u1"), "{jobs:?}");
    assert_eq!(jobs.len(), first.job_ids.len());
    Ok(())
}

async fn cancel_request(store: Store) -> Outcome {
    let f = fixture(store)?;
    let rid = f.grant("u1", "ap-eng", 1_000).await?;
    assert_eq!(
        f.store
            .cancel_request(
                rid.clone(),
                "not needed".into(),
                Stamp::new("cli:op", 1_500)
            )
            .await?,
        1
    );
    assert_eq!(f.state_of(&rid).await?, "CANCELLED");
    assert_eq!(f.assignment_states().await?, ["canceled"]);
    assert!(f.claim("a", 2_000).await?.is_empty());
    let missing = f
        .store
        .cancel_request("nope".into(), "x".into(), Stamp::new("cli:op", 1))
        .await;
    assert!(
        matches!(missing, Err(StoreError::NotFound(_))),
        "{missing:?}"
    );
    Ok(())
}

async fn cancel_job(store: Store) -> Outcome {
    let f = fixture(store)?;
    f.grant("u1", "ap-eng", 1_000).await?;
    let job = f.first("a", 2_000).await?;
    let running = f
        .store
        .cancel_job(job.id, "x".into(), Stamp::new("cli:op", 2_001))
        .await;
    assert!(
        matches!(running, Err(StoreError::Conflict(_))),
        "{running:?}"
    );
    f.succeed(&job, "a", 2_002).await?;
    let done = f
        .store
        .cancel_job(job.id, "x".into(), Stamp::new("cli:op", 2_003))
        .await;
    assert!(matches!(done, Err(StoreError::Conflict(_))), "{done:?}");
    Ok(())
}

/// `who`'s grant of ap-eng claimed by `a` and turned into open tasks for `o@x`, one per
/// operation: the job's id and its tasks' ids.
async fn manual_job(f: &Fixture, who: &str, now: i64) -> Result<(i64, Vec<i64>), Failure> {
    f.grant(who, "ap-eng", now).await?;
    let job = f.first("a", now + 1).await?;
    let tasks = open_manual(f, &job, now + 2).await?;
    Ok((job.id, tasks))
}

/// A claimed `job` (lease owner `a`) turned into open tasks for `o@x`, one per operation;
/// returns its tasks' ids.
async fn open_manual(f: &Fixture, job: &Job, now: i64) -> Result<Vec<i64>, Failure> {
    let tasks: Vec<NewTask> = job
        .ops
        .iter()
        .enumerate()
        .map(|(i, op)| NewTask {
            op_index: i,
            owner: "o@x".into(),
            identity_name: job.identity_id.clone(),
            operation: op.kind().as_str().into(),
            account: job.identity_id.clone(),
            attribute: String::new(),
            value: String::new(),
            due_at: None,
            renamed_to: None,
        })
        .collect();
    f.store
        .open_tasks(job.clone(), "a".into(), tasks, now)
        .await?;
    let open = f
        .store
        .tasks(TaskFilter {
            open_only: true,
            ..Default::default()
        })
        .await?;
    Ok(open
        .iter()
        .filter(|t| t.identity_id == job.identity_id)
        .map(|t| t.id)
        .collect())
}

async fn manual_tasks(store: Store) -> Outcome {
    let f = fixture(store)?;
    f.grant("u1", "ap-eng", 1_000).await?;
    let job = f.first("a", 2_000).await?;
    let tasks: Vec<NewTask> = job
        .ops
        .iter()
        .enumerate()
        .map(|(i, op)| NewTask {
            op_index: i,
            owner: "o@x".into(),
            identity_name: "U One".into(),
            operation: op.kind().as_str().into(),
            account: "u1".into(),
            attribute: String::new(),
            value: String::new(),
            due_at: None,
            renamed_to: None,
        })
        .collect();
    f.store
        .open_tasks(job.clone(), "a".into(), tasks.clone(), 2_001)
        .await?;
    assert_eq!(f.job(job.id).await?.state, JobState::Manual);
    let rows = f
        .store
        .tasks(TaskFilter {
            open_only: true,
            ..Default::default()
        })
        .await?;
    assert_eq!(rows.len(), 3, "create + two entitlements");
    assert_eq!(rows[0].operation, "CREATE_ACCOUNT");
    assert_eq!(f.store.open_task_count().await?, 3);
    let twice = f
        .store
        .open_tasks(job.clone(), "a".into(), tasks.clone(), 2_002)
        .await;
    assert!(matches!(twice, Err(StoreError::Conflict(_))), "{twice:?}");
    // The owner does the create and fails the first entitlement: the job fails, its last
    // task is canceled with it. Retried, the job sends the failed and canceled tasks
    // again, open; the done one stays done (found by the simulation: the retried job
    // waited in `manual` with nothing open).
    let answer = |task: i64, resolution: &str| TaskAnswer {
        task,
        resolution: resolution.into(),
        resolved_by: "o@x".into(),
        note: String::new(),
    };
    let out = f
        .store
        .resolve_tasks(
            vec![answer(rows[0].id, "DONE"), answer(rows[1].id, "FAILED")],
            2_003,
        )
        .await?;
    assert!(out.iter().all(Result::is_ok), "{out:?}");
    assert_eq!(f.job(job.id).await?.state, JobState::Failed);
    f.retry(job.id, 3, 2_004).await?;
    let again = f.first("a", 2_005).await?;
    f.store.open_tasks(again, "a".into(), tasks, 2_006).await?;
    assert_eq!(f.job(job.id).await?.state, JobState::Manual);
    let open: Vec<i64> = f
        .store
        .tasks(TaskFilter {
            open_only: true,
            ..Default::default()
        })
        .await?
        .iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(open, [rows[1].id, rows[2].id], "sent again: {open:?}");
    // Done this time: the job ends well and the account the tasks named is known.
    let out = f
        .store
        .resolve_tasks(open.iter().map(|t| answer(*t, "DONE")).collect(), 2_007)
        .await?;
    assert!(out.iter().all(Result::is_ok), "{out:?}");
    assert_eq!(f.job(job.id).await?.state, JobState::Succeeded);
    assert_eq!(
        f.store
            .native_id("u1".into(), job.source.clone())
            .await?
            .as_deref(),
        Some("u1")
    );
    Ok(())
}

/// u1 holds `profile` until `remove_at`: granted, and its job succeeded.
async fn granted_until(f: &Fixture, profile: &str, remove_at: i64, now: i64) -> Outcome {
    f.submit(
        RequestType::Grant,
        "u1",
        profile,
        None,
        Some(remove_at),
        now,
    )
    .await?;
    let job = f.first("a", now + 1).await?;
    f.succeed(&job, "a", now + 2).await?;
    Ok(())
}

fn removals(fired: Vec<super::schedule::Fired>) -> Vec<super::schedule::Removal> {
    fired.into_iter().map(crate::schedule::removal).collect()
}

/// Firing and planning removals are the leader's (fenced on PostgreSQL).
async fn lead(f: &Fixture) -> Outcome {
    let epoch = f
        .store
        .lead(super::SINGLETON.into(), "test".into(), 0, i64::MAX)
        .await?;
    assert!(epoch.is_some(), "a free lease is granted");
    Ok(())
}

async fn removal(store: Store) -> Outcome {
    let f = fixture(store)?;
    lead(&f).await?;
    granted_until(&f, "ap-eng", 5_000, 1_000).await?;
    assert_eq!(f.store.next_removal().await?, Some(5_000));
    let held = f.store.holdings(AccessQuery::default()).await?;
    assert_eq!(held.len(), 1);
    assert_eq!(
        (held[0].state.as_str(), held[0].remove_at),
        ("active", Some(5_000))
    );
    let grant = held[0].request_id.clone();
    assert!(f.store.fire(4_999, 10).await?.is_empty(), "not due yet");
    let fired = f.store.fire(5_100, 10).await?;
    assert_eq!((fired.len(), fired[0].lag_ms), (1, 100));
    assert!(f.store.fire(6_000, 10).await?.is_empty(), "never twice");
    assert_eq!(f.assignment_states().await?, ["revoking"]);
    // Phase 2 had not run (an agent died between the phases): the removal waits for it.
    let todo = f.store.unplanned(10).await?;
    assert_eq!(todo.len(), 1);
    let at = crate::clock::from_ms(6_100);
    let planned = f
        .store
        .plan_fired(removals(todo.clone()), f.ctx(), at)
        .await?;
    assert_eq!(planned[0].jobs, 1);
    assert!(f.store.unplanned(10).await?.is_empty());
    let at = crate::clock::from_ms(6_200);
    let again = f.store.plan_fired(removals(todo), f.ctx(), at).await?;
    assert!(again.is_empty(), "planned once");
    let job = f.first("a", 6_300).await?;
    assert_eq!(job.kind, "revoke");
    assert_eq!(job.ops.len(), 2, "both of ap-eng's values go");
    f.succeed(&job, "a", 6_400).await?;
    assert_eq!(f.assignment_states().await?, ["removed"]);
    // What an auditor reads: nothing held, one removal ended 1.4 s after due, its trail.
    assert!(f.store.holdings(AccessQuery::default()).await?.is_empty());
    let gone = f.store.removals(0, 10_000, 10).await?;
    assert_eq!(gone.len(), 1);
    let r = &gone[0];
    assert_eq!(
        (r.due_at, r.fired_at, r.grant_request.as_str()),
        (5_000, 5_100, grant.as_str())
    );
    assert_eq!((r.jobs, r.jobs_ended, r.done_at), (1, 1, Some(6_400)));
    assert!(f.store.removals(5_001, 10_000, 10).await?.is_empty());
    let revoke = r.revoke_request.clone().ok_or("no revoke request")?;
    let q = |kinds: &[&str]| AuditQuery {
        request: Some(revoke.clone()),
        kinds: kinds.iter().map(|k| k.to_string()).collect(),
        limit: 100,
        ..Default::default()
    };
    let trail = f.store.audit(q(&[])).await?;
    let kinds: Vec<&str> = trail.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "request_accepted",
            "job_queued",
            "job_running",
            "job_succeeded"
        ]
    );
    assert_eq!(trail[0].actor.as_deref(), Some("schedule"));
    assert_eq!(trail[2].actor.as_deref(), Some("agent:a"));
    let ended = f.store.audit(q(&["job_succeeded"])).await?;
    assert_eq!(ended.len(), 1);
    let mut later = q(&[]);
    (later.since, later.after) = (Some(6_300), ended[0].id - 1);
    assert_eq!(
        f.store.audit(later).await?.len(),
        1,
        "since and the cursor apply together"
    );
    let theirs = AuditQuery {
        identity: Some("u2".into()),
        limit: 100,
        ..Default::default()
    };
    assert!(f.store.audit(theirs).await?.is_empty());
    Ok(())
}

async fn superseded(store: Store) -> Outcome {
    let f = fixture(store)?;
    lead(&f).await?;
    granted_until(&f, "ap-eng", 5_000, 1_000).await?;
    f.store.fire(5_000, 10).await?;
    // Granted again before the revoke was planned: it must not be taken away.
    f.grant("u1", "ap-eng", 5_001).await?;
    let todo = f.store.unplanned(10).await?;
    let at = crate::clock::from_ms(5_002);
    let planned = f.store.plan_fired(removals(todo), f.ctx(), at).await?;
    assert_eq!(planned[0].request_id, None, "superseded");
    assert_eq!(f.assignment_states().await?, ["removed", "pending"]);
    let jobs = f.store.jobs(JobFilter::default()).await?;
    assert!(
        jobs.iter().all(|j| j.kind == "grant"),
        "no revoke job was written"
    );
    Ok(())
}

async fn events(store: Store) -> Outcome {
    let f = fixture(store)?;
    assert_eq!(f.store.last_event_id().await?, 0);
    f.grant("u1", "ap-eng", 1_000).await?;
    let all = f.store.events_after(0, 100).await?;
    let kinds: Vec<&str> = all.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["request_accepted", "job_queued"]);
    assert!(all.windows(2).all(|w| w[0].id < w[1].id), "in id order");
    let last = f.store.last_event_id().await?;
    assert_eq!(last, all[1].id);
    let counts = f.store.row_counts().await?;
    assert_eq!(counts.get("events"), Some(&2));
    assert_eq!(counts.get("jobs"), Some(&1));
    let (found, known) = f.store.schema_version().await?;
    assert_eq!(found, known);
    Ok(())
}
