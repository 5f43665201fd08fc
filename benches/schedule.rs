//! Scheduler benchmark: N removals of a manual source's entitlement, due within a short
//! window, fired by the real scheduler on the real store. Prints p50/p99/max lag between
//! each removeDate and its removal being recorded (`fired_at`), the time until every
//! revoke is planned too, and peak RSS.
//!
//!     cargo bench --bench schedule              # N = 100000, window 2 s
//!     cargo bench --bench schedule -- 10000 1   # N, window in seconds
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use provd::clock::{Clock, SystemClock};
use provd::config::Config;
use provd::schedule::Scheduler;
use provd::store::Store;
use tokio::sync::Notify;

fn rss_peak_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("VmHWM:")
                .map(|v| v.trim().trim_end_matches(" kB").trim().parse().unwrap_or(0))
        })
        .unwrap_or(0)
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let n: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let window_s: i64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(2);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("sources")).unwrap();
    std::fs::write(d.join("provd.toml"), "[agent]\nstate_dir = \"state\"\n").unwrap();
    std::fs::write(
        d.join("sources/flat.toml"),
        "id = \"flat\"\ntype = \"manual\"\nowner = \"o@example.com\"\n",
    )
    .unwrap();
    std::fs::write(
        d.join("catalog.toml"),
        "[[entitlement]]\nid = \"ent\"\nsource = \"flat\"\nattribute = \"groups\"\nvalue = \"G\"\n",
    )
    .unwrap();
    let mut ids = String::from("id,firstName\n");
    for i in 0..n {
        ids.push_str(&format!("u{i},U{i}\n"));
    }
    std::fs::write(d.join("identities.csv"), ids).unwrap();
    let live = provd::config::Live::new(Config::load(&d.join("provd.toml")).unwrap());
    let config = live.get();
    let sqlite = provd::store::sqlite::Sqlite::open(&config.agent.state_dir).unwrap();
    let store = Store::new(sqlite.clone());

    // Setup (not measured): N active assignments, due evenly over the window, starting
    // far enough ahead for the setup to finish.
    let setup = Instant::now();
    let start = SystemClock.now().as_millisecond() + 3_000 + (n as i64 / 50);
    let ents = r#"[{"id":"ent","source":"flat","attribute":"groups","value":"G"}]"#;
    let due: Vec<i64> = (0..n)
        .map(|i| start + (i as i64 * window_s * 1000) / n as i64)
        .collect();
    sqlite.bench_due_assignments("ent", ents, &due).unwrap();
    eprintln!(
        "setup: {n} assignments in {:.1}s; due over {window_s}s",
        setup.elapsed().as_secs_f64()
    );

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let began = Instant::now();
    rt.block_on(async {
        let scheduler = Scheduler {
            removals: store.as_schedule(),
            accounts: store.as_accounts(),
            live: live.clone(),
            clock: Arc::new(SystemClock),
            wake: Arc::new(Notify::new()),
            dispatch: Arc::new(Notify::new()),
            liveness: None,
            leading: provd::leading::Leading::always(),
        };
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(scheduler.run(async {
            let _ = rx.await;
        }));
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let unplanned = store.unplanned(1).await.unwrap();
            if store.next_removal().await.unwrap().is_none() && unplanned.is_empty() {
                break;
            }
        }
        let _ = tx.send(());
        task.await.unwrap().unwrap();
    });
    let mut lags: Vec<i64> = sqlite.bench_fire_lags().unwrap();
    lags.sort_unstable();
    let q = |l: &[i64], p: f64| l[((l.len() as f64 - 1.0) * p).round() as usize];
    let mut planned: Vec<i64> = sqlite.bench_plan_lags().unwrap();
    planned.sort_unstable();
    println!(
        "schedule bench: {} removals due over {window_s}s, all fired and planned {:.1}s after start; fire lag p50 {} ms, p99 {} ms, max {} ms; revoke planned after due p50 {} ms, p99 {} ms, max {} ms (goal: max < 5000); peak RSS {} MiB",
        lags.len(),
        began.elapsed().as_secs_f64(),
        q(&lags, 0.5),
        q(&lags, 0.99),
        lags.last().copied().unwrap_or(0),
        q(&planned, 0.5),
        q(&planned, 0.99),
        planned.last().copied().unwrap_or(0),
        rss_peak_kib() / 1024
    );
    assert_eq!(lags.len(), n, "every removal fired exactly once");
    assert_eq!(planned.len(), n, "every revoke planned exactly once");
}
