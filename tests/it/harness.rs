//! Spawns the real `provd` binary on a throwaway configuration and a free port, waits for
//! `/healthz`, and kills it on drop. Everything polls with a deadline; nothing sleeps and
//! hopes.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Waits for a store call from anywhere (a sync helper inside an async test included): on
/// a thread of its own with a runtime of its own, as the CLI does.
pub fn wait<T: Send + 'static>(f: provd::store::BoxFuture<T>) -> T {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    })
    .join()
    .unwrap()
}

pub const BIN: &str = env!("CARGO_BIN_EXE_provd");

/// The binary the harness starts: `PROVD_TEST_BIN` when set (a long simulation runs a
/// copy, so the tree can be rebuilt meanwhile), else the one cargo built.
pub fn bin() -> String {
    std::env::var("PROVD_TEST_BIN").unwrap_or_else(|_| BIN.to_string())
}

/// Polls `f` until it returns Some, or panics after `secs` with `what`.
pub async fn eventually<T, F, Fut>(secs: u64, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {secs}s waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A configuration directory: two manual sources, a catalog and identities.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub port: u16,
    /// With `PROVD_TEST_STORE=postgres`: the cluster this Env's store lives in, and its URL.
    pub pg: Option<(crate::pg::Pg, String)>,
}

