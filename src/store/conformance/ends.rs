//! Cases about a group of ends written together (the dispatcher's group commit): each
//! end is written or, its lease lost, nothing of it is; an item whose jobs end in the
//! same group settles once, from all of their states.

use super::{Failure, Fixture, Outcome, err};
use crate::config::ItemType;
use crate::model::RequestType;
use crate::store::jobs::{Ending, Finish, Job, JobState, OpRecord};
use crate::store::{Store, StoreError};

/// vpn on `flat`, wiki on `flat2`; `ap-eng` holds vpn, `ap-two` both (one item, a job on
/// each source).
pub(super) const TWO_SOURCES: &str = r#"
        [[entitlement]]
        id = "vpn"
        source = "flat"
        attribute = "groups"
        value = "VPN"
        [[entitlement]]
        id = "wiki"
        source = "flat2"
        attribute = "groups"
        value = "WIKI"
        [[access_profile]]
        id = "ap-eng"
        entitlements = ["vpn"]
        [[access_profile]]
        id = "ap-two"
        entitlements = ["vpn", "wiki"]
        "#;

fn two_sources(store: Store) -> Result<Fixture, Failure> {
    Fixture::new(store, TWO_SOURCES, &["flat", "flat2"], &["u1", "u2", "u3"])
}

fn end(job: &Job, owner: &str, now: i64, ending: Ending, native_id: Option<&str>) -> Finish {
    Finish {
        job: job.clone(),
        owner: owner.into(),
        now,
        ops: native_id
            .map(|n| OpRecord {
                index: 0,
                outcome: "applied",
                native_id: Some(n.into()),
                account: None,
                detail: None,
                disabled: None,
            })
            .into_iter()
            .collect(),
        ending,
    }
}

/// The states of `who`'s assignments.
async fn states(f: &Fixture, who: &str) -> Result<Vec<String>, StoreError> {
    let all = f.store.assignments(Some(who.into())).await?;
    assert!(all.iter().all(|a| a.ty == ItemType::AccessProfile));
    Ok(all.into_iter().map(|a| a.state.to_string()).collect())
}

fn job_of<'a>(jobs: &'a [Job], who: &str) -> Result<&'a Job, String> {
    jobs.iter()
        .find(|j| j.identity_id == who)
        .ok_or_else(|| format!("no job of {who} in {jobs:?}"))
}

/// In one group: u1's end (with the account it created), u2's end under an owner that
/// does not hold its lease, and u1's job a second time. Only the first is written.
pub(super) async fn lost_in_a_group(store: Store) -> Outcome {
    let f = two_sources(store)?;
    f.grant("u1", "ap-eng", 1_000).await?;
    f.grant("u2", "ap-eng", 1_000).await?;
    let jobs = f.claim("a", 2_000).await?;
    assert_eq!(jobs.len(), 2, "{jobs:?}");
    let (j1, j2) = (job_of(&jobs, "u1")?, job_of(&jobs, "u2")?);
    let out = f
        .store
        .finish_all(vec![
            end(j1, "a", 2_001, Ending::Succeeded, Some("uid=u1")),
            end(j2, "b", 2_001, Ending::Succeeded, Some("uid=u2")),
            end(j1, "a", 2_002, Ending::Succeeded, Some("uid=u1-again")),
        ])
        .await?;
    assert!(out[0].is_ok(), "{out:?}");
    assert!(
        matches!(out[1], Err(StoreError::LeaseLost { job_id }) if job_id == j2.id),
        "{out:?}"
    );
    assert!(
        matches!(out[2], Err(StoreError::LeaseLost { job_id }) if job_id == j1.id),
        "{out:?}"
    );
    assert_eq!(f.job(j1.id).await?.state, JobState::Succeeded);
    let still = f.job(j2.id).await?;
    assert_eq!(still.state, JobState::Running);
    assert_eq!(still.lease_owner.as_deref(), Some("a"));
    let native = |who: &str| f.store.native_id(who.into(), "flat".into());
    assert_eq!(native("u1").await?.as_deref(), Some("uid=u1"));
    assert_eq!(
        native("u2").await?,
        None,
        "nothing of a lost end is written"
    );
    let events = f.store.events_after(0, 1_000).await?;
    let of = |id: i64, kind: &str| {
        events
            .iter()
            .filter(|e| e.job_id == Some(id) && e.kind == kind)
            .count()
    };
    assert_eq!(of(j1.id, "job_succeeded"), 1);
    assert_eq!(of(j1.id, "connector_call"), 1);
    assert_eq!(of(j2.id, "job_succeeded") + of(j2.id, "connector_call"), 0);
    assert_eq!(states(&f, "u1").await?, ["active"]);
    assert_eq!(states(&f, "u2").await?, ["pending"]);
    // The holder ends it later: written then.
    f.succeed(&still, "a", 2_003).await?;
    assert_eq!(states(&f, "u2").await?, ["active"]);
    Ok(())
}

