//! `provd store migrate`: an SQLite store with requests, jobs at every stage, open and
//! resolved tasks, accounts, imported identities, a pending removeDate and its audit
//! trail, copied into PostgreSQL; then the agent on PostgreSQL carries on from there.

use serde_json::{Value, json};

use crate::flow::{grant, submit};
use crate::harness::{Env, eventually, wait};
use crate::pg::Pg;

fn tasks_of(tasks: &[Value], who: &str) -> Vec<String> {
    tasks
        .iter()
        .filter(|t| t["identity_id"] == who)
        .filter_map(|t| t["task_id"].as_str().map(str::to_string))
        .collect()
}

/// Resolves `tasks` as DONE through `provd tasks import`.
fn resolve(env: &Env, tasks: &[String]) {
    assert!(!tasks.is_empty());
    let file = env.path().join(format!("{}.csv", tasks[0]));
    let rows: String = tasks.iter().map(|t| format!("{t},DONE\n")).collect();
    std::fs::write(&file, format!("task_id,resolution\n{rows}")).unwrap();
    let out = env.cli(&["tasks", "import", file.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_store_migrated_to_postgres_carries_on() {
    let env = Env::new();
    let mut agent = env.start().await;
    std::fs::write(
        env.path().join("more.csv"),
        "id,firstName,lastName,email\nzoe,Zoe,Z,zoe@example.com\n",
    )
    .unwrap();
    assert!(
        env.cli(&[
            "identities",
            "import",
            env.path().join("more.csv").to_str().unwrap()
        ])
        .status
        .success()
    );
    let ada = submit(&env, grant("ada", "ENTITLEMENT", "ent-view"));
    let due_ms = jiff::Timestamp::now().as_millisecond() + 12_000;
    let due = jiff::Timestamp::from_millisecond(due_ms)
        .unwrap()
        .to_string();
    submit(
        &env,
        json!({ "requestedFor": ["grace"], "requestedItems": [{ "type": "ENTITLEMENT", "id": "ent-hq", "removeDate": due }] }),
    );
    submit(&env, grant("zoe", "ENTITLEMENT", "ent-hq"));
    let tasks = eventually(10, "tasks for Ada, Grace and Zoe", || async {
        let t: Vec<Value> = agent.get("/tasks/v1").await.json().await.ok()?;
        ["ada", "grace", "zoe"]
            .iter()
            .all(|w| !tasks_of(&t, w).is_empty())
            .then_some(t)
    })
    .await;
    // Grace's and Zoe's grants done; Ada's tasks stay open across the migration.
    resolve(&env, &tasks_of(&tasks, "grace"));
    resolve(&env, &tasks_of(&tasks, "zoe"));
    let ada_tasks = tasks_of(&tasks, "ada");
    agent.open_tasks(ada_tasks.len()).await;
    assert!(agent.signal_and_wait("TERM", 20).await.success());
    let before = wait(env.store().row_counts()).unwrap();
    let first_event = wait(env.store().events_after(0, 1)).unwrap()[0].clone();

    let pg = Pg::start();
    pg.psql("postgres", "CREATE DATABASE moved");
    let url = format!("{}?sslmode=disable", pg.url("moved"));
    let out = env.cli(&["store", "migrate", "--to", &url]);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{}{}",
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!(
            "events: {} rows copied and verified",
            before["events"]
        )),
        "{stdout}"
    );
    let again = env.cli(&["store", "migrate", "--to", &url]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("not empty"));

    let store = provd::store::Store::postgres(&crate::pg_store::settings(url.clone()))
        .await
        .unwrap();
    let after = store.row_counts().await.unwrap();
    assert_eq!(after, before, "every table, row for row");
    let moved_first = store.events_after(0, 1).await.unwrap().remove(0);
    assert_eq!(
        (moved_first.id, moved_first.kind.as_str()),
        (first_event.id, first_event.kind.as_str())
    );

    // The agent on PostgreSQL: Ada's open task resolves her job; Grace's removeDate fires.
    let mut text = std::fs::read_to_string(env.config()).unwrap();
    text.push_str(&format!("[store]\npostgres_url = \"{url}\"\n"));
    std::fs::write(env.config(), text).unwrap();
    let agent = env.start().await;
    let check = env.cli(&["store", "check"]);
    let text = String::from_utf8_lossy(&check.stdout).to_string();
    assert!(
        check.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(
        text.contains("integrity: ok") && text.contains("postgres://postgres@127.0.0.1"),
        "{text}"
    );
    let status = env.cli(&["status", &ada]);
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    resolve(&env, &ada_tasks);
    let s = store.clone();
    let rid = ada.clone();
    eventually(20, "Ada's job to succeed on PostgreSQL", || {
        let jobs = wait(s.jobs(provd::store::jobs::JobFilter {
            request_id: Some(rid.clone()),
            ..Default::default()
        }))
        .unwrap();
        async move {
            jobs.iter()
                .all(|j| j.state.as_str() == "succeeded")
                .then_some(())
        }
    })
    .await;
    // The removeDate fires after the migration: Grace's removal becomes tasks.
    eventually(30, "the removal of Grace's access", || async {
        let t: Vec<Value> = agent.get("/tasks/v1").await.json().await.ok()?;
        (!tasks_of(&t, "grace").is_empty()).then_some(())
    })
    .await;
    let fired = store.events_after(0, 100_000).await.unwrap();
    assert_eq!(
        fired.iter().filter(|e| e.kind == "removals_fired").count(),
        1
    );
    // New rows continue after the copied ids.
    let jobs = store.jobs(Default::default()).await.unwrap();
    let mut ids: Vec<i64> = jobs.iter().map(|j| j.id).collect();
    ids.dedup();
    assert_eq!(ids.len(), jobs.len());
    drop(agent);
}
