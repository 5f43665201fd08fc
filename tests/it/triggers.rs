//! SailPoint event triggers (DESIGN §16) against a fake of SailPoint's trigger service
//! (SailPoint cannot run here). The fake behaves as the docs describe: it invokes the
//! subscriber with the subscription's credentials and gives up after 10 s; for ASYNC and
//! DYNAMIC it sends `_metadata {callbackURL, secret, responseMode}` and accepts the
//! callback only with the invocation's secret (204; 400 otherwise); it records outcomes.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::flow::{grant, submit};
use crate::harness::{Agent, Env, eventually, free_port, wait};

const SECRET_PREFIX: &str = "cb-s3cret-";

/// The fake trigger service.
#[derive(Clone, Default)]
struct Fake {
    inner: Arc<Mutex<FakeState>>,
}

#[derive(Default)]
struct FakeState {
    /// invocation id → its secret.
    secrets: BTreeMap<String, String>,
    /// invocation id → the output delivered by callback.
    outcomes: BTreeMap<String, Value>,
    /// Callbacks refused (wrong secret) or failed (down).
    refused: usize,
    down: bool,
}

async fn callback(
    State(fake): State<Fake>,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> StatusCode {
    let mut s = fake.inner.lock().unwrap();
    if s.down {
        s.refused += 1;
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    if s.secrets.get(&id).map(String::as_str) != body["secret"].as_str() {
        s.refused += 1;
        return StatusCode::BAD_REQUEST;
    }
    s.outcomes.insert(id, body["output"].clone());
    StatusCode::NO_CONTENT
}

impl Fake {
    async fn start() -> (Fake, u16) {
        let fake = Fake::default();
        let app = axum::Router::new()
            .route("/callback/{id}", axum::routing::post(callback))
            .with_state(fake.clone());
        let port = free_port();
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (fake, port)
    }

    fn set_down(&self, down: bool) {
        self.inner.lock().unwrap().down = down;
    }

    fn outcome(&self, id: &str) -> Option<Value> {
        self.inner.lock().unwrap().outcomes.get(id).cloned()
    }

    /// Invokes the subscriber as SailPoint does: 10 s to answer, or the invocation ends.
    async fn invoke(
        &self,
        port: u16,
        url: &str,
        auth: &str,
        mut body: Value,
        mode: Option<&str>,
    ) -> (u16, Value) {
        let id = body["accessRequestId"].as_str().unwrap().to_string();
        if let Some(mode) = mode {
            let secret = format!("{SECRET_PREFIX}{id}");
            self.inner
                .lock()
                .unwrap()
                .secrets
                .insert(id.clone(), secret.clone());
            body["_metadata"] = json!({
                "callbackURL": format!("http://127.0.0.1:{port}/callback/{id}"),
                "secret": secret,
                "responseMode": mode,
            });
        }
        let r = reqwest::Client::new()
            .post(url)
            .header("Authorization", auth)
            .json(&body)
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .expect("the subscriber answers within SailPoint's 10 s");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }
}

/// A subscription as SailPoint holds it: where to call, with which credentials.
struct Subscription<'a> {
    fake: &'a Fake,
    port: u16,
    url: String,
    auth: String,
}

impl Subscription<'_> {
    /// Invokes "Access Request Submitted" for `who` asking for `items`.
    async fn ask(
        &self,
        id: &str,
        who: &str,
        items: &[(&str, &str)],
        mode: Option<&str>,
    ) -> (u16, Value) {
        let body = submitted(id, who, items);
        self.fake
            .invoke(self.port, &self.url, &self.auth, body, mode)
            .await
    }
}

fn submitted(id: &str, who: &str, items: &[(&str, &str)]) -> Value {
    json!({
        "accessRequestId": id,
        "requestedFor": [{ "type": "IDENTITY", "id": who, "name": who }],
        "requestedItems": items.iter().map(|(ty, id)| json!({
            "id": id, "name": id, "type": ty, "operation": "Add", "comment": "needed" })).collect::<Vec<_>>(),
        "requestedBy": { "type": "IDENTITY", "id": "boss", "name": "The Boss" }
    })
}

