//! The REST connector end to end: the real provd binary against json-server, driven only
//! by the recipe format.

use crate::harness::wait;
use serde_json::{Value, json};

use crate::flow::{all_succeeded, custom_env, grant, revoke, settled, submit};
use crate::httpservers::JsonServer;

pub fn source(base: &str) -> String {
    // The shipped example, pointed at this test's server.
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/sources/crm.toml"),
    )
    .unwrap();
    text.replace("http://127.0.0.1:3000", base)
}

pub const CATALOG: &str = r#"
[[entitlement]]
id = "ent-sales"
source = "crm"
attribute = "roles"
value = "sales"
[[entitlement]]
id = "ent-reports"
source = "crm"
attribute = "roles"
value = "reports"
[[access_profile]]
id = "ap-sales"
entitlements = ["ent-sales", "ent-reports"]
[[access_profile]]
id = "ap-reports"
entitlements = ["ent-reports"]
"#;

fn roles(memberships: &Value, user: &str) -> Vec<String> {
    let mut r: Vec<String> = memberships
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["userId"] == user)
        .map(|m| m["role"].as_str().unwrap().to_string())
        .collect();
    r.sort();
    r
}

#[tokio::test]
async fn the_recipe_format_drives_users_and_memberships_through_a_full_cycle() {
    let api = JsonServer::start(json!({
        "users": [{ "id": 1, "username": "bob", "name": "Bob (existing)", "active": true }],
        "memberships": []
    }))
    .await;
    let env = custom_env(&[("crm.toml", source(&api.base()))], CATALOG);
    let check = env.cli(&["check", "--connect"]);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let _agent = env.start().await;

    // Create + two memberships.
    all_succeeded(
        &settled(
            &env,
            &submit(&env, grant("ada", "ACCESS_PROFILE", "ap-sales")),
        )
        .await,
    );
    let users = api.get("/users?username=ada").await;
    assert_eq!(users.as_array().unwrap().len(), 1);
    assert_eq!(users[0]["name"], "Ada Lovelace");
    assert_eq!(users[0]["email"], "ada@example.com");
    let ada = users[0]["id"].to_string();
    assert_eq!(
        wait(env.store().native_id("ada".into(), "crm".into())).unwrap(),
        Some(ada.clone())
    );
    assert_eq!(
        roles(&api.get("/memberships").await, &ada),
        ["reports", "sales"]
    );

    // An existing user is found by find_account, not created again.
    all_succeeded(
        &settled(
            &env,
            &submit(&env, grant("bob", "ACCESS_PROFILE", "ap-reports")),
        )
        .await,
    );
    assert_eq!(
        api.get("/users?username=bob")
            .await
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(roles(&api.get("/memberships").await, "1"), ["reports"]);

    // The lookup makes an add idempotent: granting reports to ada through ap-reports while
    // the first grant is still held adds nothing (no duplicate membership).
    all_succeeded(
        &settled(
            &env,
            &submit(&env, revoke("ada", "ACCESS_PROFILE", "ap-sales")),
        )
        .await,
    );
    assert!(roles(&api.get("/memberships").await, &ada).is_empty());
    all_succeeded(
        &settled(
            &env,
            &submit(&env, grant("ada", "ACCESS_PROFILE", "ap-reports")),
        )
        .await,
    );
    all_succeeded(
        &settled(
            &env,
            &submit(&env, grant("ada", "ACCESS_PROFILE", "ap-sales")),
        )
        .await,
    );
    assert_eq!(
        roles(&api.get("/memberships").await, &ada),
        ["reports", "sales"],
        "reports once, not twice"
    );

    // Revoking one grant keeps what the other still gives; removing what is gone is a no-op.
    all_succeeded(
        &settled(
            &env,
            &submit(&env, revoke("ada", "ACCESS_PROFILE", "ap-sales")),
        )
        .await,
    );
    assert_eq!(roles(&api.get("/memberships").await, &ada), ["reports"]);
    all_succeeded(
        &settled(
            &env,
            &submit(&env, revoke("ada", "ACCESS_PROFILE", "ap-sales")),
        )
        .await,
    );
    assert_eq!(roles(&api.get("/memberships").await, &ada), ["reports"]);
}

#[tokio::test]
async fn disable_enable_update_and_delete_follow_their_recipes() {
    use provd_connector_core::{Connector, Identity, Outcome};
    let api = JsonServer::start(json!({ "users": [], "memberships": [] })).await;
    let mut table: toml::Table = toml::from_str(&source(&api.base())).unwrap();
    for k in ["id", "type", "owner", "retry"] {
        table.remove(k);
    }
    let c = provd_connector_rest::RestConnector::build(&table, api.dir.path()).unwrap();
    let who = Identity {
        id: "grace".into(),
        attributes: [
            ("firstName", "Grace"),
            ("lastName", "Hopper"),
            ("email", "g@x"),
        ]
        .into_iter()
        .map(|(k, v)| (k.into(), v.into()))
        .collect(),
    };
    let created = c.create_account(&who).await.unwrap();
    let id = created.native_id().unwrap().to_string();
    assert!(matches!(
        c.create_account(&who).await.unwrap(),
        Outcome::Correlated { .. }
    ));
    assert_eq!(
        c.disable_account(&who, Some(&id)).await.unwrap(),
        Outcome::Applied
    );
    assert_eq!(api.get(&format!("/users/{id}")).await["active"], false);
    // A rehire and a changed name (DESIGN §13): the enable and update recipes.
    assert_eq!(
        c.enable_account(&who, Some(&id)).await.unwrap(),
        Outcome::Applied
    );
    assert_eq!(api.get(&format!("/users/{id}")).await["active"], true);
    let mut renamed = who.clone();
    renamed
        .attributes
        .insert("lastName".into(), "Murray".into());
    let changed =
        std::collections::BTreeMap::from([("name".to_string(), "Grace Murray".to_string())]);
    assert_eq!(
        c.update_account(&renamed, Some(&id), &changed)
            .await
            .unwrap(),
        Outcome::Applied
    );
    assert_eq!(
        api.get(&format!("/users/{id}")).await["name"],
        "Grace Murray"
    );
    assert_eq!(
        c.delete_account(&who, Some(&id)).await.unwrap(),
        Outcome::Applied
    );
    assert_eq!(
        c.delete_account(&who, Some(&id)).await.unwrap(),
        Outcome::Unchanged
    );
}
