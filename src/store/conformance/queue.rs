//! Cases about the job queue: lanes, leases, attempts, duplicates, idempotency, groups
//! and cancels.

use super::Outcome;
use super::fixture::{err, fixture};
use crate::model::RequestType;
use crate::store::jobs::{Job, JobFilter, JobState};
use crate::store::status::StatusQuery;
use crate::store::{Replay, Stamp, Store, StoreError};

fn ids(jobs: &[Job]) -> Vec<i64> {
    jobs.iter().map(|j| j.id).collect()
}

pub(super) async fn one_lane(store: Store) -> Outcome {
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

pub(super) async fn retried_heads_lane(store: Store) -> Outcome {
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

pub(super) async fn expired_lease(store: Store) -> Outcome {
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

pub(super) async fn foreign_leases(store: Store) -> Outcome {
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

pub(super) async fn release(store: Store) -> Outcome {
    let f = fixture(store)?;
    f.grant("u1", "ap-eng", 1_000).await?;
    let job = f.first("a", 2_000).await?;
    f.store.release(job.clone(), "a".into(), 2_001).await?;
    let j = f.job(job.id).await?;
    assert_eq!((j.state, j.attempt), (JobState::Queued, 0));
    Ok(())
}

pub(super) async fn attempt_errors(store: Store) -> Outcome {
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

pub(super) async fn duplicate(store: Store) -> Outcome {
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

pub(super) async fn revoke(store: Store) -> Outcome {
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

pub(super) async fn idempotency(store: Store) -> Outcome {
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
pub(super) async fn group(store: Store) -> Outcome {
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

pub(super) async fn cancel_request(store: Store) -> Outcome {
    let f = fixture(store)?;
    let rid = f.grant("u1", "ap-eng", 1_000).await?;
    let row = |rid: String| {
        let q = StatusQuery {
            request_id: Some(rid),
            limit: 10,
            ..Default::default()
        };
        let store = f.store.clone();
        async move { Ok::<_, StoreError>(store.status(q).await?.remove(0)) }
    };
    let before = row(rid.clone()).await?;
    assert!(before.cancelable, "a queued job can be stopped");
    assert_eq!(before.cancel, None);
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
    let after = row(rid.clone()).await?;
    assert!(!after.cancelable);
    assert_eq!(
        after.cancel,
        Some(("not needed".to_string(), "cli:op".to_string()))
    );
    // Issue 35: nothing is left to stop, so a second cancel is refused and changes nothing.
    let again = f
        .store
        .cancel_request(rid.clone(), "again".into(), Stamp::new("cli:other", 1_600))
        .await;
    assert!(matches!(again, Err(StoreError::Conflict(_))), "{again:?}");
    assert_eq!(row(rid.clone()).await?.cancel, after.cancel);
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

pub(super) async fn cancel_job(store: Store) -> Outcome {
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
