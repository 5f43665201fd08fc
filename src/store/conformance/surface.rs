//! The role methods the flow cases do not reach on their way: identities, upstream
//! bookkeeping, trigger invocations, evidence, task imports and mail marks, leadership,
//! the store's own health. One case a role, each method called and its answer checked.

use std::collections::BTreeMap;

use provd_connector_core::Identity;

use super::fixture::{err, fixture};
use super::{Outcome, manual_job};
use crate::store::audit::{AuditQuery, EventWindow};
use crate::store::evidence::{SeenRow, SnapshotMeta};
use crate::store::jobs::{JobState, OpRecord};
use crate::store::mail::MailMark;
use crate::store::rules::TaskStatus;
use crate::store::rules::events::Note;
use crate::store::tasks::{Resolved, TaskAnswer, TaskFilter};
use crate::store::triggers::{Answer, CallbackEnd, Invocation, TriggerEvent};
use crate::store::{Stamp, Store, StoreError, TABLES};

async fn count(store: &Store, kind: &str) -> Result<usize, StoreError> {
    let q = AuditQuery {
        kinds: vec![kind.into()],
        limit: 1000,
        ..Default::default()
    };
    Ok(store.audit(q).await?.len())
}

fn person(id: &str, mail: &str) -> Identity {
    Identity {
        id: id.into(),
        attributes: BTreeMap::from([("mail".to_string(), mail.to_string())]),
    }
}

pub(super) async fn accounts(store: Store) -> Outcome {
    let f = fixture(store)?;
    let s = &f.store;
    let n = s
        .import_identities(
            vec![person("u2", "b@x"), person("u1", "a@x")],
            true,
            Stamp::new("agent:a", 1_000),
        )
        .await?;
    assert_eq!(n, 2);
    assert_eq!(count(s, "identities_imported").await?, 1);
    assert_eq!(s.identity("u1".into()).await?, Some(person("u1", "a@x")));
    assert_eq!(s.identity("nope".into()).await?, None);
    let some = s.identities(vec!["u1".into(), "nope".into()]).await?;
    assert_eq!(some.keys().collect::<Vec<_>>(), ["u1"]);
    assert_eq!(s.identity_ids().await?, ["u1", "u2"], "in id order");
    let found = s.identity_by_attribute("mail".into(), "b@x".into()).await?;
    assert_eq!(found.as_deref(), Some("u2"));
    assert_eq!(
        s.identity_by_attribute("mail".into(), "zz".into()).await?,
        None
    );
    assert_eq!(
        s.file_identities().await?.keys().collect::<Vec<_>>(),
        ["u1", "u2"],
        "both stored as identities.csv's rows"
    );
    // A second import replaces what it names, whole, and it is no longer the file's row.
    s.import_identities(
        vec![person("u1", "new@x")],
        false,
        Stamp::new("cli:op", 1_001),
    )
    .await?;
    assert_eq!(s.identity("u1".into()).await?, Some(person("u1", "new@x")));
    assert_eq!(
        s.file_identities().await?.keys().collect::<Vec<_>>(),
        ["u2"]
    );
    // The account a job created is known by its native id from then on.
    assert_eq!(s.native_id("u1".into(), "flat".into()).await?, None);
    f.grant("u1", "ap-remote", 2_000).await?;
    let job = f.first("a", 2_001).await?;
    let created = OpRecord {
        index: 0,
        outcome: "created",
        native_id: Some("uid=u1".into()),
        account: None,
        detail: None,
        disabled: None,
    };
    s.succeed(job, "a".into(), 2_002, vec![created]).await?;
    let native = s.native_id("u1".into(), "flat".into()).await?;
    assert_eq!(native.as_deref(), Some("uid=u1"));
    let owners = s.account_owners("flat".into(), "UID=U1".into()).await?;
    assert_eq!(owners, ["u1"], "names compared without regard to case");
    assert!(
        s.account_owners("flat".into(), "uid=u2".into())
            .await?
            .is_empty()
    );
    let sources = s.account_sources(vec!["u1".into(), "u2".into()]).await?;
    assert_eq!(sources["u1"].iter().collect::<Vec<_>>(), ["flat"]);
    assert!(sources.get("u2").is_none_or(|s| s.is_empty()));
    // An identity's change is an event of its own, whose id its requests carry.
    let data = serde_json::json!({ "changed": { "lifecycleState": "leaver" } });
    let id = s
        .note(
            Note::IdentityChanged {
                identity: "u1".into(),
                data: data.clone(),
            },
            Stamp::new("cli:op", 2_003),
        )
        .await?;
    let found = s.events_after(id - 1, 1).await?;
    assert_eq!(
        (
            found[0].id,
            found[0].kind.as_str(),
            found[0].identity.as_deref()
        ),
        (id, "identity_changed", Some("u1"))
    );
    assert_eq!(found[0].data, data);
    let managed = s.managed_accounts("flat".into()).await?;
    assert_eq!(managed, [("u1".to_string(), "uid=u1".to_string())]);
    // What a plan is made against: u1's held item and account; nothing of u2's.
    let snap = s.snapshot(vec!["u1".into(), "u2".into()]).await?;
    let held: Vec<(&str, &str)> = snap
        .assignments
        .iter()
        .map(|a| (a.identity.as_str(), a.item_id.as_str()))
        .collect();
    assert_eq!(held, [("u1", "ap-remote")]);
    assert!(
        snap.accounts
            .contains(&("u1".to_string(), "flat".to_string()))
    );
    Ok(())
}

