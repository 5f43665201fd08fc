//! The benches' REST target: an in-process server speaking the shipped `crm` recipe,
//! every call slowed to [`LATENCY`]; and an agent configuration and launcher around it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::routing::get;
use serde_json::{Value, json};

use super::free_port;

pub const LATENCY: Duration = Duration::from_millis(20);

#[derive(Default)]
pub struct Crm {
    pub users: HashMap<String, u64>,
    /// Every POST /users taken, duplicates included (a create run twice).
    pub creates: u64,
    memberships: Vec<(String, String)>,
    next: u64,
}
pub type Shared = Arc<Mutex<Crm>>;

async fn users(
    State(s): State<Shared>,
    Query(q): Query<HashMap<String, String>>,
) -> axum::Json<Value> {
    tokio::time::sleep(LATENCY).await;
    let crm = s.lock().unwrap();
    let found: Vec<Value> = q
        .get("username")
        .and_then(|u| {
            crm.users
                .get(u)
                .map(|id| json!({ "id": id, "username": u }))
        })
        .into_iter()
        .collect();
    axum::Json(json!(found))
}

async fn create_user(
    State(s): State<Shared>,
    axum::Json(b): axum::Json<Value>,
) -> (axum::http::StatusCode, axum::Json<Value>) {
    tokio::time::sleep(LATENCY).await;
    let mut crm = s.lock().unwrap();
    crm.creates += 1;
    crm.next += 1;
    let id = crm.next;
    crm.users
        .insert(b["username"].as_str().unwrap_or("").to_string(), id);
    (
        axum::http::StatusCode::CREATED,
        axum::Json(json!({ "id": id })),
    )
}

async fn memberships(
    State(s): State<Shared>,
    Query(q): Query<HashMap<String, String>>,
) -> axum::Json<Value> {
    tokio::time::sleep(LATENCY).await;
    let crm = s.lock().unwrap();
    let key = (
        q.get("userId").cloned().unwrap_or_default(),
        q.get("role").cloned().unwrap_or_default(),
    );
    let found: Vec<Value> = crm
        .memberships
        .iter()
        .filter(|m| **m == key)
        .map(|_| json!({ "id": 1 }))
        .collect();
    axum::Json(json!(found))
}

async fn add_membership(
    State(s): State<Shared>,
    axum::Json(b): axum::Json<Value>,
) -> (axum::http::StatusCode, axum::Json<Value>) {
    tokio::time::sleep(LATENCY).await;
    let user = match &b["userId"] {
        Value::String(u) => u.clone(),
        other => other.to_string(),
    };
    s.lock()
        .unwrap()
        .memberships
        .push((user, b["role"].as_str().unwrap_or("").to_string()));
    (
        axum::http::StatusCode::CREATED,
        axum::Json(json!({ "id": 1 })),
    )
}

/// The slow REST target on its own runtime thread; its base URL.
pub fn crm_server() -> String {
    crm_server_with_state().0
}

/// The same, with its state to look at (how many users were created).
pub fn crm_server_with_state() -> (String, Shared) {
    let port = free_port();
    let shared = Shared::default();
    let state = shared.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let app = axum::Router::new()
                .route("/users", get(users).post(create_user))
                .route("/memberships", get(memberships).post(add_membership))
                .with_state(state);
            let l = tokio::net::TcpListener::bind(("127.0.0.1", port))
                .await
                .unwrap();
            axum::serve(l, app).await.unwrap();
        });
    });
    (format!("http://127.0.0.1:{port}"), shared)
}

/// A configuration on database `url`: the crm source at `crm`, a manual `flat` source,
/// identities u0..u{n}.
pub fn config(dir: &Path, url: &str, crm: &str, n: usize) -> PathBuf {
    std::fs::create_dir_all(dir.join("sources")).unwrap();
    super::write_tokens(&dir.join("tokens"));
    std::fs::write(
        dir.join("provd.toml"),
        format!("[agent]\nworkers = 8\nleader_lease = \"5s\"\n[api]\ntokens_file = \"tokens\"\n[log]\nlevel = \"warn\"\n[store]\npostgres_url = \"{url}\"\n"),
    )
    .unwrap();
    let recipe = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("config/sources/crm.toml"),
    )
    .unwrap()
    .replace("http://127.0.0.1:3000", crm);
    std::fs::write(dir.join("sources/crm.toml"), recipe).unwrap();
    std::fs::write(
        dir.join("sources/flat.toml"),
        "id = \"flat\"\ntype = \"manual\"\nowner = \"o@example.com\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("catalog.toml"),
        "[[entitlement]]\nid = \"sales\"\nsource = \"crm\"\nattribute = \"roles\"\nvalue = \"sales\"\n\
         [[entitlement]]\nid = \"badge\"\nsource = \"flat\"\nattribute = \"zones\"\nvalue = \"HQ\"\n",
    )
    .unwrap();
    let mut ids = String::from("id,firstName,lastName,email\n");
    for i in 0..n {
        ids.push_str(&format!("u{i},U{i},L{i},u{i}@example.com\n"));
    }
    std::fs::write(dir.join("identities.csv"), ids).unwrap();
    dir.join("provd.toml")
}

pub fn agent(cfg: &Path, i: usize) -> Child {
    super::agent_command()
        .args(["run", "--config"])
        .arg(cfg)
        .env("PROVD_AGENT__NAME", format!("bench-{i}"))
        .env("PROVD_AGENT__STATE_DIR", format!("state-{i}"))
        .env("PROVD_API__LISTEN", format!("127.0.0.1:{}", free_port()))
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Stores `bodies` through the intake (as the API would), before any agent runs.
pub fn preload(rt: &tokio::runtime::Runtime, cfg: &Path, bodies: &[Value]) -> provd::store::Store {
    let config = Arc::new(provd::config::Config::load(cfg).unwrap());
    let store = rt.block_on(provd::store::open(&config)).unwrap();
    let now = jiff::Timestamp::now();
    for b in bodies {
        rt.block_on(provd::intake::submit(
            &config,
            &store,
            now,
            b.to_string().as_bytes(),
            &provd::model::Requester::other("bench"),
            None,
        ))
        .unwrap();
    }
    store
}

pub fn succeeded(rt: &tokio::runtime::Runtime, store: &provd::store::Store) -> i64 {
    let counts = rt.block_on(store.job_counts()).unwrap();
    counts
        .iter()
        .filter(|(_, s, _)| *s == provd::store::JobState::Succeeded)
        .map(|(_, _, n)| n)
        .sum()
}
