use std::collections::{BTreeMap, BTreeSet};

use provd_connector_core::Identity;

use super::accept::Context;
use super::jobs::{AttemptError, JobFilter, JobState};
use super::status::StatusQuery;
use super::*;
use crate::config::files::CatalogFile;
use crate::config::{Catalog, ItemType};
use crate::model::{RequestType, ValidItem, ValidRequest};

struct Fixture {
    _dir: tempfile::TempDir,
    store: Store,
    catalog: Catalog,
    identities: BTreeMap<String, Identity>,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let f: CatalogFile = toml::from_str(
        r#"
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
        id = "ap-eng"
        entitlements = ["vpn", "git"]
        [[access_profile]]
        id = "ap-remote"
        entitlements = ["vpn"]
        "#,
    )
    .unwrap();
    let catalog = Catalog::build(f, &BTreeSet::from(["flat".to_string()])).0;
    let identities = ["u1", "u2"]
        .into_iter()
        .map(|i| {
            (
                i.to_string(),
                Identity {
                    id: i.into(),
                    attributes: BTreeMap::new(),
                },
            )
        })
        .collect();
    Fixture {
        _dir: dir,
        store,
        catalog,
        identities,
    }
}

impl Fixture {
    fn submit(
        &self,
        kind: RequestType,
        who: &str,
        ty: ItemType,
        id: &str,
        key: Option<&str>,
        now: i64,
    ) -> Replay {
        let req = ValidRequest {
            request_type: kind,
            requested_for: vec![who.into()],
            items: vec![ValidItem {
                ty,
                id: id.into(),
                comment: Some("because".into()),
                start_at: None,
                remove_at: None,
                client_metadata: BTreeMap::new(),
            }],
            client_metadata: BTreeMap::new(),
        };
        let rules = crate::config::SourceRules::default();
        let decide = decider(&self.catalog, &rules);
        let ctx = Context {
            sources: &BTreeMap::new(),
            identities: &self.identities,
            decide: &decide,
        };
        self.store
            .accept(&req, "{}", "test", key, &ctx, crate::clock::from_ms(now))
            .unwrap()
    }

    fn grant(&self, who: &str, profile: &str, now: i64) -> String {
        self.submit(
            RequestType::Grant,
            who,
            ItemType::AccessProfile,
            profile,
            None,
            now,
        )
        .accepted()
        .request_id
        .clone()
    }

    fn claim(&self, owner: &str, now: i64) -> Vec<Job> {
        self.store
            .claim(owner, 10, now, now + 60_000, &[], None)
            .unwrap()
    }

    fn state_of(&self, request: &str) -> String {
        let q = StatusQuery {
            request_id: Some(request.into()),
            limit: 100,
            ..Default::default()
        };
        crate::wire::status_item(&self.store.status(&q).unwrap()[0])["state"]
            .as_str()
            .unwrap()
            .to_string()
    }

    fn assignment_states(&self) -> Vec<String> {
        self.store
            .with(|c| {
                Ok(c.prepare("SELECT state FROM assignments ORDER BY id")?
                    .query_map([], |r| r.get(0))?
                    .collect::<rusqlite::Result<Vec<String>>>()?)
            })
            .unwrap()
    }
}

fn err(attempt: u32) -> AttemptError {
    AttemptError {
        at: "2030-01-01T00:00:00Z".into(),
        attempt,
        class: "retryable".into(),
        code: None,
        message: "down".into(),
    }
}

#[test]
fn migrations_are_recorded_and_reopening_is_harmless() {
    let f = fixture();
    let path = f.store.path().to_path_buf();
    drop(f.store);
    let again = Store::open_file(&path).unwrap();
    let v: i64 = again
        .with(|c| Ok(c.query_row("PRAGMA user_version", [], |r| r.get(0))?))
        .unwrap();
    assert_eq!(v, schema::MIGRATIONS.len() as i64);
    let mode: String = again
        .with(|c| Ok(c.query_row("PRAGMA journal_mode", [], |r| r.get(0))?))
        .unwrap();
    assert_eq!(mode, "wal");
}

