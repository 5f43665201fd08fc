//! Issue 13: what a red-team pass and three kinds of users found. Each test here failed on
//! the code before its fix.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::harness::{Agent, BIN, Env, eventually};

pub fn mode(p: &std::path::Path) -> u32 {
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
        let (code, err) = env.run_refused();
        assert_eq!(code, Some(1), "{err}");
        assert!(err.contains(want) && err.contains("provd.db"), "{err}");
        // Nothing was written over it.
        assert_eq!(std::fs::read(&db).unwrap(), content);
        // `provd store check` says the same.
        let check = env.cli(&["store", "check"]);
        assert_eq!(check.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&check.stderr).contains(want));
    }
    // The database gone but its log still there: refused, not replayed into a new file.
    std::fs::remove_file(&db).unwrap();
    std::fs::write(state.join("provd.db-wal"), b"not empty").unwrap();
    let check = env.cli(&["store", "check"]);
    assert_eq!(check.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&check.stderr).contains("write-ahead log"));
    std::fs::remove_file(state.join("provd.db-wal")).unwrap();
    let check = env.cli(&["store", "check"]);
    let out = String::from_utf8_lossy(&check.stdout).to_string();
    assert!(check.status.success(), "{out}");
    assert!(
        out.contains("integrity: ok") && out.contains("schema version: "),
        "{out}"
    );
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
    // A client without a pool: the server closes idle connections after the 1 s header
    // timeout, and a pooled one could be reused just as it closes.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let secret_guess = "guessed-token-0123456789";
    let r = http
        .get(format!("{}/tasks/v1", agent.base))
        .header("authorization", format!("Bearer {secret_guess}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = http
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

/// Item 1: secrets a target echoes never reach the job's errors, the events, the status
/// API or the log.
#[tokio::test]
async fn secrets_a_target_echoes_are_stored_and_logged_nowhere() {
    let echo = crate::httpservers::Echo::start().await;
    let token = "tok-3chO-5ecret-0123456789";
    let client_secret = "cl13nt-5ecret-abcdef";
    let rest = |name: &str, auth: &str| {
        format!(
            "id = \"{name}\"\ntype = \"rest\"\nowner = \"o@example.com\"\nbase_url = \"{}/api?api_key=K3Y-in-the-url-42\"\n{auth}\n\
             [create_account]\nmethod = \"POST\"\npath = \"/users\"\nbody = '{{\"u\": \"{{id}}\"}}'\nok = [201]\nid = \"/id\"\n\
             [add_entitlement]\nmethod = \"POST\"\npath = \"/m\"\nbody = '{{\"v\": \"{{value}}\"}}'\nok = [201]\n\
             [remove_entitlement]\nmethod = \"DELETE\"\npath = \"/m/{{value}}\"\nok = [204]\n",
            echo.base
        )
    };
    let env = crate::flow::custom_env(
        &[
            ("bearer.toml", rest("bearer", "token_file = \"../token\"")),
            (
                "oauth.toml",
                rest(
                    "oauth",
                    &format!(
                        "[oauth]\ntoken_url = \"{}/oauth/token\"\nclient_id = \"provd\"\nclient_secret_file = \"../secret\"",
                        echo.base
                    ),
                ),
            ),
        ],
        "[[entitlement]]\nid = \"e-bearer\"\nsource = \"bearer\"\nattribute = \"roles\"\nvalue = \"x\"\n\
         [[entitlement]]\nid = \"e-oauth\"\nsource = \"oauth\"\nattribute = \"roles\"\nvalue = \"y\"\n",
    );
    std::fs::write(env.path().join("token"), format!("{token}\n")).unwrap();
    std::fs::write(env.path().join("secret"), format!("{client_secret}\n")).unwrap();
    let agent = env.start().await;
    let body = r#"{"requestedFor":["ada"],"requestedItems":[{"type":"ENTITLEMENT","id":"e-bearer"},{"type":"ENTITLEMENT","id":"e-oauth"}]}"#;
    let r = agent.post("/access-requests/v1", body).await;
    assert_eq!(r.status(), 202);
    let rid = r.json::<serde_json::Value>().await.unwrap()["newRequests"][0]["accessRequestIds"][0]
        .as_str()
        .unwrap()
        .to_string();
    // 401s open the breaker; the jobs wait (DESIGN §20) with the error in their events.
    let errors = crate::flow::held(&env, &rid).await;
    assert!(
        errors
            .iter()
            .any(|m| m.contains("unauthorized: Bearer [REDACTED]")),
        "{errors:?}"
    );
    assert!(
        errors.iter().any(|m| m.contains("bad client_secret")),
        "{errors:?}"
    );
    let status = agent
        .get("/access-request-status/v1?requested-for=ada")
        .await
        .text()
        .await
        .unwrap();
    let events: Vec<String> = env.events().iter().map(|e| e.data.to_string()).collect();
    let db = std::fs::read(env.path().join("state/provd.db")).unwrap();
    let wal = std::fs::read(env.path().join("state/provd.db-wal")).unwrap_or_default();
    let log = agent.log_text();
    for secret in [token, client_secret, "K3Y-in-the-url-42"] {
        assert!(
            !errors.iter().any(|m| m.contains(secret)),
            "{secret} in job errors"
        );
        assert!(!status.contains(secret), "{secret} in status");
        assert!(
            !events.iter().any(|e| e.contains(secret)),
            "{secret} in events"
        );
        assert!(!log.contains(secret), "{secret} in the log");
        for (name, bytes) in [("db", &db), ("wal", &wal)] {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{secret} in the store's {name}"
            );
        }
    }
}
