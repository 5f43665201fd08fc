//! Issue 13, for operators and source owners: the spool, task imports, one journal for
//! every process's changes, retries, text output, revokes. Each test failed before its fix.

use std::time::Duration;

use crate::hardening::mode;
use crate::harness::{Agent, Env, eventually};

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
    // Stored first, then moved aside: wait for the move too.
    let moved = spool.join("processed/paused.json.1");
    eventually(10, "the re-dropped file moved aside", || {
        let done = moved.exists();
        async move { done.then_some(()) }
    })
    .await;
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
    let tasks = agent.open_tasks(4).await;
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
        err.contains("row 4, column") && err.contains("belongs to source `badges`"),
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
    let tasks = agent.open_tasks(4).await;
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
    let jobs: Vec<i64> = crate::harness::wait(env.store().jobs(provd::store::jobs::JobFilter {
        request_id: Some(rid.clone()),
        ..Default::default()
    }))
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
    agent.signal("HUP");
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

/// Item 16: small ones an operator meets.
#[tokio::test]
async fn text_output_is_safe_plans_have_no_job_numbers_and_paths_are_normalised() {
    let env = Env::new();
    std::fs::write(
        env.path().join("identities.csv"),
        "id,firstName,lastName,email\nada,Ada,Lovelace,ada@example.com\n\"evil\u{202e}gpj.exe\",E,Vil,e@example.com\n",
    )
    .unwrap();
    // An id that could rewrite a terminal is refused where it comes in, naming the line
    // and never printing the id itself (issue 31).
    let out = env.cli(&["check"]);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("line 3") && err.contains("U+202E") && !err.contains('\u{202e}'),
        "{err}"
    );
    std::fs::write(
        env.path().join("identities.csv"),
        "id,firstName,lastName,email\nada,Ada,Lovelace,ada@example.com\n",
    )
    .unwrap();
    let body = serde_json::json!({
        "requestedFor": ["ada"],
        "requestedItems": [{"type": "ROLE", "id": "role-staff"}]
    });
    let out = env.cli_with(&["plan", "-"], Some(body.to_string().as_bytes()));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !text.contains("job 1"),
        "planned jobs are not numbered like job ids: {text}"
    );

    // Dates: an offset past 23:59 and a date past what can be kept say what is wrong.
    for (date, want) in [
        ("2030-01-01T00:00:00+25:00", "offset +25:00 is out of range"),
        ("9999-12-31T23:59:59Z", "too far in the future"),
    ] {
        let body = serde_json::json!({
            "requestedFor": ["ada"],
            "requestedItems": [{"type": "ROLE", "id": "role-staff", "removeDate": date}]
        });
        let out = env.cli_with(&["submit", "-"], Some(body.to_string().as_bytes()));
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(
            err.contains("requestedItems[0].removeDate") && err.contains(want),
            "{err}"
        );
    }

    // The state directory as a person would write it.
    let agent = Agent::start_with(
        &env,
        &[("PROVD_AGENT__STATE_DIR", "sub/../state".to_string())],
    )
    .await;
    let ready = eventually(10, "the ready line", || {
        let l = log_lines(&agent)
            .into_iter()
            .find(|v| v["message"] == "provd ready");
        async move { l }
    })
    .await;
    let dir = ready["state_dir"].as_str().unwrap();
    assert!(dir.ends_with("/state") && !dir.contains(".."), "{dir}");

    // The same grant dropped twice: the duplicate changes no removeDate, and says none.
    let spool = env.path().join("spool");
    std::fs::create_dir_all(&spool).unwrap();
    let grant =
        r#"{"requestedFor":["ada"],"requestedItems":[{"type":"ENTITLEMENT","id":"ent-view"}]}"#;
    for name in ["a.json", "b.json"] {
        std::fs::write(spool.join(name), grant).unwrap();
        age(&spool.join(name));
        let done = spool.join("processed").join(name);
        eventually(10, "the file taken", || {
            let d = done.exists();
            async move { d.then_some(()) }
        })
        .await;
    }
    assert!(!agent.log_text().contains("removeDate cleared"));
}

/// Item 17: revoking a role Alan never had does not disable his account on a source that
/// disables on the last removal.
#[tokio::test]
async fn revoking_what_was_never_held_does_not_disable_the_account() {
    let env = Env::new();
    std::fs::write(
        env.path().join("sources/flat.toml"),
        "id = \"flat\"\ntype = \"manual\"\nowner = \"flat-owner@example.com\"\non_last_removal = \"disable_account\"\n[account]\nnative_id = \"{email}\"\n",
    )
    .unwrap();
    let agent = env.start().await;
    let revoke = r#"{"requestedFor":["grace"],"requestType":"REVOKE_ACCESS","requestedItems":[{"type":"ACCESS_PROFILE","id":"ap-view","comment":"never had it"}]}"#;
    assert_eq!(
        agent.post("/access-requests/v1", revoke).await.status(),
        202
    );
    let tasks: Vec<serde_json::Value> = eventually(10, "the revoke's task", || {
        let a = &agent;
        async move {
            let t: Vec<serde_json::Value> = a.get("/tasks/v1").await.json().await.ok()?;
            (!t.is_empty()).then_some(t)
        }
    })
    .await;
    assert!(
        tasks.iter().all(|t| t["operation"] != "DISABLE_ACCOUNT"),
        "{tasks:?}"
    );
    assert!(
        tasks.iter().any(|t| t["operation"] == "REMOVE_ENTITLEMENT"),
        "{tasks:?}"
    );
}