#[test]
fn one_lane_runs_one_job_at_a_time_in_acceptance_order() {
    let f = fixture();
    f.grant("u1", "ap-eng", 1_000);
    f.grant("u1", "ap-remote", 1_001);
    f.grant("u2", "ap-eng", 1_002);
    let first = f.claim("a", 2_000);
    let lanes: Vec<(&str, i64)> = first
        .iter()
        .map(|j| (j.identity_id.as_str(), j.id))
        .collect();
    assert_eq!(
        lanes,
        [("u1", 1), ("u2", 3)],
        "u1's second job waits for its first"
    );
    assert!(f.claim("a", 2_001).is_empty());
    f.store.succeed(&first[0], "a", 2_002, &[]).unwrap();
    let next = f.claim("a", 2_003);
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].id, 2);
}

#[test]
fn a_failed_job_retried_heads_its_lane_again() {
    let f = fixture();
    f.grant("u1", "ap-eng", 1_000);
    f.grant("u1", "ap-remote", 1_001);
    let first = f.claim("a", 2_000).remove(0);
    f.store
        .fail_attempt(&first, "a", 2_001, err(1), None, Some("permanent"))
        .unwrap();
    // The operator retries job 1 before job 2 ran: job 1 goes first again.
    f.store.retry_job(first.id, 2_002, 3, None).unwrap();
    let next = f.claim("a", 2_003);
    assert_eq!(next.iter().map(|j| j.id).collect::<Vec<_>>(), [first.id]);
    f.store.succeed(&next[0], "a", 2_004, &[]).unwrap();
    assert_eq!(
        f.claim("a", 2_005).iter().map(|j| j.id).collect::<Vec<_>>(),
        [2]
    );
}

