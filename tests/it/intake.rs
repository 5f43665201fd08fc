//! Requests in through the CLI, HTTP and the spool folder; bad input refused with nothing
//! stored; duplicates reported under existingRequests.

use crate::harness::wait;
use serde_json::{Value, json};

use crate::harness::{Env, eventually};

fn grant(who: &str, ty: &str, id: &str) -> Value {
    json!({ "requestedFor": [who], "requestType": "GRANT_ACCESS",
            "requestedItems": [{ "type": ty, "id": id, "comment": "test" }] })
}

#[tokio::test]
async fn submit_via_cli_with_the_agent_stopped_then_dispatched_when_it_starts() {
    let env = Env::new();
    let file = env.write_request("r.json", &grant("ada", "ROLE", "role-staff"));
    let out = env.cli(&["submit", file.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let resp: Value = serde_json::from_slice(&out.stdout).unwrap();
    let rid = resp["newRequests"][0]["accessRequestIds"][0]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        resp["newRequests"][0]["requestedItemsDetails"][0]["id"],
        "role-staff"
    );
    assert_eq!(env.count("jobs"), 2, "one job per source the role touches");

    // From standard input too.
    let out = env.cli_with(
        &["submit", "-"],
        Some(
            grant("grace", "ENTITLEMENT", "ent-view")
                .to_string()
                .as_bytes(),
        ),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let _agent = env.start().await;
    let store = env.store();
    eventually(10, "jobs to reach manual", || {
        let jobs = wait(store.jobs(Default::default())).unwrap();
        async move {
            jobs.iter()
                .all(|j| j.state.as_str() == "manual")
                .then_some(())
        }
    })
    .await;
    let status = env.cli(&["status", &rid]);
    assert!(status.status.success());
    let items: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(items[0]["state"], "EXECUTING");
    assert_eq!(
        items[0]["manualWorkItemDetails"].as_array().unwrap().len(),
        4,
        "2 accounts + 2 entitlements"
    );
}

#[tokio::test]
async fn submit_via_http_needs_a_token_and_answers_202() {
    let env = Env::new();
    let agent = env.start().await;
    let body = grant("ada", "ACCESS_PROFILE", "ap-view").to_string();
    let anon = agent
        .http
        .post(format!("{}/access-requests/v1", agent.base))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(anon.status(), 401);
    let wrong = agent
        .http
        .post(format!("{}/access-requests/v1", agent.base))
        .bearer_auth("t0ken-for-tests-1234567891")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    assert_eq!(env.count("requests"), 0);

    let r = agent.post("/access-requests/v1", &body).await;
    assert_eq!(r.status(), 202);
    let v: Value = r.json().await.unwrap();
    let rid = v["newRequests"][0]["accessRequestIds"][0]
        .as_str()
        .unwrap()
        .to_string();
    let store = env.store();
    let rid2 = rid.clone();
    eventually(10, "the job to wait on its task", || {
        let jobs = wait(store.jobs(Default::default())).unwrap();
        let rid = rid2.clone();
        async move {
            jobs.iter()
                .any(|j| j.request_id == rid && j.state.as_str() == "manual")
                .then_some(())
        }
    })
    .await;
    let status: Value = agent
        .get("/access-request-status/v1?requested-for=ada")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(status[0]["accessRequestId"], rid.as_str());
    assert_eq!(status[0]["state"], "EXECUTING");
    assert_eq!(status[0]["requestedFor"]["id"], "ada");
    assert!(status[0]["errorMessages"].is_null());
    let none: Value = agent
        .get("/access-request-status/v1?requested-for=grace")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(none, json!([]));
    let bad = agent.get("/access-request-status/v1?limit=1000").await;
    assert_eq!(bad.status(), 400);
    assert!(
        !agent.log_text().contains(env.token()),
        "the API token must never be logged"
    );
}

#[tokio::test]
async fn the_same_idempotency_key_is_stored_once() {
    let env = Env::new();
    let agent = env.start().await;
    let body = grant("ada", "ACCESS_PROFILE", "ap-view").to_string();
    let send = || {
        agent
            .http
            .post(format!("{}/access-requests/v1", agent.base))
            .bearer_auth(env.token())
            .header("Idempotency-Key", "abc-1")
            .body(body.clone())
            .send()
    };
    let a: Value = send().await.unwrap().json().await.unwrap();
    let b: Value = send().await.unwrap().json().await.unwrap();
    assert_eq!(a, b);
    assert_eq!(env.count("requests"), 1);
}

#[tokio::test]
async fn a_duplicate_grant_is_reported_under_existing_requests_and_not_provisioned_again() {
    let env = Env::new();
    let first = env.cli_with(
        &["submit", "-"],
        Some(grant("ada", "ROLE", "role-staff").to_string().as_bytes()),
    );
    assert!(first.status.success());
    let first: Value = serde_json::from_slice(&first.stdout).unwrap();
    let original = first["newRequests"][0]["accessRequestIds"][0].clone();
    let jobs_before = env.count("jobs");

    let agent = env.start().await;
    let mut again = grant("ada", "ROLE", "role-staff");
    again["requestedItems"][0]["removeDate"] = json!("2099-01-01T00:00:00Z");
    let r = agent.post("/access-requests/v1", &again.to_string()).await;
    assert_eq!(r.status(), 202);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["newRequests"], json!([]));
    assert_eq!(v["existingRequests"][0]["accessRequestIds"][0], original);
    assert_eq!(env.count("jobs"), jobs_before, "nothing provisioned twice");
    // Its removeDate replaced the (absent) scheduled one.
    let status: Value = agent
        .get("/access-request-status/v1?requested-for=ada")
        .await
        .json()
        .await
        .unwrap();
    assert!(
        status
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["removeDate"] == "2099-01-01T00:00:00.000Z"),
        "{status}"
    );
}

