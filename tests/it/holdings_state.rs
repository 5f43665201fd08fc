//! One truth about access (issue 33), continued from `holdings.rs`: the state each
//! source's half of a grant is in, as the access list and drift read it.

use crate::flow::{grant, settled, submit};
use crate::harness::Env;
use crate::holdings::disabled;
use crate::httpservers::Scim;
use crate::joiners::{ADA, TOKEN, setup};
use crate::slapd::Slapd;

/// Finding 5: a grant whose LDAP half failed and whose SCIM half succeeded. Before, the
/// access list hid both (the grant had failed); the SCIM group membership it made was
/// held all the same. Each source's row now says how it went there.
#[tokio::test]
async fn the_access_list_shows_each_half_of_a_grant_as_it_went() {
    let slapd = Slapd::start().await;
    let scim = Scim::start(TOKEN).await;
    scim.group("engineers").await;
    let sources: Vec<_> = crate::joiners::sources(&slapd, &scim)
        .into_iter()
        .filter(|(f, _)| *f != "badges.toml")
        .collect();
    // The role's LDAP group does not exist: its half fails for good.
    let catalog = "[[entitlement]]\nid = \"ent-gone\"\nsource = \"corp\"\nattribute = \"groups\"\nvalue = \"cn=gone,ou=groups,dc=example,dc=com\"\n\
        [[entitlement]]\nid = \"ent-eng\"\nsource = \"saas\"\nattribute = \"groups\"\nvalue = \"engineers\"\n\
        [[role]]\nid = \"role-dev\"\nentitlements = [\"ent-gone\", \"ent-eng\"]\n";
    let env = crate::flow::custom_env(&sources, catalog);
    let d = env.path();
    std::fs::write(
        d.join("ldap-password"),
        format!("{}\n", crate::slapd::PASSWORD),
    )
    .unwrap();
    std::fs::write(d.join("scim-token"), format!("{TOKEN}\n")).unwrap();
    let _agent = env.start().await;
    let rid = submit(&env, grant("ada", "ROLE", "role-dev"));
    let jobs = settled(&env, &rid).await;
    let by_source: std::collections::BTreeMap<_, _> = jobs
        .iter()
        .map(|j| (j.source.as_str(), j.state.as_str()))
        .collect();
    assert_eq!(
        by_source,
        [("corp", "failed"), ("saas", "succeeded")].into()
    );
    let rows = json_rows(
        &env,
        &["access", "list", "--identity", "ada", "--format", "json"],
    );
    let states = per_source(&rows, "state");
    assert_eq!(
        states,
        [
            ("corp".to_string(), "failed".to_string()),
            ("saas".to_string(), "active".to_string())
        ]
        .into(),
        "{rows:?}"
    );
}

/// Finding 6 (manual source): a role half done on one source while its other part waits
/// on another source's owner. Before, the role's grant was pending as a whole, so the
/// done half could never be reported missing; now it is as soon as its own job is done.
#[tokio::test]
async fn a_done_half_of_a_role_is_checked_while_the_other_half_waits() {
    let env = Env::new();
    let path = env.path().join("sources/flat.toml");
    let text = std::fs::read_to_string(&path).unwrap()
        + "[export]\nkey = \"employee_id\"\nentitlements = { column = \"roles\" }\n";
    std::fs::write(&path, text).unwrap();
    let _agent = env.start().await;
    submit(&env, grant("ada", "ROLE", "role-staff"));
    crate::joiners::open_tasks(&env, 4).await;
    // flat's owner does both of flat's tasks; facilities has not answered yet.
    let store = env.store();
    let open = crate::harness::wait(store.tasks(provd::store::tasks::TaskFilter {
        open_only: true,
        ..Default::default()
    }))
    .unwrap();
    for t in open.iter().filter(|t| t.source == "flat") {
        crate::harness::wait(store.resolve_task(
            t.id,
            "DONE".into(),
            "flat-owner@example.com".into(),
            String::new(),
            jiff::Timestamp::now().as_millisecond(),
        ))
        .unwrap();
    }
    // Its export shows ada's account without VIEW: missing.
    let file = env.path().join("export.csv");
    std::fs::write(
        &file,
        "employee_id,name,roles\r\nada@example.com,Ada,\r\nsvc@example.com,Service,\r\n",
    )
    .unwrap();
    let out = env.cli(&[
        "accounts",
        "import",
        "--source",
        "flat",
        file.to_str().unwrap(),
    ]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("drift: 1 missing, 0 unexpected"), "{said}");
}