#[test]
fn the_lane_flags_are_computed_for_jobs_written_before_migration_5() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.db");
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        for (i, sql) in schema::MIGRATIONS.iter().take(4).enumerate() {
            c.execute_batch(sql).unwrap();
            c.pragma_update(None, "user_version", (i + 1) as i64)
                .unwrap();
        }
        for (id, who, state) in [
            (1, "u1", "succeeded"),
            (2, "u1", "running"),
            (3, "u1", "queued"),
            (4, "u2", "queued"),
        ] {
            c.execute(
                "INSERT INTO jobs (id, request_id, identity_id, source, kind, identity, operations, state, max_attempts, created_at, updated_at)
                 VALUES (?1, 'r', ?2, 'flat', 'grant', '{\"id\":\"x\",\"attributes\":{}}', '[]', ?3, 5, 1000, 1000)",
                rusqlite::params![id, who, state],
            )
            .unwrap();
        }
    }
    let store = Store::open_file(&path).unwrap();
    let heads: Vec<(i64, i64)> = store
        .with(|c| {
            let mut st = c.prepare("SELECT id, lane_head FROM jobs ORDER BY id")?;
            let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .unwrap();
    assert_eq!(heads, [(1, 0), (2, 1), (3, 0), (4, 1)]);
    let counts = store.job_counts().unwrap();
    let s = |a: &str, b: &str, n: i64| (a.to_string(), b.to_string(), n);
    assert_eq!(
        counts,
        [
            s("flat", "queued", 2),
            s("flat", "running", 1),
            s("flat", "succeeded", 1)
        ],
        "counted from the existing rows"
    );
    let claimed = store.claim("a", 10, 2_000, 3_000, &[], None).unwrap();
    assert_eq!(
        claimed.iter().map(|j| j.id).collect::<Vec<_>>(),
        [4],
        "3 waits behind running 2"
    );
    let direct: Vec<(String, String, i64)> = store
        .with(|c| {
            let mut st =
                c.prepare("SELECT source, state, COUNT(*) FROM jobs GROUP BY 1, 2 ORDER BY 1, 2")?;
            let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .unwrap();
    assert_eq!(
        store.job_counts().unwrap(),
        direct,
        "the counters follow state changes"
    );
}

#[test]
fn an_expired_lease_returns_the_job_with_its_history_and_fences_the_old_owner() {
    let f = fixture();
    f.grant("u1", "ap-eng", 1_000);
    let job = f
        .store
        .claim("dead", 10, 2_000, 3_000, &[], None)
        .unwrap()
        .remove(0);
    assert_eq!(job.attempt, 1);
    assert!(
        f.store.expire_leases(2_500, None).unwrap().is_empty(),
        "not yet expired"
    );
    assert_eq!(f.store.expire_leases(3_001, None).unwrap().len(), 1);
    let again = f.claim("alive", 3_002).remove(0);
    assert_eq!(again.id, job.id);
    assert_eq!(again.attempt, 2, "the first attempt still counts");
    assert_eq!(again.errors.len(), 1);
    assert_eq!(again.errors[0].class, "lease");
    assert!(
        matches!(
            f.store.succeed(&job, "dead", 3_003, &[]),
            Err(StoreError::LeaseLost { job_id }) if job_id == job.id
        ),
        "stale owner is fenced"
    );
    f.store.succeed(&again, "alive", 3_004, &[]).unwrap();
    assert_eq!(
        f.store.job(job.id).unwrap().unwrap().state,
        JobState::Succeeded
    );
}

#[test]
fn start_up_takes_back_every_foreign_lease_at_once() {
    let f = fixture();
    f.grant("u1", "ap-eng", 1_000);
    f.store
        .claim("dead", 10, 2_000, 999_999, &[], None)
        .unwrap();
    assert!(f.store.expire_leases(2_001, Some("me")).unwrap().len() == 1);
    assert_eq!(f.claim("me", 2_002).len(), 1);
}

#[test]
fn release_spends_no_attempt() {
    let f = fixture();
    f.grant("u1", "ap-eng", 1_000);
    let job = f.claim("a", 2_000).remove(0);
    f.store.release(&job, "a", 2_001).unwrap();
    let j = f.store.job(job.id).unwrap().unwrap();
    assert_eq!((j.state, j.attempt), (JobState::Queued, 0));
}

#[test]
fn retrying_then_failing_keeps_every_attempt_error() {
    let f = fixture();
    let rid = f.grant("u1", "ap-eng", 1_000);
    let job = f.claim("a", 2_000).remove(0);
    f.store
        .fail_attempt(&job, "a", 2_001, err(1), Some(5_000), None)
        .unwrap();
    assert!(f.claim("a", 4_999).is_empty(), "not due yet");
    assert_eq!(f.store.next_due().unwrap(), Some(5_000));
    let job = f.claim("a", 5_000).remove(0);
    assert_eq!(job.attempt, 2);
    f.store
        .fail_attempt(&job, "a", 5_001, err(2), None, Some("gave up"))
        .unwrap();
    let j = f.store.job(job.id).unwrap().unwrap();
    assert_eq!(j.state, JobState::Failed);
    assert_eq!(j.errors.len(), 2);
    assert_eq!(f.state_of(&rid), "PROVISIONING_FAILED");
    assert_eq!(f.assignment_states(), ["failed"]);
    f.store.retry_job(job.id, 6_000, 10, None).unwrap();
    let j = f.store.job(job.id).unwrap().unwrap();
    // A fresh budget of the source's max_attempts, counted from zero; history kept.
    assert_eq!(
        (j.state, j.max_attempts, j.attempt),
        (JobState::Queued, 10, 0)
    );
    assert_eq!(j.errors.len(), 2);
    assert_eq!(f.assignment_states(), ["pending"]);
    assert_eq!(f.state_of(&rid), "EXECUTING");
}

#[test]
fn success_activates_the_assignment_and_a_duplicate_is_reported_existing() {
    let f = fixture();
    let rid = f.grant("u1", "ap-eng", 1_000);
    let job = f.claim("a", 2_000).remove(0);
    f.store.succeed(&job, "a", 2_001, &[]).unwrap();
    assert_eq!(f.assignment_states(), ["active"]);
    assert_eq!(f.state_of(&rid), "REQUEST_COMPLETED");
    let dup = f.submit(
        RequestType::Grant,
        "u1",
        ItemType::AccessProfile,
        "ap-eng",
        None,
        3_000,
    );
    let a = dup.accepted();
    assert!(a.job_ids.is_empty());
    assert_eq!(a.response["newRequests"].as_array().unwrap().len(), 0);
    assert_eq!(
        a.response["existingRequests"][0]["accessRequestIds"][0],
        rid.as_str()
    );
}

#[test]
fn a_revoke_settles_the_assignment_as_removed() {
    let f = fixture();
    f.grant("u1", "ap-eng", 1_000);
    f.grant("u1", "ap-remote", 1_001);
    for t in [2_000, 2_002] {
        let j = f.claim("a", t).remove(0);
        f.store.succeed(&j, "a", t + 1, &[]).unwrap();
    }
    let r = f.submit(
        RequestType::Revoke,
        "u1",
        ItemType::AccessProfile,
        "ap-eng",
        None,
        3_000,
    );
    let job = f.store.job(r.accepted().job_ids[0]).unwrap().unwrap();
    assert_eq!(
        job.ops.len(),
        1,
        "only GIT goes: VPN is still granted by ap-remote"
    );
    assert_eq!(f.assignment_states(), ["revoking", "active"]);
    let j = f.claim("a", 3_001).remove(0);
    f.store.succeed(&j, "a", 3_002, &[]).unwrap();
    assert_eq!(f.assignment_states(), ["removed", "active"]);
}

#[test]
fn the_same_idempotency_key_stores_once() {
    let f = fixture();
    let a = f.submit(
        RequestType::Grant,
        "u1",
        ItemType::AccessProfile,
        "ap-eng",
        Some("k1"),
        1_000,
    );
    let b = f.submit(
        RequestType::Grant,
        "u1",
        ItemType::AccessProfile,
        "ap-eng",
        Some("k1"),
        1_001,
    );
    assert!(matches!(a, Replay::New(_)));
    assert!(matches!(b, Replay::Replayed(_)));
    assert_eq!(a.accepted().request_id, b.accepted().request_id);
    assert_eq!(a.accepted().response, b.accepted().response);
    assert_eq!(f.store.jobs(&JobFilter::default()).unwrap().len(), 1);
}

#[test]
fn canceling_a_request_cancels_what_has_not_run() {
    let f = fixture();
    let rid = f.grant("u1", "ap-eng", 1_000);
    assert_eq!(
        f.store.cancel_request(&rid, 1_500, "not needed").unwrap(),
        1
    );
    assert_eq!(f.state_of(&rid), "CANCELLED");
    assert_eq!(f.assignment_states(), ["canceled"]);
    assert!(f.claim("a", 2_000).is_empty());
    assert!(matches!(
        f.store.cancel_request("nope", 1, "x"),
        Err(StoreError::NotFound(_))
    ));
}

#[test]
fn a_running_or_finished_job_cannot_be_canceled() {
    let f = fixture();
    f.grant("u1", "ap-eng", 1_000);
    let job = f.claim("a", 2_000).remove(0);
    assert!(matches!(
        f.store.cancel_job(job.id, 2_001, "x"),
        Err(StoreError::Conflict(_))
    ));
    f.store.succeed(&job, "a", 2_002, &[]).unwrap();
    assert!(matches!(
        f.store.cancel_job(job.id, 2_003, "x"),
        Err(StoreError::Conflict(_))
    ));
}

#[test]
fn events_are_append_only() {
    let f = fixture();
    f.grant("u1", "ap-eng", 1_000);
    let upd = f
        .store
        .with(|c| Ok(c.execute("UPDATE events SET kind = 'x'", [])?));
    assert!(upd.is_err());
    let del = f.store.with(|c| Ok(c.execute("DELETE FROM events", [])?));
    assert!(del.is_err());
    let n: i64 = f
        .store
        .with(|c| Ok(c.query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0))?))
        .unwrap();
    assert_eq!(n, 2, "request_accepted + job_queued");
}

#[test]
fn manual_jobs_open_one_task_per_operation_once() {
    let f = fixture();
    f.grant("u1", "ap-eng", 1_000);
    let job = f.claim("a", 2_000).remove(0);
    let tasks: Vec<tasks::NewTask> = job
        .ops
        .iter()
        .enumerate()
        .map(|(i, op)| tasks::NewTask {
            op_index: i,
            owner: "o@x".into(),
            identity_name: "U One".into(),
            operation: op.kind().as_str().into(),
            account: "u1".into(),
            attribute: String::new(),
            value: String::new(),
            due_at: None,
        })
        .collect();
    f.store.open_tasks(&job, "a", &tasks, 2_001).unwrap();
    assert_eq!(
        f.store.job(job.id).unwrap().unwrap().state,
        JobState::Manual
    );
    let rows = f
        .store
        .tasks(&tasks::TaskFilter {
            open_only: true,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(rows.len(), 3, "create + two entitlements");
    assert_eq!(rows[0].operation, "CREATE_ACCOUNT");
    assert!(matches!(
        f.store.open_tasks(&job, "a", &tasks, 2_002),
        Err(StoreError::Conflict(_))
    ));
}

/// The intake's way of deciding, for the store's tests.
fn decider<'a>(
    catalog: &'a Catalog,
    rules: &'a crate::config::SourceRules,
) -> impl Fn(&ValidRequest, &crate::model::Snapshot, &str) -> (crate::model::Plan, serde_json::Value) + 'a
{
    move |req, snapshot, request_id| {
        let plan = crate::plan::plan(req, catalog, snapshot, rules);
        let answer = crate::wire::accepted(request_id, &plan);
        (plan, answer)
    }
}

fn removals(fired: &[super::schedule::Fired]) -> Vec<super::schedule::Removal> {
    fired
        .iter()
        .cloned()
        .map(crate::schedule::removal)
        .collect()
}

fn schedule_ctx<'a>(
    f: &'a Fixture,
    sources: &'a BTreeMap<String, crate::config::Source>,
    decide: &'a super::accept::Decide<'a>,
) -> Context<'a> {
    Context {
        sources,
        identities: &f.identities,
        decide,
    }
}

