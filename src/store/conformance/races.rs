//! Two moves on one row at once: the operator's retry or cancel against a claim, a cancel
//! against the answer that ends a manual job, two agents answering one job's tasks. On
//! PostgreSQL the calls run on separate pooled connections and interleave for real; on
//! SQLite they serialize. Whatever the interleaving, each row moves once and a call that
//! lost says so and writes nothing: that is what these check. Several rounds each, since
//! a race is not lost every time.

use super::fixture::{Fixture, err};
use super::{Failure, Outcome};
use crate::model::RequestType;
use crate::store::jobs::{Job, JobState, Retry};
use crate::store::tasks::Resolved;
use crate::store::{Stamp, Store, StoreError};

const ROUNDS: usize = 6;
/// Jobs a round: one for each of as many people (a grant held already makes no job, so
/// each round has people of its own).
const PEOPLE: usize = 6;

fn who(round: i64, i: usize) -> String {
    format!("r{round}u{i}")
}

fn many(store: Store) -> Result<Fixture, Failure> {
    let catalog = r#"
        [[entitlement]]
        id = "vpn"
        source = "flat"
        attribute = "groups"
        value = "VPN"
        [[access_profile]]
        id = "ap-vpn"
        entitlements = ["vpn"]
        "#;
    let people: Vec<String> = (0..ROUNDS as i64)
        .flat_map(|r| (0..PEOPLE).map(move |i| who(r, i)))
        .collect();
    let people: Vec<&str> = people.iter().map(String::as_str).collect();
    Fixture::new(store, catalog, &["flat"], &people)
}

/// The events of `kind` about `job`.
/// One job for each of the round's people, granted at `now`.
async fn grant_all(f: &Fixture, round: i64, now: i64) -> Outcome {
    grant_all_of(f, round, "ap-vpn", now).await
}

/// Every job due at `now`, more than one claim's worth.
async fn claim_all(f: &Fixture, owner: &str, now: i64) -> Result<Vec<Job>, StoreError> {
    let claim = crate::store::Claim {
        owner: owner.into(),
        limit: 100,
        now,
        lease_until: now + 600_000,
        ..Default::default()
    };
    f.store.claim(claim).await
}

async fn grant_all_of(f: &Fixture, round: i64, profile: &str, now: i64) -> Outcome {
    for i in 0..PEOPLE {
        f.grant(&who(round, i), profile, now + i as i64).await?;
    }
    Ok(())
}

/// A retry and a claim of the same retrying jobs at once: a retry that reports success
/// moved the job itself (it is still retrying, due now, in its answer) and left its
/// event; one that lost says so and left none.
pub(super) async fn retry_against_claim(store: Store) -> Outcome {
    let f = many(store)?;
    for round in 0..ROUNDS as i64 {
        let t = 1_000_000 * (round + 1);
        grant_all(&f, round, t).await?;
        let jobs = f.claim("a", t + 100).await?;
        assert_eq!(jobs.len(), PEOPLE);
        for j in &jobs {
            f.store
                .fail_attempt(j.clone(), "a".into(), t + 200, err(1), Some(t + 500))
                .await?;
        }
        let now = t + 1_000;
        let retries = jobs.iter().map(|j| {
            f.store.retry_job(
                j.id,
                Retry {
                    max_attempts: 3,
                    identity: None,
                },
                Stamp::new("cli:op", now),
            )
        });
        let (retried, claimed) = tokio::join!(
            futures_util::future::join_all(retries),
            f.claim_until("b", now, now + 600_000)
        );
        let claimed = claimed?;
        for (j, r) in jobs.iter().zip(retried) {
            let events = f.events_of(j.id, "job_retry_requested").await?;
            match r {
                Ok(answer) => {
                    assert_eq!(
                        (answer.state, answer.next_attempt_at),
                        (JobState::Retrying, Some(now)),
                        "job {}: a retry that succeeded answers the job as it left it",
                        j.id
                    );
                    assert_eq!(events, 1, "job {}", j.id);
                }
                Err(StoreError::Conflict(_)) => {
                    assert_eq!(events, 0, "job {}: a lost retry writes nothing", j.id);
                    assert!(claimed.iter().any(|c| c.id == j.id), "lost to a claim");
                }
                Err(e) => return Err(e.into()),
            }
        }
        // Whatever happened, every job now runs under `b`, once.
        let mut left = f.claim_until("b", now + 1, now + 600_000).await?;
        left.extend(claimed);
        let mut ids: Vec<i64> = left.iter().map(|j| j.id).collect();
        ids.sort_unstable();
        let mut want: Vec<i64> = jobs.iter().map(|j| j.id).collect();
        want.sort_unstable();
        assert_eq!(ids, want, "each job claimed once");
        for j in &left {
            f.succeed(j, "b", now + 2_000).await?;
        }
    }
    Ok(())
}

