//! A throwaway PostgreSQL cluster per test (issue 15): `initdb` in a temp dir, `pg_ctl`
//! on a free port on 127.0.0.1 with its socket in that dir, stopped (immediately) on drop.
//! initdb refuses to run as root, so when the tests run as root (CI does) the cluster
//! belongs to the `postgres` system user. Nothing depends on a server already running.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Where Debian keeps the server binaries (`/usr/lib/postgresql/NN/bin`), newest first.
fn bin_dir() -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path().join("bin")))
                .collect()
        })
        .unwrap_or_default();
    dirs.retain(|d| d.join("initdb").exists());
    dirs.sort();
    dirs.pop()
        .unwrap_or_else(|| panic!("initdb not found under /usr/lib/postgresql: run `bash tests/run`, which installs Debian's postgresql"))
}

fn is_root() -> bool {
    // SAFETY: geteuid only reads the process's credentials.
    unsafe { libc::geteuid() == 0 }
}

/// Runs a server binary as the cluster's owner.
fn run_as_owner(bin: &Path, args: &[&str]) -> Output {
    let mut cmd = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin);
        c
    } else {
        Command::new(bin)
    };
    cmd.args(args).output().unwrap()
}

pub struct Pg {
    dir: tempfile::TempDir,
    pub port: u16,
    bin: PathBuf,
    /// The superuser's password when TCP connections must give one (scram-sha-256).
    password: Option<String>,
    /// Commits synced to disk (benchmarks); the tests run without.
    fsync: bool,
}

impl Pg {
    pub fn start() -> Pg {
        Self::start_with(None)
    }

    #[allow(dead_code)]
    /// A cluster that syncs its commits to disk as a production one does (the tests' own
    /// run with fsync off, for speed): for benchmarks.
    pub fn start_durable() -> Pg {
        let mut pg = Self::start_with(None);
        // Set on the command line at start, so it takes a restart.
        pg.stop();
        pg.fsync = true;
        // BENCH_PG_STATEMENTS: statement statistics, for a benchmark to show where the
        // server's time went.
        if std::env::var_os("BENCH_PG_STATEMENTS").is_some() {
            use std::io::Write;
            std::fs::OpenOptions::new()
                .append(true)
                .open(pg.dir.path().join("data/postgresql.auto.conf"))
                .and_then(|mut f| f.write_all(b"shared_preload_libraries = 'pg_stat_statements'\n"))
                .unwrap();
        }
        pg.restart();
        assert_eq!(pg.psql("postgres", "SHOW fsync"), "on");
        pg
    }

    /// A cluster whose TCP connections authenticate with passwords (scram-sha-256); the
    /// superuser's is `superuser_password`.
    pub fn start_scram(superuser_password: &str) -> Pg {
        Self::start_with(Some(superuser_password.to_string()))
    }

    fn start_with(password: Option<String>) -> Pg {
        let bin = bin_dir();
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        if is_root() {
            let ok = Command::new("chown")
                .args(["postgres:postgres"])
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(ok.success(), "chown of the cluster dir to postgres failed");
        }
        let data_s = data.display().to_string();
        let pwfile = dir.path().join("pw");
        let mut args = vec![
            "-D".to_string(),
            data_s.clone(),
            "-U".into(),
            "postgres".into(),
            "--no-sync".into(),
            "-E".into(),
            "UTF8".into(),
        ];
        match &password {
            Some(p) => {
                std::fs::write(&pwfile, p).unwrap();
                if is_root() {
                    let _ = Command::new("chown")
                        .args(["postgres:postgres"])
                        .arg(&pwfile)
                        .status();
                }
                args.extend([
                    "--auth-local=trust".into(),
                    "--auth-host=scram-sha-256".into(),
                    format!("--pwfile={}", pwfile.display()),
                ]);
            }
            None => args.push("--auth=trust".into()),
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = run_as_owner(&bin.join("initdb"), &args);
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap();
        pg_ctl_start(&bin, dir.path(), port, false);
        Pg {
            dir,
            port,
            bin,
            password,
            fsync: false,
        }
    }

    /// A connection URL for `database` as the superuser (trust auth on 127.0.0.1).
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Runs SQL with psql and returns its unaligned output.
    pub fn psql(&self, database: &str, sql: &str) -> String {
        let mut cmd = Command::new("psql");
        if let Some(p) = &self.password {
            cmd.env("PGPASSWORD", p);
        }
        let out = cmd
            .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d"])
            .arg(self.url(database))
            .args(["-c", sql])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "psql: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

/// Starts the cluster in `dir` on `port` and waits until it answers.
fn pg_ctl_start(bin: &Path, dir: &Path, port: u16, fsync: bool) {
    let data_s = dir.join("data").display().to_string();
    let opts = format!(
        "-p {port} -c listen_addresses=127.0.0.1 -k {} -c fsync={} -c max_connections=100",
        dir.display(),
        if fsync { "on" } else { "off" }
    );
    let log = dir.join("pg.log").display().to_string();
    let out = run_as_owner(
        &bin.join("pg_ctl"),
        &[
            "-D", &data_s, "-o", &opts, "-l", &log, "-w", "-t", "30", "start",
        ],
    );
    assert!(
        out.status.success(),
        "pg_ctl start: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(&log).unwrap_or_default()
    );
}

impl Pg {
    /// Stops the server (fast shutdown: connections are cut), keeping its data.
    pub fn stop(&self) {
        let data = self.dir.path().join("data").display().to_string();
        let out = run_as_owner(
            &self.bin.join("pg_ctl"),
            &["-D", &data, "-m", "fast", "-w", "stop"],
        );
        assert!(
            out.status.success(),
            "pg_ctl stop: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// What the server has logged (errors such as `deadlock detected`).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pg.log")).unwrap_or_default()
    }

    /// Starts it again on the same port.
    pub fn restart(&self) {
        pg_ctl_start(&self.bin, self.dir.path(), self.port, self.fsync);
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        let data = self.dir.path().join("data").display().to_string();
        let _ = run_as_owner(
            &self.bin.join("pg_ctl"),
            &["-D", &data, "-m", "immediate", "stop"],
        );
    }
}

/// The harness itself: a cluster of our own answers, on its own port, and is gone after.
#[test]
fn a_throwaway_cluster_starts_answers_and_stops() {
    let pg = Pg::start();
    assert_eq!(pg.psql("postgres", "SELECT 1 + 1"), "2");
    pg.psql("postgres", "CREATE DATABASE provd");
    assert_eq!(pg.psql("provd", "SELECT current_database()"), "provd");
    let port = pg.port;
    drop(pg);
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "stopped on drop"
    );
}
