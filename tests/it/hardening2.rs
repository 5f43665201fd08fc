//! Issue 31: the second red-team pass. Each test here failed on the code before its fix.

use std::process::{Command, Stdio};

use serde_json::{Value, json};

use crate::harness::{Agent, BIN, Env, eventually};

fn grant(who: &str) -> Value {
    json!({ "requestedFor": [who], "requestedItems": [{ "type": "ENTITLEMENT", "id": "ent-view" }] })
}

async fn post(agent: &Agent, env: &Env, body: &Value) -> reqwest::Response {
    agent
        .http
        .post(format!("{}/access-requests/v1", agent.base))
        .bearer_auth(env.token())
        .body(body.to_string())
        .send()
        .await
        .unwrap()
}

/// `/readyz` once it says 503: its body.
async fn unready(agent: &Agent) -> String {
    let url = format!("{}/readyz", agent.base);
    let http = agent.http.clone();
    eventually(10, "/readyz 503", || {
        let (http, url) = (http.clone(), url.clone());
        async move {
            let r = http.get(&url).send().await.ok()?;
            (r.status() == 503).then_some(r.text().await.ok()?)
        }
    })
    .await
}

/// Finding 3 and 8: a store file deleted, replaced or truncated under a running agent is
/// seen: `/readyz` 503 naming it, intake 503 with Retry-After (never a 202 into a file
/// nobody will read), and the next start refuses (exit 2) until told `--new-store`.
#[tokio::test]
async fn a_store_that_vanishes_under_the_agent_is_seen_and_nothing_is_accepted_into_it() {
    if std::env::var("PROVD_TEST_STORE").as_deref() == Ok("postgres") {
        return; // the PostgreSQL case is the next test
    }
    let state = |env: &Env| env.path().join("state");
    for (how, want) in [
        ("deleted", "was deleted"),
        ("replaced", "was replaced"),
        ("truncated", "was truncated"),
    ] {
        let env = Env::new();
        let agent = env.start().await;
        let r = post(&agent, &env, &grant("ada")).await;
        assert_eq!(r.status(), 202, "{how}");
        let db = state(&env).join("provd.db");
        match how {
            "deleted" => {
                for f in ["provd.db", "provd.db-wal", "provd.db-shm"] {
                    let _ = std::fs::remove_file(state(&env).join(f));
                }
            }
            "replaced" => {
                let other = state(&env).join("other.db");
                std::fs::copy(&db, &other).unwrap();
                std::fs::rename(&other, &db).unwrap();
            }
            _ => std::fs::File::create(&db).unwrap().set_len(0).unwrap(),
        }
        let body = unready(&agent).await;
        assert!(body.contains(want), "{how}: {body}");
        let r = post(&agent, &env, &grant("grace")).await;
        assert_eq!(r.status(), 503, "{how}");
        assert_eq!(r.headers()["retry-after"], "10", "{how}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["detailCode"], "503 Store unavailable", "{how}: {v}");
        drop(agent);

        if how == "deleted" {
            // The next start finds a new, empty store where the old one was: refused.
            let out = Command::new(BIN)
                .args(["run", "--config"])
                .arg(env.config())
                .env("PROVD_API__LISTEN", format!("127.0.0.1:{}", env.port))
                .stdin(Stdio::null())
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{err}");
            assert!(
                err.contains("--new-store") && err.contains("provd.db"),
                "{err}"
            );
            // Told so, it goes on with the new store, and the start after that is plain.
            let agent = Agent::start_args(&env, &["--new-store"]).await;
            assert_eq!(post(&agent, &env, &grant("ada")).await.status(), 202);
            drop(agent);
            let agent = env.start().await;
            assert_eq!(post(&agent, &env, &grant("grace")).await.status(), 202);
        }
    }
}

/// Finding 8: PostgreSQL down answers 503 with Retry-After, not 500, and the agent logs
/// it at most once per 10 s with a count instead of every loop's every failure.
#[tokio::test]
async fn postgres_down_is_a_503_and_a_few_log_lines() {
    let env = Env::new();
    let Some((pg, _)) = &env.pg else {
        return; // run by tests/run with PROVD_TEST_STORE=postgres
    };
    let agent = env.start().await;
    assert_eq!(post(&agent, &env, &grant("ada")).await.status(), 202);
    pg.stop();
    let body = unready(&agent).await;
    assert!(body.contains("store unavailable"), "{body}");
    let r = post(&agent, &env, &grant("grace")).await;
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "10");
    // Some seconds of the agent's loops running against a dead database.
    let since = std::time::Instant::now();
    while since.elapsed() < std::time::Duration::from_secs(4) {
        let _ = post(&agent, &env, &grant("grace")).await;
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let log = agent.log_text();
    let lines = log
        .lines()
        .filter(|l| l.contains("\"level\":\"ERROR\""))
        .count();
    assert!(lines <= 2, "{lines} error lines in ~5 s:\n{log}");
    pg.restart();
    eventually(30, "accepting again after the restart", || {
        let (http, url, token) = (
            agent.http.clone(),
            format!("{}/access-requests/v1", agent.base),
            env.token(),
        );
        async move {
            let r = http
                .post(url)
                .bearer_auth(token)
                .body(grant("grace").to_string())
                .send()
                .await
                .ok()?;
            (r.status() == 202).then_some(())
        }
    })
    .await;
}

/// Finding 9: output to a full disk is a message and exit 1, not a panic (exit 101).
#[test]
fn output_to_a_full_disk_is_an_error_not_a_panic() {
    let env = Env::new();
    crate::flow::submit(&env, grant("ada"));
    let out = Command::new(BIN)
        .args(["jobs", "list", "--config"])
        .arg(env.config())
        .stdout(
            std::fs::OpenOptions::new()
                .write(true)
                .open("/dev/full")
                .unwrap(),
        )
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("cannot write the output") && !err.contains("panicked"),
        "{err}"
    );
}

