//! What operators and source owners use: check, plan, jobs, tasks export, identities.

use crate::harness::wait;
use serde_json::{Value, json};

use crate::harness::{Env, eventually};

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Issue 35: `sudo provd tokens add` rewrote the tokens file as root's, 0600, and the
/// agent (running as `provd`) could no longer read it; a CLI command run as root left the
/// SQLite store's log files root's. Files the CLI writes keep the agent's owner and mode.
#[test]
fn files_the_cli_writes_as_root_stay_the_agents() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("not root: nothing to hand over (CI runs this as root)");
        return;
    }
    let env = Env::new();
    let tokens = env.path().join("tokens");
    let out = env.cli(&["tokens", "add", "first"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let agent = 65534; // nobody: the agent's user here
    // Hashed tokens only (a bare one keeps the file at 0600, rightly), group-readable.
    let hashed: String = std::fs::read_to_string(&tokens)
        .unwrap()
        .lines()
        .filter(|l| l.split_whitespace().count() > 1)
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&tokens, hashed).unwrap();
    std::os::unix::fs::chown(&tokens, Some(agent), Some(agent)).unwrap();
    std::fs::set_permissions(&tokens, std::fs::Permissions::from_mode(0o640)).unwrap();
    let state = env.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    std::os::unix::fs::chown(&state, Some(agent), Some(agent)).unwrap();

    let out = env.cli(&["tokens", "add", "second"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let m = std::fs::metadata(&tokens).unwrap();
    assert_eq!((m.uid(), m.gid()), (agent, agent), "the owner is kept");
    assert_eq!(m.permissions().mode() & 0o777, 0o640, "the mode is kept");
    assert!(std::fs::read_to_string(&tokens).unwrap().contains("second"));

    let out = env.cli(&["jobs", "list"]);
    assert!(out.status.success(), "{}", stderr(&out));
    for name in ["provd.db", "provd.db-wal", "provd.db-shm"] {
        let path = state.join(name);
        if let Ok(m) = std::fs::metadata(&path) {
            assert_eq!(m.uid(), agent, "{} is root's", path.display());
        }
    }
    if std::env::var("PROVD_TEST_STORE").as_deref() != Ok("postgres") {
        assert_eq!(
            std::fs::metadata(state.join("provd.db")).unwrap().uid(),
            agent
        );
    }
}

#[tokio::test]
async fn check_reports_problems_with_file_and_key_and_env_overrides_apply() {
    let env = Env::new();
    let ok = env.cli(&["check"]);
    assert!(ok.status.success(), "{}", stderr(&ok));
    assert!(String::from_utf8_lossy(&ok.stdout).contains("2 sources"));

    let out = std::process::Command::new(crate::harness::BIN)
        .args(["check", "--config"])
        .arg(env.config())
        .env("PROVD_AGENT__WORKERS", "0")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("provd.toml")
            && stderr(&out).contains(": agent.workers: must be at least 1"),
        "{}",
        stderr(&out)
    );

    std::fs::write(
        env.path().join("sources/extra.toml"),
        "id = \"x\"\ntype = \"manual\"\nowner = \"o\"\npassword = \"hunter2\"\n",
    )
    .unwrap();
    std::fs::write(
        env.path().join("catalog.toml"),
        "[[entitlement]]\nid = \"e\"\nsource = \"gone\"\nattribute = \"a\"\nvalue = \"v\"\n",
    )
    .unwrap();
    let out = env.cli(&["check"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("extra.toml") && err.contains("unknown field `password`"),
        "{err}"
    );
    // Issue 35: file, line and column, like a compiler's error.
    assert!(
        err.contains("catalog.toml:3:1: entitlement[0].source"),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "a value must not be echoed");
}

#[tokio::test]
async fn plan_prints_operations_and_changes_nothing() {
    let env = Env::new();
    let body = json!({ "requestedFor": ["ada"], "requestedItems": [{ "type": "ROLE", "id": "role-staff" }] });
    let out = env.cli_with(&["plan", "-"], Some(body.to_string().as_bytes()));
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("CREATE_ACCOUNT"), "{text}");
    assert!(text.contains("ADD_ENTITLEMENT groups=VIEW"), "{text}");
    assert!(text.contains("ADD_ENTITLEMENT zones=HQ"), "{text}");
    assert_eq!(env.count("requests"), 0);
    assert_eq!(env.count("jobs"), 0);
}

#[tokio::test]
async fn manual_tasks_are_exported_as_safe_csv_and_served_as_json() {
    let env = Env::new();
    let agent = env.start().await;
    let body = json!({ "requestedFor": ["mallory"], "requestedItems": [
        { "type": "ENTITLEMENT", "id": "ent-admin" }, { "type": "ENTITLEMENT", "id": "ent-hq" }] });
    assert_eq!(
        agent
            .post("/access-requests/v1", &body.to_string())
            .await
            .status(),
        202
    );
    let store = env.store();
    eventually(10, "tasks to be opened", || {
        let n = wait(store.tasks(Default::default())).unwrap().len();
        async move { (n == 4).then_some(()) }
    })
    .await;

    let out_file = env.path().join("flat.csv");
    let out = env.cli(&[
        "tasks",
        "export",
        "--source",
        "flat",
        "--excel",
        "--out",
        out_file.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let bytes = std::fs::read(&out_file).unwrap();
    assert!(bytes.starts_with(b"\xEF\xBB\xBF"), "--excel writes a BOM");
    let text = String::from_utf8(bytes[3..].to_vec()).unwrap();
    let mut rdr = csv::Reader::from_reader(text.as_bytes());
    let header: Vec<String> = rdr.headers().unwrap().iter().map(String::from).collect();
    assert_eq!(
        header,
        [
            "task_id",
            "source",
            "owner",
            "identity_id",
            "identity_name",
            "operation",
            "account",
            "attribute",
            "value",
            "request_id",
            "created_at",
            "due_at",
            "status",
            "resolution",
            "resolved_by",
            "note"
        ]
    );
    let rows: Vec<csv::StringRecord> = rdr.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 2, "only the flat source's tasks");
    assert_eq!(&rows[0][5], "CREATE_ACCOUNT");
    assert_eq!(
        &rows[0][6], "mal@example.com",
        "account from the source's native_id template"
    );
    assert_eq!(
        &rows[0][4], "'@Mal -lory",
        "a name starting with @ is defused"
    );
    assert_eq!(&rows[1][8], "'=ADMIN", "a value starting with = is defused");
    assert!(!rows[0][11].is_empty(), "remind_after gives a due date");
    for r in &rows {
        for cell in r.iter() {
            assert!(
                !cell.starts_with(['=', '+', '-', '@', '\t', '\r']),
                "dangerous cell {cell:?}"
            );
        }
    }

    let json: Value = agent
        .get("/tasks/v1?source=badges")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(json.as_array().unwrap().len(), 2);
    assert_eq!(json[0]["owner"], "facilities@example.com");
    assert_eq!(json[1]["value"], "HQ");
    assert_eq!(json[1]["status"], "OPEN");
    let anon = agent
        .http
        .get(format!("{}/tasks/v1", agent.base))
        .send()
        .await
        .unwrap();
    assert_eq!(anon.status(), 401);
    let listed = env.cli(&["tasks", "list"]);
    assert_eq!(
        String::from_utf8_lossy(&listed.stdout).lines().count(),
        5,
        "header + 4 tasks"
    );
}

#[tokio::test]
async fn jobs_can_be_listed_shown_canceled_and_retried_from_the_cli() {
    let env = Env::new();
    let body = json!({ "requestedFor": ["ada"], "requestedItems": [
        { "type": "ENTITLEMENT", "id": "ent-view", "startDate": "2099-01-01" }] });
    assert!(
        env.cli_with(&["submit", "-"], Some(body.to_string().as_bytes()))
            .status
            .success()
    );
    let list = env.cli(&["jobs", "list", "--state", "queued"]);
    assert!(list.status.success());
    assert!(String::from_utf8_lossy(&list.stdout).contains("2099-01-01T00:00:00.000Z"));
    assert_eq!(
        env.cli(&["jobs", "list", "--state", "nope"]).status.code(),
        Some(2)
    );

    let show = env.cli(&["jobs", "show", "1"]);
    let v: Value = serde_json::from_slice(&show.stdout).unwrap();
    assert_eq!(v["state"], "queued");
    assert_eq!(v["events"][0]["kind"], "job_queued");

    assert_eq!(
        env.cli(&["jobs", "retry", "1"]).status.code(),
        Some(2),
        "a queued job is not retried"
    );
    assert!(env.cli(&["jobs", "cancel", "1"]).status.success());
    let again = env.cli(&["jobs", "cancel", "1"]);
    assert_eq!(again.status.code(), Some(2));
    assert!(stderr(&again).contains("already ended"));
    assert_eq!(env.cli(&["jobs", "show", "99"]).status.code(), Some(2));
}

#[tokio::test]
async fn imported_identities_can_be_requested_for_and_bad_imports_store_nothing() {
    let env = Env::new();
    let bad = env.path().join("bad.jsonl");
    std::fs::write(
        &bad,
        "{\"id\":\"neo\",\"firstName\":\"Thomas\"}\n{\"firstName\":\"nobody\"}\n",
    )
    .unwrap();
    let out = env.cli(&["identities", "import", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("line 2"), "{}", stderr(&out));
    assert_eq!(env.count("identities"), 0);

    let good = env.path().join("new.csv");
    std::fs::write(
        &good,
        "id,firstName,lastName,email\nneo,Thomas,Anderson,neo@example.com\n",
    )
    .unwrap();
    let out = env.cli(&["identities", "import", good.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let body = json!({ "requestedFor": ["neo"], "requestedItems": [{ "type": "ENTITLEMENT", "id": "ent-view" }] });
    let out = env.cli_with(&["submit", "-"], Some(body.to_string().as_bytes()));
    assert!(out.status.success(), "{}", stderr(&out));
}