/// A cancel and a claim of the same queued jobs at once: each job is either canceled
/// (and never claimed) or claimed (and the cancel refused), never both.
pub(super) async fn cancel_against_claim(store: Store) -> Outcome {
    let f = many(store)?;
    for round in 0..ROUNDS as i64 {
        let t = 1_000_000 * (round + 1);
        grant_all(&f, round, t).await?;
        let jobs = f
            .store
            .jobs(crate::store::jobs::JobFilter {
                state: Some(JobState::Queued),
                limit: Some(100),
                ..Default::default()
            })
            .await?;
        assert_eq!(jobs.len(), PEOPLE);
        let now = t + 1_000;
        let cancels = jobs.iter().map(|j| {
            f.store
                .cancel_job(j.id, "not needed".into(), Stamp::new("cli:op", now))
        });
        let (canceled, claimed) =
            tokio::join!(futures_util::future::join_all(cancels), f.claim("a", now));
        let claimed = claimed?;
        for (j, c) in jobs.iter().zip(canceled) {
            let was_claimed = claimed.iter().any(|c| c.id == j.id);
            let events = f.events_of(j.id, "job_canceled").await?;
            match c {
                Ok(_) => {
                    assert!(!was_claimed, "job {}: canceled and claimed", j.id);
                    assert_eq!(f.job(j.id).await?.state, JobState::Canceled);
                    assert_eq!(events, 1);
                }
                Err(StoreError::Conflict(_)) => {
                    assert!(was_claimed, "job {}: refused without a claim", j.id);
                    assert_eq!(events, 0, "job {}: a lost cancel writes nothing", j.id);
                }
                Err(e) => return Err(e.into()),
            }
        }
        for j in &claimed {
            f.succeed(j, "a", now + 2_000).await?;
        }
    }
    Ok(())
}

/// A job for each of the round's people waiting on its tasks (one per operation); returns the jobs
/// and their open tasks' ids.
async fn manual_jobs(f: &Fixture, round: i64, t: i64) -> Result<Vec<(Job, Vec<i64>)>, Failure> {
    grant_all(f, round, t).await?;
    let jobs = f.claim("a", t + 100).await?;
    let mut out = Vec::new();
    for job in jobs {
        let ids = super::open_manual(f, &job, t + 200).await?;
        out.push((job, ids));
    }
    Ok(out)
}

/// Two agents (an import and the owners' page, say) answer every task of the same jobs
/// at once: each task closes once, and each job, its last task answered, succeeds once.
pub(super) async fn two_answer_one_job(store: Store) -> Outcome {
    let f = many(store)?;
    for round in 0..ROUNDS as i64 {
        let t = 1_000_000 * (round + 1);
        let jobs = manual_jobs(&f, round, t).await?;
        let answers = |who: &'static str| {
            let calls = jobs.iter().flat_map(|(_, tasks)| tasks.iter()).map(|task| {
                f.store
                    .resolve_task(*task, "DONE".into(), who.into(), String::new(), t + 500)
            });
            futures_util::future::join_all(calls)
        };
        let (a, b) = tokio::join!(answers("alice"), answers("bob"));
        for (x, y) in a.into_iter().zip(b) {
            let applied = [&x, &y]
                .iter()
                .filter(|r| matches!(r, Ok(Resolved::Applied { .. })))
                .count();
            assert_eq!(
                applied, 1,
                "one answer applies, the other finds it so: {x:?} {y:?}"
            );
            for r in [x, y] {
                r?;
            }
        }
        for (job, tasks) in &jobs {
            assert_eq!(
                f.job(job.id).await?.state,
                JobState::Succeeded,
                "job {}",
                job.id
            );
            assert_eq!(f.events_of(job.id, "task_resolved").await?, tasks.len());
            assert_eq!(f.events_of(job.id, "job_succeeded").await?, 1);
        }
    }
    Ok(())
}