#[tokio::test]
async fn spool_files_are_taken_in_or_rejected_with_the_reason() {
    let env = Env::new();
    let spool = env.path().join("spool");
    std::fs::create_dir_all(&spool).unwrap();
    std::fs::write(
        spool.join("good.json"),
        grant("ada", "ENTITLEMENT", "ent-view").to_string(),
    )
    .unwrap();
    std::fs::write(
        spool.join("bad.json"),
        grant("nobody", "ENTITLEMENT", "ent-view").to_string(),
    )
    .unwrap();
    std::fs::write(spool.join("ignored.txt"), "not a request").unwrap();
    // Written files are only taken once they settle; make them old.
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(5);
    for f in ["good.json", "bad.json"] {
        std::fs::File::options()
            .write(true)
            .open(spool.join(f))
            .unwrap()
            .set_modified(old)
            .unwrap();
    }
    let _agent = env.start().await;
    let processed = spool.join("processed/good.json");
    let rejected = spool.join("rejected/bad.json");
    eventually(10, "spool files to be moved", || {
        let done = processed.exists() && rejected.exists();
        async move { done.then_some(()) }
    })
    .await;
    assert!(!spool.join("good.json").exists());
    let why = std::fs::read_to_string(spool.join("rejected/bad.json.error")).unwrap();
    assert!(
        why.contains("requestedFor[0]: unknown identity `nobody`"),
        "{why}"
    );
    assert!(spool.join("ignored.txt").exists());
    assert_eq!(env.count("requests"), 1);
    let accepted: Vec<_> = env
        .events()
        .into_iter()
        .filter(|e| e.kind == "request_accepted")
        .collect();
    assert_eq!(accepted.len(), 1);
    let rid = accepted[0].request_id.clone().unwrap();
    assert_eq!(
        wait(env.store().request_origin(rid.clone()))
            .unwrap()
            .as_deref(),
        Some("spool")
    );
}

/// (body, a field the error must name)
fn bad_corpus() -> Vec<(String, &'static str)> {
    let ok = grant("ada", "ROLE", "role-staff");
    let with = |f: &dyn Fn(&mut Value)| {
        let mut v = ok.clone();
        f(&mut v);
        v.to_string()
    };
    vec![
        ("{\"requestedFor\": [".to_string(), "body"),
        ("[]".to_string(), "body"),
        (
            with(&|v| v["requestType"] = json!("MODIFY_ACCESS")),
            "requestType",
        ),
        (
            with(&|v| drop(v.as_object_mut().unwrap().remove("requestedFor"))),
            "requestedFor",
        ),
        (with(&|v| v["requestedItems"] = json!([])), "requestedItems"),
        (
            with(&|v| v["requestedItems"][0]["type"] = json!("APPLICATION")),
            "requestedItems[0].type",
        ),
        (
            with(&|v| v["requestedItems"][0]["id"] = json!(12)),
            "requestedItems[0].id",
        ),
        (with(&|v| v["requestedFor"] = json!([1])), "requestedFor[0]"),
        (
            with(&|v| {
                v["requestedFor"] = json!((0..11).map(|i| format!("u{i}")).collect::<Vec<_>>())
            }),
            "requestedFor",
        ),
        (
            with(&|v| {
                v["requestedItems"] = json!(
                    (0..26)
                        .map(|_| json!({"type": "ENTITLEMENT", "id": "ent-view"}))
                        .collect::<Vec<_>>()
                )
            }),
            "requestedItems",
        ),
        (
            with(&|v| {
                v["requestType"] = json!("REVOKE_ACCESS");
                v["requestedFor"] = json!(["ada", "grace"]);
            }),
            "requestedFor",
        ),
        (
            with(&|v| {
                v["requestType"] = json!("REVOKE_ACCESS");
                v["requestedItems"][0]
                    .as_object_mut()
                    .unwrap()
                    .remove("comment");
            }),
            "requestedItems[0].comment",
        ),
        (
            with(&|v| {
                v["requestType"] = json!("REVOKE_ACCESS");
                v["requestedItems"][0]["startDate"] = json!("2099-01-01");
            }),
            "requestedItems[0].startDate",
        ),
        (
            with(&|v| v["requestedItems"][0]["removeDate"] = json!("2001-01-01T00:00:00Z")),
            "requestedItems[0].removeDate",
        ),
        (
            with(&|v| {
                v["requestedItems"][0]["startDate"] = json!("2099-02-01");
                v["requestedItems"][0]["removeDate"] = json!("2099-01-01");
            }),
            "requestedItems[0].removeDate",
        ),
        (
            with(&|v| v["clientMetadata"] = json!({ "timeZone": "Not/AZone" })),
            "clientMetadata.timeZone",
        ),
        (
            with(&|v| v["requestedFor"] = json!(["nobody"])),
            "requestedFor[0]",
        ),
        (
            with(&|v| v["requestedItems"][0]["id"] = json!("role-none")),
            "requestedItems[0].id",
        ),
        (
            format!("{{\"pad\": \"{}\"}}", "x".repeat(1024 * 1024)),
            "body",
        ),
    ]
}

