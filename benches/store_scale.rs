//! The store with a million jobs waiting: does a claim cost the same at 1,000 queued jobs
//! as at 1,000,000, does the agent start in under a second, and does it stay under
//! 100 MiB?
//!
//!     cargo build --release && cargo bench --bench store_scale            # 1,000,000
//!     cargo bench --bench store_scale -- 200000
//!
//! Jobs are copies of one real accepted job (made through `intake::submit`), written in
//! bulk with SQL so that filling takes seconds, not the hours a million fsync'd accepts
//! would; the lane triggers run for every row as they would for accepted ones. One job
//! in ten is the second of its (identity, source) lane, so the lane rule has work to do.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::{free_port, rss_kib};

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use provd::store::sqlite::Sqlite as Store;

const CLAIM_BATCH: usize = 32;
const CLAIMS: usize = 50;

fn config(dir: &Path, port: u16) -> PathBuf {
    let c = dir.join("cfg");
    std::fs::create_dir_all(c.join("sources")).unwrap();
    common::write_tokens(&c.join("tokens"));
    std::fs::write(
        c.join("provd.toml"),
        format!("[agent]\nstate_dir = \"state\"\n[api]\nlisten = \"127.0.0.1:{port}\"\ntokens_file = \"tokens\"\n[log]\nlevel = \"warn\"\n"),
    )
    .unwrap();
    std::fs::write(
        c.join("sources/flat.toml"),
        "id = \"flat\"\ntype = \"manual\"\nowner = \"o@example.com\"\n[account]\nnative_id = \"{id}\"\n",
    )
    .unwrap();
    std::fs::write(
        c.join("catalog.toml"),
        "[[entitlement]]\nid = \"vpn\"\nsource = \"flat\"\nattribute = \"groups\"\nvalue = \"VPN\"\n",
    )
    .unwrap();
    std::fs::write(
        c.join("identities.csv"),
        "id,firstName,lastName\np0,P,Zero\n",
    )
    .unwrap();
    c.join("provd.toml")
}

/// Adds jobs `from..to` as copies of job 1 (queued, identity `q<n>`; every tenth shares
/// the previous one's lane), in one transaction.
fn fill(store: &Store, from: usize, to: usize) {
    store.bench_copy_first_job(from, to).unwrap();
}

/// Median time to find the next batch (the claim's read, without its write and fsync).
fn find_cost(store: &Store, now: i64) -> Duration {
    let mut times: Vec<Duration> = (0..CLAIMS)
        .map(|_| {
            let t = Instant::now();
            let n = store.bench_find_claimable(now, CLAIM_BATCH).unwrap();
            assert_eq!(n, CLAIM_BATCH);
            t.elapsed()
        })
        .collect();
    times.sort();
    times[times.len() / 2]
}

/// Median time of one claim transaction (a batch of 32, as the dispatcher takes them).
fn claim_cost(store: &Store, now: i64) -> Duration {
    let mut times: Vec<Duration> = (0..CLAIMS)
        .map(|_| {
            let t = Instant::now();
            let got = store
                .claim("bench", CLAIM_BATCH, now, now + 60_000, &[], None)
                .unwrap();
            let took = t.elapsed();
            assert_eq!(got.len(), CLAIM_BATCH, "a full batch is due");
            took
        })
        .collect();
    times.sort();
    times[times.len() / 2]
}

fn ready(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.starts_with("HTTP/1.1 200")
}

fn main() {
    let total: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let bin = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/release/provd");
    assert!(bin.exists(), "build it first: cargo build --release");
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = config(dir.path(), port);
    let config = std::sync::Arc::new(provd::config::Config::load(&cfg).unwrap());
    // The SQLite backend itself: the fill and the claims are measured without the async
    // boundary (the agent, measured after, goes through it).
    let store = Store::open(&config.agent.state_dir).unwrap();
    let now = jiff::Timestamp::now();
    let body = br#"{"requestedFor":["p0"],"requestedItems":[{"type":"ENTITLEMENT","id":"vpn"}]}"#;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(provd::intake::submit(
            &config,
            &provd::store::Store::new(store.clone()),
            now,
            body,
            &provd::model::Requester::other("bench"),
            None,
        ))
        .unwrap();
    // Far enough ahead that every copy (created_at + i ms) is due.
    let claim_at = now.as_millisecond() + total as i64 + 1;

    let mut queued = 1;
    let mut depth = 10_000.min(total);
    while depth <= total {
        let t = Instant::now();
        fill(&store, queued, depth);
        let filled = t.elapsed();
        queued = depth;
        let find = find_cost(&store, claim_at);
        let cost = claim_cost(&store, claim_at);
        println!(
            "store scale: {depth:>9} jobs: claim of {CLAIM_BATCH} median {:>5.2} ms (finding them {:>5.3} ms, the rest is the write + fsync); filled in {:.1} s",
            cost.as_secs_f64() * 1e3,
            find.as_secs_f64() * 1e3,
            filled.as_secs_f64()
        );
        if depth == total {
            break;
        }
        depth = (depth * 10).min(total);
    }
    // The claims above are undone, as a cleanly stopped agent leaves its jobs: start-up
    // with thousands of leases to take back measures that rare case, not the store.
    store.bench_unclaim("bench").unwrap();
    let db = std::fs::metadata(config.agent.state_dir.join("provd.db"))
        .map(|m| m.len())
        .unwrap_or(0);
    drop(store);

    // The agent on that store: time to /readyz, then its peak RSS while dispatching.
    let t = Instant::now();
    let mut agent = Command::new(&bin)
        .args(["run", "--config"])
        .arg(&cfg)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ready(port) {
        assert!(Instant::now() < deadline, "agent not ready in 30 s");
        std::thread::sleep(Duration::from_millis(2));
    }
    let startup = t.elapsed();
    std::thread::sleep(Duration::from_secs(5));
    let rss = rss_kib(agent.id());
    let store = Store::open(&config.agent.state_dir).unwrap();
    let moved: i64 = store
        .job_counts()
        .unwrap()
        .iter()
        .filter(|(_, state, _)| *state == provd::store::JobState::Manual)
        .map(|(_, _, n)| n)
        .sum();
    let _ = Command::new("kill")
        .args(["-TERM", &agent.id().to_string()])
        .status();
    let _ = agent.wait();
    println!(
        "store scale: agent on {queued} queued jobs ({} MiB database): ready in {} ms; peak RSS {} MiB after 5 s (goal < 1 s, < 100 MiB); {moved} jobs dispatched meanwhile",
        db / (1024 * 1024),
        startup.as_millis(),
        rss / 1024
    );
}
