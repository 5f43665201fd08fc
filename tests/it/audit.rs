//! Answering an auditor (DESIGN §14, issue 17): named tokens as requesters, the actor of
//! every event, what identities hold now, removals linked to their grants, and the trail
//! in cursor pages. Run on SQLite and (tests/run) on PostgreSQL.

use serde_json::{Value, json};
use std::process::{Command, Stdio};

use crate::harness::{BIN, Env, eventually, wait};

/// `provd tokens add NAME`: the token printed once.
fn add_token(env: &Env, name: &str) -> String {
    let out = env.cli(&["tokens", "add", name]);
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

async fn post_with(agent: &crate::harness::Agent, token: &str, body: &Value) -> reqwest::Response {
    agent
        .http
        .post(format!("{}/access-requests/v1", agent.base))
        .bearer_auth(token)
        .body(body.to_string())
        .send()
        .await
        .unwrap()
}

async fn get_with(agent: &crate::harness::Agent, token: &str, path: &str) -> Value {
    let r = agent
        .http
        .get(format!("{}{path}", agent.base))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{path}");
    r.json().await.unwrap()
}

fn request_id(v: &Value) -> String {
    v["newRequests"][0]["accessRequestIds"][0]
        .as_str()
        .unwrap()
        .to_string()
}

fn cli_json(env: &Env, args: &[&str]) -> Value {
    let out = env.cli(args);
    assert!(out.status.success(), "{args:?}: {out:?}");
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test]
async fn named_tokens_are_the_requesters_everywhere_and_a_revoked_token_is_refused() {
    let env = Env::new();
    let bot = add_token(&env, "ci-bot");
    let portal = add_token(&env, "hr-portal");
    assert_ne!(bot, portal);
    // The harness's bare token goes too: the file then holds no token at all, only hashes.
    assert!(env.cli(&["tokens", "revoke", "api"]).status.success());
    let file = std::fs::read_to_string(env.path().join("tokens")).unwrap();
    for line in file
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (name, hash) = line.split_once(' ').unwrap();
        assert!(["ci-bot", "hr-portal"].contains(&name), "{line}");
        assert!(
            hash.starts_with("sha256:") && hash.len() == 7 + 64,
            "{line}"
        );
    }
    assert!(!file.contains(&bot) && !file.contains(&portal));
    let listed = String::from_utf8(env.cli(&["tokens", "list"]).stdout).unwrap();
    assert_eq!(
        listed,
        "ci-bot\tsha256\tall (no scopes= set)\nhr-portal\tsha256\tall (no scopes= set)\n"
    );
    let dup = env.cli(&["tokens", "add", "ci-bot"]);
    assert_eq!(dup.status.code(), Some(2), "a name in use is refused");

    let agent = env.start().await;
    let grant = |who: &str| {
        json!({ "requestedFor": [who], "requestedItems": [{ "type": "ENTITLEMENT", "id": "ent-view",
            "comment": format!("{who} joins") }] })
    };
    let r = post_with(&agent, &bot, &grant("ada")).await;
    assert_eq!(r.status(), 202);
    let ada_req = request_id(&r.json().await.unwrap());
    let r = post_with(&agent, &portal, &grant("grace")).await;
    assert_eq!(r.status(), 202);
    let grace_req = request_id(&r.json().await.unwrap());
    // A CLI submit records the user sudo was run by.
    let path = env.write_request("m.json", &grant("mallory"));
    let out = Command::new(BIN)
        .args(["--config"])
        .arg(env.config())
        .arg("submit")
        .arg(&path)
        .env("SUDO_USER", "dana")
        .stdout(Stdio::piped())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let mal_req = request_id(&serde_json::from_slice(&out.stdout).unwrap());

    // Status items carry SailPoint's requester and requesterComment.
    let items = get_with(&agent, &bot, "/access-request-status/v1?requested-for=ada").await;
    assert_eq!(
        items[0]["requester"],
        json!({"type": "IDENTITY", "id": "ci-bot", "name": "ci-bot"})
    );
    assert_eq!(items[0]["requesterComment"]["comment"], "ada joins");
    assert_eq!(items[0]["requesterComment"]["author"]["name"], "ci-bot");

    // The access list names each requester (CLI and HTTP alike).
    let held = cli_json(&env, &["access", "list", "--format", "json"]);
    let by = |who: &str| {
        held.as_array()
            .unwrap()
            .iter()
            .find(|r| r["identity"] == who)
            .unwrap_or_else(|| panic!("{who} in {held}"))
            .clone()
    };
    assert_eq!(by("ada")["requester"], "ci-bot");
    assert_eq!(by("ada")["requestId"], ada_req.as_str());
    assert_eq!(by("grace")["requester"], "hr-portal");
    assert_eq!(by("mallory")["requester"], "cli:dana");
    let http_list = get_with(&agent, &portal, "/access/v1?identity=grace").await;
    assert_eq!(http_list.as_array().unwrap().len(), 1);
    assert_eq!(http_list[0]["requester"], "hr-portal");

    // The trail: each request's events carry its requester as actor.
    for (rid, actor) in [
        (&ada_req, "ci-bot"),
        (&grace_req, "hr-portal"),
        (&mal_req, "cli:dana"),
    ] {
        let path = format!("/audit/v1?request={rid}&kind=request_accepted,job_queued");
        let page = get_with(&agent, &bot, &path).await;
        let items = page["items"].as_array().unwrap();
        assert_eq!(items.len(), 2, "{page}");
        assert!(
            items
                .iter()
                .all(|e| e["actor"] == actor && e["requestId"] == rid.as_str()),
            "{page}"
        );
    }
    // The agent's own steps are its own.
    let running = eventually(10, "a job claimed", || {
        let events = env.events();
        async move { events.into_iter().find(|e| e.kind == "job_running") }
    })
    .await;
    assert!(running.actor.unwrap().starts_with("agent:"));

    // Revoked and reloaded: refused at once, the other token still works.
    assert!(env.cli(&["tokens", "revoke", "hr-portal"]).status.success());
    agent.signal("HUP");
    eventually(10, "the revoked token refused", || {
        let (agent, portal) = (&agent, portal.clone());
        async move {
            let r = post_with(agent, &portal, &json!({})).await;
            (r.status() == 401).then_some(())
        }
    })
    .await;
    let r = post_with(&agent, &bot, &grant("ada")).await;
    assert_eq!(r.status(), 202);
    // No token reached the log or the store's text.
    let log = agent.log_text();
    assert!(!log.contains(&bot) && !log.contains(&portal));
    let trail = String::from_utf8(env.cli(&["audit", "--format", "csv"]).stdout).unwrap();
    assert!(!trail.contains(&bot) && !trail.contains(&portal));
}