/// An item with a job on each of two sources, both ending in one group: u1's both
/// succeed (active), u2's one fails (the grant failed), u3's ends apart (pending after
/// the first, active after the second).
pub(super) async fn one_item_two_jobs_in_a_group(store: Store) -> Outcome {
    let f = two_sources(store)?;
    for who in ["u1", "u2", "u3"] {
        f.grant(who, "ap-two", 1_000).await?;
    }
    let jobs = f.claim("a", 2_000).await?;
    assert_eq!(jobs.len(), 6, "{jobs:?}");
    let failed = || Ending::Failed {
        error: err(1),
        reason: "refused".into(),
    };
    let mut group = Vec::new();
    let mut later = Vec::new();
    for j in &jobs {
        match (j.identity_id.as_str(), j.source.as_str()) {
            ("u2", "flat2") => group.push(end(j, "a", 2_001, failed(), None)),
            ("u3", "flat2") => later.push(j.clone()),
            _ => group.push(end(j, "a", 2_001, Ending::Succeeded, None)),
        }
    }
    let out = f.store.finish_all(group).await?;
    assert!(out.iter().all(|r| r.is_ok()), "{out:?}");
    assert_eq!(states(&f, "u1").await?, ["active"]);
    assert_eq!(states(&f, "u2").await?, ["failed"]);
    assert_eq!(
        states(&f, "u3").await?,
        ["pending"],
        "one of its jobs still runs"
    );
    for j in &later {
        f.succeed(j, "a", 2_002).await?;
    }
    assert_eq!(states(&f, "u3").await?, ["active"]);
    // Granted again: decided against what the group wrote (u1 holds it; u2 holds its
    // `flat` half, so only `flat2` is asked again, and the new grant supersedes the
    // failed one).
    for (who, jobs) in [("u1", 0), ("u2", 1)] {
        let r = f
            .submit(RequestType::Grant, who, "ap-two", None, None, 3_000)
            .await?;
        assert_eq!(r.accepted().job_ids.len(), jobs, "{who}");
    }
    assert_eq!(states(&f, "u2").await?, ["removed", "pending"]);
    Ok(())
}

/// Issue 33: a grant that failed on one source holds what it gave on the other. Its
/// removeDate still fires, and the removal takes only that half; a revoke of another item
/// before it does not take what it still wants.
pub(super) async fn a_failed_grant_is_removed_where_it_holds(store: Store) -> Outcome {
    let f = two_sources(store)?;
    super::lead(&f).await?;
    f.submit(RequestType::Grant, "u1", "ap-two", None, Some(9_000), 1_000)
        .await?;
    f.grant("u1", "ap-eng", 1_000).await?;
    // ap-eng's job waits behind ap-two's in u1's `flat` lane.
    for at in [2_000, 2_100] {
        for j in f.claim("a", at).await? {
            let ending = match j.source.as_str() {
                "flat2" => Ending::Failed {
                    error: err(1),
                    reason: "refused".into(),
                },
                _ => Ending::Succeeded,
            };
            f.store
                .finish_all(vec![end(&j, "a", at + 1, ending, None)])
                .await?;
        }
    }
    assert_eq!(states(&f, "u1").await?, ["failed", "active"]);
    // ap-eng goes; ap-two's `flat` half still wants VPN.
    let r = f
        .submit(RequestType::Revoke, "u1", "ap-eng", None, None, 3_000)
        .await?;
    assert_eq!(r.accepted().job_ids.len(), 0, "VPN stays");
    assert_eq!(f.store.next_removal().await?, Some(9_000));
    let fired = f.store.fire(9_000, 10).await?;
    assert_eq!(fired.len(), 1, "a failed grant's removeDate fires");
    let at = crate::clock::from_ms(9_100);
    let planned = f
        .store
        .plan_fired(super::removals(fired), f.ctx(), at)
        .await?;
    assert_eq!(planned[0].jobs, 1, "only where it holds: {planned:?}");
    let job = f.first("a", 9_200).await?;
    assert_eq!((job.source.as_str(), job.kind.as_str()), ("flat", "revoke"));
    f.succeed(&job, "a", 9_300).await?;
    assert_eq!(states(&f, "u1").await?, ["removed", "removed"]);
    Ok(())
}

