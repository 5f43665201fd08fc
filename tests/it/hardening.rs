//! Issue 13: what a red-team pass and three kinds of users found. Each test here failed on
//! the code before its fix.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::harness::{Agent, BIN, Env, eventually};

fn mode(p: &std::path::Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// Item 2: every file provd creates is 0600 whatever the umask; an older store with a
/// looser mode is tightened at open.
#[tokio::test]
async fn files_provd_creates_are_private_whatever_the_umask() {
    let env = Env::new();
    std::fs::remove_file(env.path().join("tokens")).unwrap();
    std::fs::write(
        env.path().join("provd.toml"),
        "[agent]\nstate_dir = \"state\"\n[api]\ntokens_file = \"state/api-tokens\"\n",
    )
    .unwrap();
    let state = env.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    // A store left by an older version with the umask's mode.
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "umask 022; {BIN} --config {} jobs list",
            env.config().display()
        ))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::set_permissions(
        state.join("provd.db"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let log = env.path().join("agent.log");
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "umask 000; exec {BIN} run --config {}",
            env.config().display()
        ))
        .env("PROVD_API__LISTEN", format!("127.0.0.1:{}", env.port))
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let tokens = state.join("api-tokens");
    eventually(20, "the token file and the WAL", || {
        let ok = tokens.exists() && state.join("provd.db-wal").exists();
        async move { ok.then_some(()) }
    })
    .await;
    // Something the agent writes after start.
    let token = std::fs::read_to_string(&tokens).unwrap();
    let client = crate::harness::client();
    let url = format!("http://127.0.0.1:{}/readyz", env.port);
    eventually(20, "readyz", || {
        let (c, u) = (client.clone(), url.clone());
        async move {
            c.get(u)
                .send()
                .await
                .ok()
                .filter(|r| r.status().is_success())
        }
    })
    .await;
    assert!(!token.trim().is_empty());
    for f in ["provd.db", "provd.db-wal", "provd.db-shm", "api-tokens"] {
        assert_eq!(mode(&state.join(f)), 0o600, "{f}");
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Item 10: a 0-byte or corrupt store is refused at start, not silently replaced.
#[tokio::test]
async fn a_damaged_store_is_refused_at_start() {
    let env = Env::new();
    let state = env.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let db = state.join("provd.db");
    for (content, want) in [
        (Vec::new(), "empty (0 bytes)"),
        (b"not a database at all, just text ".repeat(200), "damaged"),
    ] {
        std::fs::write(&db, &content).unwrap();
        let out = Command::new(BIN)
            .args(["run", "--config"])
            .arg(env.config())
            .env("PROVD_API__LISTEN", format!("127.0.0.1:{}", env.port))
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains(want) && err.contains("provd.db"), "{err}");
        // Nothing was written over it.
        assert_eq!(std::fs::read(&db).unwrap(), content);
    }
}

/// Item 10: a full disk turns /readyz to 503 with the reason, and back once there is room.
#[tokio::test]
async fn a_full_disk_makes_readyz_fail_with_the_reason() {
    let env = Env::new();
    let state = env.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=8m", "tmpfs"])
        .arg(&state)
        .status();
    assert!(
        mounted.is_ok_and(|s| s.success()),
        "this test needs to mount a small tmpfs (run the suite as root, as CI does)"
    );
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(state.clone());
    let agent = env.start().await;
    let ready = agent.get("/readyz").await;
    assert_eq!(ready.status(), 200);
    // Fill the file system.
    let filler = state.join("filler");
    {
        let mut f = std::fs::File::create(&filler).unwrap();
        let block = vec![0u8; 64 * 1024];
        while f.write_all(&block).is_ok() {}
    }
    let body: serde_json::Value = eventually(10, "readyz 503", || {
        let a = &agent;
        async move {
            let r = a.get("/readyz").await;
            if r.status() == 503 {
                r.json().await.ok()
            } else {
                None
            }
        }
    })
    .await;
    let reason = body["store"].as_str().unwrap();
    assert!(reason.contains("disk is full"), "{reason}");
    std::fs::remove_file(&filler).unwrap();
    eventually(10, "readyz 200 again", || {
        let a = &agent;
        async move { (a.get("/readyz").await.status() == 200).then_some(()) }
    })
    .await;
}