fn in_ms(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(jiff::Timestamp::now().as_millisecond() + ms)
        .unwrap()
        .to_string()
}

/// Answers every open task as done, as the owner (a job's tasks open together).
async fn do_open_tasks(env: &Env, what: &str) {
    let store = env.store();
    let tasks = eventually(15, what, || {
        let t = wait(store.tasks(provd::store::tasks::TaskFilter {
            open_only: true,
            ..Default::default()
        }))
        .unwrap();
        async move { (!t.is_empty()).then_some(t) }
    })
    .await;
    for t in tasks {
        wait(store.resolve_task(
            t.id,
            "DONE".into(),
            "flat-owner@example.com".into(),
            String::new(),
            jiff::Timestamp::now().as_millisecond(),
        ))
        .unwrap();
    }
}

fn ada_holds(env: &Env) -> Vec<Value> {
    cli_json(
        env,
        &["access", "list", "--identity", "ada", "--format", "json"],
    )
    .as_array()
    .unwrap()
    .clone()
}

#[tokio::test]
async fn access_moves_from_pending_to_gone_and_the_removal_names_its_grant_and_ticket() {
    let env = Env::new();
    let agent = env.start().await;
    let grant = json!({ "requestedFor": ["ada"], "clientMetadata": { "ticket": "CHG-42" },
        "requestedItems": [{ "type": "ENTITLEMENT", "id": "ent-view" }] });
    let r = agent.post("/access-requests/v1", &grant.to_string()).await;
    assert_eq!(r.status(), 202);
    let grant_req = request_id(&r.json().await.unwrap());
    let held = ada_holds(&env);
    assert_eq!(held.len(), 1);
    assert_eq!(
        (
            held[0]["state"].as_str(),
            held[0]["source"].as_str(),
            held[0]["values"].clone()
        ),
        (Some("pending"), Some("flat"), json!(["VIEW"]))
    );

    do_open_tasks(&env, "the grant's tasks").await;
    let held = eventually(10, "ada's access active", || {
        let h = ada_holds(&env);
        async move { (h.first().map(|r| r["state"] == "active") == Some(true)).then_some(h) }
    })
    .await;
    assert_eq!(
        held[0]["account"], "ada@example.com",
        "the account's native id"
    );
    assert_eq!(held[0]["until"], Value::Null);

    // A removeDate set later: the access is now on its way out.
    let due = in_ms(1_500);
    let set = json!({ "requestedFor": ["ada"],
        "requestedItems": [{ "type": "ENTITLEMENT", "id": "ent-view", "removeDate": due }] });
    assert_eq!(
        agent
            .post("/access-requests/v1", &set.to_string())
            .await
            .status(),
        202
    );
    let held = ada_holds(&env);
    assert_eq!(held[0]["state"], "removal_scheduled");
    assert!(held[0]["until"].is_string());
    assert_eq!(
        held[0]["requestId"],
        grant_req.as_str(),
        "still the grant's"
    );

    // Due: the revoke's task; done, the access is gone.
    do_open_tasks(&env, "the removal's tasks").await;
    eventually(10, "ada's access gone", || {
        let h = ada_holds(&env);
        async move { h.is_empty().then_some(()) }
    })
    .await;

    let removals = cli_json(&env, &["access", "removals", "--format", "json"]);
    let removals = removals.as_array().unwrap();
    assert_eq!(removals.len(), 1, "{removals:?}");
    let removal = &removals[0];
    assert_eq!(removal["grantRequestId"], grant_req.as_str());
    assert_eq!(removal["outcome"], "done");
    assert!(removal["lateMs"].as_i64().unwrap() >= 0);
    let revoke_req = removal["revokeRequestId"].as_str().unwrap().to_string();

    // The revoke's status names the grant it ends and carries the grant's ticket.
    let status: Value = agent
        .get("/access-request-status/v1?requested-for=ada")
        .await
        .json()
        .await
        .unwrap();
    let revoke = status
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["accessRequestId"] == revoke_req.as_str())
        .unwrap();
    assert_eq!(revoke["grantRequestId"], grant_req.as_str());
    assert_eq!(revoke["clientMetadata"]["ticket"], "CHG-42");
    assert_eq!(revoke["requester"]["name"], "schedule");
    assert!(
        revoke["requesterComment"]["comment"]
            .as_str()
            .unwrap()
            .contains(&grant_req)
    );

    // What the revoke did, and who did each step.
    let trail = cli_json(&env, &["audit", "--request", &revoke_req]);
    let actors: Vec<(String, String)> = trail
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap().into(),
                e["actor"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert!(
        actors.contains(&("request_accepted".into(), "schedule".into())),
        "{actors:?}"
    );
    assert!(
        actors.contains(&("task_resolved".into(), "flat-owner@example.com".into())),
        "{actors:?}"
    );
    assert!(
        actors
            .iter()
            .any(|(k, a)| k == "job_manual" && a.starts_with("agent:")),
        "{actors:?}"
    );
    let csv =
        String::from_utf8(env.cli(&["access", "removals", "--format", "csv"]).stdout).unwrap();
    assert!(csv.starts_with("identity,item_type,item_id,due,fired,done,late_ms,outcome"));
    drop(agent);
}