fn granted_until(f: &Fixture, profile: &str, remove_at: i64, now: i64) -> String {
    let rid = f.grant("u1", profile, now);
    f.store
        .with(|c| {
            Ok(c.execute(
                "UPDATE assignments SET remove_at = ? WHERE request_id = ?",
                rusqlite::params![remove_at, rid],
            )?)
        })
        .unwrap();
    let job = f.claim("a", now + 1).remove(0);
    f.store.succeed(&job, "a", now + 2, &[]).unwrap();
    rid
}

#[test]
fn a_removal_fires_once_and_its_revoke_is_planned_after_a_crash_between_the_phases() {
    let f = fixture();
    granted_until(&f, "ap-eng", 5_000, 1_000);
    assert!(f.store.fire(4_999, 10).unwrap().is_empty(), "not due yet");
    let fired = f.store.fire(5_100, 10).unwrap();
    assert_eq!((fired.len(), fired[0].lag_ms), (1, 100));
    assert!(f.store.fire(6_000, 10).unwrap().is_empty(), "never twice");
    assert_eq!(f.assignment_states(), ["revoking"]);
    // The agent died here: a new store on the same file finds the unplanned removal.
    let again = Store::open_file(f.store.path()).unwrap();
    let todo = again.unplanned(10).unwrap();
    assert_eq!(todo.len(), 1);
    let (sources, none) = (BTreeMap::new(), crate::config::SourceRules::default());
    let decide = decider(&f.catalog, &none);
    let planned = again
        .plan_fired(
            &removals(&todo),
            &schedule_ctx(&f, &sources, &decide),
            crate::clock::from_ms(6_100),
        )
        .unwrap();
    assert_eq!(planned[0].jobs, 1);
    assert!(again.unplanned(10).unwrap().is_empty());
    assert!(
        again
            .plan_fired(
                &removals(&todo),
                &schedule_ctx(&f, &sources, &decide),
                crate::clock::from_ms(6_200)
            )
            .unwrap()
            .is_empty(),
        "planned once"
    );
    let job = f.claim("a", 6_300).remove(0);
    assert_eq!(job.kind, "revoke");
    assert_eq!(job.ops.len(), 2, "both of ap-eng's values go");
    f.store.succeed(&job, "a", 6_400, &[]).unwrap();
    assert_eq!(f.assignment_states(), ["removed"]);
}

#[test]
fn a_grant_made_between_firing_and_planning_supersedes_the_removal() {
    let f = fixture();
    granted_until(&f, "ap-eng", 5_000, 1_000);
    f.store.fire(5_000, 10).unwrap();
    // Granted again before the revoke was planned: it must not be taken away.
    f.grant("u1", "ap-eng", 5_001);
    let (sources, none) = (BTreeMap::new(), crate::config::SourceRules::default());
    let decide = decider(&f.catalog, &none);
    let todo = f.store.unplanned(10).unwrap();
    let planned = f
        .store
        .plan_fired(
            &removals(&todo),
            &schedule_ctx(&f, &sources, &decide),
            crate::clock::from_ms(5_002),
        )
        .unwrap();
    assert_eq!(planned[0].request_id, None, "superseded");
    assert_eq!(f.assignment_states(), ["removed", "pending"]);
    let jobs = f.store.jobs(&JobFilter::default()).unwrap();
    assert!(
        jobs.iter().all(|j| j.kind == "grant"),
        "no revoke job was written"
    );
}