/// Item 11: `provd jobs list | head` ends quietly when the reader goes away.
#[tokio::test]
async fn the_cli_does_not_panic_on_a_closed_pipe() {
    let env = Env::new();
    let body = serde_json::json!({
        "requestedFor": ["ada", "grace", "mallory"],
        "requestedItems": [{"type": "ROLE", "id": "role-staff"}]
    });
    let f = env.write_request("r.json", &body);
    assert!(env.cli(&["submit", f.to_str().unwrap()]).status.success());
    for cmd in [
        &["jobs", "list"][..],
        &["tasks", "list"][..],
        &["tasks", "export"][..],
    ] {
        let mut child = Command::new(BIN)
            .arg("--config")
            .arg(env.config())
            .args(cmd)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let mut err = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        let status = child.wait().unwrap();
        assert!(!err.contains("panicked"), "{cmd:?}: {err}");
        assert!(err.is_empty(), "{cmd:?}: {err}");
        assert_ne!(status.code(), Some(101), "{cmd:?}");
    }
}

/// Item 4: half-sent requests are dropped after the header timeout, the connection cap
/// leaves the API serving, failed authentication is logged without the token and
/// counted, and `bearer` is accepted in any case.
#[tokio::test]
async fn slow_clients_cannot_stall_the_api_and_auth_failures_are_seen() {
    let env = Env::new();
    let agent = Agent::start_with(
        &env,
        &[
            ("PROVD_API__MAX_CONNECTIONS", "8".to_string()),
            ("PROVD_API__HEADER_READ_TIMEOUT", "1s".to_string()),
        ],
    )
    .await;
    let mut slow = Vec::new();
    for _ in 0..30 {
        let mut s = TcpStream::connect(("127.0.0.1", env.port)).unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            .unwrap();
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        slow.push(s);
    }
    // The API still answers (a slot frees as soon as a slow client is dropped).
    eventually(15, "healthz despite 30 half-sent requests", || {
        let a = &agent;
        async move {
            let r = a
                .http
                .get(format!("{}/healthz", a.base))
                .timeout(Duration::from_secs(14))
                .send()
                .await;
            r.ok().filter(|r| r.status().is_success()).map(|_| ())
        }
    })
    .await;
    // The first slow client was disconnected by the server (not by our read timeout).
    let first = slow.remove(0);
    let closed = tokio::task::spawn_blocking(move || {
        let mut first = first;
        let mut buf = [0u8; 512];
        let t = std::time::Instant::now();
        loop {
            match first.read(&mut buf) {
                Ok(0) => return Some(t.elapsed()),
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                    return Some(t.elapsed());
                }
                Err(_) => return None,
            }
        }
    })
    .await
    .unwrap();
    assert!(
        closed.is_some(),
        "a half-sent request was never disconnected"
    );
    drop(slow);

    // Authentication: a wrong token is refused, logged without the token, and counted.
    let secret_guess = "guessed-token-0123456789";
    let r = agent
        .http
        .get(format!("{}/tasks/v1", agent.base))
        .header("authorization", format!("Bearer {secret_guess}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = agent
        .http
        .get(format!("{}/tasks/v1", agent.base))
        .header("authorization", format!("bearer {}", env.token()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "lower-case scheme");
    let metrics = agent.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("provd_api_auth_failures_total 1"),
        "{metrics}"
    );
    let log = eventually(10, "the auth failure in the log", || {
        let t = agent.log_text();
        async move { t.contains("API authentication failed").then_some(t) }
    })
    .await;
    assert!(!log.contains(secret_guess));
}

/// Items 5, 6 and 8: input that must be refused, not half-taken.
#[tokio::test]
async fn unusable_keys_duplicate_json_keys_and_wild_offsets_are_refused() {
    let env = Env::new();
    let agent = env.start().await;
    let body =
        r#"{"requestedFor":["ada"],"requestedItems":[{"type":"ENTITLEMENT","id":"ent-view"}]}"#;
    let other =
        r#"{"requestedFor":["grace"],"requestedItems":[{"type":"ENTITLEMENT","id":"ent-view"}]}"#;
    let post = |key: Option<&'static [u8]>, body: &'static str| {
        let mut r = agent
            .http
            .post(format!("{}/access-requests/v1", agent.base))
            .bearer_auth(env.token())
            .header("content-type", "application/json")
            .body(body);
        if let Some(k) = key {
            r = r.header(
                "Idempotency-Key",
                reqwest::header::HeaderValue::from_bytes(k).unwrap(),
            );
        }
        r.send()
    };
    for bad in [&b""[..], &b"   "[..], "schlüssel".as_bytes()] {
        let r = post(Some(bad), body).await.unwrap();
        assert_eq!(r.status(), 400, "{bad:?}");
        let t = r.text().await.unwrap();
        assert!(t.contains("Idempotency-Key"), "{t}");
    }
    assert_eq!(post(Some(b"k-1"), body).await.unwrap().status(), 202);
    assert_eq!(post(Some(b"k-1"), body).await.unwrap().status(), 202);
    let r = post(Some(b"k-1"), other).await.unwrap();
    assert_eq!(r.status(), 422);
    assert!(r.text().await.unwrap().contains("different request body"));
    assert_eq!(env.count("requests"), 1, "nothing stored for refused keys");

    // A body whose keys repeat means two things: refused, naming the key.
    let r = agent
        .post(
            "/access-requests/v1",
            r#"{"requestedFor":["ada"],"requestType":"REVOKE_ACCESS","requestType":"GRANT_ACCESS","requestedItems":[{"type":"ENTITLEMENT","id":"ent-hq","comment":"x"}]}"#,
        )
        .await;
    assert_eq!(r.status(), 400);
    let t = r.text().await.unwrap();
    assert!(t.contains("duplicate key `requestType`"), "{t}");
    assert_eq!(env.count("requests"), 1);

    // Offsets past i64 wrapped to "no offset" and returned the first page.
    for q in [
        "offset=18446744073709551615",
        "offset=9223372036854775808",
        "limit=251",
        "offset=-1",
    ] {
        let r = agent
            .get(&format!("/access-request-status/v1?requested-for=ada&{q}"))
            .await;
        assert_eq!(r.status(), 400, "{q}");
        assert!(
            r.text()
                .await
                .unwrap()
                .contains(q.split('=').next().unwrap())
        );
    }
    let r = agent
        .get("/access-request-status/v1?requested-for=ada&offset=9223372036854775807")
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap(),
        serde_json::json!([])
    );
}