/// An Env with a policy and two triggers: `sp` (bearer: the provd token `sailpoint`) and
/// `sp-basic` (Basic). Returns the bearer token.
fn with_triggers(env: &Env, policy_extra: &str) -> String {
    // Scoped as an operator should: SailPoint holds it, so it opens these triggers only.
    let out = env.cli(&[
        "tokens",
        "add",
        "sailpoint",
        "--scope",
        "trigger:sp,trigger:sp-short",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
    std::fs::write(env.path().join("sp-basic-password"), "b4sic-pw\n").unwrap();
    std::fs::write(
        env.path().join("policy.toml"),
        format!(
            "approver = \"provd-policy\"\n[[sod]]\nname = \"view-vs-admin\"\nleft = [\"ent-admin\"]\nright = [\"ent-view\"]\n{policy_extra}"
        ),
    )
    .unwrap();
    let path = env.config();
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("[agent]\n", "[agent]\npolicy = \"policy.toml\"\n")
        + "[[trigger]]\nname = \"sp\"\nkind = \"sailpoint\"\nbearer = \"sailpoint\"\nresponse_deadline = \"1m\"\n\
           [[trigger]]\nname = \"sp-short\"\nkind = \"sailpoint\"\nbearer = \"sailpoint\"\nresponse_deadline = \"2s\"\n\
           [[trigger]]\nname = \"sp-basic\"\nkind = \"sailpoint\"\nbasic_user = \"sailpoint\"\nbasic_password_file = \"sp-basic-password\"\n";
    std::fs::write(path, text).unwrap();
    token
}

fn url(agent_port: u16, trigger: &str, what: &str) -> String {
    format!("http://127.0.0.1:{agent_port}/triggers/v1/{trigger}/{what}")
}

fn decisions(env: &Env) -> Vec<Value> {
    let out = env.cli(&["audit", "--kind", "trigger_decision", "--format", "json"]);
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test]
async fn sync_answers_approve_and_deny_by_separation_of_duties() {
    let (fake, fport) = Fake::start().await;
    let env = Env::new();
    let token = with_triggers(&env, "");
    let agent = env.start().await;
    // The trigger's token reaches its triggers only: 403 naming the scope elsewhere.
    for (method, path, scope) in [
        (reqwest::Method::POST, "/access-requests/v1", "intake"),
        (reqwest::Method::GET, "/audit/v1", "audit"),
        (reqwest::Method::GET, "/access/v1", "audit"),
        (reqwest::Method::GET, "/tasks/v1", "tasks"),
        (reqwest::Method::GET, "/access-request-status/v1", "status"),
        (reqwest::Method::PUT, "/identities/v1/ada", "identities"),
    ] {
        let r = agent
            .http
            .request(method, format!("{}{path}", agent.base))
            .bearer_auth(&token)
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{path}");
        let text = r.text().await.unwrap();
        assert!(
            text.contains(&format!("lacks the scope `{scope}`")),
            "{text}"
        );
    }
    let listed = String::from_utf8(env.cli(&["tokens", "list"]).stdout).unwrap();
    assert!(
        listed.contains("sailpoint\tsha256\ttrigger:sp,trigger:sp-short\n"),
        "{listed}"
    );
    let sp = Subscription {
        fake: &fake,
        port: fport,
        url: url(env.port, "sp", "access-request-submitted"),
        auth: format!("Bearer {token}"),
    };

    // Nothing held: approved, as the policy's approver.
    let (status, out) = sp
        .ask("ar-1", "ada", &[("ENTITLEMENT", "ent-view")], None)
        .await;
    assert_eq!(
        (status, out["approved"].clone()),
        (200, json!(true)),
        "{out}"
    );
    assert_eq!(out["approver"], "provd-policy");

    // Over a pending item: grace has ent-admin pending (a manual task not done yet).
    submit(&env, grant("grace", "ENTITLEMENT", "ent-admin"));
    let (status, out) = sp
        .ask(
            "ar-2",
            "grace",
            &[("ENTITLEMENT", "ent-view")],
            Some("SYNC"),
        )
        .await;
    assert_eq!(
        (status, out["approved"].clone()),
        (200, json!(false)),
        "{out}"
    );
    assert!(
        out["comment"].as_str().unwrap().contains("view-vs-admin"),
        "{out}"
    );

    // Over a held item: mallory's ent-admin granted and its tasks done.
    submit(&env, grant("mallory", "ENTITLEMENT", "ent-admin"));
    let store = env.store();
    let open = eventually(15, "mallory's tasks", || {
        let t = wait(store.tasks(provd::store::tasks::TaskFilter {
            open_only: true,
            ..Default::default()
        }))
        .unwrap();
        async move {
            let mine: Vec<i64> = t
                .iter()
                .filter(|t| t.identity_id == "mallory")
                .map(|t| t.id)
                .collect();
            (!mine.is_empty()).then_some(mine)
        }
    })
    .await;
    for id in open {
        wait(store.resolve_task(id, "DONE".into(), "owner".into(), String::new(), 1)).unwrap();
    }
    let holdings = eventually(15, "mallory's ent-admin active", || {
        let h = wait(store.holdings(provd::store::audit::AccessQuery {
            identity: Some("mallory".into()),
            ..Default::default()
        }))
        .unwrap();
        async move {
            h.iter()
                .any(|h| h.state == provd::store::rules::AssignmentState::Active)
                .then_some(h)
        }
    })
    .await;
    assert_eq!(holdings[0].item_id, "ent-admin");
    let (_, out) = sp
        .ask("ar-3", "mallory", &[("ACCESS_PROFILE", "ap-view")], None)
        .await;
    assert_eq!(
        out["approved"], false,
        "an access profile counts by what it grants: {out}"
    );

    // Inside one request.
    let (_, out) = sp
        .ask(
            "ar-4",
            "ada",
            &[("ENTITLEMENT", "ent-admin"), ("ENTITLEMENT", "ent-view")],
            None,
        )
        .await;
    assert_eq!(out["approved"], false, "{out}");

    // An item provd does not know is denied (unknown_items defaults to deny).
    let (_, out) = sp
        .ask("ar-5", "ada", &[("ROLE", "role-nobody")], None)
        .await;
    assert_eq!(out["approved"], false, "{out}");

    // The same invocation again gets the same answer; every decision is an audit event
    // naming its rule.
    let (_, again) = sp
        .ask("ar-2", "grace", &[("ENTITLEMENT", "ent-view")], None)
        .await;
    assert_eq!(again["approved"], false);
    let rules: Vec<String> = decisions(&env)
        .iter()
        .map(|e| e["data"]["rule"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        rules,
        [
            "approve",
            "view-vs-admin",
            "view-vs-admin",
            "view-vs-admin",
            "unknown_items"
        ]
    );

    // provd policy check decides the same offline.
    let body = submitted("ar-9", "grace", &[("ENTITLEMENT", "ent-view")]).to_string();
    let out = env.cli_with(
        &["policy", "check", "-", "--trigger", "sp"],
        Some(body.as_bytes()),
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (v["approved"].clone(), v["rule"].clone()),
        (json!(false), json!("view-vs-admin"))
    );
    assert_eq!(decisions(&env).len(), 5, "a check stores nothing");
}

#[tokio::test]
async fn an_async_answer_survives_a_restart_and_dynamic_answers_at_once() {
    let (fake, fport) = Fake::start().await;
    let env = Env::new();
    let token = with_triggers(&env, "");
    let bearer = format!("Bearer {token}");
    let mut agent = env.start().await;
    let sp = Subscription {
        fake: &fake,
        port: fport,
        url: url(env.port, "sp", "access-request-submitted"),
        auth: bearer.clone(),
    };

    // SailPoint's side is down when the answer is first tried.
    fake.set_down(true);
    let (status, out) = sp
        .ask(
            "ar-async",
            "ada",
            &[("ENTITLEMENT", "ent-view")],
            Some("ASYNC"),
        )
        .await;
    assert_eq!((status, out), (200, json!({})));
    let store = env.store();
    eventually(15, "a failed callback attempt", || {
        let inv = wait(store.invocation("sp:ar-async".into())).unwrap();
        async move { inv.filter(|i| i.attempts >= 1).map(|_| ()) }
    })
    .await;
    // An answer SailPoint cannot take before the deadline is recorded as expired.
    let short = Subscription {
        fake: &fake,
        port: fport,
        url: url(env.port, "sp-short", "access-request-submitted"),
        auth: bearer.clone(),
    };
    let (status, _) = short
        .ask(
            "ar-late",
            "ada",
            &[("ENTITLEMENT", "ent-view")],
            Some("ASYNC"),
        )
        .await;
    assert_eq!(status, 200);
    let late = eventually(15, "the late answer expired", || {
        let inv = wait(store.invocation("sp-short:ar-late".into()))
            .unwrap()
            .unwrap();
        async move { (inv.state == "expired").then_some(inv) }
    })
    .await;
    assert!(late.attempts >= 2, "tried until the deadline: {late:?}");
    let ends = env.cli(&["audit", "--kind", "trigger_callback", "--format", "json"]);
    let ends: Value = serde_json::from_slice(&ends.stdout).unwrap();
    assert_eq!(ends[0]["data"]["outcome"], "expired", "{ends}");

    let first_log = agent.log_text();
    agent.signal_and_wait("TERM", 15).await;

    // Up again; a new agent process delivers the stored answer with the right secret.
    fake.set_down(false);
    let agent = env.start().await;
    let delivered = eventually(20, "the callback delivered", || {
        let o = fake.outcome("ar-async");
        async move { o }
    })
    .await;
    assert_eq!(delivered["approved"], true);
    assert_eq!(delivered["approver"], "provd-policy");
    let inv = eventually(10, "the invocation recorded as delivered", || {
        let inv = wait(store.invocation("sp:ar-async".into()))
            .unwrap()
            .unwrap();
        async move { (inv.state == "delivered").then_some(inv) }
    })
    .await;
    assert!(
        inv.sealed_secret.is_none(),
        "the secret is dropped once delivered"
    );

    // DYNAMIC: decided at once, answered at once.
    let (status, out) = sp
        .ask(
            "ar-dyn",
            "ada",
            &[("ENTITLEMENT", "ent-view")],
            Some("DYNAMIC"),
        )
        .await;
    assert_eq!(
        (status, out["approved"].clone()),
        (200, json!(true)),
        "{out}"
    );

    // The secrets are in no log line and no readable text of the store.
    let logs = first_log + &agent.log_text();
    assert!(
        logs.contains("pre-approval callback failed; will retry"),
        "{logs}"
    );
    assert!(
        !logs.contains(SECRET_PREFIX),
        "a callback secret reached a log line"
    );
    let state = env.path().join("state");
    for f in ["provd.db", "provd.db-wal"] {
        let bytes = std::fs::read(state.join(f)).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&bytes).contains(SECRET_PREFIX),
            "{f}"
        );
    }
    if let Some((pg, _)) = &env.pg {
        let dump = pg.psql("provd", "SELECT body || coalesce(sealed_secret,'') || coalesce(last_error,'') FROM trigger_invocations");
        assert!(!dump.contains(SECRET_PREFIX), "{dump}");
    }
}

#[tokio::test]
async fn wrong_credentials_and_bad_bodies_are_refused_and_nothing_is_stored() {
    let (fake, fport) = Fake::start().await;
    let env = Env::new();
    let token = with_triggers(&env, "");
    let _agent = env.start().await;
    let submit_url = url(env.port, "sp", "access-request-submitted");
    let basic_url = url(env.port, "sp-basic", "access-request-submitted");
    let body = submitted("ar-x", "ada", &[("ENTITLEMENT", "ent-view")]);
    let events_before = env.count("events");

    let basic = |user: &str, pw: &str| {
        use base64::Engine;
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}"))
        )
    };
    for (u, auth) in [
        (&submit_url, String::new()),
        // A valid provd token, but not the one this trigger names.
        (&submit_url, format!("Bearer {}", env.token())),
        (&submit_url, format!("Bearer {token}x")),
        (&basic_url, basic("sailpoint", "wrong")),
        (&basic_url, format!("Bearer {token}")),
    ] {
        let (status, _) = fake
            .invoke(fport, u, &auth, body.clone(), Some("ASYNC"))
            .await;
        assert_eq!(status, 401, "{u} with `{auth}`");
    }
    assert_eq!(env.count("trigger_invocations"), 0);
    assert_eq!(env.count("events"), events_before);

    let (status, out) = fake
        .invoke(
            fport,
            &basic_url,
            // The scheme is case-insensitive.
            &basic("sailpoint", "b4sic-pw").replacen("Basic", "basic", 1),
            body.clone(),
            None,
        )
        .await;
    assert_eq!(
        (status, out["approved"].clone()),
        (200, json!(true)),
        "{out}"
    );

    let mut bad = body.clone();
    bad["accessRequestId"] = json!("ar-bad");
    bad["requestedItems"][0]["type"] = json!("GROUP");
    let (status, out) = fake
        .invoke(fport, &submit_url, &format!("Bearer {token}"), bad, None)
        .await;
    assert_eq!(status, 400);
    assert_eq!(
        out["messages"][0]["text"],
        "requestedItems[0].type: must be ROLE, ACCESS_PROFILE or ENTITLEMENT"
    );
    assert_eq!(
        out["detailCode"], "400.1 Bad request content",
        "the API's one error shape"
    );
    assert_eq!(env.count("trigger_invocations"), 1, "only the good one");
    let (status, out) = fake
        .invoke(
            fport,
            &url(env.port, "nope", "access-request-submitted"),
            &format!("Bearer {token}"),
            body,
            None,
        )
        .await;
    assert_eq!(status, 404);
    // The same shape and code as the API's other 404 (a canceled request not found).
    assert_eq!(out["detailCode"], "404 Not found", "{out}");
    assert_eq!(out["messages"][0]["text"], "no such trigger", "{out}");
}

