//! Pulling from an Okta-style governance API: a fake of the documented request API (seed
//! 003) — the one fake the standards allow, since the real service cannot run here — and
//! the agent pulling several hundred requests from it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::harness::{Env, eventually};

#[derive(Default)]
pub struct Okta {
    pub requests: Vec<Value>,
    secret: String,
    tokens: BTreeMap<String, Instant>,
    pub token_requests: usize,
    pub list_calls: usize,
    pub rejected_expired: usize,
    rate_limited: Option<i64>,
    pub first_call_after_limit: Option<i64>,
    pub messages: Vec<(String, String)>,
    base: String,
}

type Shared = Arc<Mutex<Okta>>;

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

fn authorized(okta: &mut Okta, headers: &HeaderMap) -> bool {
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    match okta.tokens.get(token) {
        Some(until) if Instant::now() < *until => true,
        Some(_) => {
            okta.rejected_expired += 1;
            false
        }
        None => false,
    }
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        axum::Json(json!({ "errorCode": "E0000011", "errorSummary": "Invalid token provided" })),
    )
        .into_response()
}

async fn token(State(s): State<Shared>, body: String) -> Response {
    let mut o = s.lock().unwrap();
    o.token_requests += 1;
    let form: BTreeMap<String, String> = serde_urlencoded::from_str(&body).unwrap_or_default();
    if form.get("grant_type").map(String::as_str) != Some("client_credentials")
        || form.get("client_secret") != Some(&o.secret)
    {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({ "error": "invalid_client" })),
        )
            .into_response();
    }
    let t = format!("oktatok-{}", o.token_requests);
    o.tokens
        .insert(t.clone(), Instant::now() + Duration::from_secs(2));
    axum::Json(json!({ "access_token": t, "token_type": "Bearer", "expires_in": 2, "scope": form.get("scope") })).into_response()
}

async fn list(
    State(s): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    let mut o = s.lock().unwrap();
    if !authorized(&mut o, &headers) {
        return unauthorized();
    }
    o.list_calls += 1;
    let now = now_ms();
    match o.rate_limited {
        None => {
            // The first call is rate limited, once, for a second.
            let reset = now / 1000 + 2;
            o.rate_limited = Some(reset);
            return (
                StatusCode::TOO_MANY_REQUESTS,
                [("X-Rate-Limit-Reset", reset.to_string())],
                axum::Json(json!({ "errorCode": "E0000047" })),
            )
                .into_response();
        }
        Some(_) if o.first_call_after_limit.is_none() => o.first_call_after_limit = Some(now),
        _ => {}
    }
    let limit: usize = match q.get("limit").map(|l| l.parse::<usize>()) {
        None => 20,
        Some(Ok(l)) if (1..=200).contains(&l) => l,
        _ => {
            return (
                StatusCode::BAD_REQUEST,
                axum::Json(
                    json!({ "errorCode": "E0000001", "errorSummary": "limit must be 1..200" }),
                ),
            )
                .into_response();
        }
    };
    let matching: Vec<&Value> = o
        .requests
        .iter()
        .filter(|r| match q.get("filter").map(String::as_str) {
            Some("status eq \"APPROVED\"") => r["status"] == "APPROVED",
            Some(other) => panic!("unexpected filter {other:?}"),
            None => true,
        })
        .collect();
    let start = match q.get("after") {
        Some(after) => matching
            .iter()
            .position(|r| r["id"] == after.as_str())
            .map_or(0, |i| i + 1),
        None => 0,
    };
    let page: Vec<Value> = matching
        .iter()
        .skip(start)
        .take(limit)
        .map(|v| (*v).clone())
        .collect();
    let mut resp = axum::Json(json!({ "data": page })).into_response();
    if start + limit < matching.len()
        && let Some(last) = page.last()
    {
        let next = format!(
            "<{}/governance/api/v2/requests?filter=status%20eq%20%22APPROVED%22&limit={limit}&after={}>; rel=\"next\"",
            o.base,
            last["id"].as_str().unwrap()
        );
        resp.headers_mut().insert("link", next.parse().unwrap());
    }
    resp
}

async fn message(
    State(s): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: String,
) -> Response {
    let mut o = s.lock().unwrap();
    if !authorized(&mut o, &headers) {
        return unauthorized();
    }
    let v: Value = serde_json::from_str(&body).unwrap_or_default();
    let Some(m) = v["message"].as_str() else {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({ "errorCode": "E0000001" })),
        )
            .into_response();
    };
    o.messages.push((id, m.to_string()));
    (StatusCode::CREATED, axum::Json(json!({ "message": m }))).into_response()
}