#[tokio::test]
async fn audit_pages_are_complete_and_ordered_across_a_thousand_events() {
    let env = Env::new();
    // 1,050 requests, each its own event (duplicates of one grant: no jobs).
    let config = std::sync::Arc::new(provd::config::Config::load(&env.config()).unwrap());
    let store = env.store();
    let body = json!({ "requestedFor": ["grace"], "requestedItems": [{ "type": "ENTITLEMENT", "id": "ent-view" }] })
        .to_string();
    let cfg = config.clone();
    let s = store.clone();
    wait(Box::pin(async move {
        for _ in 0..1_050 {
            provd::intake::submit(
                &cfg,
                &s,
                jiff::Timestamp::now(),
                body.as_bytes(),
                &provd::model::Requester::other("loader"),
                None,
            )
            .await
            .unwrap();
        }
    }));
    let all: Vec<i64> = env.events().iter().map(|e| e.id).collect();
    assert!(all.len() > 1_000, "{}", all.len());
    let agent = env.start().await;
    // The one grant among them becomes a manual task: wait until the agent is done with
    // it, so that the trail stands still while it is compared.
    eventually(10, "the grant's job waiting on its task", || {
        let events = env.events();
        async move { events.iter().any(|e| e.kind == "job_manual").then_some(()) }
    })
    .await;
    let all: Vec<i64> = env.events().iter().map(|e| e.id).collect();
    // Follow the cursor through the Link header and through `next`; both agree.
    let mut seen: Vec<i64> = Vec::new();
    let mut url = "/audit/v1?limit=100".to_string();
    let mut pages = 0;
    loop {
        let r = agent.get(&url).await;
        assert_eq!(r.status(), 200);
        let link = r
            .headers()
            .get("link")
            .map(|l| l.to_str().unwrap().to_string());
        let page: Value = r.json().await.unwrap();
        pages += 1;
        seen.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["id"].as_i64().unwrap()),
        );
        match (page["next"].as_str(), link) {
            (Some(next), Some(link)) => {
                assert!(link.contains(&format!("after={next}")), "{link}");
                url = format!("/audit/v1?limit=100&after={next}");
            }
            (None, None) => break,
            other => panic!("next and Link disagree: {other:?}"),
        }
    }
    assert_eq!(seen, all, "complete and in order");
    assert!(pages >= 11);
    // The CLI walks every page too; CSV has one line per event.
    let csv = String::from_utf8(env.cli(&["audit", "--format", "csv"]).stdout).unwrap();
    assert_eq!(csv.lines().count(), env.events().len() + 1);
    // Filters: grace's events are all of them here, ada has none; bad parameters are named.
    let none: Value = agent
        .get("/audit/v1?identity=ada")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(none["items"], json!([]));
    let bad = agent.get("/audit/v1?limit=0&since=soon").await;
    assert_eq!(bad.status(), 400);
    let text = bad.text().await.unwrap();
    assert!(text.contains("since:") && text.contains("limit:"), "{text}");
    let unauth = agent
        .http
        .get(format!("{}/audit/v1", agent.base))
        .send()
        .await
        .unwrap();
    assert_eq!(unauth.status(), 401);
}