impl Env {
    pub fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("sources")).unwrap();
        std::fs::write(
            d.join("provd.toml"),
            "[agent]\nstate_dir = \"state\"\nspool_dir = \"spool\"\nshutdown_grace = \"5s\"\n[api]\ntokens_file = \"tokens\"\n[log]\nformat = \"json\"\nlevel = \"debug\"\n",
        )
        .unwrap();
        std::fs::write(
            d.join("tokens"),
            "# test token\nt0ken-for-tests-1234567890\n",
        )
        .unwrap();
        // A file of bare tokens is its owner's alone, or provd refuses it.
        std::fs::set_permissions(
            d.join("tokens"),
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .unwrap();
        std::fs::write(
            d.join("sources/flat.toml"),
            "id = \"flat\"\ntype = \"manual\"\nowner = \"flat-owner@example.com\"\nremind_after = \"3d\"\n[account]\nnative_id = \"{email}\"\n",
        )
        .unwrap();
        std::fs::write(
            d.join("sources/badges.toml"),
            "id = \"badges\"\ntype = \"manual\"\nowner = \"facilities@example.com\"\n",
        )
        .unwrap();
        std::fs::write(
            d.join("catalog.toml"),
            r#"
[[entitlement]]
id = "ent-view"
source = "flat"
attribute = "groups"
value = "VIEW"
[[entitlement]]
id = "ent-admin"
source = "flat"
attribute = "groups"
value = "=ADMIN"
[[entitlement]]
id = "ent-hq"
source = "badges"
attribute = "zones"
value = "HQ"
[[access_profile]]
id = "ap-basic"
entitlements = ["ent-view", "ent-hq"]
[[access_profile]]
id = "ap-view"
entitlements = ["ent-view"]
[[role]]
id = "role-staff"
access_profiles = ["ap-basic"]
"#,
        )
        .unwrap();
        std::fs::write(
            d.join("identities.csv"),
            "id,firstName,lastName,email\nada,Ada,Lovelace,ada@example.com\ngrace,Grace,Hopper,grace@example.com\nmallory,@Mal,-lory,mal@example.com\n",
        )
        .unwrap();
        // The same tests on a PostgreSQL store: tests/run runs a chosen set this way.
        let pg = (std::env::var("PROVD_TEST_STORE").as_deref() == Ok("postgres")).then(|| {
            let pg = crate::pg::Pg::start();
            pg.psql("postgres", "CREATE DATABASE provd");
            let url = format!("{}?sslmode=disable", pg.url("provd"));
            let path = d.join("provd.toml");
            // Leases short enough that a killed agent's jobs come back within the tests'
            // deadlines: on a shared store only expired leases are taken back.
            let text = std::fs::read_to_string(&path)
                .unwrap()
                .replace("[agent]\n", "[agent]\nlease = \"3s\"\n")
                + &format!("[store]\npostgres_url = \"{url}\"\npool_size = 4\n");
            std::fs::write(&path, text).unwrap();
            (pg, url)
        });
        Env {
            dir,
            port: free_port(),
            pg,
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn config(&self) -> PathBuf {
        self.path().join("provd.toml")
    }

    pub fn token(&self) -> &'static str {
        "t0ken-for-tests-1234567890"
    }

    /// Runs a CLI command against this configuration.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.cli_with(args, None)
    }

    pub fn cli_with(&self, args: &[&str], stdin: Option<&[u8]>) -> Output {
        let mut cmd = Command::new(bin());
        cmd.arg("--config")
            .arg(self.config())
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        let mut child = cmd.spawn().unwrap();
        if let Some(input) = stdin {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(input).unwrap();
        }
        child.wait_with_output().unwrap()
    }

    pub fn store(&self) -> provd::store::Store {
        match &self.pg {
            Some((_, url)) => {
                let settings = crate::pg_store::settings(url.clone());
                wait(Box::pin(async move {
                    provd::store::Store::postgres(&settings).await
                }))
                .unwrap()
            }
            None => provd::store::Store::open(&self.path().join("state")).unwrap(),
        }
    }

    /// `provd run` on this environment when it is expected to refuse to start: its exit
    /// code and standard error (it would run for ever otherwise).
    pub fn run_refused(&self) -> (Option<i32>, String) {
        let out = Command::new(bin())
            .args(["run", "--config"])
            .arg(self.config())
            .env("PROVD_API__LISTEN", format!("127.0.0.1:{}", self.port))
            .stdin(Stdio::null())
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    }

    /// Everything the store holds, as text: the SQLite files' bytes, or a data-only
    /// dump of the PostgreSQL database. A check that a secret is nowhere in the store must
    /// read this, never the SQLite file alone (which is absent on PostgreSQL, and would
    /// pass without looking).
    pub fn store_text(&self) -> String {
        if let Some((_, url)) = &self.pg {
            let out = Command::new("pg_dump")
                .args(["--data-only", "--no-owner", "-d"])
                .arg(url.replace("?sslmode=disable", ""))
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "pg_dump: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            assert!(
                text.contains("COPY public.events"),
                "the dump holds the store"
            );
            return text;
        }
        let state = self.path().join("state");
        let db = std::fs::read(state.join("provd.db")).unwrap();
        let wal = std::fs::read(state.join("provd.db-wal")).unwrap_or_default();
        assert!(!db.is_empty(), "the store file is there");
        format!(
            "{}{}",
            String::from_utf8_lossy(&db),
            String::from_utf8_lossy(&wal)
        )
    }

    pub fn count(&self, table: &str) -> i64 {
        *wait(self.store().row_counts())
            .unwrap()
            .get(table)
            .unwrap_or_else(|| panic!("no table {table}"))
    }

    /// Every audit event, oldest first.
    pub fn events(&self) -> Vec<provd::store::StoredEvent> {
        wait(self.store().events_after(0, usize::MAX >> 1)).unwrap()
    }

    pub fn write_request(&self, name: &str, body: &serde_json::Value) -> PathBuf {
        let p = self.path().join(name);
        std::fs::write(&p, body.to_string()).unwrap();
        p
    }

    pub async fn start(&self) -> Agent {
        Agent::start(self).await
    }
}

/// A running `provd run`; killed on drop.
pub struct Agent {
    pub child: Option<Child>,
    pub base: String,
    pub log: PathBuf,
    pub http: reqwest::Client,
    token: String,
}

impl Agent {
    pub async fn start(env: &Env) -> Agent {
        Self::start_with(env, &[]).await
    }

    /// Starts with extra environment variables (NOTIFY_SOCKET, WATCHDOG_USEC, ...).
    pub async fn start_with(env: &Env, vars: &[(&str, String)]) -> Agent {
        Self::start_on(env, env.port, vars).await
    }

