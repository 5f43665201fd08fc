//! What the benchmarks share: the agent's binary (optionally under a profiler), a free
//! port, a process's peak RSS, and the throwaway PostgreSQL cluster of the integration
//! tests.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;

#[path = "../../tests/it/pg.rs"]
pub mod pg;

pub mod crm;

/// The benches' tokens file: one bare token, readable by its owner alone (provd refuses
/// a file of bare tokens others can read).
pub fn write_tokens(path: &std::path::Path) {
    std::fs::write(path, "bench-token\n").unwrap();
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Peak resident set (VmHWM) of a process, in KiB; 0 when it is gone.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("VmHWM:")
                .map(|v| v.trim().trim_end_matches(" kB").trim().parse().unwrap_or(0))
        })
        .unwrap_or(0)
}

/// The release binary, or `BENCH_BIN` (e.g. `target/profiling/provd` for perf).
pub fn provd_bin() -> PathBuf {
    let p = std::env::var_os("BENCH_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/release/provd"));
    assert!(p.exists(), "build it first: cargo build --release");
    p
}

/// A command that runs the agent, wrapped in `BENCH_WRAP` when set (e.g.
/// `BENCH_WRAP="perf record -g -o /tmp/perf.data"`), so a profile shows where time goes.
pub fn agent_command() -> Command {
    let wrap = std::env::var("BENCH_WRAP").unwrap_or_default();
    let mut words: Vec<String> = wrap.split_whitespace().map(String::from).collect();
    words.push(provd_bin().display().to_string());
    let mut cmd = Command::new(&words[0]);
    cmd.args(&words[1..]);
    cmd
}

/// Stops an agent started by [`agent_command`]. Under a profiler, only the agent gets
/// SIGTERM, so the profiler can write its data; then waits for both.
pub fn stop_agent(agent: &mut std::process::Child) {
    if std::env::var("BENCH_WRAP").unwrap_or_default().is_empty() {
        let _ = agent.kill();
    } else {
        let _ = Command::new("pkill")
            .args(["-TERM", "-P", &agent.id().to_string()])
            .status();
    }
    let _ = agent.wait();
}

/// CPU seconds (user + system) a process has used so far (`std::process::id()` for the
/// bench itself).
pub fn cpu_s(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at state, field 3.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|u| u.parse::<f64>().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
    ticks / 100.0
}