pub(super) async fn upstream(store: Store) -> Outcome {
    let f = fixture(store)?;
    let s = &f.store;
    let up = || "gov".to_string();
    // Checkpoints are the leader's to write (fenced on PostgreSQL).
    let duty = crate::store::SINGLETON.to_string();
    s.lead(duty, "a".into(), 0, 1_000_000).await?;
    assert_eq!(s.upstream_cursor(up()).await?, None);
    s.set_upstream_cursor(up(), "c1".into(), 10).await?;
    s.set_upstream_cursor(up(), "c2".into(), 11).await?;
    assert_eq!(s.upstream_cursor(up()).await?.as_deref(), Some("c2"));
    s.set_upstream_health(up(), Some("503".into()), 12).await?;
    let health = s.upstream_health().await?;
    assert_eq!(health.len(), 1);
    assert_eq!(
        (
            health[0].healthy,
            health[0].last_error.as_deref(),
            health[0].last_poll_at
        ),
        (false, Some("503"), Some(12))
    );
    let rid = f.grant("u1", "ap-eng", 1_000).await?;
    assert!(s.request_exists(rid.clone()).await?);
    assert!(!s.request_exists("nope".into()).await?);
    assert_eq!(
        s.request_origin(rid.clone()).await?.as_deref(),
        Some("test")
    );
    assert!(!s.upstream_seen(up(), "x1".into()).await?);
    for _ in 0..2 {
        s.record_upstream(
            up(),
            "x1".into(),
            crate::store::upstream::Outcome::Accepted(rid.clone()),
            20,
        )
        .await?;
    }
    s.record_upstream(
        up(),
        "x2".into(),
        crate::store::upstream::Outcome::Rejected("unknown item".into()),
        21,
    )
    .await?;
    assert!(s.upstream_seen(up(), "x1".into()).await?);
    assert_eq!(count(s, "upstream_rejected").await?, 1);
    let pulled = s
        .upstream_request("x2".into())
        .await?
        .ok_or("x2 not kept")?;
    assert_eq!(
        (
            pulled.upstream.as_str(),
            pulled.request_id,
            pulled.reason.as_deref()
        ),
        ("gov", None, Some("unknown item"))
    );
    let mut unwritten: Vec<String> = s
        .unwritten(up())
        .await?
        .into_iter()
        .map(|u| u.upstream_id)
        .collect();
    unwritten.sort();
    assert_eq!(unwritten, ["x1", "x2"], "each pulled request once");
    s.mark_written(up(), "x1".into(), "provisioned".into(), 30)
        .await?;
    let left = s.unwritten(up()).await?;
    assert_eq!(left.len(), 1);
    assert_eq!(count(s, "upstream_written_back").await?, 1);
    let jobs = s.request_jobs(rid).await?;
    assert_eq!(jobs.len(), 1);
    assert_eq!((jobs[0].0.as_str(), jobs[0].1.as_str()), ("queued", "flat"));
    Ok(())
}

fn invocation(id: &str, answer: Option<Answer>, at: i64) -> Invocation {
    Invocation {
        id: format!("submitted:{id}"),
        trigger: "submitted".into(),
        access_request_id: id.into(),
        identity: Some("u1".into()),
        mode: if answer.is_some() { "SYNC" } else { "ASYNC" }.into(),
        body: "{}".into(),
        state: if answer.is_some() {
            "answered"
        } else {
            "pending"
        }
        .into(),
        answer,
        callback_url: Some("https://cb.example/x".into()),
        sealed_secret: Some("sealed".into()),
        attempts: 0,
        next_attempt_at: Some(at),
        deadline_at: Some(at + 1_000),
        received_at: at,
    }
}