    /// One of several agents on one configuration: its own port, and whatever else
    /// `vars` override (PROVD_AGENT__NAME, PROVD_AGENT__STATE_DIR, ...).
    pub async fn start_on(env: &Env, port: u16, vars: &[(&str, String)]) -> Agent {
        Self::start_full(env, port, vars, &[]).await
    }

    /// Starts with extra arguments after `run` (`--new-store`).
    pub async fn start_args(env: &Env, args: &[&str]) -> Agent {
        Self::start_full(env, env.port, &[], args).await
    }

    async fn start_full(env: &Env, port: u16, vars: &[(&str, String)], args: &[&str]) -> Agent {
        static STARTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = STARTS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let log = env.path().join(format!("agent-{n}.log"));
        let child = Command::new(bin())
            .arg("run")
            .args(args)
            .arg("--config")
            .arg(env.config())
            .env("PROVD_API__LISTEN", format!("127.0.0.1:{port}"))
            .envs(vars.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let agent = Agent {
            child: Some(child),
            base: format!("http://127.0.0.1:{port}"),
            log,
            http: crate::harness::client(),
            token: env.token().to_string(),
        };
        let url = format!("{}/healthz", agent.base);
        let http = agent.http.clone();
        eventually(20, "provd /healthz", || {
            let (http, url) = (http.clone(), url.clone());
            async move {
                http.get(&url)
                    .send()
                    .await
                    .ok()
                    .filter(|r| r.status().is_success())
                    .map(|_| ())
            }
        })
        .await;
        agent
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    pub async fn post(&self, path: &str, body: &str) -> reqwest::Response {
        self.http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap()
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends `signal` (e.g. "HUP") and returns at once.
    pub fn signal(&self, signal: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(ok.success());
    }

    /// Waits until `/tasks/v1` lists `n` open tasks, and returns them.
    pub async fn open_tasks(&self, n: usize) -> Vec<serde_json::Value> {
        eventually(10, &format!("{n} open tasks"), || async move {
            let t: Vec<serde_json::Value> = self.get("/tasks/v1").await.json().await.ok()?;
            (t.len() == n).then_some(t)
        })
        .await
    }

    /// Sends `signal` (e.g. "TERM", "KILL") and waits for the exit status.
    pub async fn signal_and_wait(&mut self, signal: &str, secs: u64) -> std::process::ExitStatus {
        let pid = self.pid().to_string();
        let ok = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(&pid)
            .status()
            .unwrap();
        assert!(ok.success());
        let mut child = self.child.take().unwrap();
        eventually(secs, "provd to exit", || {
            let status = child.try_wait().unwrap();
            async move { status }
        })
        .await
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// An HTTP client for tests (reqwest shares the connectors' rustls, which needs its
/// crypto provider installed first).
pub fn client() -> reqwest::Client {
    provd_connector_core::http::init_tls();
    reqwest::Client::new()
}

/// A number in `lo..hi` that differs from run to run (for random moments in chaos tests).
pub fn random(lo: u64, hi: u64) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(lo);
    lo + h.finish() % (hi - lo)
}

/// Posts `body` under Idempotency-Key `key` until an agent answers 202 (through kills and
/// restarts), trying `bases` in turn; the request id it got. A 400 fails the test: the body
/// is valid, so a refusal is a bug, not a moment to wait out.
pub async fn post_until_accepted(
    http: &reqwest::Client,
    bases: &[String],
    token: &str,
    key: &str,
    body: &str,
) -> String {
    for attempt in 0.. {
        let base = &bases[attempt % bases.len()];
        let r = http
            .post(format!("{base}/access-requests/v1"))
            .bearer_auth(token)
            .header("Idempotency-Key", key)
            .body(body.to_string())
            .send()
            .await;
        match r {
            Ok(r) if r.status() == 400 => panic!("refused: {body}: {:?}", r.text().await),
            Ok(r) if r.status() == 202 => {
                let v: serde_json::Value = r.json().await.unwrap();
                return v["newRequests"][0]["accessRequestIds"][0]
                    .as_str()
                    .unwrap()
                    .to_string();
            }
            _ => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
        }
    }
    unreachable!("the loop above only ends by returning")
}
