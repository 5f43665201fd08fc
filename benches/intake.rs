//! Intake throughput (DESIGN §18/§19, issue 16's baseline): 8 keep-alive HTTP clients post
//! grant requests to the release agent for a while, dispatch running meanwhile (a manual
//! source: each job opens tasks); accepted requests per second, p50/p99 latency of a 202,
//! and the agent's peak RSS; on SQLite, then on a durable PostgreSQL store.
//!
//! Run:
//!
//!     cargo build --release && cargo bench --bench intake            # 10 s per store
//!     cargo bench --bench intake -- 30 sqlite                      # one store
//!     BENCH_BIN=target/profiling/provd BENCH_WRAP="perf record -g -o /tmp/p.data" \
//!       cargo bench --bench intake -- 10 sqlite                      # profile the agent
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::{cpu_s, free_port, pg::Pg, rss_kib};

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

const CLIENTS: usize = 8;
const IDENTITIES: usize = 100_000;

fn start(dir: &Path, port: u16, store: &str) -> Child {
    std::fs::create_dir_all(dir.join("sources")).unwrap();
    common::write_tokens(&dir.join("tokens"));
    std::fs::write(
        dir.join("provd.toml"),
        format!("[agent]\nstate_dir = \"state\"\n[api]\nlisten = \"127.0.0.1:{port}\"\ntokens_file = \"tokens\"\n[log]\nlevel = \"warn\"\n{store}"),
    )
    .unwrap();
    std::fs::write(
        dir.join("sources/flat.toml"),
        "id = \"flat\"\ntype = \"manual\"\nowner = \"o@example.com\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("catalog.toml"),
        "[[entitlement]]\nid = \"badge\"\nsource = \"flat\"\nattribute = \"zones\"\nvalue = \"HQ\"\n",
    )
    .unwrap();
    let mut ids = String::from("id,firstName,lastName,email\n");
    for i in 0..IDENTITIES {
        ids.push_str(&format!("u{i},U{i},L{i},u{i}@example.com\n"));
    }
    std::fs::write(dir.join("identities.csv"), ids).unwrap();
    let child = common::agent_command()
        .args(["run", "--config"])
        .arg(dir.join("provd.toml"))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "agent not up");
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

/// Requests stored per group commit, from the agent's metrics.
async fn group_size(port: u16) -> f64 {
    let text = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .bearer_auth("bench-token")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let value = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
            .unwrap_or(0.0)
    };
    value("provd_accept_grouped_requests_total ") / value("provd_accept_groups_total ").max(1.0)
}

/// (accepted per second, p50 ms, p99 ms) of `secs` seconds of 8 clients.
async fn load(port: u16, secs: u64) -> (f64, f64, f64) {
    let until = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        tasks.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let url = format!("http://127.0.0.1:{port}/access-requests/v1");
            let mut lat = Vec::new();
            let mut i = c;
            while Instant::now() < until {
                let body = format!(
                    "{{\"requestedFor\":[\"u{}\"],\"requestedItems\":[{{\"type\":\"ENTITLEMENT\",\"id\":\"badge\"}}]}}",
                    i % IDENTITIES
                );
                let t = Instant::now();
                let r = http.post(&url).bearer_auth("bench-token").body(body).send().await.unwrap();
                assert_eq!(r.status(), 202, "{:?}", r.text().await);
                lat.push(t.elapsed().as_secs_f64() * 1000.0);
                i += CLIENTS;
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort_by(f64::total_cmp);
    let q = |p: f64| all[((all.len() - 1) as f64 * p).round() as usize];
    (all.len() as f64 / secs as f64, q(0.5), q(0.99))
}

fn main() {
    let secs: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(10);
    // `sqlite` or `postgresql`: that store only (e.g. to profile one).
    let only = std::env::args()
        .skip(1)
        .find(|a| a.chars().all(char::is_alphabetic))
        .unwrap_or_default();
    // reqwest is built without a default TLS provider here (the connectors choose ring).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let pg = Pg::start_durable();
    pg.psql("postgres", "CREATE DATABASE intake");
    for (name, store) in [
        ("SQLite", String::new()),
        (
            "PostgreSQL",
            format!(
                "[store]\npostgres_url = \"{}?sslmode=disable\"\n",
                pg.url("intake")
            ),
        ),
    ] {
        if !only.is_empty() && !name.eq_ignore_ascii_case(&only) {
            continue;
        }
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut agent = start(dir.path(), port, &store);
        let (agent0, me0) = (cpu_s(agent.id()), cpu_s(std::process::id()));
        let (rate, p50, p99) = rt.block_on(load(port, secs));
        let rss = rss_kib(agent.id()) / 1024;
        let groups = rt.block_on(group_size(port));
        let (agent_cpu, me_cpu) = (cpu_s(agent.id()) - agent0, cpu_s(std::process::id()) - me0);
        println!(
            "intake: {name}: {rate:.0} accepted/s from {CLIENTS} keep-alive clients over {secs}s, p50 {p50:.1} ms, p99 {p99:.1} ms; agent peak RSS {rss} MiB, CPU {:.2} cores (clients {:.2}), {groups:.1} requests per commit (goal on SQLite: >= 3,000/s, p99 < 20 ms)",
            agent_cpu / secs as f64,
            me_cpu / secs as f64
        );
        common::stop_agent(&mut agent);
    }
}
