//! Joiners, movers, leavers (DESIGN §13, issue 18): identity imports change what an
//! identity holds and what its accounts can do, on a real slapd, a real SCIM server and a
//! manual source, with the agent running and never reloaded.

use serde_json::{Value, json};

use crate::flow::custom_env;
use crate::harness::{Env, eventually, wait};
use crate::httpservers::Scim;
use crate::slapd::{PASSWORD, Slapd};

pub(crate) const TOKEN: &str = "scim-T0ken-lifecycle-1";
pub(crate) const VPN: &str = "cn=vpn,ou=groups,dc=example,dc=com";
pub(crate) const GIT: &str = "cn=git,ou=groups,dc=example,dc=com";
pub(crate) const ADA: &str = "uid=ada,ou=people,dc=example,dc=com";

pub(crate) fn sources(slapd: &Slapd, scim: &Scim) -> Vec<(&'static str, String)> {
    vec![
        (
            "corp.toml",
            format!(
                "id = \"corp\"\ntype = \"ldap\"\nowner = \"dir@example.com\"\nurl = \"{}\"\n\
                 bind_dn = \"cn=admin,dc=example,dc=com\"\nbind_password_file = \"../ldap-password\"\n\
                 [account]\nnative_id = \"uid={{id}},ou=people,dc=example,dc=com\"\ncorrelation = \"uid\"\n\
                 sync = [\"cn\", \"sn\"]\n\
                 object_classes = [\"inetOrgPerson\"]\n[account.attributes]\nuid = \"{{id}}\"\n\
                 cn = \"{{firstName}} {{lastName}}\"\nsn = \"{{lastName}}\"\n\
                 [account.disable]\nattribute = \"employeeType\"\nvalue = \"disabled\"\n",
                slapd.url()
            ),
        ),
        (
            "saas.toml",
            format!(
                "id = \"saas\"\ntype = \"scim\"\nowner = \"saas@example.com\"\nbase_url = \"{}\"\n\
                 token_file = \"../scim-token\"\n[account]\ncorrelation = \"userName\"\nsync = [\"displayName\"]\n\
                 [account.attributes]\nuserName = \"{{id}}\"\ndisplayName = \"{{firstName}} {{lastName}}\"\n",
                scim.base()
            ),
        ),
        (
            "badges.toml",
            "id = \"badges\"\ntype = \"manual\"\nowner = \"facilities@example.com\"\n".to_string(),
        ),
    ]
}

const CATALOG: &str = r#"
[[entitlement]]
id = "ent-vpn"
source = "corp"
attribute = "groups"
value = "cn=vpn,ou=groups,dc=example,dc=com"
[[entitlement]]
id = "ent-git"
source = "corp"
attribute = "groups"
value = "cn=git,ou=groups,dc=example,dc=com"
[[entitlement]]
id = "ent-eng"
source = "saas"
attribute = "groups"
value = "engineers"
[[entitlement]]
id = "ent-hq"
source = "badges"
attribute = "zones"
value = "HQ"
[[access_profile]]
id = "ap-base"
entitlements = ["ent-vpn", "ent-git", "ent-eng", "ent-hq"]
"#;

const LIFECYCLE: &str = r#"
max_changes = 25
[[state]]
name = "active"
access_profiles = ["ap-base"]
[[state.account]]
action = "ENABLE"
sources = "all"
[[state]]
name = "leaver"
requestable = false
[[state.account]]
action = "DISABLE"
sources = "all"
[[state]]
name = "purged"
requestable = false
remove_all_access = true
[[state.account]]
action = "DELETE"
sources = ["corp", "saas"]
"#;

pub(crate) fn setup(slapd: &Slapd, scim: &Scim) -> Env {
    let env = custom_env(&sources(slapd, scim), CATALOG);
    let d = env.path();
    std::fs::write(d.join("ldap-password"), format!("{PASSWORD}\n")).unwrap();
    std::fs::write(d.join("scim-token"), format!("{TOKEN}\n")).unwrap();
    std::fs::write(d.join("lifecycle.toml"), LIFECYCLE).unwrap();
    let conf = std::fs::read_to_string(d.join("provd.toml")).unwrap();
    std::fs::write(
        d.join("provd.toml"),
        conf.replace("[agent]\n", "[agent]\nlifecycle = \"lifecycle.toml\"\n"),
    )
    .unwrap();
    // 100 more active identities for the mass-change guard.
    let mut ids = std::fs::read_to_string(d.join("identities.csv"))
        .unwrap()
        .replace(
            "id,firstName,lastName,email\n",
            "id,firstName,lastName,email,lifecycleState\n",
        )
        .replace(".com\n", ".com,\n");
    for i in 0..100 {
        ids.push_str(&format!("p{i},P,{i},p{i}@example.com,active\n"));
    }
    std::fs::write(d.join("identities.csv"), ids).unwrap();
    env
}