/// Finding 9: `provd check` refuses a tokens file anyone may read or write, and URLs of
/// the wrong scheme or with credentials in them, without repeating the credential.
#[test]
fn check_refuses_untrusted_files_and_urls_with_credentials() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new();
    let config = std::fs::read_to_string(env.config()).unwrap();
    let check = |env: &Env| {
        let out = env.cli(&["check"]);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    std::fs::write(
        env.config(),
        config.replace("tokens_file = \"tokens\"", "tokens_file = \"/etc/passwd\""),
    )
    .unwrap();
    let (ok, err) = check(&env);
    assert!(
        !ok && err.contains("api.tokens_file") && err.contains("bare tokens"),
        "{err}"
    );
    std::fs::write(env.config(), &config).unwrap();
    let tokens = env.path().join("tokens");
    std::fs::set_permissions(&tokens, std::fs::Permissions::from_mode(0o620)).unwrap();
    let (ok, err) = check(&env);
    assert!(!ok && err.contains("writable by its group"), "{err}");
    std::fs::set_permissions(&tokens, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(env.path().join("rest-token"), "t0k3n-value\n").unwrap();
    for (url, says) in [
        (
            "http://svc:pa55w0rd@127.0.0.1:1/api",
            "must not hold a user or password",
        ),
        ("file:///etc/passwd", "must start with http:// or https://"),
        ("ldap://127.0.0.1:1", "must start with http:// or https://"),
        ("http://[::1", "is not a URL"),
    ] {
        std::fs::write(
            env.path().join("sources/app.toml"),
            format!("id = \"app\"\ntype = \"scim\"\nowner = \"o@example.com\"\nbase_url = \"{url}\"\ntoken_file = \"../rest-token\"\n[account]\ncorrelation = \"userName\"\n[account.attributes]\nuserName = \"{{id}}\"\n"),
        )
        .unwrap();
        let (ok, err) = check(&env);
        assert!(
            !ok && err.contains("base_url") && err.contains(says),
            "{url}: {err}"
        );
        assert!(!err.contains("pa55w0rd"), "{err}");
    }
}
