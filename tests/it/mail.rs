//! Mail to source owners (DESIGN §15) against a real SMTP server: aiosmtpd from the test
//! venv (tests/tools/smtp_sink.py), which requires AUTH, refuses the first message with a
//! transient 451 and keeps every message it accepts with its attachments.

use std::collections::BTreeSet;
use std::process::{Command, Stdio};

use calamine::Reader;
use serde_json::{Value, json};

use crate::flow::submit;
use crate::harness::{Env, eventually, free_port, wait};
use crate::httpservers::{Proc, tool};

const USER: &str = "provd-mailer";
const PASSWORD: &str = "m4il-S3cret-never-logged";

struct Smtp {
    port: u16,
    dir: tempfile::TempDir,
    _proc: Proc,
}

impl Smtp {
    async fn start(refuse: u32) -> Smtp {
        Self::start_with(refuse, PASSWORD, false).await
    }

    /// `password`: the one the server takes; `echo`: a refused login is repeated back.
    async fn start_with(refuse: u32, password: &str, echo: bool) -> Smtp {
        let port = free_port();
        let dir = tempfile::tempdir().unwrap();
        let script =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tools/smtp_sink.py");
        let child = Command::new(tool("venv/bin/python"))
            .arg(script)
            .args(["--port", &port.to_string(), "--refuse", &refuse.to_string()])
            .args(["--user", USER, "--password", password])
            .args(echo.then_some("--echo"))
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let proc = Proc::new(child);
        eventually(20, "the SMTP server listening", || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()
                .map(|_| ())
        })
        .await;
        Smtp {
            port,
            dir,
            _proc: proc,
        }
    }

    /// The accepted messages, in the order they arrived.
    fn messages(&self) -> Vec<Value> {
        (1..)
            .map(|n| self.dir.path().join(format!("{n}.json")))
            .take_while(|p| p.exists())
            .map(|p| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap())
            .collect()
    }

    async fn wait_for(&self, n: usize) -> Vec<Value> {
        eventually(30, &format!("{n} message(s)"), || {
            let m = self.messages();
            async move { (m.len() >= n).then_some(m) }
        })
        .await
    }

    fn refused(&self) -> u32 {
        std::fs::read_to_string(self.dir.path().join("refused"))
            .map(|s| s.trim().parse().unwrap())
            .unwrap_or(0)
    }

    /// The task ids (`T12`) in message `n`'s workbook, every sheet but the instructions.
    fn workbook_tasks(&self, n: usize, message: &Value) -> BTreeSet<String> {
        let name = message["attachments"][0]["filename"].as_str().unwrap();
        let path = self.dir.path().join(format!("{n}-{name}"));
        let mut book: calamine::Xlsx<_> = calamine::open_workbook(&path).unwrap();
        let mut ids = BTreeSet::new();
        for sheet in book.sheet_names() {
            let range = book.worksheet_range(&sheet).unwrap();
            let mut rows = range.rows();
            let header: Vec<String> = rows.next().unwrap().iter().map(|c| c.to_string()).collect();
            let Some(col) = header.iter().position(|h| h == "task_id") else {
                continue;
            };
            ids.extend(rows.map(|r| r[col].to_string()).filter(|s| !s.is_empty()));
        }
        ids
    }
}

fn open_ids(env: &Env, owner: &str) -> BTreeSet<String> {
    wait(env.store().tasks(provd::store::tasks::TaskFilter {
        owner: Some(owner.into()),
        open_only: true,
        ..Default::default()
    }))
    .unwrap()
    .iter()
    .map(|t| format!("T{}", t.id))
    .collect()
}

fn with_mail(env: &Env, smtp: &Smtp) {
    std::fs::write(env.path().join("mail-password"), format!("{PASSWORD}\n")).unwrap();
    let path = env.config();
    let text = std::fs::read_to_string(&path).unwrap()
        + &format!(
            "[mail]\nsmtp_url = \"smtp://127.0.0.1:{}\"\nfrom = \"provd <provd@example.com>\"\nstarttls = false\nusername = \"{USER}\"\npassword_file = \"mail-password\"\nbatch = \"1s\"\ndigest_at = \"00:00\"\n[retry]\ninitial = \"200ms\"\n",
            smtp.port
        );
    std::fs::write(path, text).unwrap();
}

async fn open_tasks(env: &Env, n: usize) {
    let store = env.store();
    eventually(15, &format!("{n} open tasks"), || {
        let t = wait(store.tasks(provd::store::tasks::TaskFilter {
            open_only: true,
            ..Default::default()
        }))
        .unwrap();
        async move { (t.len() >= n).then_some(()) }
    })
    .await;
}