/// Sets lifecycle.toml's mass-change guard (`max_changes`, 25 in `setup`) to `n`.
pub(crate) fn guard_of(env: &Env, n: usize) {
    let lifecycle = env.path().join("lifecycle.toml");
    let text = std::fs::read_to_string(&lifecycle).unwrap();
    let text = text.replace("max_changes = 25", &format!("max_changes = {n}"));
    std::fs::write(&lifecycle, text).unwrap();
}

/// `provd identities import` of ada in `state`; the command's output.
pub(crate) fn import(env: &Env, state: &str, confirm: bool) -> std::process::Output {
    import_as(env, "Lovelace", state, confirm)
}

/// The same, with ada's last name `last`.
fn import_as(env: &Env, last: &str, state: &str, confirm: bool) -> std::process::Output {
    let file = env.path().join(format!("ada-{last}-{state}.csv"));
    std::fs::write(
        &file,
        format!(
            "id,firstName,lastName,email,lifecycleState\nada,Ada,{last},ada@example.com,{state}\n"
        ),
    )
    .unwrap();
    let f = file.to_str().unwrap();
    let args: Vec<&str> = if confirm {
        vec!["identities", "import", f, "--confirm"]
    } else {
        vec!["identities", "import", f]
    };
    env.cli(&args)
}

/// Waits until no job is queued, running or retrying (manual ones wait on their owner).
pub(crate) async fn quiet(env: &Env) {
    let store = env.store();
    eventually(30, "every job ended or waiting on tasks", || {
        let busy = wait(store.job_counts())
            .unwrap()
            .iter()
            .filter(|(_, s, n)| *n > 0 && ["queued", "running", "retrying"].contains(&s.as_str()))
            .count();
        async move { (busy == 0).then_some(()) }
    })
    .await;
    let failed = wait(store.jobs(provd::store::jobs::JobFilter {
        state: Some(provd::store::JobState::Failed),
        ..Default::default()
    }))
    .unwrap();
    let errors: Vec<_> = failed
        .iter()
        .map(|j| (&j.source, &j.ops, &j.errors))
        .collect();
    assert!(failed.is_empty(), "failed jobs: {errors:?}");
}

/// Waits for at least `n` open manual tasks.
pub(crate) async fn open_tasks(env: &Env, n: i64) {
    eventually(10, "the badge tasks", || {
        let open = wait(env.store().open_task_count()).unwrap();
        async move { (open >= n).then_some(()) }
    })
    .await;
}

/// Waits until `dn` is (or is no longer) a member of `group`.
pub(crate) async fn member(slapd: &Slapd, group: &str, dn: &str, yes: bool) {
    eventually(
        15,
        &format!("{dn} member of {group}: {yes}"),
        || async move {
            (slapd.values(group, "member").await.iter().any(|m| m == dn) == yes).then_some(())
        },
    )
    .await;
}

/// The open manual tasks' operations; answers them all as done.
pub(crate) async fn do_tasks(env: &Env) -> Vec<String> {
    let store = env.store();
    let tasks = wait(store.tasks(provd::store::tasks::TaskFilter {
        open_only: true,
        ..Default::default()
    }))
    .unwrap();
    let ops = tasks.iter().map(|t| t.operation.clone()).collect();
    for t in tasks {
        wait(store.resolve_task(
            t.id,
            "DONE".into(),
            "facilities@example.com".into(),
            String::new(),
            jiff::Timestamp::now().as_millisecond(),
        ))
        .unwrap();
    }
    ops
}

pub(crate) async fn scim_user(scim: &Scim) -> Option<Value> {
    let r = scim.get("/Users?filter=userName%20eq%20%22ada%22").await;
    r["Resources"].as_array().and_then(|a| a.first().cloned())
}