#[tokio::test]
async fn a_decision_provisions_to_slapd_once_even_when_delivered_twice() {
    let slapd = crate::slapd::Slapd::start().await;
    let env = crate::ldap::ldap_env(&slapd.url(), "", &[]);
    let token = {
        let out = env.cli(&["tokens", "add", "sailpoint"]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let path = env.config();
    let text = std::fs::read_to_string(&path).unwrap()
        + "[[trigger]]\nname = \"sp\"\nkind = \"sailpoint\"\nbearer = \"sailpoint\"\n[trigger.items.2c9180835d2e5168015d32f890ca1581]\ntype = \"ENTITLEMENT\"\nid = \"ent-vpn\"\n";
    std::fs::write(path, text).unwrap();
    let agent: Agent = env.start().await;
    let (fake, fport) = Fake::start().await;
    let decision = json!({
        "accessRequestId": "ar-42",
        "requestedFor": { "type": "IDENTITY", "id": "ada", "name": "Ada" },
        "requestedItemsStatus": [
            { "id": "2c9180835d2e5168015d32f890ca1581", "name": "VPN", "type": "ENTITLEMENT", "operation": "Add",
              "comment": "remote work", "clientMetadata": { "ticket": "SP-42" },
              "approvalInfo": [{ "approvalDecision": "APPROVED", "approverName": "Stephen.Austin" }] },
            { "id": "ent-git", "name": "Git", "type": "ENTITLEMENT", "operation": "Add",
              "approvalInfo": [{ "approvalDecision": "DENIED", "approverName": "Stephen.Austin" }] }
        ],
        "requestedBy": { "type": "IDENTITY", "id": "boss", "name": "The Boss" }
    });
    let decide_url = url(env.port, "sp", "access-request-decision");
    let bearer = format!("Bearer {token}");
    let (status, first) = fake
        .invoke(fport, &decide_url, &bearer, decision.clone(), None)
        .await;
    assert_eq!(status, 200, "{first}");
    let (_, second) = fake
        .invoke(fport, &decide_url, &bearer, decision, None)
        .await;
    let rid = first["requests"][0]["requestId"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        second["requests"][0]["requestId"],
        rid.as_str(),
        "delivered twice, one request"
    );
    crate::flow::all_succeeded(&crate::flow::settled(&env, &rid).await);

    let dn = "uid=ada,ou=people,dc=example,dc=com".to_string();
    assert!(slapd.values(crate::ldap::VPN, "member").await.contains(&dn));
    assert!(
        !slapd.values(crate::ldap::GIT, "member").await.contains(&dn),
        "the denied item is not provisioned"
    );
    let status: Value = serde_json::from_slice(&env.cli(&["status", &rid]).stdout).unwrap();
    assert_eq!(status.as_array().unwrap().len(), 1);
    assert_eq!(status[0]["requester"]["id"], "trigger:sp");
    let jobs = wait(env.store().jobs(provd::store::jobs::JobFilter::default())).unwrap();
    assert_eq!(jobs.len(), 1, "one job, not two: {jobs:?}");
    let denied = env.cli(&[
        "audit",
        "--kind",
        "trigger_items_denied",
        "--format",
        "json",
    ]);
    let denied: Value = serde_json::from_slice(&denied.stdout).unwrap();
    assert_eq!(
        denied.as_array().unwrap().len(),
        1,
        "denied items recorded once"
    );
    assert_eq!(denied[0]["data"]["items"][0]["id"], "ent-git");
    drop(agent);
}
