//! Helpers shared by the connector tests: submit requests through the CLI, wait for their
//! jobs to end, and build configurations whose sources are real servers.

use crate::harness::wait;
use serde_json::{Value, json};

use crate::harness::{Env, eventually};

pub fn submit(env: &Env, body: Value) -> String {
    let out = env.cli_with(&["submit", "-"], Some(body.to_string().as_bytes()));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["newRequests"][0]["accessRequestIds"][0]
        .as_str()
        .unwrap()
        .to_string()
}

pub fn grant(who: &str, ty: &str, id: &str) -> Value {
    json!({ "requestedFor": [who], "requestedItems": [{ "type": ty, "id": id }] })
}

pub fn revoke(who: &str, ty: &str, id: &str) -> Value {
    json!({ "requestedFor": [who], "requestType": "REVOKE_ACCESS",
            "requestedItems": [{ "type": ty, "id": id, "comment": "no longer needed" }] })
}

/// Waits until every job of the request has ended; returns them. A request's jobs are
/// written in the same transaction as the request, so none means none will come.
pub async fn settled(env: &Env, request: &str) -> Vec<provd::store::Job> {
    let store = env.store();
    let rid = request.to_string();
    eventually(30, "the request's jobs to end", || {
        let jobs = wait(store.jobs(provd::store::jobs::JobFilter {
            request_id: Some(rid.clone()),
            ..Default::default()
        }))
        .unwrap();
        async move { jobs.iter().all(|j| j.state.is_final()).then_some(jobs) }
    })
    .await
}

pub fn all_succeeded(jobs: &[provd::store::Job]) {
    for j in jobs {
        assert_eq!(
            j.state.as_str(),
            "succeeded",
            "job {} errors: {:?}",
            j.id,
            j.errors
        );
    }
}

/// An Env whose sources are exactly `sources` (file name, content) and whose catalog is
/// `catalog`; identities ada, bob and grace.
pub fn custom_env(sources: &[(&str, String)], catalog: &str) -> Env {
    let env = Env::new();
    let d = env.path();
    for f in ["flat.toml", "badges.toml"] {
        std::fs::remove_file(d.join("sources").join(f)).unwrap();
    }
    for (name, text) in sources {
        std::fs::write(d.join("sources").join(name), text).unwrap();
    }
    std::fs::write(d.join("catalog.toml"), catalog).unwrap();
    std::fs::write(
        d.join("identities.csv"),
        "id,firstName,lastName,email\nada,Ada,Lovelace,ada@example.com\nbob,Bob,Builder,bob@example.com\ngrace,Grace,Hopper,grace@example.com\n",
    )
    .unwrap();
    env
}

/// The one job of a request, once it is in `state`.
pub async fn job_in(env: &Env, request: &str, state: &str) -> provd::store::Job {
    let store = env.store();
    let (rid, want) = (request.to_string(), state.to_string());
    eventually(30, &format!("a job in {state}"), || {
        let jobs = wait(store.jobs(provd::store::jobs::JobFilter {
            request_id: Some(rid.clone()),
            ..Default::default()
        }))
        .unwrap();
        let want = want.clone();
        async move { jobs.into_iter().find(|j| j.state.as_str() == want) }
    })
    .await
}

/// Waits until every job of the request was put back after provd's credentials were
/// refused (DESIGN §20: queued, no attempt spent, not failed); returns the errors their
/// `job_released` events recorded.
pub async fn held(env: &Env, request: &str) -> Vec<String> {
    let store = env.store();
    let rid = request.to_string();
    eventually(30, "the request's jobs to be put back", || {
        let jobs = wait(store.jobs(provd::store::jobs::JobFilter {
            request_id: Some(rid.clone()),
            ..Default::default()
        }))
        .unwrap();
        let released: Vec<String> = env
            .events()
            .iter()
            .filter(|e| e.kind == "job_released" && e.request_id.as_deref() == Some(rid.as_str()))
            .filter_map(|e| e.data["error"]["message"].as_str().map(str::to_string))
            .collect();
        async move {
            let all_back = !jobs.is_empty()
                && jobs
                    .iter()
                    .all(|j| j.state.as_str() == "queued" && j.attempt == 0 && j.errors.is_empty());
            (all_back && released.len() >= jobs.len()).then_some(released)
        }
    })
    .await
}