/// Issue 33 (simulation): a delete that waited in the lane while a new grant was accepted
/// does not forget the account that grant is making.
pub(super) async fn a_delete_keeps_the_account_a_later_job_makes(store: Store) -> Outcome {
    use crate::store::Stamp;
    use provd_connector_core::Operation;
    let f = two_sources(store)?;
    let first = f
        .submit(RequestType::Grant, "u1", "ap-eng", None, None, 1_000)
        .await?;
    let job = first.accepted().job_ids[0];
    f.store
        .cancel_job(job, "withdrawn".into(), Stamp::new("cli:op", 1_100))
        .await?;
    let mut delete = f.accept(RequestType::Revoke, "u1", "ap-eng", None, None, 1_200);
    delete.request.items.clear();
    delete.request.repairs = vec![("flat".into(), Operation::DeleteAccount)];
    f.store.accept(delete).await?;
    f.grant("u1", "ap-eng", 1_300).await?;
    let b = f.first("a", 2_000).await?;
    assert_eq!(b.ops, [Operation::DeleteAccount]);
    f.succeed(&b, "a", 2_001).await?;
    let c = f.first("a", 2_100).await?;
    assert_eq!(c.ops[0], Operation::CreateAccount);
    f.succeed(&c, "a", 2_101).await?;
    let held = f.store.account_sources(vec!["u1".into()]).await?;
    assert!(
        held.get("u1").is_some_and(|s| s.contains("flat")),
        "the new account is known: {held:?}"
    );
    Ok(())
}

/// Issue 33 (simulation seed 47): a grant queued behind one whose create was withdrawn
/// was planned without a create; it now makes the account first (an owner was asked to
/// add to an account that did not exist), and its success makes the account known.
pub(super) async fn a_withdrawn_create_hands_its_account_to_the_next_job(store: Store) -> Outcome {
    use crate::store::Stamp;
    use provd_connector_core::Operation;
    let catalog = r#"
        [[entitlement]]
        id = "vpn"
        source = "flat"
        attribute = "groups"
        value = "VPN"
        [[entitlement]]
        id = "git"
        source = "flat"
        attribute = "groups"
        value = "GIT"
        [[access_profile]]
        id = "ap-vpn"
        entitlements = ["vpn"]
        [[access_profile]]
        id = "ap-git"
        entitlements = ["git"]
        "#;
    let f = Fixture::new(store, catalog, &["flat"], &["u1"])?;
    let first = f
        .submit(RequestType::Grant, "u1", "ap-vpn", None, None, 1_000)
        .await?;
    let second = f
        .submit(RequestType::Grant, "u1", "ap-git", None, None, 1_100)
        .await?;
    let (a, b) = (first.accepted().job_ids[0], second.accepted().job_ids[0]);
    assert!(!f.job(b).await?.ops.contains(&Operation::CreateAccount));
    f.store
        .cancel_job(a, "withdrawn".into(), Stamp::new("cli:op", 1_200))
        .await?;
    let job = f.first("a", 2_000).await?;
    assert_eq!(job.id, b);
    assert_eq!(
        job.ops.first(),
        Some(&Operation::CreateAccount),
        "the heir creates: {:?}",
        job.ops
    );
    assert_eq!(job.ops.len(), 2, "{:?}", job.ops);
    assert_eq!(
        f.events_of(b, "job_replanned").await?,
        1,
        "the trail says why"
    );
    f.succeed(&job, "a", 2_001).await?;
    let held = f.store.account_sources(vec!["u1".into()]).await?;
    assert!(
        held.get("u1").is_some_and(|s| s.contains("flat")),
        "the account the second grant used is known: {held:?}"
    );
    Ok(())
}

/// Issue 33 (simulation, PostgreSQL seed 32): a leaver's disable was queued behind the
/// grant that was to make the account, and the grant failed. The disable has no account
/// to act on and is canceled (sent out, it asked for a disable nobody could verify); the
/// grant, retried, would make an enabled account with access for a leaver, so the retry
/// is refused as moot.
pub(super) async fn a_disable_behind_a_failed_create_is_canceled_and_the_create_not_retried(
    store: Store,
) -> Outcome {
    use provd_connector_core::Operation;
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
    let f = Fixture::new(store, catalog, &["flat"], &["u1"])?;
    let grant = f
        .submit(RequestType::Grant, "u1", "ap-vpn", None, None, 1_000)
        .await?;
    let mut leave = f.accept(RequestType::Revoke, "u1", "ap-vpn", None, None, 1_100);
    leave.request.items.clear();
    leave.request.account_ops = vec![("flat".into(), Operation::DisableAccount)];
    let leave = f.store.accept(leave).await?;
    let (a, b) = (grant.accepted().job_ids[0], leave.accepted().job_ids[0]);
    assert_eq!(f.job(b).await?.ops, [Operation::DisableAccount]);
    let job = f.first("a", 2_000).await?;
    assert_eq!(job.id, a);
    let failed = Ending::Failed {
        error: err(1),
        reason: "refused".into(),
    };
    let out = f
        .store
        .finish_all(vec![end(&job, "a", 2_001, failed, None)])
        .await?;
    assert!(out.iter().all(|r| r.is_ok()), "{out:?}");
    assert_eq!(
        f.job(b).await?.state,
        JobState::Canceled,
        "the orphaned disable"
    );
    assert!(f.claim("a", 3_000).await?.is_empty(), "nothing goes out");
    match f.retry(a, 3, 3_100).await {
        Err(StoreError::Conflict(m)) if m.contains(&format!("job {b} was to set")) => {}
        other => return Err(format!("the create was retried: {other:?}").into()),
    }
    assert_eq!(f.job(a).await?.state, JobState::Failed);
    Ok(())
}

