//! PostgreSQL under a backlog (issue 31, finding 1): lease renewals that never wait
//! behind another writer's locks, and statistics the store keeps fresh itself.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::harness::eventually;
use crate::pg::Pg;
use crate::pg_store::fresh;
use provd::store::Stamp;
use provd::store::jobs::Retry;

/// Another session runs `sql` in a transaction that then sleeps `seconds` before it
/// commits; returns once it is asleep, holding whatever `sql` locked.
async fn hold(pg: &Pg, db: &str, sql: &str, seconds: u32) -> std::process::Child {
    let child = Command::new("psql")
        .args(["-X", "-q", "-d"])
        .arg(pg.url(db))
        .args([
            "-c",
            &format!("BEGIN; {sql}; SELECT pg_sleep({seconds}); COMMIT;"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    eventually(10, "the other session holding its locks", || {
        let held = pg.psql(
            db,
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'PgSleep'",
        ) == "1";
        async move { held.then_some(()) }
    })
    .await;
    child
}

/// A job locked by another transaction (an end batch under way) does not hold its
/// renewal up, and is not reported lost: only a job really taken away is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewal_never_waits_behind_a_locked_job() {
    let pg = Pg::start();
    let store = fresh(&pg, "renew").await;
    crate::pg_store::grant(&store, "u", 3).await;
    let jobs = store
        .claim(crate::pg_store::claim("a#1", 2_000, 60_000, 10))
        .await
        .unwrap();
    assert_eq!(jobs.len(), 3);
    let locked = jobs[0].id;
    // Another session holds one job's row, as an end batch in flight would.
    let mut holder = hold(
        &pg,
        "renew",
        &format!("SELECT id FROM jobs WHERE id = {locked} FOR UPDATE"),
        60,
    )
    .await;
    let held: Vec<(i64, i64)> = jobs.iter().map(|j| (j.id, j.lease_epoch)).collect();
    let lost = tokio::time::timeout(
        Duration::from_secs(10),
        store.renew("a#1".into(), held.clone(), 90_000),
    )
    .await
    .expect("the renewal waited behind the lock")
    .unwrap();
    assert!(lost.is_empty(), "a busy job is not lost: {lost:?}");
    // The two it could take are renewed.
    let renewed = pg.psql(
        "renew",
        "SELECT count(*) FROM jobs WHERE lease_expires_at = 90000",
    );
    assert_eq!(renewed, "2");
    // Ended on the server's side: a killed psql leaves its backend asleep with the lock.
    pg.psql(
        "renew",
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE wait_event = 'PgSleep'",
    );
    let _ = holder.wait();
    // One taken away by another agent is reported lost.
    pg.psql(
        "renew",
        &format!(
            "UPDATE jobs SET lease_owner = 'b#1', lease_epoch = lease_epoch + 1 WHERE id = {locked}"
        ),
    );
    let lost = store.renew("a#1".into(), held, 95_000).await.unwrap();
    assert_eq!(lost, [locked]);
    assert!(!pg.log_text().contains("deadlock detected"));
}

/// The store analyzes its tables after migrating, and the leader's upkeep analyzes a
/// table again once a good share of it changed: stale statistics once made a backlog
/// livelock three agents.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statistics_are_refreshed_after_migration_and_when_stale() {
    let pg = Pg::start();
    pg.psql("postgres", "ALTER SYSTEM SET autovacuum = off");
    pg.psql("postgres", "SELECT pg_reload_conf()");
    let store = fresh(&pg, "stats").await;
    let analyzed = pg.psql(
        "stats",
        "SELECT count(*) FROM pg_stat_user_tables WHERE relname IN ('jobs','requests','events') AND last_analyze IS NOT NULL",
    );
    assert_eq!(analyzed, "3", "analyzed after the migration");
    crate::pg_store::grant(&store, "u", 300).await;
    // PostgreSQL flushes each table's counts on its own schedule: a round may find jobs
    // stale before events' counts arrive, so the rounds' findings add up.
    let found = std::sync::Arc::new(std::sync::Mutex::new(std::collections::BTreeSet::new()));
    let tables = eventually(15, "stale tables analyzed", || {
        let (s, found) = (store.clone(), found.clone());
        async move {
            let t = s.analyze_stale(0.2).await.unwrap();
            let mut all = found.lock().unwrap();
            all.extend(t);
            (all.contains("jobs") && all.contains("events")).then(|| all.clone())
        }
    })
    .await;
    assert!(tables.contains("events"), "{tables:?}");
    let mods = pg.psql(
        "stats",
        "SELECT n_mod_since_analyze FROM pg_stat_user_tables WHERE relname = 'jobs'",
    );
    assert_eq!(mods, "0");
    // Once nothing changes, rounds find nothing stale. A table whose counts were flushed
    // after the rounds above (requests, say) may still be found once; jobs, already
    // analyzed with nothing written since, must not be.
    eventually(15, "no stale table once nothing changes", || {
        let s = store.clone();
        async move {
            let t = s.analyze_stale(0.2).await.unwrap();
            assert!(!t.iter().any(|x| x == "jobs"), "jobs analyzed again: {t:?}");
            t.is_empty().then_some(())
        }
    })
    .await;
}

/// A retry racing a claim (issue 32): the claim commits between the retry's read and
/// its guarded UPDATE, so the UPDATE changes nothing. The retry must say so, and leave
/// no `job_retry_requested` event claiming it happened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_that_loses_a_race_to_a_claim_says_so_and_writes_nothing() {
    let pg = Pg::start();
    let store = fresh(&pg, "race").await;
    crate::pg_store::grant(&store, "u", 1).await;
    let id = pg.psql("race", "SELECT id FROM jobs");
    pg.psql(
        "race",
        &format!("UPDATE jobs SET state = 'retrying', next_attempt_at = 99999999 WHERE id = {id}"),
    );
    // Another agent's claim holds the row and commits in a moment.
    let mut claim = hold(
        &pg,
        "race",
        &format!("UPDATE jobs SET state = 'running', lease_owner = 'b#1', lease_epoch = lease_epoch + 1 WHERE id = {id}"),
        2,
    )
    .await;
    let id: i64 = id.parse().unwrap();
    let r = store
        .retry_job(
            id,
            Retry {
                max_attempts: 3,
                identity: None,
            },
            Stamp::new("cli:op", 5_000),
        )
        .await;
    let _ = claim.wait();
    assert!(
        matches!(&r, Err(provd::store::StoreError::Conflict(m)) if m.contains("changed while")),
        "{r:?}"
    );
    assert_eq!(
        pg.psql(
            "race",
            "SELECT count(*) FROM events WHERE kind = 'job_retry_requested'"
        ),
        "0"
    );
    assert_eq!(
        pg.psql("race", &format!("SELECT state FROM jobs WHERE id = {id}")),
        "running"
    );
}