#[tokio::test]
async fn bad_input_is_refused_naming_the_field_and_nothing_is_stored() {
    let env = Env::new();
    let agent = env.start().await;
    // The agent's start stores identities.csv's rows as the base of later edits: one event.
    let events = env.count("events");
    for (body, field) in bad_corpus() {
        let r = agent.post("/access-requests/v1", &body).await;
        assert_eq!(r.status(), 400, "HTTP for {field}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["detailCode"], "400.1 Bad request content");
        assert!(v["trackingId"].as_str().is_some_and(|t| !t.is_empty()));
        let texts: Vec<&str> = v["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["text"].as_str().unwrap())
            .collect();
        assert!(
            texts.iter().any(|t| t.starts_with(&format!("{field}:"))),
            "HTTP: {field} not named in {texts:?}"
        );
        assert_eq!(v["messages"][0]["locale"], "en-US");

        let out = env.cli_with(&["submit", "-"], Some(body.as_bytes()));
        assert_eq!(out.status.code(), Some(2), "CLI exit for {field}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!("{field}:")),
            "CLI: {field} not named in {err}"
        );
    }
    for table in ["requests", "jobs", "assignments", "request_items"] {
        assert_eq!(env.count(table), 0, "{table} must stay empty");
    }
    assert_eq!(
        env.count("events"),
        events,
        "no event for a refused request"
    );
}

/// Requests sent at the same moment are committed in groups: each still gets its own
/// answer (a valid one its 202 and a request for its own identity, a refused one its 400
/// naming its own identity), and a refused request never keeps the others out.
#[tokio::test]
async fn requests_sent_together_each_get_their_own_answer() {
    let env = Env::new();
    let mut ids = String::from("id,firstName,lastName,email\n");
    for i in 0..30 {
        ids.push_str(&format!("g{i},G{i},L{i},g{i}@example.com\n"));
    }
    std::fs::write(env.path().join("identities.csv"), ids).unwrap();
    let agent = std::sync::Arc::new(env.start().await);
    let mut sends = tokio::task::JoinSet::new();
    for i in 0..60 {
        let agent = agent.clone();
        sends.spawn(async move {
            // Even: g0..g29, valid. Odd: an identity nobody knows.
            let who = if i % 2 == 0 {
                format!("g{}", i / 2)
            } else {
                format!("nobody{i}")
            };
            let r = agent
                .post(
                    "/access-requests/v1",
                    &grant(&who, "ACCESS_PROFILE", "ap-view").to_string(),
                )
                .await;
            (who, r.status().as_u16(), r.text().await.unwrap())
        });
    }
    let mut accepted = Vec::new();
    while let Some(done) = sends.join_next().await {
        let (who, status, text) = done.unwrap();
        if who.starts_with("nobody") {
            assert_eq!(status, 400, "{who}: {text}");
            assert!(
                text.contains(&who),
                "the refusal names its own identity: {text}"
            );
        } else {
            assert_eq!(status, 202, "{who}: {text}");
            let v: Value = serde_json::from_str(&text).unwrap();
            let rid = v["newRequests"][0]["accessRequestIds"][0]
                .as_str()
                .unwrap()
                .to_string();
            accepted.push((who, rid));
        }
    }
    assert_eq!(accepted.len(), 30);
    assert_eq!(env.count("requests"), 30, "the refused ones stored nothing");
    for (who, rid) in &accepted {
        let status: Value = agent
            .get(&format!("/access-request-status/v1?requested-for={who}"))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(
            status[0]["accessRequestId"],
            rid.as_str(),
            "{who}: {status}"
        );
    }
    // Every stored request went through a group commit; refused ones are not counted.
    let metrics = agent.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l == "provd_accept_grouped_requests_total 30"),
        "{metrics}"
    );
}