fn age(path: &std::path::Path) {
    let old = std::time::SystemTime::now() - Duration::from_secs(5);
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(old)
        .unwrap();
}

/// Item 7: the spool checks size before reading, takes `.JSON`, reports other files,
/// waits for a paused writer, and takes a re-dropped file as a new request.
#[tokio::test]
async fn the_spool_refuses_big_files_unread_and_never_ignores_silently() {
    let env = Env::new();
    let spool = env.path().join("spool");
    std::fs::create_dir_all(&spool).unwrap();
    let grant =
        r#"{"requestedFor":["ada"],"requestedItems":[{"type":"ENTITLEMENT","id":"ent-view"}]}"#;
    // 1.5 MiB of whitespace around a valid request: still over the limit.
    let big = format!("{grant}{}", " ".repeat(1536 * 1024));
    std::fs::write(spool.join("big.json"), big).unwrap();
    std::fs::write(
        spool.join("UPPER.JSON"),
        grant.replace("ent-view", "ent-hq"),
    )
    .unwrap();
    std::fs::write(spool.join("notes.txt"), "not a request").unwrap();
    std::fs::write(spool.join(".hidden.json"), "{").unwrap();
    // A writer that paused half-way.
    let (head, tail) = grant.split_at(30);
    std::fs::write(spool.join("paused.json"), head).unwrap();
    for f in ["big.json", "UPPER.JSON", "paused.json"] {
        age(&spool.join(f));
    }
    let agent = env.start().await;
    eventually(10, "big refused, UPPER taken", || {
        let done =
            spool.join("rejected/big.json").exists() && spool.join("processed/UPPER.JSON").exists();
        async move { done.then_some(()) }
    })
    .await;
    let why = std::fs::read_to_string(spool.join("rejected/big.json.error")).unwrap();
    assert!(why.contains("1 MiB"), "{why}");
    for f in [
        "rejected/big.json",
        "rejected/big.json.error",
        "processed/UPPER.JSON",
    ] {
        assert_eq!(mode(&spool.join(f)), 0o600, "{f}");
    }
    let log = eventually(10, "notes.txt and paused.json reported", || {
        let t = agent.log_text();
        async move {
            (t.contains("notes.txt") && t.contains("waiting for the writer")).then_some(t)
        }
    })
    .await;
    assert!(log.contains("only *.json files are requests"), "{log}");
    assert!(!log.contains(".hidden.json"));
    assert!(
        spool.join("paused.json").exists(),
        "a paused writer's file is not refused"
    );
    // The writer finishes.
    std::fs::write(spool.join("paused.json"), format!("{head}{tail}")).unwrap();
    eventually(10, "the finished file taken", || {
        let done = spool.join("processed/paused.json").exists();
        async move { done.then_some(()) }
    })
    .await;
    assert!(!spool.join("rejected/paused.json").exists());
    let log = agent.log_text();
    assert_eq!(log.matches("notes.txt").count(), 1, "reported once");

    // The same name and content again, after the grant was revoked: a new request.
    let revoke = r#"{"requestedFor":["ada"],"requestType":"REVOKE_ACCESS","requestedItems":[{"type":"ENTITLEMENT","id":"ent-view","comment":"left"}]}"#;
    assert_eq!(
        agent.post("/access-requests/v1", revoke).await.status(),
        202
    );
    let before = env.count("requests");
    std::fs::write(spool.join("paused.json"), grant).unwrap();
    age(&spool.join("paused.json"));
    eventually(10, "the re-dropped file taken as a new request", || {
        let n = env.count("requests");
        async move { (n == before + 1).then_some(()) }
    })
    .await;
    assert!(spool.join("processed/paused.json.1").exists());
    let log = agent.log_text();
    assert!(!log.contains("removeDate cleared"), "{log}");
}