/// Finding 6 (status): a leaver's account enabled again by hand after provd disabled it
/// is drift. Before, a read-back compared group values only and found nothing.
#[tokio::test]
async fn a_leavers_account_enabled_by_hand_is_reported() {
    use crate::joiners::{do_tasks, import, open_tasks, quiet};
    let slapd = Slapd::start().await;
    let scim = Scim::start(TOKEN).await;
    scim.group("engineers").await;
    let env = setup(&slapd, &scim);
    let _agent = env.start().await;
    assert!(import(&env, "active", false).status.success());
    quiet(&env).await;
    open_tasks(&env, 2).await;
    do_tasks(&env).await;
    assert!(import(&env, "leaver", false).status.success());
    quiet(&env).await;
    disabled(&slapd, ADA, true).await;
    // Finding 5: a leaver's rows say the account is disabled (before: `active`, and
    // nothing of the account); on badges once its owner has done the DISABLE task.
    let rows = json_rows(
        &env,
        &["access", "list", "--identity", "ada", "--format", "json"],
    );
    let states = per_source(&rows, "accountState");
    assert_eq!(
        states,
        [
            ("badges".to_string(), "enabled".to_string()),
            ("corp".into(), "disabled".into()),
            ("saas".into(), "disabled".into())
        ]
        .into(),
        "{rows:?}"
    );
    let drift = |source: &str| {
        json_rows(&env, &["reconcile", "--source", source, "--format", "json"])
            .iter()
            .map(|d| {
                (
                    d["kind"].as_str().unwrap().to_string(),
                    d["identity"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(drift("corp"), [], "disabled as her state wants");
    // An administrator enables her entry again by hand.
    slapd.ldapadd(&format!(
        "dn: {ADA}\nchangetype: modify\ndelete: employeeType\n"
    ));
    assert_eq!(
        drift("corp"),
        [("enabled_unexpectedly".to_string(), "ada".to_string())]
    );
    // `provd drift` says the same from the stored read-back: it once judged a direct
    // source's account state only live, in reconcile.
    let stored: Vec<(String, String)> =
        json_rows(&env, &["drift", "--source", "corp", "--format", "json"])
            .iter()
            .map(|d| {
                (
                    d["kind"].as_str().unwrap().to_string(),
                    d["identity"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect();
    assert_eq!(
        stored,
        [("enabled_unexpectedly".to_string(), "ada".to_string())]
    );
}

/// Finding 6: someone provd does not manage, put in a group provd manages. Reported as
/// `unmanaged_member` on LDAP and SCIM; `--fix` leaves them where the source says
/// `report` (the default) and takes them out where it says `remove`, with an event.
#[tokio::test]
async fn an_unmanaged_member_of_a_managed_group_is_reported_and_removed_only_where_allowed() {
    use crate::joiners::{VPN, import, quiet};
    let slapd = Slapd::start().await;
    let scim = Scim::start(TOKEN).await;
    let eng = scim.group("engineers").await;
    let env = setup(&slapd, &scim);
    let _agent = env.start().await;
    assert!(import(&env, "active", false).status.success());
    quiet(&env).await;
    let mallory = "uid=mallory,ou=people,dc=example,dc=com";
    slapd.ldapadd(&format!(
        "dn: {mallory}\nobjectClass: inetOrgPerson\nuid: mallory\ncn: Mallory\nsn: M\n\n\
         dn: {VPN}\nchangetype: modify\nadd: member\nmember: {mallory}\n"
    ));
    let user = scim
        .post(
            "/Users",
            serde_json::json!({ "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "mallory" }),
        )
        .await;
    let mallory_id = user["id"].as_str().unwrap().to_string();
    scim.by_hand(
        "PATCH",
        &format!("/Groups/{eng}"),
        Some(serde_json::json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{ "op": "add", "path": "members", "value": [{ "value": mallory_id }] }]
        })),
    )
    .await;
    let reconcile = |source: &str, fix: bool| {
        let mut args = vec!["reconcile", "--source", source, "--format", "json"];
        if fix {
            args.push("--fix");
        }
        json_rows(&env, &args)
            .iter()
            .map(|d| {
                (
                    d["kind"].as_str().unwrap().to_string(),
                    d["account"].as_str().unwrap().to_string(),
                    d["identity"].as_str().map(str::to_string),
                )
            })
            .collect::<Vec<_>>()
    };
    let on_corp = [("unmanaged_member".to_string(), mallory.to_string(), None)];
    let on_saas = [("unmanaged_member".to_string(), mallory_id.clone(), None)];
    assert_eq!(reconcile("corp", false), on_corp);
    assert_eq!(reconcile("saas", false), on_saas);
    // `provd drift` reads the same from the stored read-back.
    let out = env.cli(&["drift", "--source", "corp", "--format", "json"]);
    let stored: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(stored[0]["kind"], "unmanaged_member", "{stored}");
    // report (the default): --fix leaves them.
    assert_eq!(reconcile("corp", true), on_corp);
    assert!(
        slapd
            .values(VPN, "member")
            .await
            .iter()
            .any(|m| m == mallory)
    );
    // remove: --fix takes them out, and says so in the audit trail.
    for file in ["corp.toml", "saas.toml"] {
        let path = env.path().join("sources").join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        let text = format!("reconcile = {{ unmanaged_members = \"remove\" }}\n{text}");
        std::fs::write(&path, text).unwrap();
    }
    assert_eq!(reconcile("corp", true), on_corp, "reported as it was found");
    assert_eq!(reconcile("saas", true), on_saas);
    assert!(
        !slapd
            .values(VPN, "member")
            .await
            .iter()
            .any(|m| m == mallory)
    );
    assert!(!scim.members(&eng).await.contains(&mallory_id));
    assert!(slapd.values(VPN, "member").await.contains(&ADA.to_string()));
    assert_eq!(reconcile("corp", false), [], "nothing left to report");
    let removed: Vec<_> = env
        .events()
        .into_iter()
        .filter(|e| e.kind == "unmanaged_member_removed")
        .map(|e| (e.source.unwrap_or_default(), e.data["member"].clone()))
        .collect();
    assert_eq!(
        removed,
        [
            ("corp".to_string(), serde_json::json!(mallory)),
            ("saas".to_string(), serde_json::json!(mallory_id)),
        ]
    );
}

/// A CLI command's JSON array answer (it must succeed).
fn json_rows(env: &crate::harness::Env, args: &[&str]) -> Vec<serde_json::Value> {
    let out = env.cli(args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array().unwrap().clone()
}

/// `field` of each access-list row, by its source.
fn per_source(
    rows: &[serde_json::Value],
    field: &str,
) -> std::collections::BTreeMap<String, String> {
    rows.iter()
        .map(|r| {
            (
                r["source"].as_str().unwrap().to_string(),
                r[field].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}