#[tokio::test]
async fn owners_get_a_digest_then_new_tasks_and_a_refusal_is_retried() {
    let smtp = Smtp::start(1).await;
    let env = Env::new();
    with_mail(&env, &smtp);
    let agent = env.start().await;
    submit(
        &env,
        json!({ "requestedFor": ["ada"], "requestedItems": [{ "type": "ENTITLEMENT", "id": "ent-view" }] }),
    );
    submit(
        &env,
        json!({ "requestedFor": ["grace"], "requestedItems": [{ "type": "ENTITLEMENT", "id": "ent-hq" }] }),
    );
    open_tasks(&env, 2).await;

    // The day's digest to each owner (the digest hour, 00:00, has passed), one of them
    // refused once and sent again.
    let flat = "flat-owner@example.com";
    let messages = smtp.wait_for(2).await;
    assert_eq!(smtp.refused(), 1, "the first message was refused once");
    let mut to: Vec<&str> = messages
        .iter()
        .map(|m| m["rcpt_tos"][0].as_str().unwrap())
        .collect();
    to.sort();
    assert_eq!(to, ["facilities@example.com", flat]);
    let (n, first) = messages
        .iter()
        .enumerate()
        .find(|(_, m)| m["rcpt_tos"][0] == flat)
        .map(|(i, m)| (i + 1, m.clone()))
        .unwrap();
    let subject = first["subject"].as_str().unwrap();
    assert!(subject.starts_with("provd: your "), "{subject}");
    assert_eq!(first["login"], USER, "the agent authenticated");
    assert_eq!(first["mail_from"], "provd@example.com");
    assert_eq!(
        first["attachments"][0]["content_type"],
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    );
    let open = open_ids(&env, flat);
    assert!(!open.is_empty());
    assert_eq!(
        smtp.workbook_tasks(n, &first),
        open,
        "the workbook holds the owner's open tasks"
    );
    for id in &open {
        assert!(
            first["body"].as_str().unwrap().contains(&format!("{id} ")),
            "{first}"
        );
    }

    // New tasks for an owner: one batched message naming them, not a second digest.
    submit(
        &env,
        json!({ "requestedFor": ["grace"], "requestedItems": [{ "type": "ENTITLEMENT", "id": "ent-view" }] }),
    );
    let messages = smtp.wait_for(3).await;
    let third = &messages[2];
    assert_eq!(third["rcpt_tos"][0], flat);
    let subject = third["subject"].as_str().unwrap();
    assert!(subject.contains("new task"), "{subject}");
    let now_open = open_ids(&env, flat);
    let new: Vec<&String> = now_open.difference(&open).collect();
    assert!(!new.is_empty());
    let body = third["body"].as_str().unwrap().replace("\r\n", "\n");
    let listed = body.split("\nNew:\n").nth(1).unwrap_or("");
    for id in &new {
        assert!(listed.contains(&format!("{id} ")), "{body}");
    }
    for id in &open {
        assert!(
            !listed.contains(&format!("{id} ")),
            "{id} is not new: {body}"
        );
    }
    assert_eq!(smtp.workbook_tasks(3, third), now_open);

    // By hand, now, for one owner.
    let out = env.cli(&["tasks", "send", "--owner", flat]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("mailed {} open task(s) to {flat}", now_open.len())),
        "{stdout}"
    );
    let messages = smtp.wait_for(4).await;
    assert_eq!(messages[3]["rcpt_tos"][0], flat);
    assert!(
        messages[3]["subject"]
            .as_str()
            .unwrap()
            .starts_with("provd: your ")
    );

    // Nothing more is due for flat's owner: two later passes of the loop (each mailing
    // facilities' new tasks, facilities before flat in a pass) send flat nothing again.
    for (n, who) in [(5, "mallory"), (6, "ada")] {
        submit(
            &env,
            json!({ "requestedFor": [who], "requestedItems": [{ "type": "ENTITLEMENT", "id": "ent-hq" }] }),
        );
        let messages = smtp.wait_for(n).await;
        assert_eq!(messages.len(), n, "{messages:#?}");
        assert_eq!(messages[n - 1]["rcpt_tos"][0], "facilities@example.com");
    }

    // The password is in no log line, no command output and no row of the store.
    let log = agent.log_text();
    assert!(log.contains("owner mailed"), "{log}");
    assert!(
        log.contains("mailing the owner failed; will retry"),
        "{log}"
    );
    assert!(!log.contains(PASSWORD));
    assert!(!stdout.contains(PASSWORD) && !String::from_utf8_lossy(&out.stderr).contains(PASSWORD));
    assert!(
        !env.store_text().contains(PASSWORD),
        "the password is in the store"
    );
}