pub async fn start(requests: Vec<Value>, secret: &str) -> (String, Shared) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let state: Shared = Arc::new(Mutex::new(Okta {
        requests,
        secret: secret.into(),
        base: base.clone(),
        ..Default::default()
    }));
    let app = axum::Router::new()
        .route("/oauth2/v1/token", axum::routing::post(token))
        .route("/governance/api/v2/requests", axum::routing::get(list))
        .route(
            "/governance/api/v2/requests/{id}/messages",
            axum::routing::post(message),
        )
        .with_state(state.clone());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (base, state)
}

fn user(i: usize) -> String {
    format!("00u{i:017}")
}

#[tokio::test]
async fn hundreds_of_pulled_requests_provision_once_each_and_are_written_back_once() {
    let secret = "okta-Client-S3cret-xyz";
    let mut requests = Vec::new();
    for i in 0..300usize {
        let status = match i % 10 {
            7 => "PENDING",
            8 => "REJECTED",
            _ => "APPROVED",
        };
        let entry = if i % 50 == 13 {
            "cenUNKNOWN"
        } else if i % 2 == 0 {
            "cenVIEW0000000000000"
        } else {
            "cenHQ00000000000000"
        };
        let who = if i % 50 == 29 {
            "00uNOBODY00000000000".to_string()
        } else {
            user(i % 20)
        };
        requests.push(json!({ "id": format!("req{i:017}"), "status": status,
            "requestedFor": { "type": "OKTA_USER", "externalId": who },
            "requested": { "entryId": entry, "resourceType": "APPLICATION" } }));
    }
    let (base, okta) = start(requests.clone(), secret).await;

    let env = Env::new();
    let mut ids = String::from("id,firstName,lastName,email,oktaId\n");
    for i in 0..20 {
        ids.push_str(&format!("u{i},U{i},L{i},u{i}@example.com,{}\n", user(i)));
    }
    std::fs::write(env.path().join("identities.csv"), ids).unwrap();
    std::fs::write(env.path().join("okta-secret"), secret).unwrap();
    let provd = env.path().join("provd.toml");
    let text = std::fs::read_to_string(&provd).unwrap()
        + &format!(
            "[[upstream]]\nname = \"okta\"\nkind = \"okta\"\nbase_url = \"{base}\"\npoll_interval = \"300ms\"\nidentity_attribute = \"oktaId\"\n\
             [upstream.oauth]\ntoken_url = \"{base}/oauth2/v1/token\"\nclient_id = \"0oaprovd\"\nclient_secret_file = \"okta-secret\"\n\
             scope = \"okta.governance.accessRequests.read okta.governance.accessRequests.manage\"\n\
             [upstream.items]\ncenVIEW0000000000000 = {{ type = \"ENTITLEMENT\", id = \"ent-view\" }}\ncenHQ00000000000000 = {{ type = \"ENTITLEMENT\", id = \"ent-hq\" }}\n"
        );
    std::fs::write(&provd, text).unwrap();

    let approved: Vec<&Value> = requests
        .iter()
        .filter(|r| r["status"] == "APPROVED")
        .collect();
    let mut mut_agent = env.start().await;
    let ok = okta.clone();
    let n = approved.len();
    eventually(60, "one write-back per approved request", || {
        let done = ok.lock().unwrap().messages.len() >= n;
        async move { done.then_some(()) }
    })
    .await;

    // One provisioning per distinct (identity, entry) grant, duplicates reported not redone.
    let distinct: BTreeSet<(String, String)> = approved
        .iter()
        .filter(|r| {
            r["requested"]["entryId"] != "cenUNKNOWN"
                && r["requestedFor"]["externalId"] != "00uNOBODY00000000000"
        })
        .map(|r| {
            (
                r["requestedFor"]["externalId"]
                    .as_str()
                    .unwrap()
                    .to_string(),
                r["requested"]["entryId"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(env.count("assignments") as usize, distinct.len());
    assert_eq!(
        env.count("jobs") as usize,
        distinct.len(),
        "one job per distinct grant"
    );
    let calls_before = {
        let o = okta.lock().unwrap();
        let written: BTreeMap<&str, usize> =
            o.messages.iter().fold(BTreeMap::new(), |mut m, (id, _)| {
                *m.entry(id.as_str()).or_default() += 1;
                m
            });
        assert_eq!(written.len(), n, "every approved request written back");
        assert!(written.values().all(|c| *c == 1), "exactly once each");
        for r in requests.iter().filter(|r| r["status"] != "APPROVED") {
            assert!(
                !written.contains_key(r["id"].as_str().unwrap()),
                "PENDING/REJECTED never touched"
            );
        }
        let rejected: Vec<&(String, String)> = o
            .messages
            .iter()
            .filter(|(_, m)| m.starts_with("provd: not provisioned"))
            .collect();
        assert_eq!(
            rejected.len(),
            approved
                .iter()
                .filter(|r| r["requested"]["entryId"] == "cenUNKNOWN"
                    || r["requestedFor"]["externalId"] == "00uNOBODY00000000000")
                .count()
        );
        assert!(
            o.messages
                .iter()
                .any(|(_, m)| m.contains("waiting for a manual task"))
        );
        assert!(
            o.token_requests >= 2,
            "the 2 s tokens were renewed: {}",
            o.token_requests
        );
        let reset = o.rate_limited.unwrap();
        assert!(
            o.first_call_after_limit.unwrap() >= reset * 1000,
            "waited for X-Rate-Limit-Reset"
        );
        o.list_calls
    };

    // A rejected request is visible with its reason.
    let unknown = approved
        .iter()
        .find(|r| r["requested"]["entryId"] == "cenUNKNOWN")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let st = env.cli(&["status", &unknown]);
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let v: Value = serde_json::from_slice(&st.stdout).unwrap();
    assert_eq!(v[0]["state"], "PROVISIONING_FAILED");
    assert!(
        v[0]["errorMessages"][0][0]["text"]
            .as_str()
            .unwrap()
            .contains("cenUNKNOWN")
    );
    let log = mut_agent.log_text();
    assert!(log.contains("pulled request rejected"));
    for s in [secret, "oktatok-"] {
        assert!(!log.contains(s), "{s} leaked into the log");
    }
    let ready: Value = mut_agent
        .http
        .get(format!("{}/readyz", mut_agent.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["upstreams"][0]["healthy"], true, "{ready}");
    let metrics = mut_agent
        .http
        .get(format!("{}/metrics", mut_agent.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("provd_upstream_polls_total{upstream=\"okta\",result=\"rate_limited\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("provd_upstream_polls_total{upstream=\"okta\",result=\"ok\"}"),
        "{metrics}"
    );

    // Restart: nothing pulled or written back again.
    assert_eq!(mut_agent.signal_and_wait("TERM", 15).await.code(), Some(0));
    let (requests_before, messages_before) =
        (env.count("requests"), okta.lock().unwrap().messages.len());
    let _again = env.start().await;
    let ok = okta.clone();
    eventually(20, "two more polls", || {
        let calls = ok.lock().unwrap().list_calls;
        async move { (calls >= calls_before + 2).then_some(()) }
    })
    .await;
    assert_eq!(env.count("requests"), requests_before);
    assert_eq!(okta.lock().unwrap().messages.len(), messages_before);
}

#[tokio::test]
async fn refused_credentials_mark_the_upstream_unhealthy_without_leaking_them() {
    let (base, okta) = start(vec![], "the-real-secret").await;
    let env = Env::new();
    let token = "00SSWS-static-T0ken-abc";
    std::fs::write(env.path().join("okta-token"), token).unwrap();
    let provd = env.path().join("provd.toml");
    let text = std::fs::read_to_string(&provd).unwrap()
        + &format!(
            "[[upstream]]\nname = \"okta\"\nkind = \"okta\"\nbase_url = \"{base}\"\npoll_interval = \"200ms\"\ntoken_file = \"okta-token\"\ntoken_scheme = \"SSWS\"\n"
        );
    std::fs::write(&provd, text).unwrap();
    let agent = env.start().await;
    let http = agent.http.clone();
    let url = format!("{}/readyz", agent.base);
    let ready = eventually(10, "the upstream to be reported unhealthy", || {
        let (http, url) = (http.clone(), url.clone());
        async move {
            let r = http.get(&url).send().await.ok()?;
            let status = r.status();
            let v: Value = r.json().await.ok()?;
            (v["upstreams"][0]["healthy"] == false).then_some((status, v))
        }
    })
    .await;
    assert_eq!(
        ready.0, 200,
        "upstream health is reported, the agent stays ready"
    );
    assert!(
        ready.1["upstreams"][0]["last_error"]
            .as_str()
            .unwrap()
            .contains("401"),
        "{}",
        ready.1
    );
    let log = agent.log_text();
    assert!(log.contains("unhealthy"), "{log}");
    assert!(
        !log.contains(token) && !ready.1.to_string().contains(token),
        "the token leaked"
    );
    assert_eq!(
        okta.lock().unwrap().list_calls,
        0,
        "nothing listed without valid credentials"
    );
}