/// Issue 33 (simulation seed 72): a revoke that fails after its item was granted again
/// ends (the newer grant holds the access) instead of breaking the unique live grant.
pub(super) async fn a_failed_revoke_of_an_item_granted_again_ends(store: Store) -> Outcome {
    let f = two_sources(store)?;
    f.grant("u1", "ap-eng", 1_000).await?;
    let g = f.first("a", 1_100).await?;
    f.succeed(&g, "a", 1_101).await?;
    f.submit(RequestType::Revoke, "u1", "ap-eng", None, None, 1_200)
        .await?;
    f.grant("u1", "ap-eng", 1_300).await?;
    assert_eq!(states(&f, "u1").await?, ["revoking", "pending"]);
    let revoke = f.first("a", 2_000).await?;
    assert_eq!(revoke.kind, "revoke");
    let failed = Ending::Failed {
        error: err(1),
        reason: "refused".into(),
    };
    let out = f
        .store
        .finish_all(vec![end(&revoke, "a", 2_001, failed, None)])
        .await?;
    assert!(out.iter().all(|r| r.is_ok()), "{out:?}");
    assert_eq!(states(&f, "u1").await?, ["removed", "pending"]);
    Ok(())
}

/// PostgreSQL simulation seed 157: a profile's removeDate removal fails after another
/// item asked for one of its values again in the same lane. The removal stays owed
/// (`revoking`, its failed job the operator's to retry; it used to go back to `active`,
/// fire again at once and be swallowed as a replay of the first removal's request). Both
/// stores hand the holdings stage the later jobs of that lane, so that the value is the
/// later grant's, while the value nothing asked for again is still being removed.
pub(super) async fn a_failed_removal_shows_what_the_lane_did_after_it(store: Store) -> Outcome {
    let f = super::fixture::fixture(store)?;
    super::tasks::lead(&f).await?;
    f.submit(RequestType::Grant, "u1", "ap-eng", None, Some(5_000), 1_000)
        .await?;
    let g = f.first("a", 1_100).await?;
    f.succeed(&g, "a", 1_101).await?;
    assert_eq!(f.store.fire(5_100, 10).await?.len(), 1);
    let todo = f.store.unplanned(10).await?;
    let at = crate::clock::from_ms(5_200);
    f.store
        .plan_fired(super::tasks::removals(todo), f.ctx(), at)
        .await?;
    f.grant("u1", "ap-remote", 5_300).await?;
    let revoke = f.first("a", 6_000).await?;
    assert_eq!(revoke.kind, "revoke");
    let failed = Ending::Failed {
        error: err(1),
        reason: "refused".into(),
    };
    let out = f
        .store
        .finish_all(vec![end(&revoke, "a", 6_001, failed, None)])
        .await?;
    assert!(out.iter().all(|r| r.is_ok()), "{out:?}");
    assert!(f.store.fire(7_000, 10).await?.is_empty(), "fired once");
    let grants = f
        .store
        .holdings(crate::store::audit::AccessQuery::default())
        .await?;
    let eng = grants
        .iter()
        .find(|g| g.item_id == "ap-eng")
        .ok_or("ap-eng is not listed")?;
    assert_eq!(
        states(&f, "u1").await?,
        ["revoking", "pending"],
        "{grants:?}"
    );
    assert_eq!(eng.revoke_on("flat").as_deref(), Some("failed"));
    assert!(eng.regranted_on("flat", "groups", "VPN"), "{eng:?}");
    assert!(!eng.regranted_on("flat", "groups", "GIT"), "{eng:?}");
    let held = crate::holdings::derive(&grants);
    let state = |value: &str| {
        held.iter().find(|h| h.value == value).map(|h| {
            (
                h.state,
                h.via.iter().map(ToString::to_string).collect::<Vec<_>>(),
            )
        })
    };
    assert_eq!(
        state("VPN"),
        Some(("pending", vec!["ACCESS_PROFILE:ap-remote".to_string()]))
    );
    assert_eq!(
        state("GIT"),
        Some(("removing", vec!["ACCESS_PROFILE:ap-eng".to_string()]))
    );
    Ok(())
}