/// Item 9: task ids are task ids, and a file without a `source` column answers for one
/// source only, unless `--source` says which.
#[tokio::test]
async fn a_task_file_without_sources_cannot_close_another_owners_tasks() {
    let env = Env::new();
    let agent = env.start().await;
    let r = agent
        .post(
            "/access-requests/v1",
            r#"{"requestedFor":["ada"],"requestedItems":[{"type":"ROLE","id":"role-staff"}]}"#,
        )
        .await;
    assert_eq!(r.status(), 202);
    let tasks: Vec<serde_json::Value> = eventually(10, "four open tasks", || {
        let a = &agent;
        async move {
            let t: Vec<serde_json::Value> = a.get("/tasks/v1").await.json().await.ok()?;
            (t.len() == 4).then_some(t)
        }
    })
    .await;
    let of = |source: &str| -> Vec<String> {
        tasks
            .iter()
            .filter(|t| t["source"] == source)
            .map(|t| t["task_id"].as_str().unwrap().to_string())
            .collect()
    };
    let (flat, badges) = (of("flat"), of("badges"));
    let file = env.path().join("answers.csv");
    let mut text = String::from("task_id,resolution\n");
    for t in flat.iter().chain(&badges) {
        text.push_str(&format!("{t},DONE\n"));
    }
    std::fs::write(&file, &text).unwrap();
    let out = env.cli(&["tasks", "import", file.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("no `source` column") && err.contains("badges, flat"),
        "{err}"
    );
    let open: Vec<serde_json::Value> = agent.get("/tasks/v1").await.json().await.unwrap();
    assert_eq!(open.len(), 4, "nothing applied");

    // `+5` parsed as 5 before.
    let n = flat[0].trim_start_matches('T');
    std::fs::write(&file, format!("task_id,resolution\n+{n},DONE\n")).unwrap();
    let out = env.cli(&["tasks", "import", file.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        err.contains("`+") && err.contains("is not a task id"),
        "{err}"
    );

    // Named: the flat rows apply, the badges rows are refused by line.
    std::fs::write(&file, &text).unwrap();
    let out = env.cli(&[
        "tasks",
        "import",
        "--source",
        "flat",
        file.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("line 4:") && err.contains("belongs to source `badges`"),
        "{err}"
    );
    let open: Vec<serde_json::Value> = agent.get("/tasks/v1").await.json().await.unwrap();
    assert!(open.iter().all(|t| t["source"] == "badges"), "{open:?}");
    assert_eq!(open.len(), 2);
}

/// The agent's JSON log lines.
fn log_lines(agent: &Agent) -> Vec<serde_json::Value> {
    agent
        .log_text()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Item 12: what another process changes (a CLI submit, a task import) reaches the running
/// agent's log once, with the job fields and the actor.
#[tokio::test]
async fn changes_made_by_the_cli_reach_the_agents_log_once() {
    let env = Env::new();
    let agent = env.start().await;
    let rid = crate::flow::submit(&env, crate::flow::grant("ada", "ROLE", "role-staff"));
    let tasks: Vec<serde_json::Value> = eventually(10, "four open tasks", || {
        let a = &agent;
        async move {
            let t: Vec<serde_json::Value> = a.get("/tasks/v1").await.json().await.ok()?;
            (t.len() == 4).then_some(t)
        }
    })
    .await;
    let mut csv = String::from("task_id,source,resolution\n");
    for t in &tasks {
        csv.push_str(&format!(
            "{},{},DONE\n",
            t["task_id"].as_str().unwrap(),
            t["source"].as_str().unwrap()
        ));
    }
    let file = env.path().join("done.csv");
    std::fs::write(&file, csv).unwrap();
    let out = env.cli(&["tasks", "import", file.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let jobs: Vec<i64> = env
        .store()
        .jobs(&provd::store::jobs::JobFilter {
            request_id: Some(rid.clone()),
            ..Default::default()
        })
        .unwrap()
        .iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(jobs.len(), 2);
    let lines = eventually(10, "both jobs' success in the agent's log", || {
        let l = log_lines(&agent);
        let n = l.iter().filter(|v| v["message"] == "job succeeded").count();
        async move { (n >= 2).then_some(l) }
    })
    .await;
    for id in &jobs {
        let mine: Vec<&serde_json::Value> = lines
            .iter()
            .filter(|v| v["message"] == "job succeeded" && v["job_id"] == *id)
            .collect();
        assert_eq!(mine.len(), 1, "job {id}: {mine:?}");
        let l = mine[0];
        assert_eq!(l["request_id"], rid.as_str());
        assert_eq!(l["state"], "succeeded");
        assert_eq!(l["identity"], "ada");
        assert!(l["source"] == "flat" || l["source"] == "badges");
        assert!(l["actor"].as_str().is_some_and(|a| !a.is_empty()), "{l}");
    }
    let accepted: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|v| v["message"] == "request accepted" && v["request_id"] == rid.as_str())
        .collect();
    assert_eq!(accepted.len(), 1, "{accepted:?}");
    let resolved = lines
        .iter()
        .filter(|v| v["message"] == "task resolved")
        .count();
    assert_eq!(resolved, 4);
}

/// Item 13: `jobs retry` uses the identity as it is now and the source's budget; an
/// import reaches the running agent (its log) without SIGHUP; SIGHUP counts every
/// identity the agent knows.
#[tokio::test]
async fn a_retried_job_sees_the_imported_identity_and_its_sources_budget() {
    let api =
        crate::httpservers::JsonServer::start(serde_json::json!({"users": [], "memberships": []}))
            .await;
    let crm = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/sources/crm.toml"),
    )
    .unwrap()
    .replace("http://127.0.0.1:3000", &api.base());
    let env = crate::flow::custom_env(
        // The shipped file sets `[retry] max_attempts = 8`.
        &[("crm.toml", crm)],
        "[[entitlement]]\nid = \"ent-sales\"\nsource = \"crm\"\nattribute = \"roles\"\nvalue = \"sales\"\n",
    );
    std::fs::write(
        env.path().join("identities.csv"),
        "id,firstName,lastName,email\nada,Ada,Lovelace,ada@example.com\nnomail,No,Mail,\n",
    )
    .unwrap();
    let mut agent = env.start().await;
    let rid = crate::flow::submit(
        &env,
        crate::flow::grant("nomail", "ENTITLEMENT", "ent-sales"),
    );
    let jobs = crate::flow::settled(&env, &rid).await;
    assert_eq!(jobs[0].state.as_str(), "failed");
    assert!(
        jobs[0].errors[0].message.contains("`email`"),
        "{:?}",
        jobs[0].errors
    );
    assert_eq!(jobs[0].max_attempts, 8);

    let file = env.path().join("people.csv");
    std::fs::write(
        &file,
        "id,firstName,lastName,email\nnomail,No,Mail,nomail@example.com\nnewbie,New,Bie,new@example.com\n",
    )
    .unwrap();
    assert!(
        env.cli(&["identities", "import", file.to_str().unwrap()])
            .status
            .success()
    );
    eventually(10, "the import in the agent's log", || {
        let seen = log_lines(&agent)
            .iter()
            .any(|v| v["message"] == "identities imported");
        async move { seen.then_some(()) }
    })
    .await;
    let id = jobs[0].id.to_string();
    let out = env.cli(&["jobs", "retry", &id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let jobs = crate::flow::settled(&env, &rid).await;
    assert_eq!(jobs[0].state.as_str(), "succeeded", "{:?}", jobs[0].errors);
    assert_eq!(
        jobs[0].max_attempts, 8,
        "the source's budget, not attempt + 8"
    );
    assert_eq!(jobs[0].attempt, 1);
    let users = api.get("/users").await;
    assert_eq!(users[0]["email"], "nomail@example.com");

    // SIGHUP: ada, nomail (file and store) and newbie (store only) = 3.
    let pid = agent.pid().to_string();
    assert!(
        Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    );
    let line = eventually(10, "the reload line", || {
        let l = log_lines(&agent)
            .into_iter()
            .find(|v| v["message"] == "configuration reloaded");
        async move { l }
    })
    .await;
    assert_eq!(line["identities"], 3, "{line}");
    agent.signal_and_wait("TERM", 20).await;
}