fn approve() -> Answer {
    Answer {
        approved: true,
        comment: "ok".into(),
        approver: "provd".into(),
        rule: "r1".into(),
    }
}

pub(super) async fn triggers(store: Store) -> Outcome {
    let s = store;
    let (stored, new) = s
        .record_invocation(invocation("a1", Some(approve()), 100), "trigger:x".into())
        .await?;
    assert!(new);
    assert_eq!(stored.answer, Some(approve()));
    let (_, again) = s
        .record_invocation(invocation("a1", None, 101), "trigger:x".into())
        .await?;
    assert!(!again, "the first answer stands");
    assert_eq!(count(&s, "trigger_decision").await?, 1);
    let (pending, _) = s
        .record_invocation(invocation("a2", None, 200), "trigger:x".into())
        .await?;
    assert!(s.due_invocations(199, 10).await?.is_empty());
    let due = s.due_invocations(200, 10).await?;
    assert_eq!(
        due.iter().map(|i| i.id.as_str()).collect::<Vec<_>>(),
        ["submitted:a2"]
    );
    s.answer_invocation(pending.clone(), approve(), Stamp::new("trigger:x", 201))
        .await?;
    s.retry_invocation(pending.id.clone(), 400, "503".into())
        .await?;
    assert!(s.due_invocations(300, 10).await?.is_empty());
    let again = s.invocation(pending.id.clone()).await?.ok_or("a2 lost")?;
    assert_eq!((again.attempts, again.answer.clone()), (1, Some(approve())));
    for _ in 0..2 {
        s.finish_invocation(
            again.clone(),
            CallbackEnd {
                state: "delivered",
                error: None,
            },
            Stamp::new("trigger:x", 401),
        )
        .await?;
    }
    let done = s.invocation(pending.id).await?.ok_or("a2 lost")?;
    assert_eq!(
        (done.state.as_str(), done.sealed_secret),
        ("delivered", None)
    );
    assert_eq!(count(&s, "trigger_callback").await?, 1, "finished once");
    s.trigger_event(
        TriggerEvent {
            kind: "trigger_refused",
            identity: None,
            data: serde_json::json!({ "why": "test" }),
        },
        Stamp::new("trigger:x", 500),
    )
    .await?;
    assert_eq!(count(&s, "trigger_refused").await?, 1);
    assert!(s.invocation("nope".into()).await?.is_none());
    Ok(())
}

pub(super) async fn evidence(store: Store) -> Outcome {
    let f = fixture(store)?;
    let s = &f.store;
    let (_, tasks) = manual_job(&f, "u1", 1_000).await?;
    // One task answered before the snapshot, the others open: the snapshot answers
    // those and confirms the one.
    s.resolve_task(tasks[0], "DONE".into(), "o@x".into(), String::new(), 1_500)
        .await?;
    assert_eq!(s.last_snapshot("flat".into()).await?, None);
    let meta = SnapshotMeta {
        id: 0,
        source: "flat".into(),
        kind: "import".into(),
        sha256: Some("ab".into()),
        rows: 1,
        as_of: 1_900,
        actor: "cli:op".into(),
        taken_at: 2_000,
        status_told: false,
    };
    let seen = vec![SeenRow {
        account: "u1".into(),
        values: r#"[["groups","VPN"]]"#.into(),
        disabled: false,
    }];
    let id = s
        .record_snapshot(meta.clone(), seen.clone(), tasks.clone())
        .await?;
    let last = s.last_snapshot("flat".into()).await?.ok_or("no snapshot")?;
    assert_eq!((last.id, last.rows, last.kind.as_str()), (id, 1, "import"));
    assert_eq!(s.seen_accounts("flat".into()).await?, seen);
    let all = s.tasks(TaskFilter::default()).await?;
    assert!(
        all.iter()
            .all(|t| t.status == TaskStatus::Done && t.verified_at.is_some())
    );
    assert_eq!(count(s, "task_verified").await?, 1);
    assert_eq!(count(s, "accounts_snapshot").await?, 1);
    // A later snapshot replaces the accounts seen; verified tasks stay verified once.
    s.record_snapshot(meta, Vec::new(), tasks).await?;
    assert!(s.seen_accounts("flat".into()).await?.is_empty());
    assert_eq!(count(s, "task_verified").await?, 1);
    Ok(())
}