/// A server that repeats a refused password in its 535 reply: the password is redacted on
/// the terminal of `provd tasks send` and in the running agent's log.
#[tokio::test]
async fn a_password_the_server_echoes_is_redacted() {
    let smtp = Smtp::start_with(0, "not-the-configured-one", true).await;
    let env = Env::new();
    with_mail(&env, &smtp);
    let agent = env.start().await;
    submit(
        &env,
        json!({ "requestedFor": ["ada"], "requestedItems": [{ "type": "ENTITLEMENT", "id": "ent-view" }] }),
    );
    open_tasks(&env, 1).await;
    let out = env.cli(&["tasks", "send"]);
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        printed.contains("535"),
        "the server's refusal is shown: {printed}"
    );
    assert!(printed.contains("[REDACTED]"), "{printed}");
    assert!(!printed.contains(PASSWORD), "{printed}");
    eventually(20, "the agent's refused send logged", || {
        let log = agent.log_text();
        async move { log.contains("535").then_some(()) }
    })
    .await;
    let log = agent.log_text();
    assert!(!log.contains(PASSWORD), "{log}");
}

#[test]
fn mail_needs_owners_that_are_addresses_and_a_clean_url() {
    let env = Env::new();
    std::fs::write(
        env.path().join("sources/badges.toml"),
        "id = \"badges\"\ntype = \"manual\"\nowner = \"Facilities team\"\n",
    )
    .unwrap();
    let path = env.config();
    let text = std::fs::read_to_string(&path).unwrap()
        + "[mail]\nsmtp_url = \"smtp://mailer:hunter2@127.0.0.1:25\"\nfrom = \"provd@example.com\"\n";
    std::fs::write(path, text).unwrap();
    let out = env.cli(&["check"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("mail.smtp_url: must not hold a user or password"),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "{err}");

    let text = std::fs::read_to_string(env.config())
        .unwrap()
        .replace("mailer:hunter2@", "");
    std::fs::write(env.config(), text).unwrap();
    let out = env.cli(&["check"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("badges.toml:")
            && err.contains(": owner: `Facilities team` is not a mail address"),
        "{err}"
    );
}

/// The catalog's `description` shows wherever a person reads an item: the owner's
/// workbook, the request's status, the access list.
#[tokio::test]
async fn catalog_descriptions_show_where_people_read() {
    const ABOUT: &str = "Read-only access to the flat file's records";
    let env = Env::new();
    let catalog = env.path().join("catalog.toml");
    let text = std::fs::read_to_string(&catalog).unwrap().replacen(
        "value = \"VIEW\"\n",
        &format!("value = \"VIEW\"\nname = \"Flat: view\"\ndescription = \"{ABOUT}\"\n"),
        1,
    );
    std::fs::write(&catalog, text).unwrap();
    let _agent = env.start().await;
    let request = submit(
        &env,
        json!({ "requestedFor": ["ada"], "requestedItems": [{ "type": "ENTITLEMENT", "id": "ent-view" }] }),
    );
    open_tasks(&env, 2).await;

    let book = env.path().join("tasks.xlsx");
    let out = env.cli(&[
        "tasks",
        "export",
        "--format",
        "xlsx",
        "--out",
        book.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut xlsx: calamine::Xlsx<_> = calamine::open_workbook(&book).unwrap();
    let range = xlsx.worksheet_range("flat").unwrap();
    let rows: Vec<Vec<String>> = range
        .rows()
        .map(|r| r.iter().map(|c| c.to_string()).collect())
        .collect();
    let col = |name: &str| rows[0].iter().position(|h| h == name).unwrap();
    let granting = rows
        .iter()
        .find(|r| r[col("operation")] == "ADD_ENTITLEMENT")
        .unwrap();
    assert_eq!(granting[col("item")], "Flat: view");
    assert_eq!(granting[col("item_description")], ABOUT);

    let out = env.cli(&["status", &request]);
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status[0]["description"], ABOUT, "{status}");
    assert_eq!(status[0]["name"], "Flat: view");

    let out = env.cli(&["access", "list", "--identity", "ada", "--format", "json"]);
    let access: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(access[0]["itemName"], "Flat: view", "{access}");
    assert_eq!(access[0]["itemDescription"], ABOUT);
}
