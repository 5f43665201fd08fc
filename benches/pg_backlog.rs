//! PostgreSQL under a backlog (issue 31, finding 1): three agents drain a backlog of
//! requests on a store that grew without autovacuum (an "aged" store: tens of thousands
//! of jobs and over a hundred thousand events), with a PostgreSQL restart half-way; then
//! the same backlog on a fresh store whose statistics are fresh. Reported: how long each
//! drain took and their ratio (goal within 2x), the most attempts any job took (goal at
//! most 2), lease expiries, how many jobs ran more than twice, deadlocks the server
//! logged, and creates the REST target saw twice.
//!
//! Run:
//!
//!     cargo build --release && cargo bench --bench pg_backlog            # age 20,000, 6,000 requests
//!     cargo bench --bench pg_backlog -- --age 60000 --requests 6000
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::crm::{agent, config, crm_server_with_state, preload, succeeded};
use common::pg::Pg;

use std::process::Child;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// What one drain showed.
struct Drain {
    seconds: f64,
    max_attempt: i64,
    over_two: i64,
    lease_expired: i64,
    duplicates: u64,
    events: i64,
    jobs: i64,
}

fn count(pg: &Pg, db: &str, sql: &str) -> i64 {
    pg.psql(db, sql).parse().unwrap_or(0)
}

fn grants(from: usize, to: usize) -> Vec<Value> {
    (from..to)
        .map(|i| json!({ "requestedFor": [format!("u{i}")], "requestedItems": [{ "type": "ENTITLEMENT", "id": "sales" }] }))
        .collect()
}

/// Stores `bodies` through the intake, 64 at a time (a durable cluster syncs each
/// commit: one at a time, 20,000 would take minutes).
fn preload_many(cfg: &std::path::Path, bodies: &[Value]) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let config = std::sync::Arc::new(provd::config::Config::load(cfg).unwrap());
    let store = rt.block_on(provd::store::open(&config)).unwrap();
    for chunk in bodies.chunks(64) {
        let now = jiff::Timestamp::now();
        let calls = chunk.iter().map(|b| {
            let (config, store, body) = (config.clone(), store.clone(), b.to_string());
            async move {
                provd::intake::submit(
                    &config,
                    &store,
                    now,
                    body.as_bytes(),
                    &provd::model::Requester::other("bench"),
                    None,
                )
                .await
                .unwrap();
            }
        });
        rt.block_on(futures_util::future::join_all(calls));
    }
}

fn start(cfg: &std::path::Path) -> Vec<Child> {
    (0..3).map(|i| agent(cfg, i)).collect()
}

fn stop(children: &mut [Child]) {
    for c in children {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// Waits until `target` jobs succeeded, restarting PostgreSQL once when `restart_at`
/// have.
fn wait_for(
    rt: &tokio::runtime::Runtime,
    store: &provd::store::Store,
    pg: &Pg,
    target: i64,
    mut restart_at: Option<i64>,
) {
    let t = Instant::now();
    loop {
        let done = match rt.block_on(store.job_counts()) {
            Ok(_) => succeeded(rt, store),
            Err(_) => 0, // restarting
        };
        if done >= target {
            return;
        }
        if restart_at.is_some_and(|at| done >= at) {
            restart_at = None;
            pg.stop();
            std::thread::sleep(Duration::from_secs(2));
            pg.restart();
            println!("  PostgreSQL restarted at {done} jobs done");
        }
        assert!(t.elapsed() < Duration::from_secs(1_800), "stuck at {done}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn run(pg: &Pg, tag: &str, age: usize, n: usize) -> Drain {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = format!("backlog_{tag}");
    pg.psql("postgres", &format!("CREATE DATABASE {db}"));
    let (crm, target) = crm_server_with_state();
    let cfg = config(
        dir.path(),
        &format!("{}?sslmode=disable", pg.url(&db)),
        &crm,
        age + n,
    );
    let store = preload(&rt, &cfg, &[]);
    if age > 0 {
        let t = Instant::now();
        preload_many(&cfg, &grants(0, age));
        let mut agents = start(&cfg);
        wait_for(&rt, &store, pg, age as i64, None);
        stop(&mut agents);
        println!(
            "  {tag}: aged with {age} jobs, {} events in {:.0}s",
            count(pg, &db, "SELECT count(*) FROM events"),
            t.elapsed().as_secs_f64()
        );
    } else {
        pg.psql(&db, "ANALYZE");
    }
    let first_new = count(pg, &db, "SELECT COALESCE(max(id), 0) FROM jobs");
    let expired_before = count(
        pg,
        &db,
        "SELECT count(*) FROM events WHERE kind = 'job_lease_expired'",
    );
    let creates_before = target.lock().unwrap().creates;
    preload_many(&cfg, &grants(age, age + n));
    let t = Instant::now();
    let mut agents = start(&cfg);
    wait_for(
        &rt,
        &store,
        pg,
        (age + n) as i64,
        Some((age + n / 2) as i64),
    );
    let seconds = t.elapsed().as_secs_f64();
    stop(&mut agents);
    let crm = target.lock().unwrap();
    Drain {
        seconds,
        max_attempt: count(
            pg,
            &db,
            &format!("SELECT max(attempt) FROM jobs WHERE id > {first_new}"),
        ),
        over_two: count(
            pg,
            &db,
            &format!("SELECT count(*) FROM jobs WHERE id > {first_new} AND attempt > 2"),
        ),
        lease_expired: count(
            pg,
            &db,
            "SELECT count(*) FROM events WHERE kind = 'job_lease_expired'",
        ) - expired_before,
        duplicates: (crm.creates - creates_before).saturating_sub(n as u64),
        events: count(pg, &db, "SELECT count(*) FROM events"),
        jobs: count(pg, &db, "SELECT count(*) FROM jobs"),
    }
}

fn main() {
    let (mut age, mut n) = (20_000, 6_000);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let v = args.next().and_then(|v| v.parse().ok());
        match (a.as_str(), v) {
            ("--age", Some(v)) => age = v,
            ("--requests", Some(v)) => n = v,
            ("--bench", _) => {}
            _ => panic!("usage: pg_backlog [--age N] [--requests N]"),
        }
    }
    let pg = Pg::start_durable();
    // As on the cluster where the livelock was seen: statistics come only from provd.
    pg.psql("postgres", "ALTER SYSTEM SET autovacuum = off");
    pg.psql("postgres", "SELECT pg_reload_conf()");
    let deadlocks_before = pg.log_text().matches("deadlock detected").count();
    let aged = run(&pg, "aged", age, n);
    let deadlocks_aged = pg.log_text().matches("deadlock detected").count() - deadlocks_before;
    let fresh = run(&pg, "fresh", 0, n);
    let deadlocks_fresh =
        pg.log_text().matches("deadlock detected").count() - deadlocks_before - deadlocks_aged;
    for (name, d, dl) in [
        ("aged", &aged, deadlocks_aged),
        ("fresh statistics", &fresh, deadlocks_fresh),
    ] {
        println!(
            "pg_backlog: {name}: {n} requests, 3 agents, PostgreSQL restarted half-way: drained in {:.1}s; max attempts {}, jobs run more than twice {}, lease expiries {}, deadlocks logged {dl}, duplicate creates {}; store {} jobs, {} events",
            d.seconds, d.max_attempt, d.over_two, d.lease_expired, d.duplicates, d.jobs, d.events
        );
    }
    println!(
        "pg_backlog: aged / fresh drain time {:.2} (goal <= 2)",
        aged.seconds / fresh.seconds
    );
}