pub(super) async fn task_imports(store: Store) -> Outcome {
    let f = fixture(store)?;
    let s = &f.store;
    let (job, tasks) = manual_job(&f, "u1", 1_000).await?;
    let brief = s.task_brief(tasks[0]).await?.ok_or("no brief")?;
    assert_eq!(
        (brief.source.as_str(), brief.owner.as_str()),
        ("flat", "o@x")
    );
    assert!(s.task_brief(999).await?.is_none());
    let overdue = s.overdue_tasks("flat".into(), 1_002).await?;
    assert_eq!(overdue.len(), 1);
    assert_eq!(
        (overdue[0].owner.as_str(), overdue[0].count),
        ("o@x", tasks.len() as i64)
    );
    assert!(s.overdue_tasks("flat".into(), 1_001).await?.is_empty());
    let answer = |task: i64, resolution: &str| TaskAnswer {
        task,
        resolution: resolution.into(),
        resolved_by: "o@x".into(),
        note: String::new(),
    };
    let mut rows: Vec<TaskAnswer> = tasks.iter().map(|t| answer(*t, "DONE")).collect();
    rows.push(answer(999, "DONE"));
    rows.push(answer(tasks[0], "MAYBE"));
    rows.push(answer(tasks[0], "FAILED"));
    let out = s.resolve_tasks(rows, 2_000).await?;
    let n = tasks.len();
    assert!(
        out[..n]
            .iter()
            .all(|r| matches!(r, Ok(Resolved::Applied { .. })))
    );
    assert!(
        matches!(out[n], Err(StoreError::NotFound(_))),
        "{:?}",
        out[n]
    );
    assert!(matches!(out[n + 1], Err(StoreError::Conflict(_))));
    assert!(matches!(out[n + 2], Err(StoreError::Conflict(_))), "closed");
    assert_eq!(f.job(job).await?.state, JobState::Succeeded);
    assert_eq!(s.open_task_count().await?, 0);
    // Mail marks: what each owner was last told.
    assert!(s.mail_marks().await?.is_empty());
    let mut mark = MailMark {
        owner: "o@x".into(),
        announced_through: 3,
        announced_at: Some(2_000),
        digest_on: None,
    };
    s.set_mail_mark(mark.clone(), 2_000).await?;
    mark.digest_on = Some("2030-01-02".into());
    s.set_mail_mark(mark.clone(), 2_001).await?;
    assert_eq!(s.mail_marks().await?, [mark]);
    Ok(())
}

pub(super) async fn lease_upkeep(store: Store) -> Outcome {
    let f = fixture(store)?;
    let s = &f.store;
    f.grant("u1", "ap-eng", 1_000).await?;
    f.grant("u2", "ap-eng", 1_001).await?;
    assert_eq!(s.next_due().await?, Some(1_000));
    let jobs = f.claim_until("a#1", 2_000, 3_000).await?;
    assert_eq!(jobs.len(), 2);
    let held: Vec<(i64, i64)> = jobs.iter().map(|j| (j.id, j.lease_epoch)).collect();
    assert!(s.renew("a#1".into(), held.clone(), 9_000).await?.is_empty());
    assert_eq!(
        s.renew("b#1".into(), held.clone(), 9_000).await?.len(),
        2,
        "not b's to renew"
    );
    // Renewed: nothing has run out at 5,000.
    assert!(s.expire_leases(5_000, None, "a#1".into()).await?.is_empty());
    let mut counts = s.job_counts().await?;
    counts.retain(|c| c.2 > 0);
    assert_eq!(counts, [("flat".to_string(), JobState::Running, 2)]);
    // The same agent started again takes its former self's leases back at once.
    let upto = s.last_event_id().await?;
    let moved = s.reclaim("a".into(), "a#2".into(), 5_001).await?;
    assert_eq!(moved.len(), 2);
    assert!(s.renew("a#1".into(), held, 9_000).await?.len() == 2);
    let after = s.last_event_id().await?;
    let window = |not_by| EventWindow {
        after: upto,
        upto: after,
        not_by,
        limit: 100,
    };
    let mine = s.events_between(window(None)).await?;
    assert_eq!(mine.len(), 2, "one lease_expired each");
    let writer = crate::store::writer().to_string();
    assert!(s.events_between(window(Some(writer))).await?.is_empty());
    for j in f.claim("a#2", 5_002).await? {
        s.fail_attempt(j, "a#2".into(), 5_003, err(1), None).await?;
    }
    assert_eq!(s.next_due().await?, None, "nothing left to run");
    Ok(())
}

