//! The SCIM connector end to end: the real provd binary against the real scim2-server.

use crate::harness::wait;
use serde_json::{Value, json};

use crate::flow::{all_succeeded, custom_env, grant, job_in, revoke, settled, submit};
use crate::harness::Env;
use crate::httpservers::{Scim, TokenServer, TooMany};

pub const TOKEN: &str = "scim-T0ken-9f8e7d6c5b4a";

/// A SCIM source file; `auth` is the token or [oauth] part.
fn source(base: &str, auth: &str) -> String {
    format!(
        r#"id = "saas"
type = "scim"
owner = "saas-owner@example.com"
base_url = "{base}"
timeout = "5s"
{auth}
[account]
correlation = "userName"
[account.attributes]
userName = "{{id}}"
displayName = "{{firstName}} {{lastName}}"
"name.givenName" = "{{firstName}}"
"name.familyName" = "{{lastName}}"
'emails[type eq "work"].value' = "{{email}}"
[retry]
initial = "100ms"
max_interval = "500ms"
breaker_cooldown = "500ms"
# Outlasts a slow restart of the server on a loaded machine (the point is recovery).
max_attempts = 200
"#
    )
}

const CATALOG: &str = r#"
[[entitlement]]
id = "ent-eng"
source = "saas"
attribute = "groups"
value = "engineers"
[[entitlement]]
id = "ent-ops"
source = "saas"
attribute = "groups"
value = "ops"
[[entitlement]]
id = "ent-vpn"
source = "saas"
attribute = "entitlements"
value = "vpn"
[[access_profile]]
id = "ap-a"
entitlements = ["ent-eng", "ent-ops"]
[[access_profile]]
id = "ap-b"
entitlements = ["ent-eng"]
"#;

pub fn env_with_token(base: &str, token: &str) -> Env {
    let env = custom_env(
        &[("saas.toml", source(base, "token_file = \"../scim-token\""))],
        CATALOG,
    );
    std::fs::write(env.path().join("scim-token"), format!("{token}\n")).unwrap();
    env
}

