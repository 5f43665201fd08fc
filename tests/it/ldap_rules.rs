//! LDAP against slapd, DESIGN §20's rules for every directory: correlation that never
//! links an entry it has not read, and a wrong bind password that never costs a job.

use crate::harness::wait;
use serde_json::Value;

use crate::flow::{all_succeeded, grant, settled, submit};
use crate::harness::eventually;
use crate::ldap::{VPN, ldap_env};
use crate::slapd::{PASSWORD, Slapd};

#[tokio::test]
async fn a_wrong_bind_password_holds_the_jobs_binds_once_and_never_shows_the_password() {
    let slapd = Slapd::start().await;
    let env = ldap_env(&slapd.url(), "[retry]\nbreaker_cooldown = \"300ms\"\n", &[]);
    let wrong = "Wr0ng-Pa55word-xyz";
    std::fs::write(env.path().join("ldap-password"), format!("{wrong}\n")).unwrap();
    let agent = env.start().await;
    // Several jobs at once: before the fix 4 connections bound in parallel.
    let mut rids = Vec::new();
    for who in ["ada", "bob"] {
        rids.push(submit(&env, grant(who, "ACCESS_PROFILE", "ap-eng")));
    }
    let store = env.store();
    eventually(20, "the jobs put back, not failed", || {
        let jobs = wait(store.jobs(Default::default())).unwrap();
        let log = agent.log_text();
        async move {
            (log.contains("breaker opened: the source refused provd's credentials")
                && jobs
                    .iter()
                    .all(|j| j.state.as_str() == "queued" && j.attempt == 0))
            .then_some(())
        }
    })
    .await;
    // Probes keep coming (cool-down 300 ms), but the second bind waits 30 s after the
    // first failure, so in these seconds slapd saw exactly one bind.
    let probes = eventually(10, "a few refused probes", || {
        let n = agent.log_text().matches("not tried again").count();
        async move { (n >= 2).then_some(n) }
    })
    .await;
    assert!(probes >= 2);
    assert_eq!(
        agent.log_text().matches("LDAP bind refused").count(),
        1,
        "one failed bind"
    );
    // Nothing failed and no attempt error was kept; a probe may have one job out.
    let jobs = wait(store.jobs(Default::default())).unwrap();
    assert!(
        jobs.iter()
            .all(|j| matches!(j.state.as_str(), "queued" | "running") && j.errors.is_empty()),
        "{jobs:?}"
    );
    // `check --connect` obeys the agent's gate (the store remembers): no second bind.
    let check = env.cli(&["check", "--connect"]);
    assert_eq!(check.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&check.stderr).contains("not tried again"));
    assert_eq!(
        agent.log_text().matches("LDAP bind refused").count(),
        1,
        "one failed bind"
    );
    // The operator fixes the file: the next probe reads it and every job goes through.
    std::fs::write(env.path().join("ldap-password"), format!("{PASSWORD}\n")).unwrap();
    for rid in &rids {
        all_succeeded(&settled(&env, rid).await);
    }
    let status: Value = agent
        .get("/access-request-status/v1?requested-for=ada")
        .await
        .json()
        .await
        .unwrap();
    for text in [
        agent.log_text(),
        status.to_string(),
        String::from_utf8_lossy(&check.stderr).into_owned(),
        String::from_utf8_lossy(&env.cli(&["jobs", "show", "1"]).stdout).into_owned(),
    ] {
        assert!(!text.contains(wrong), "the bind password leaked");
        assert!(!text.contains(PASSWORD), "the bind password leaked");
    }
}

/// DESIGN §20's correlation rule holds for generic LDAP too: with a `cn={firstName}
/// {lastName}` DN, the second "Ada Lovelace" is an account of her own beside the first,
/// never a link to the first one's entry.
#[tokio::test]
async fn namesakes_on_a_generic_directory_get_two_entries() {
    let slapd = Slapd::start().await;
    let text = format!(
        r#"id = "named"
type = "ldap"
owner = "directory-team@example.com"
url = "{url}"
bind_dn = "cn=admin,dc=example,dc=com"
bind_password_file = "../ldap-password"
[account]
native_id = "cn={{firstName}} {{lastName}},ou=people,dc=example,dc=com"
correlation = "uid"
search_base = "dc=example,dc=com"
object_classes = ["inetOrgPerson"]
[account.attributes]
uid = "{{id}}"
cn = "{{firstName}} {{lastName}}"
sn = "{{lastName}}"
"#,
        url = slapd.url()
    );
    let env = crate::flow::custom_env(
        &[("named.toml", text)],
        &format!(
            "[[entitlement]]\nid = \"ent-vpn\"\nsource = \"named\"\nattribute = \"groups\"\nvalue = \"{VPN}\"\n"
        ),
    );
    std::fs::write(env.path().join("ldap-password"), format!("{PASSWORD}\n")).unwrap();
    std::fs::write(
        env.path().join("identities.csv"),
        "id,firstName,lastName,email\nada,Ada,Lovelace,a@example.com\nada2,Ada,Lovelace,b@example.com\n",
    )
    .unwrap();
    let _agent = env.start().await;
    // One after the other, so that the second meets the first's entry at its DN.
    let first = submit(&env, grant("ada", "ENTITLEMENT", "ent-vpn"));
    all_succeeded(&settled(&env, &first).await);
    let second = submit(&env, grant("ada2", "ENTITLEMENT", "ent-vpn"));
    all_succeeded(&settled(&env, &second).await);
    let members = slapd.values(VPN, "member").await;
    assert!(
        members.contains(&"cn=Ada Lovelace,ou=people,dc=example,dc=com".to_string()),
        "{members:?}"
    );
    assert!(
        members.contains(&"cn=Ada Lovelace (ada2),ou=people,dc=example,dc=com".to_string()),
        "{members:?}"
    );
    assert_eq!(
        slapd
            .values("cn=Ada Lovelace (ada2),ou=people,dc=example,dc=com", "uid")
            .await,
        ["ada2"]
    );
}