pub(super) async fn leadership_and_admin(store: Store) -> Outcome {
    let s = store;
    let duty = || crate::store::SINGLETON.to_string();
    let epoch = s.lead(duty(), "a".into(), 0, 10_000).await?;
    assert!(epoch.is_some());
    let leader = s.leader(duty()).await?.ok_or("no leader")?;
    assert_eq!((leader.holder.as_str(), leader.expires_at), ("a", 10_000));
    s.seen("a".into(), 5).await?;
    assert_eq!(s.agents(0).await?, ["a"]);
    s.resign(duty(), "a".into()).await?;
    assert!(
        s.lead(duty(), "b".into(), 1, 10_000).await?.is_some(),
        "free again"
    );
    let (version, known) = s.schema_version().await?;
    assert_eq!(version, known);
    let counts = s.row_counts().await?;
    assert!(TABLES.iter().all(|t| counts.contains_key(t)), "{counts:?}");
    s.ping().await?;
    s.probe_write(1).await?;
    s.check_free_space().await?;
    s.quick_check().await?;
    let id = s.store_id().await?;
    assert_eq!(id.len(), 32);
    assert_eq!(s.store_id().await?, id, "drawn once");
    s.analyze_stale(0.2).await?;
    assert!(!s.location().is_empty());
    assert!(s.writers() >= 1);
    // Only an SQLite store has its agent alone on it.
    assert_eq!(s.exclusive(), s.writers() == 1);
    Ok(())
}

/// The credential gate's memory: two failures of one secret, a probe claimed once, a
/// changed secret let through, an operator's unblock audited.
pub(super) async fn credential_gates(store: Store) -> Outcome {
    use provd_connector_core::gate::{Admit, PROBE_AFTER};
    let s = store;
    let src = || "ad".to_string();
    let probe = PROBE_AFTER.as_millis() as i64;
    assert_eq!(s.gate_admit(src(), 7, 0).await?, Admit::Go);
    s.gate_failed(src(), 7, 1_000, "49 data 52e".into()).await?;
    let r = s.gate_record(src()).await?.ok_or("no record")?;
    assert_eq!((r.fingerprint, r.failures, r.at_ms), (7, 1, 1_000));
    assert!(matches!(s.gate_admit(src(), 7, 2_000).await?, Admit::Refuse(ref x) if x.too_soon));
    let later = 1_000 + probe;
    assert_eq!(s.gate_admit(src(), 7, later).await?, Admit::Probe);
    // The probe is claimed: nobody else probes in the same window.
    assert!(matches!(s.gate_admit(src(), 7, later + 1).await?, Admit::Refuse(ref x) if x.too_soon));
    s.gate_failed(src(), 7, later + 5, "49 data 52e".into())
        .await?;
    let never = s.gate_admit(src(), 7, i64::MAX / 2).await?;
    assert!(matches!(never, Admit::Refuse(ref x) if x.failures == 2 && !x.too_soon));
    // Another secret (the file changed) goes; other sources are not concerned.
    assert_eq!(s.gate_admit(src(), 8, later + 6).await?, Admit::Go);
    assert_eq!(s.gate_admit("scim".into(), 7, later + 6).await?, Admit::Go);
    // An operator's unblock forgets it, with an event; clearing nothing writes none.
    let by = Stamp::new("cli:ops", later + 7);
    assert!(s.gate_clear(src(), Some(by.clone())).await?);
    assert!(!s.gate_clear(src(), Some(by)).await?);
    assert_eq!(count(&s, "source_unblocked").await?, 1);
    assert_eq!(s.gate_admit(src(), 7, later + 8).await?, Admit::Go);
    // A good bind clears without an event.
    s.gate_failed(src(), 9, later + 9, "x".into()).await?;
    assert!(s.gate_clear(src(), None).await?);
    assert_eq!(count(&s, "source_unblocked").await?, 1);
    // The shared key: the first candidate is kept (SQLite keeps none).
    if let Some(k) = s.gate_key(vec![1; 32]).await? {
        assert_eq!(k, vec![1; 32]);
        assert_eq!(s.gate_key(vec![2; 32]).await?, Some(vec![1; 32]));
    }
    Ok(())
}