pub async fn user(scim: &Scim, name: &str) -> Vec<Value> {
    let r = scim
        .get(&format!("/Users?filter=userName%20eq%20%22{name}%22"))
        .await;
    r["Resources"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn create_with_mapped_attributes_then_idempotent_memberships_and_revokes() {
    let scim = Scim::start(TOKEN).await;
    let eng = scim.group("engineers").await;
    let ops = scim.group("ops").await;
    let env = env_with_token(&scim.base(), TOKEN);
    let agent = env.start().await;

    all_succeeded(&settled(&env, &submit(&env, grant("ada", "ACCESS_PROFILE", "ap-a"))).await);
    let users = user(&scim, "ada").await;
    assert_eq!(users.len(), 1);
    let u = &users[0];
    assert_eq!(u["displayName"], "Ada Lovelace");
    assert_eq!(u["name"]["givenName"], "Ada");
    assert_eq!(u["name"]["familyName"], "Lovelace");
    assert_eq!(u["emails"][0]["value"], "ada@example.com");
    assert_eq!(u["emails"][0]["type"], "work");
    let id = u["id"].as_str().unwrap().to_string();
    assert_eq!(
        wait(env.store().native_id("ada".into(), "saas".into()))
            .unwrap()
            .as_deref(),
        Some(id.as_str())
    );
    assert_eq!(scim.members(&eng).await, vec![id.clone()]);
    assert_eq!(scim.members(&ops).await, vec![id.clone()]);

    // engineers is granted again through ap-b: nothing to do; revoking ap-a keeps it.
    assert!(
        settled(&env, &submit(&env, grant("ada", "ACCESS_PROFILE", "ap-b")))
            .await
            .is_empty()
    );
    all_succeeded(&settled(&env, &submit(&env, revoke("ada", "ACCESS_PROFILE", "ap-a"))).await);
    assert_eq!(scim.members(&eng).await, vec![id.clone()]);
    assert!(scim.members(&ops).await.is_empty());
    all_succeeded(&settled(&env, &submit(&env, revoke("ada", "ACCESS_PROFILE", "ap-b"))).await);
    assert!(scim.members(&eng).await.is_empty());
    // Removing what is not there succeeds without change.
    let again = settled(&env, &submit(&env, revoke("ada", "ACCESS_PROFILE", "ap-b"))).await;
    all_succeeded(&again);
    let show = env.cli(&["jobs", "show", &again[0].id.to_string()]);
    assert!(String::from_utf8_lossy(&show.stdout).contains("\"unchanged\""));
    assert!(
        !agent.log_text().contains(TOKEN),
        "the bearer token leaked into the log"
    );
}

#[tokio::test]
async fn an_existing_user_is_correlated() {
    let scim = Scim::start(TOKEN).await;
    scim.group("engineers").await;
    let existing = scim
        .post(
            "/Users",
            json!({ "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "bob" }),
        )
        .await;
    let env = env_with_token(&scim.base(), TOKEN);
    let _agent = env.start().await;
    all_succeeded(&settled(&env, &submit(&env, grant("bob", "ENTITLEMENT", "ent-eng"))).await);
    assert_eq!(user(&scim, "bob").await.len(), 1, "no second bob");
    assert_eq!(
        wait(env.store().native_id("bob".into(), "saas".into()))
            .unwrap()
            .as_deref(),
        existing["id"].as_str()
    );
}

#[tokio::test]
async fn a_bad_token_holds_the_jobs_without_spending_attempts_and_never_shows() {
    let scim = Scim::start(TOKEN).await;
    scim.group("engineers").await;
    let wrong = "wrong-T0ken-0123456789";
    let env = env_with_token(&scim.base(), wrong);
    let mut agent = env.start().await;
    let rid = submit(&env, grant("ada", "ENTITLEMENT", "ent-eng"));
    // DESIGN §20: a refused credential is the source's problem, not the job's.
    let errors = crate::flow::held(&env, &rid).await;
    assert!(errors[0].contains("401"), "{errors:?}");
    let status: Value = agent
        .get("/access-request-status/v1?requested-for=ada")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(status[0]["state"], "EXECUTING");
    // The right token and a reload: the breaker closes at once and the job goes through.
    std::fs::write(env.path().join("scim-token"), format!("{TOKEN}\n")).unwrap();
    agent.signal("HUP");
    all_succeeded(&settled(&env, &rid).await);
    for text in [
        agent.log_text(),
        status.to_string(),
        String::from_utf8_lossy(&env.cli(&["jobs", "show", "1"]).stdout).into_owned(),
    ] {
        assert!(
            !text.contains(wrong) && !text.contains(TOKEN),
            "a token leaked"
        );
    }
    agent.signal_and_wait("TERM", 20).await;
}

#[tokio::test]
async fn jobs_retry_while_the_server_is_down_and_recover_when_it_is_back() {
    let mut scim = Scim::start(TOKEN).await;
    let port = scim.port;
    let env = env_with_token(&scim.base(), TOKEN);
    let _agent = env.start().await;
    scim.stop();
    // A user attribute, not a group: scim2-server keeps nothing across restarts, and a
    // group made after the restart could come too late for the next attempt.
    let rid = submit(&env, grant("ada", "ENTITLEMENT", "ent-vpn"));
    let j = job_in(&env, &rid, "retrying").await;
    assert_eq!(j.errors[0].class, "retryable");
    assert_eq!(j.errors[0].code.as_deref(), Some("connect"));
    let scim = Scim::start_on(port, TOKEN).await;
    all_succeeded(&settled(&env, &rid).await);
    let users = scim.get("/Users?filter=userName%20eq%20%22ada%22").await;
    assert_eq!(
        users["Resources"][0]["entitlements"][0]["value"], "vpn",
        "{users}"
    );
}

#[tokio::test]
async fn a_429_answer_is_retried_no_sooner_than_retry_after() {
    let busy = TooMany::start().await;
    let env = env_with_token(&busy.base, TOKEN);
    let _agent = env.start().await;
    let before = jiff::Timestamp::now().as_millisecond();
    let rid = submit(&env, grant("ada", "ENTITLEMENT", "ent-eng"));
    let j = job_in(&env, &rid, "retrying").await;
    assert_eq!(j.errors[0].code.as_deref(), Some("429"));
    assert!(
        j.next_attempt_at.unwrap() >= before + 120_000,
        "Retry-After: 120 is a floor"
    );
    assert_eq!(
        busy.requests.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "one call, then it waits"
    );
}

#[tokio::test]
async fn oauth_tokens_are_renewed_on_401_and_before_expiry_and_the_secret_never_shows() {
    let scim = Scim::start(TOKEN).await;
    let eng = scim.group("engineers").await;
    let secret = "client-S3cret-abcdef";
    // The first token is refused by the server (401 → renew once); later ones expire at once.
    let tokens = TokenServer::start(secret, vec!["stale-token".into(), TOKEN.into()], 1).await;
    let auth = format!(
        "[oauth]\ntoken_url = \"{}\"\nclient_id = \"provd\"\nclient_secret_file = \"../client-secret\"\nscope = \"scim.write\"\n",
        tokens.url
    );
    let env = custom_env(&[("saas.toml", source(&scim.base(), &auth))], CATALOG);
    std::fs::write(env.path().join("client-secret"), secret).unwrap();
    let agent = env.start().await;
    all_succeeded(&settled(&env, &submit(&env, grant("ada", "ENTITLEMENT", "ent-eng"))).await);
    assert_eq!(scim.members(&eng).await.len(), 1);
    let n = tokens.requests.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        n >= 3,
        "renewed on the 401 and again as each 1 s token came near expiry: {n} token requests"
    );
    let log = agent.log_text();
    assert!(log.contains("renewing the OAuth token"), "{log}");
    for s in [secret, TOKEN, "stale-token"] {
        assert!(!log.contains(s), "{s} leaked into the log");
    }

    // A wrong client secret: the token endpoint refuses; the job waits, spending nothing.
    std::fs::write(env.path().join("client-secret"), "not-the-secret").unwrap();
    drop(agent);
    let agent = env.start().await;
    let errors =
        crate::flow::held(&env, &submit(&env, grant("bob", "ENTITLEMENT", "ent-eng"))).await;
    assert!(errors[0].contains("token request"), "{errors:?}");
    assert!(!agent.log_text().contains("not-the-secret"));
}

#[test]
fn the_shipped_scim_example_is_valid() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/examples/scim.toml");
    let mut table: toml::Table = toml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    for k in ["id", "type", "owner", "retry"] {
        table.remove(k);
    }
    // `[account] sync` is the configuration's (attribute sync), not the connector's.
    if let Some(toml::Value::Table(a)) = table.get_mut("account") {
        a.remove("sync");
    }
    provd_connector_scim::parse(&table).unwrap();
}