/// A cancel and the answers that end the same manual jobs at once: each job ends once,
/// canceled or succeeded, and its events say which.
pub(super) async fn cancel_against_last_answer(store: Store) -> Outcome {
    let f = many(store)?;
    for round in 0..ROUNDS as i64 {
        let t = 1_000_000 * (round + 1);
        let jobs = manual_jobs(&f, round, t).await?;
        let answers = jobs.iter().flat_map(|(_, tasks)| tasks.iter()).map(|task| {
            f.store
                .resolve_task(*task, "DONE".into(), "o@x".into(), String::new(), t + 500)
        });
        let cancels = jobs.iter().map(|(job, _)| {
            f.store
                .cancel_job(job.id, "withdrawn".into(), Stamp::new("cli:op", t + 500))
        });
        let (answered, canceled) = tokio::join!(
            futures_util::future::join_all(answers),
            futures_util::future::join_all(cancels)
        );
        for r in answered {
            match r {
                Ok(_) | Err(StoreError::Conflict(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        for ((job, _), c) in jobs.iter().zip(canceled) {
            let state = f.job(job.id).await?.state;
            let ended = f.events_of(job.id, "job_canceled").await?
                + f.events_of(job.id, "job_succeeded").await?;
            assert_eq!(ended, 1, "job {} ended once ({state})", job.id);
            match c {
                Ok(_) => assert_eq!(state, JobState::Canceled, "job {}", job.id),
                Err(StoreError::Conflict(_)) => {
                    assert_eq!(state, JobState::Succeeded, "job {}", job.id)
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}

/// Issue 33 (simulation, PostgreSQL seed 92): a role's revoke made two jobs; one failed,
/// and the operator retried it while the other succeeded. Settled at once, the success
/// read the failure and put the access back (`active`) while the retry looked for an
/// `active` access to put in flight again and found none; the retried job's success then
/// had nothing to remove, and provd said the person held what both targets had taken
/// away. Whatever the interleaving, the access ends removed.
pub(super) async fn retry_against_a_sibling_end(store: Store) -> Outcome {
    let people: Vec<String> = (0..ROUNDS as i64)
        .flat_map(|r| (0..PEOPLE).map(move |i| who(r, i)))
        .collect();
    let people: Vec<&str> = people.iter().map(String::as_str).collect();
    let f = Fixture::new(store, super::ends::TWO_SOURCES, &["flat", "flat2"], &people)?;
    for round in 0..ROUNDS as i64 {
        let t = 1_000_000 * (round + 1);
        grant_all_of(&f, round, "ap-two", t).await?;
        for j in claim_all(&f, "a", t + 100).await? {
            f.succeed(&j, "a", t + 101).await?;
        }
        for i in 0..PEOPLE {
            let who = who(round, i);
            f.submit(RequestType::Revoke, &who, "ap-two", None, None, t + 200)
                .await?;
        }
        let jobs = claim_all(&f, "a", t + 300).await?;
        assert_eq!(jobs.len(), 2 * PEOPLE, "two revoke jobs each: {jobs:?}");
        // Each person's flat2 job fails for good while the flat one runs: nothing settles.
        let (failing, ok): (Vec<Job>, Vec<Job>) =
            jobs.into_iter().partition(|j| j.source == "flat2");
        for j in &failing {
            f.store
                .fail_attempt(j.clone(), "a".into(), t + 301, err(1), None)
                .await?;
        }
        let ends = ok.iter().map(|j| f.succeed(j, "a", t + 400));
        let retries = failing.iter().map(|j| f.retry(j.id, 3, t + 400));
        let (ended, retried) = tokio::join!(
            futures_util::future::join_all(ends),
            futures_util::future::join_all(retries)
        );
        ended
            .into_iter()
            .chain(retried.into_iter().map(|r| r.map(|_| ())))
            .try_for_each(|r| r)?;
        for j in claim_all(&f, "b", t + 500).await? {
            f.succeed(&j, "b", t + 501).await?;
        }
        for i in 0..PEOPLE {
            let who = who(round, i);
            let held = f.store.assignments(Some(who.clone())).await?;
            let held: Vec<String> = held.iter().map(|a| a.state.to_string()).collect();
            assert_eq!(held, ["removed"], "round {round}: {who}'s access");
        }
    }
    Ok(())
}