#[tokio::test]
async fn joiner_leaver_rehire_and_purge_on_ldap_scim_and_a_manual_source() {
    let slapd = Slapd::start().await;
    let scim = Scim::start(TOKEN).await;
    let eng = scim.group("engineers").await;
    let env = setup(&slapd, &scim);
    let agent = env.start().await;

    // Joiner: birthright everywhere.
    let out = import(&env, "active", false);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("(none) -> active"));
    quiet(&env).await;
    open_tasks(&env, 2).await;
    assert_eq!(do_tasks(&env).await, ["CREATE_ACCOUNT", "ADD_ENTITLEMENT"]);
    assert!(slapd.values(VPN, "member").await.contains(&ADA.to_string()));
    let user = scim_user(&scim).await.expect("ada on saas");
    let ada_id = user["id"].as_str().unwrap().to_string();
    assert_eq!(scim.members(&eng).await, vec![ada_id.clone()]);
    // VPN is also granted by a request of its own.
    let r = agent
        .post(
            "/access-requests/v1",
            &json!({ "requestedFor": ["ada"], "requestedItems": [{ "type": "ENTITLEMENT", "id": "ent-vpn" }] })
                .to_string(),
        )
        .await;
    assert_eq!(r.status(), 202);

    // Leaver: accounts disabled, birthright revoked, what a request granted kept.
    let out = import(&env, "leaver", false);
    assert!(out.status.success(), "{out:?}");
    quiet(&env).await;
    eventually(10, "ada disabled on corp", || {
        let slapd = &slapd;
        async move { (slapd.values(ADA, "employeeType").await == ["disabled"]).then_some(()) }
    })
    .await;
    assert!(
        slapd.values(VPN, "member").await.contains(&ADA.to_string()),
        "granted by a request too"
    );
    assert!(!slapd.values(GIT, "member").await.contains(&ADA.to_string()));
    assert_eq!(scim_user(&scim).await.unwrap()["active"], false);
    assert!(scim.members(&eng).await.is_empty());
    open_tasks(&env, 2).await;
    let mut ops = do_tasks(&env).await;
    ops.sort();
    assert_eq!(ops, ["DISABLE_ACCOUNT", "REMOVE_ENTITLEMENT"]);

    // A leaver may not be granted anything.
    let r = agent
        .post(
            "/access-requests/v1",
            &json!({ "requestedFor": ["ada"], "requestedItems": [{ "type": "ENTITLEMENT", "id": "ent-git" }] })
                .to_string(),
        )
        .await;
    assert_eq!(r.status(), 400);
    let text = r.text().await.unwrap();
    assert!(
        text.contains("requestedFor[0]") && text.contains("`leaver`"),
        "{text}"
    );

    // Rehire: enabled again, birthright back.
    let out = import(&env, "active", false);
    assert!(out.status.success(), "{out:?}");
    quiet(&env).await;
    eventually(10, "ada enabled on corp", || {
        let slapd = &slapd;
        async move {
            slapd
                .values(ADA, "employeeType")
                .await
                .is_empty()
                .then_some(())
        }
    })
    .await;
    assert!(slapd.values(GIT, "member").await.contains(&ADA.to_string()));
    assert_eq!(scim_user(&scim).await.unwrap()["active"], true);
    assert_eq!(scim.members(&eng).await, vec![ada_id.clone()]);
    open_tasks(&env, 2).await;
    let mut ops = do_tasks(&env).await;
    ops.sort();
    assert_eq!(ops, ["ADD_ENTITLEMENT", "ENABLE_ACCOUNT"]);

    // Purged: everything revoked (the request's VPN too), the entries deleted.
    let out = import(&env, "purged", false);
    assert!(out.status.success(), "{out:?}");
    quiet(&env).await;
    eventually(10, "ada's entry deleted", || {
        let slapd = &slapd;
        async move {
            slapd
                .search("ou=people,dc=example,dc=com", "(uid=ada)")
                .await
                .is_empty()
                .then_some(())
        }
    })
    .await;
    assert!(!slapd.values(VPN, "member").await.contains(&ADA.to_string()));
    assert!(scim_user(&scim).await.is_none(), "deleted on saas");
    let held = env.cli(&["access", "list", "--identity", "ada", "--format", "json"]);
    let held: Value = serde_json::from_slice(&held.stdout).unwrap();
    let states: std::collections::BTreeMap<String, String> = held
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["source"].as_str().unwrap().to_string(),
                h["state"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        states,
        [
            ("badges".to_string(), "removing".to_string()),
            ("corp".into(), "gone".into()),
            ("saas".into(), "gone".into())
        ]
        .into(),
        "only the badge revoke waits on its owner: {held}"
    );
    // Every lifecycle request names its requester: who made the change (DESIGN §21).
    let trail = env.cli(&["audit", "--kind", "request_accepted", "--format", "csv"]);
    let trail = String::from_utf8(trail.stdout).unwrap();
    let lifecycle: Vec<&str> = trail
        .lines()
        .filter(|l| l.contains(r#"""origin"":""lifecycle"""#))
        .collect();
    assert!(lifecycle.len() >= 4, "{trail}");
    assert!(lifecycle.iter().all(|l| l.contains(",cli:")), "{trail}");
}

#[tokio::test]
async fn a_mass_leave_is_held_until_confirmed() {
    let slapd = Slapd::start().await;
    let scim = Scim::start(TOKEN).await;
    let env = setup(&slapd, &scim);
    // A guard of 2: three of the hundred leavers have an account (on corp).
    guard_of(&env, 2);
    let _agent = env.start().await;
    for p in ["p0", "p1", "p2"] {
        let rid = crate::flow::submit(&env, crate::flow::grant(p, "ENTITLEMENT", "ent-vpn"));
        crate::flow::settled(&env, &rid).await;
    }
    let mut file = String::from("id,firstName,lastName,email,lifecycleState\n");
    for i in 0..100 {
        file.push_str(&format!("p{i},P,{i},p{i}@example.com,leaver\n"));
    }
    let path = env.path().join("leavers.csv");
    std::fs::write(&path, file).unwrap();
    let out = env.cli(&["identities", "import", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    // Only accounts that exist are counted (issue 33, finding 8: the guard counted a
    // disable on every configured source, account or not).
    assert!(
        err.contains("held")
            && err.contains("disable or delete 3 accounts")
            && err.contains("3 identities entering `leaver`"),
        "{err}"
    );
    assert!(err.contains("--confirm"), "{err}");
    assert_eq!(
        wait(env.store().identity("p0".into()))
            .unwrap()
            .unwrap()
            .attributes["lifecycleState"],
        "active",
        "nothing imported: p0 is identities.csv's row as the agent applied it"
    );
    let before = env.count("requests");
    let out = env.cli(&["identities", "import", path.to_str().unwrap(), "--confirm"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        wait(env.store().identity("p0".into()))
            .unwrap()
            .unwrap()
            .attributes["lifecycleState"],
        "leaver"
    );
    assert_eq!(
        env.count("requests") - before,
        3,
        "one revoke (with its disable) for each leaver with an account"
    );
}

#[tokio::test]
async fn put_a_reloaded_identities_file_and_a_preview_plan_identity_changes_at_once() {
    let slapd = Slapd::start().await;
    let scim = Scim::start(TOKEN).await;
    scim.group("engineers").await;
    let env = setup(&slapd, &scim);
    // A guard of 1: one leaver (three accounts) is already a mass change here.
    guard_of(&env, 1);
    let agent = env.start().await;
    let put_with = |id: &str, body: Value, confirm: bool| {
        let mut req = agent
            .http
            .put(format!("{}/identities/v1/{id}", agent.base))
            .bearer_auth(env.token())
            .body(body.to_string());
        if confirm {
            req = req.header("Provd-Confirm", "true");
        }
        async move { req.send().await.unwrap() }
    };
    let put = |id: &str, body: Value| put_with(id, body, false);
    // PUT: grace joins; the running agent provisions her birthright.
    let r = put(
        "grace",
        json!({ "firstName": "Grace", "lastName": "Hopper", "email": "grace@example.com", "lifecycleState": "active" }),
    )
    .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        (v["lifecycle"]["to"].as_str(), v["requests"].as_i64()),
        (Some("active"), Some(1))
    );
    let grace = "uid=grace,ou=people,dc=example,dc=com".to_string();
    member(&slapd, GIT, &grace, true).await;
    let bad = put("grace", json!({ "lifecycleState": 5 })).await;
    assert_eq!(bad.status(), 400);
    assert!(
        bad.text()
            .await
            .unwrap()
            .contains("lifecycleState: must be a string")
    );
    // A state that is not configured is refused, naming it, and nothing is stored.
    let typo = put(
        "grace",
        json!({ "firstName": "Grace", "lifecycleState": "leavr" }),
    )
    .await;
    assert_eq!(typo.status(), 400);
    let text = typo.text().await.unwrap();
    assert!(
        text.contains("`leavr` is not a configured lifecycle state"),
        "{text}"
    );
    // Ids are checked like any other input: no NUL, bidi override, path or 10 KB id.
    let long = "a".repeat(10_000);
    for id in [
        "bad%00id",
        "evil%E2%80%AEtxt",
        "..%2F..%2Fetc",
        long.as_str(),
    ] {
        let r = put(id, json!({ "firstName": "X" })).await;
        assert_eq!(r.status(), 400, "{id:.40}");
        let text = r.text().await.unwrap();
        assert!(text.contains("\"id: ") && text.len() < 1_000, "{text:.200}");
    }
    assert!(
        wait(env.store().identity("..\u{2f}..\u{2f}etc".into()))
            .unwrap()
            .is_none()
    );
    // Leaving would disable her three accounts: held (nothing stored) until confirmed.
    let leaver = json!({ "firstName": "Grace", "lastName": "Hopper", "email": "grace@example.com", "lifecycleState": "leaver" });
    let held = put("grace", leaver.clone()).await;
    assert_eq!(held.status(), 409);
    assert!(held.text().await.unwrap().contains("Provd-Confirm"));
    let stored = wait(env.store().identity("grace".into())).unwrap().unwrap();
    assert_eq!(
        stored.attributes["lifecycleState"], "active",
        "nothing changed"
    );
    let r = put_with("grace", leaver, true).await;
    assert_eq!(r.status(), 200);
    let active = json!({ "firstName": "Grace", "lastName": "Hopper", "email": "grace@example.com", "lifecycleState": "active" });
    let r = put("grace", active).await;
    assert_eq!(r.status(), 200, "a rehire disables nothing: not held");

    // The preview changes nothing.
    let requests = env.count("requests");
    let file = env.path().join("grace-leaver.csv");
    std::fs::write(
        &file,
        "id,firstName,lastName,email,lifecycleState\ngrace,Grace,Hopper,grace@example.com,leaver\n",
    )
    .unwrap();
    let out = env.cli(&["plan", "--identities", file.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("grace: active -> leaver"), "{text}");
    assert!(
        text.contains("DISABLE_ACCOUNT") && text.contains("REMOVE_ENTITLEMENT"),
        "{text}"
    );
    assert_eq!(env.count("requests"), requests, "a preview stores nothing");

    // identities.csv changed and reloaded: bob becomes active.
    let csv = env.path().join("identities.csv");
    let text = std::fs::read_to_string(&csv)
        .unwrap()
        .replace("bob@example.com,\n", "bob@example.com,active\n");
    std::fs::write(&csv, text).unwrap();
    agent.signal("HUP");
    let bob = "uid=bob,ou=people,dc=example,dc=com".to_string();
    member(&slapd, GIT, &bob, true).await;
}

#[tokio::test]
async fn a_changed_last_name_is_synced_to_ldap_and_scim() {
    let slapd = Slapd::start().await;
    let scim = Scim::start(TOKEN).await;
    scim.group("engineers").await;
    let env = setup(&slapd, &scim);
    let _agent = env.start().await;
    assert!(import(&env, "active", false).status.success());
    quiet(&env).await;
    assert_eq!(slapd.values(ADA, "cn").await, ["Ada Lovelace"]);
    let out = import_as(&env, "King", "active", false);
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("active -> active"),
        "{out:?}"
    );
    quiet(&env).await;
    eventually(10, "cn and sn re-rendered", || {
        let slapd = &slapd;
        async move {
            (slapd.values(ADA, "cn").await == ["Ada King"]
                && slapd.values(ADA, "sn").await == ["King"])
            .then_some(())
        }
    })
    .await;
    assert_eq!(scim_user(&scim).await.unwrap()["displayName"], "Ada King");
    // Only what changed was sent, once: the same import again changes nothing.
    let jobs = env.count("jobs");
    let out = import_as(&env, "King", "active", false);
    assert!(out.status.success());
    assert_eq!(env.count("jobs"), jobs);
}