/// `/access/v1` answers in pages (issue 31 #5): following the `Link` headers gives the
/// whole list, each holding once; unknown and repeated parameters are the API's JSON 400.
#[tokio::test]
async fn the_access_list_pages_and_refuses_parameters_it_does_not_know() {
    let env = Env::new();
    let mut csv = String::from("id,firstName,lastName,email\n");
    let ids: Vec<String> = (0..30).map(|i| format!("p{i:02}")).collect();
    for id in &ids {
        csv.push_str(&format!("{id},P,{id},{id}@example.com\n"));
    }
    std::fs::write(env.path().join("identities.csv"), csv).unwrap();
    for chunk in ids.chunks(10) {
        crate::flow::submit(
            &env,
            json!({ "requestedFor": chunk, "requestedItems": [{ "type": "ENTITLEMENT", "id": "ent-view" }] }),
        );
    }
    // p06's value is wanted twice, its grants either side of the first page's end: one
    // holding (DESIGN §21), on one page.
    crate::flow::submit(
        &env,
        json!({ "requestedFor": ["p06"], "requestedItems": [{ "type": "ACCESS_PROFILE", "id": "ap-view" }] }),
    );
    let agent = env.start().await;
    let token = env.token().to_string();
    let mut url = format!("{}/access/v1?limit=7", agent.base);
    let (mut seen, mut pages) = (Vec::new(), 0);
    loop {
        let r = agent
            .http
            .get(&url)
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let link = r
            .headers()
            .get("link")
            .map(|l| l.to_str().unwrap().to_string());
        let page: Vec<Value> = r.json().await.unwrap();
        assert!(page.len() <= 7);
        pages += 1;
        seen.extend(
            page.iter()
                .map(|h| h["identity"].as_str().unwrap().to_string()),
        );
        if let Some(p06) = page.iter().find(|h| h["identity"] == "p06") {
            assert_eq!(
                p06["via"],
                json!(["ACCESS_PROFILE:ap-view", "ENTITLEMENT:ent-view"])
            );
        }
        match link {
            Some(l) => {
                let next = l.trim_start_matches('<').split('>').next().unwrap();
                url = format!("{}{next}", agent.base);
            }
            None => break,
        }
    }
    assert_eq!(seen, ids, "every holding once, in order");
    assert_eq!(pages, 5);
    let all = get_with(&agent, &token, "/access/v1").await;
    assert_eq!(all.as_array().unwrap().len(), 30);

    for path in [
        "/access/v1?identiy=p01",
        "/access/v1?identity=p01&identity=p02",
        "/audit/v1?kindd=x",
        "/access/v1?limit=0",
        "/access/v1?after=-3",
    ] {
        let r = agent
            .http
            .get(format!("{}{path}", agent.base))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{path}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["detailCode"], "400.1 Bad request content", "{path}: {v}");
    }
}
