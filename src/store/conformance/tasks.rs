//! Cases about manual tasks, scheduled removals and the events log.

use super::fixture::{Fixture, fixture};
use super::{Failure, Outcome};
use crate::model::RequestType;
use crate::store::audit::{AccessQuery, AuditQuery};
use crate::store::jobs::{Job, JobFilter, JobState};
use crate::store::tasks::{NewTask, TaskAnswer, TaskFilter};
use crate::store::{Store, StoreError};

/// `who`'s grant of ap-eng claimed by `a` and turned into open tasks for `o@x`, one per
/// operation: the job's id and its tasks' ids.
pub(super) async fn manual_job(
    f: &Fixture,
    who: &str,
    now: i64,
) -> Result<(i64, Vec<i64>), Failure> {
    f.grant(who, "ap-eng", now).await?;
    let job = f.first("a", now + 1).await?;
    let tasks = open_manual(f, &job, now + 2).await?;
    Ok((job.id, tasks))
}

/// A claimed `job` (lease owner `a`) turned into open tasks for `o@x`, one per operation;
/// returns its tasks' ids.
pub(super) async fn open_manual(f: &Fixture, job: &Job, now: i64) -> Result<Vec<i64>, Failure> {
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

pub(super) async fn manual_tasks(store: Store) -> Outcome {
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

pub(super) fn removals(
    fired: Vec<crate::store::schedule::Fired>,
) -> Vec<crate::store::schedule::Removal> {
    fired.into_iter().map(crate::schedule::removal).collect()
}

/// Firing and planning removals are the leader's (fenced on PostgreSQL).
pub(super) async fn lead(f: &Fixture) -> Outcome {
    let epoch = f
        .store
        .lead(crate::store::SINGLETON.into(), "test".into(), 0, i64::MAX)
        .await?;
    assert!(epoch.is_some(), "a free lease is granted");
    Ok(())
}

pub(super) async fn removal(store: Store) -> Outcome {
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

pub(super) async fn superseded(store: Store) -> Outcome {
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

pub(super) async fn events(store: Store) -> Outcome {
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
