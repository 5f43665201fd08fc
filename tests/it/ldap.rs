//! The LDAP connector end to end: the real provd binary against a real slapd.

use crate::harness::wait;
use serde_json::Value;

use crate::flow::{all_succeeded, grant, revoke, settled, submit};
use crate::harness::{Env, eventually};
use crate::slapd::{PASSWORD, Slapd};

const PEOPLE: &str = "ou=people,dc=example,dc=com";
pub const VPN: &str = "cn=vpn,ou=groups,dc=example,dc=com";
pub const GIT: &str = "cn=git,ou=groups,dc=example,dc=com";
const SOLO: &str = "cn=solo,ou=groups,dc=example,dc=com";
const ADMIN_MEMBER: &str = "cn=admin,dc=example,dc=com";
const PLACEHOLDER: &str = "cn=placeholder,dc=example,dc=com";

/// A source file for `slapd`; `extra` is appended (e.g. a [groups] or [retry] section),
/// top-level keys in it go before the first table.
fn source(id: &str, url: &str, extra: &str) -> String {
    let (top, tables) = match extra.find('[') {
        Some(i) => extra.split_at(i),
        None => (extra, ""),
    };
    format!(
        r#"id = "{id}"
{top}
type = "ldap"
owner = "directory-team@example.com"
url = "{url}"
bind_dn = "cn=admin,dc=example,dc=com"
bind_password_file = "../ldap-password"
connect_timeout = "2s"
operation_timeout = "5s"
[account]
native_id = "uid={{id}},ou=people,dc=example,dc=com"
correlation = "uid"
object_classes = ["inetOrgPerson"]
[account.attributes]
uid = "{{id}}"
cn = "{{firstName}} {{lastName}}"
sn = "{{lastName}}"
mail = "{{email}}"
{tables}
"#
    )
}

/// An Env whose only source is the LDAP `corp` source (plus `extra_sources` files).
pub fn ldap_env(url: &str, extra: &str, extra_sources: &[(&str, String)]) -> Env {
    let env = Env::new();
    let d = env.path();
    for f in ["flat.toml", "badges.toml"] {
        std::fs::remove_file(d.join("sources").join(f)).unwrap();
    }
    std::fs::write(d.join("ldap-password"), format!("{PASSWORD}\n")).unwrap();
    std::fs::write(d.join("sources/corp.toml"), source("corp", url, extra)).unwrap();
    for (name, text) in extra_sources {
        std::fs::write(d.join("sources").join(name), text).unwrap();
    }
    std::fs::write(
        d.join("catalog.toml"),
        format!(
            r#"
[[entitlement]]
id = "ent-vpn"
source = "corp"
attribute = "groups"
value = "{VPN}"
[[entitlement]]
id = "ent-git"
source = "corp"
attribute = "groups"
value = "{GIT}"
[[entitlement]]
id = "ent-solo"
source = "corp"
attribute = "groups"
value = "{SOLO}"
[[entitlement]]
id = "ent-title"
source = "corp"
attribute = "title"
value = "Engineer"
[[access_profile]]
id = "ap-eng"
entitlements = ["ent-vpn", "ent-git"]
[[access_profile]]
id = "ap-remote"
entitlements = ["ent-vpn"]
[[role]]
id = "role-engineer"
access_profiles = ["ap-eng"]
entitlements = ["ent-title"]
"#
        ),
    )
    .unwrap();
    std::fs::write(
        d.join("identities.csv"),
        "id,firstName,lastName,email\n\
         ada,Ada,Lovelace,ada@example.com\n\
         bob,Bob,Builder,bob@example.com\n\
         \" #Doe, John+Jr=\"\"x\"\";<y>\\z \",John,\"Doe, Jr.\",john@example.com\n",
    )
    .unwrap();
    env
}

#[tokio::test]
async fn granting_a_role_creates_the_account_with_mapped_attributes_and_memberships() {
    let slapd = Slapd::start().await;
    let env = ldap_env(&slapd.url(), "", &[]);
    let _agent = env.start().await;
    let rid = submit(&env, grant("ada", "ROLE", "role-engineer"));
    all_succeeded(&settled(&env, &rid).await);
    let dn = "uid=ada,ou=people,dc=example,dc=com";
    let e = slapd.search(PEOPLE, "(uid=ada)").await;
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].dn, dn);
    assert_eq!(e[0].attrs["cn"], ["Ada Lovelace"]);
    assert_eq!(e[0].attrs["sn"], ["Lovelace"]);
    assert_eq!(e[0].attrs["mail"], ["ada@example.com"]);
    assert_eq!(
        e[0].attrs["title"],
        ["Engineer"],
        "a non-group entitlement is a value on the account"
    );
    assert!(slapd.values(VPN, "member").await.contains(&dn.to_string()));
    assert!(slapd.values(GIT, "member").await.contains(&dn.to_string()));
    assert_eq!(
        wait(env.store().native_id("ada".into(), "corp".into()))
            .unwrap()
            .as_deref(),
        Some(dn)
    );

    // Granting it again is a duplicate; revoking removes the memberships.
    let rid = submit(&env, revoke("ada", "ROLE", "role-engineer"));
    all_succeeded(&settled(&env, &rid).await);
    assert_eq!(slapd.values(VPN, "member").await, [ADMIN_MEMBER]);
    assert_eq!(slapd.values(GIT, "member").await, [ADMIN_MEMBER]);
    assert!(slapd.values(dn, "title").await.is_empty());
}

#[tokio::test]
async fn a_membership_granted_twice_survives_the_revoke_of_one_grant() {
    let slapd = Slapd::start().await;
    let env = ldap_env(&slapd.url(), "", &[]);
    let _agent = env.start().await;
    let a = submit(&env, grant("ada", "ACCESS_PROFILE", "ap-eng"));
    all_succeeded(&settled(&env, &a).await);
    let b = submit(&env, grant("ada", "ACCESS_PROFILE", "ap-remote"));
    assert!(
        settled(&env, &b).await.is_empty(),
        "vpn is already provisioned: nothing to do"
    );
    let r = submit(&env, revoke("ada", "ACCESS_PROFILE", "ap-eng"));
    all_succeeded(&settled(&env, &r).await);
    let dn = "uid=ada,ou=people,dc=example,dc=com".to_string();
    assert!(
        slapd.values(VPN, "member").await.contains(&dn),
        "ap-remote still grants vpn"
    );
    assert!(
        !slapd.values(GIT, "member").await.contains(&dn),
        "git went with ap-eng"
    );
}

#[tokio::test]
async fn special_characters_in_attributes_make_a_correct_dn() {
    let slapd = Slapd::start().await;
    let env = ldap_env(&slapd.url(), "", &[]);
    let _agent = env.start().await;
    let who = " #Doe, John+Jr=\"x\";<y>\\z ";
    let rid = submit(&env, grant(who, "ENTITLEMENT", "ent-vpn"));
    all_succeeded(&settled(&env, &rid).await);
    // Found by an RFC 4515-escaped filter on the exact value.
    let found = slapd
        .search(PEOPLE, "(uid= #Doe, John+Jr=\"x\";<y>\\5cz )")
        .await;
    assert_eq!(found.len(), 1, "exactly one entry with the exact uid");
    assert_eq!(found[0].attrs["uid"], [who]);
    assert_eq!(found[0].attrs["sn"], ["Doe, Jr."]);
    let dn = found[0].dn.clone();
    assert!(dn.ends_with(",ou=people,dc=example,dc=com"), "{dn}");
    assert!(
        slapd
            .values(VPN, "member")
            .await
            .iter()
            .any(|m| m.eq_ignore_ascii_case(&dn)),
        "{dn}"
    );
}

#[tokio::test]
async fn an_existing_account_is_correlated_not_duplicated() {
    let slapd = Slapd::start().await;
    slapd.ldapadd(
        "dn: cn=Bob The Builder,ou=people,dc=example,dc=com\nobjectClass: inetOrgPerson\ncn: Bob The Builder\nsn: Builder\nuid: bob\n",
    );
    let env = ldap_env(&slapd.url(), "", &[]);
    let _agent = env.start().await;
    let rid = submit(&env, grant("bob", "ENTITLEMENT", "ent-git"));
    all_succeeded(&settled(&env, &rid).await);
    let found = slapd.search(PEOPLE, "(uid=bob)").await;
    assert_eq!(found.len(), 1, "no second account");
    let existing = "cn=Bob The Builder,ou=people,dc=example,dc=com";
    assert_eq!(
        wait(env.store().native_id("bob".into(), "corp".into()))
            .unwrap()
            .as_deref(),
        Some(existing)
    );
    assert!(
        slapd
            .values(GIT, "member")
            .await
            .contains(&existing.to_string()),
        "the membership uses the correlated DN"
    );
    let events = env.cli(&["jobs", "show", "1"]);
    assert!(String::from_utf8_lossy(&events.stdout).contains("\"correlated\""));
}

#[tokio::test]
async fn creates_claimed_together_share_one_correlation_search() {
    let slapd = Slapd::start().await;
    slapd.ldapadd(
        "dn: cn=Bob The Builder,ou=people,dc=example,dc=com\nobjectClass: inetOrgPerson\ncn: Bob The Builder\nsn: Builder\nuid: bob\n",
    );
    let env = ldap_env(&slapd.url(), "", &[]);
    let john = " #Doe, John+Jr=\"x\";<y>\\z ";
    // Queued before the agent starts, so that one claim takes all three.
    let rid = submit(
        &env,
        serde_json::json!({ "requestedFor": ["ada", "bob", john],
            "requestedItems": [{ "type": "ENTITLEMENT", "id": "ent-git" }] }),
    );
    let agent = env.start().await;
    all_succeeded(&settled(&env, &rid).await);
    let log = agent.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("correlation looked up in one search"))
        .unwrap_or_else(|| panic!("no batch lookup: {log}"));
    let v: Value = serde_json::from_str(line).unwrap();
    assert_eq!(v["accounts"], 3, "{line}");
    assert_eq!(v["answered"], 3, "{line}");
    // Bob was found by the batch (other RDN, same uid): linked, not duplicated.
    assert_eq!(slapd.search(PEOPLE, "(uid=bob)").await.len(), 1);
    let existing = "cn=Bob The Builder,ou=people,dc=example,dc=com";
    assert_eq!(
        wait(env.store().native_id("bob".into(), "corp".into()))
            .unwrap()
            .as_deref(),
        Some(existing)
    );
    // The others were known absent and created, once, with the escaped filter and DN.
    assert_eq!(slapd.search(PEOPLE, "(uid=ada)").await.len(), 1);
    assert_eq!(
        slapd
            .search(PEOPLE, "(uid=\\20#Doe, John+Jr=\"x\";<y>\\5cz\\20)")
            .await
            .len(),
        1
    );
    let members = slapd.values(GIT, "member").await;
    assert!(members.contains(&existing.to_string()), "{members:?}");
    assert_eq!(members.len(), 4, "admin + three: {members:?}");
}

#[tokio::test]
async fn jobs_retry_while_slapd_is_down_and_complete_when_it_is_back() {
    let mut slapd = Slapd::start().await;
    let env = ldap_env(
        &slapd.url(),
        "[retry]\ninitial = \"100ms\"\nmax_interval = \"500ms\"\nbreaker_cooldown = \"500ms\"\nmax_attempts = 200\n",
        &[],
    );
    let agent = env.start().await;
    slapd.stop();
    let rid = submit(&env, grant("ada", "ACCESS_PROFILE", "ap-eng"));
    let store = env.store();
    let retrying = eventually(20, "the job to be retrying", || {
        let jobs = wait(store.jobs(Default::default())).unwrap();
        async move {
            jobs.into_iter()
                .find(|j| j.state.as_str() == "retrying" && j.attempt >= 2)
        }
    })
    .await;
    assert_eq!(retrying.errors[0].class, "retryable");
    assert_eq!(
        retrying.errors[0].code.as_deref(),
        Some("ConnectionRefused"),
        "{:?}",
        retrying.errors
    );
    // Where and why (issue 13): the peer and the cause.
    let port = slapd.url().rsplit(':').next().unwrap().to_string();
    let message = &retrying.errors[0].message;
    assert!(message.contains(&format!("127.0.0.1:{port}")), "{message}");
    assert!(message.to_lowercase().contains("refused"), "{message}");
    eventually(20, "the breaker to open", || {
        let open = agent.log_text().contains("breaker opened");
        async move { open.then_some(()) }
    })
    .await;
    slapd.restart().await;
    all_succeeded(&settled(&env, &rid).await);
    // The operator who saw it open sees it close.
    eventually(10, "the breaker to close", || {
        let closed = agent.log_text().contains("breaker closed");
        async move { closed.then_some(()) }
    })
    .await;
    assert!(
        slapd
            .values(VPN, "member")
            .await
            .contains(&"uid=ada,ou=people,dc=example,dc=com".to_string())
    );
}

#[tokio::test]
async fn starttls_and_ldaps_work_against_a_private_ca() {
    let slapd = Slapd::start_tls().await;
    let ca = slapd.certs.as_ref().unwrap().ca.display().to_string();
    let ldaps = source(
        "secure",
        &slapd.ldaps_url(),
        &format!("tls_ca_file = \"{ca}\"\n"),
    );
    let env = ldap_env(
        &slapd.url(),
        &format!("starttls = true\ntls_ca_file = \"{ca}\"\n"),
        &[("secure.toml", ldaps)],
    );
    let cat = std::fs::read_to_string(env.path().join("catalog.toml")).unwrap()
        + "[[entitlement]]\nid = \"ent-git-tls\"\nsource = \"secure\"\nattribute = \"groups\"\nvalue = \"cn=git,ou=groups,dc=example,dc=com\"\n";
    std::fs::write(env.path().join("catalog.toml"), cat).unwrap();
    let check = env.cli(&["check", "--connect"]);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let out = String::from_utf8_lossy(&check.stdout);
    assert!(
        out.contains("corp: connected") && out.contains("secure: connected"),
        "{out}"
    );
    let _agent = env.start().await;
    let a = submit(&env, grant("ada", "ENTITLEMENT", "ent-vpn"));
    let b = submit(&env, grant("ada", "ENTITLEMENT", "ent-git-tls"));
    all_succeeded(&settled(&env, &a).await);
    all_succeeded(&settled(&env, &b).await);
    let dn = "uid=ada,ou=people,dc=example,dc=com".to_string();
    assert!(
        slapd.values(VPN, "member").await.contains(&dn),
        "over StartTLS"
    );
    assert!(
        slapd.values(GIT, "member").await.contains(&dn),
        "over ldaps"
    );

    // Without the CA the server's certificate is not trusted: a permanent TLS error.
    let untrusted = ldap_env(&slapd.url(), "starttls = true\n", &[]);
    let check = untrusted.cli(&["check", "--connect"]);
    assert_eq!(check.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&check.stderr).contains("TLS"),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
}

#[tokio::test]
async fn removing_the_last_real_member_of_a_group_of_names_keeps_a_placeholder() {
    let slapd = Slapd::start().await;
    let strict = source("strict", &slapd.url(), "");
    let env = ldap_env(
        &slapd.url(),
        &format!("[groups]\nplaceholder_member = \"{PLACEHOLDER}\"\n"),
        &[("strict.toml", strict)],
    );
    let cat = std::fs::read_to_string(env.path().join("catalog.toml")).unwrap()
        + &format!(
            "[[entitlement]]\nid = \"ent-solo-strict\"\nsource = \"strict\"\nattribute = \"groups\"\nvalue = \"{SOLO}\"\n"
        );
    std::fs::write(env.path().join("catalog.toml"), cat).unwrap();
    let _agent = env.start().await;

    // Without a placeholder the directory refuses (65) and the job fails with that code.
    let g = submit(&env, grant("ada", "ENTITLEMENT", "ent-solo-strict"));
    all_succeeded(&settled(&env, &g).await);
    let r = submit(&env, revoke("ada", "ENTITLEMENT", "ent-solo-strict"));
    let jobs = settled(&env, &r).await;
    assert_eq!(jobs[0].state.as_str(), "failed");
    assert_eq!(jobs[0].errors[0].code.as_deref(), Some("65"));
    assert!(jobs[0].errors[0].message.contains("placeholder_member"));

    // With one, the member goes and the placeholder keeps the group valid.
    let g = submit(&env, grant("ada", "ENTITLEMENT", "ent-solo"));
    all_succeeded(&settled(&env, &g).await);
    let r = submit(&env, revoke("ada", "ENTITLEMENT", "ent-solo"));
    all_succeeded(&settled(&env, &r).await);
    assert_eq!(slapd.values(SOLO, "member").await, [PLACEHOLDER]);
}

#[tokio::test]
async fn unique_member_and_member_uid_groups_work() {
    let slapd = Slapd::start().await;
    let uniq = source(
        "uniq",
        &slapd.url(),
        "[groups]\nmember_attribute = \"uniqueMember\"\n",
    );
    let posix = source(
        "posix",
        &slapd.url(),
        "[groups]\nmember_attribute = \"memberUid\"\n",
    );
    let env = ldap_env(
        &slapd.url(),
        "",
        &[("uniq.toml", uniq), ("posix.toml", posix)],
    );
    let cat = std::fs::read_to_string(env.path().join("catalog.toml")).unwrap()
        + "[[entitlement]]\nid = \"ent-uniq\"\nsource = \"uniq\"\nattribute = \"groups\"\nvalue = \"cn=uniq,ou=groups,dc=example,dc=com\"\n\
           [[entitlement]]\nid = \"ent-staff\"\nsource = \"posix\"\nattribute = \"groups\"\nvalue = \"cn=staff,ou=groups,dc=example,dc=com\"\n\
           [[access_profile]]\nid = \"ap-both\"\nentitlements = [\"ent-uniq\", \"ent-staff\"]\n";
    std::fs::write(env.path().join("catalog.toml"), cat).unwrap();
    let _agent = env.start().await;
    let g = submit(&env, grant("ada", "ACCESS_PROFILE", "ap-both"));
    all_succeeded(&settled(&env, &g).await);
    assert_eq!(
        slapd.search(PEOPLE, "(uid=ada)").await.len(),
        1,
        "two sources, one directory entry (correlated)"
    );
    assert!(
        slapd
            .values("cn=uniq,ou=groups,dc=example,dc=com", "uniqueMember")
            .await
            .contains(&"uid=ada,ou=people,dc=example,dc=com".to_string())
    );
    assert_eq!(
        slapd
            .values("cn=staff,ou=groups,dc=example,dc=com", "memberUid")
            .await,
        ["ada"]
    );
    let r = submit(&env, revoke("ada", "ACCESS_PROFILE", "ap-both"));
    all_succeeded(&settled(&env, &r).await);
    assert!(
        slapd
            .values("cn=staff,ou=groups,dc=example,dc=com", "memberUid")
            .await
            .is_empty()
    );
    assert_eq!(
        slapd
            .values("cn=uniq,ou=groups,dc=example,dc=com", "uniqueMember")
            .await,
        [ADMIN_MEMBER]
    );
}

/// The connector on its own, for the operations no request plans yet (disable, delete).
pub(crate) async fn connector(
    slapd: &Slapd,
    extra: &str,
) -> (tempfile::TempDir, provd_connector_ldap::LdapConnector) {
    connector_with(slapd, extra, |t| t).await
}

/// [`connector`] from its source text as `edit` leaves it.
pub(crate) async fn connector_with(
    slapd: &Slapd,
    extra: &str,
    edit: impl FnOnce(String) -> String,
) -> (tempfile::TempDir, provd_connector_ldap::LdapConnector) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pw"), PASSWORD).unwrap();
    let text = edit(source("c", &slapd.url(), extra).replace("../ldap-password", "pw"));
    let mut table: toml::Table = toml::from_str(&text).unwrap();
    for k in ["id", "type", "owner"] {
        table.remove(k);
    }
    let c = provd_connector_ldap::LdapConnector::build(&table, dir.path()).unwrap();
    (dir, c)
}

pub(crate) fn person(id: &str) -> provd_connector_core::Identity {
    let attributes = [
        ("firstName", "Grace"),
        ("lastName", "Hopper"),
        ("email", "grace@example.com"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    provd_connector_core::Identity {
        id: id.into(),
        attributes,
    }
}

#[tokio::test]
async fn disable_by_attribute_or_by_move_and_delete_are_idempotent() {
    use provd_connector_core::{Connector, Outcome};
    let slapd = Slapd::start().await;
    let (_d, c) = connector(
        &slapd,
        "[account.disable]\nattribute = \"employeeType\"\nvalue = \"disabled\"\n",
    )
    .await;
    let who = person("grace");
    let created = c.create_account(&who).await.unwrap();
    assert_eq!(
        created,
        Outcome::Created {
            native_id: "uid=grace,ou=people,dc=example,dc=com".into()
        }
    );
    assert!(
        matches!(
            c.create_account(&who).await.unwrap(),
            Outcome::Correlated { .. }
        ),
        "creating again links"
    );
    let dn = created.native_id().unwrap().to_string();
    assert_eq!(
        c.disable_account(&who, Some(&dn)).await.unwrap(),
        Outcome::Applied
    );
    assert_eq!(
        c.disable_account(&who, Some(&dn)).await.unwrap(),
        Outcome::Applied,
        "replace is idempotent"
    );
    assert_eq!(slapd.values(&dn, "employeeType").await, ["disabled"]);

    let (_d2, mover) = connector(
        &slapd,
        "[account.disable]\nmove_to = \"ou=disabled,dc=example,dc=com\"\n",
    )
    .await;
    let moved_dn = "uid=grace,ou=disabled,dc=example,dc=com".to_string();
    assert_eq!(
        mover.disable_account(&who, Some(&dn)).await.unwrap(),
        Outcome::Moved {
            native_id: moved_dn.clone()
        }
    );
    assert_eq!(
        mover.disable_account(&who, Some(&dn)).await.unwrap(),
        Outcome::Moved {
            native_id: moved_dn.clone()
        },
        "moved before"
    );
    assert_eq!(
        slapd
            .search("ou=disabled,dc=example,dc=com", "(uid=grace)")
            .await
            .len(),
        1
    );

    assert_eq!(
        c.delete_account(&who, Some(&moved_dn)).await.unwrap(),
        Outcome::Applied
    );
    assert_eq!(
        c.delete_account(&who, Some(&moved_dn)).await.unwrap(),
        Outcome::Unchanged
    );
    assert!(
        slapd
            .search(crate::slapd::BASE, "(uid=grace)")
            .await
            .is_empty()
    );

    // A template naming an attribute the identity lacks is a permanent error naming it.
    let mut nameless = person("nameless");
    nameless.attributes.remove("lastName");
    let e = c.create_account(&nameless).await.unwrap_err();
    assert_eq!(e.class, provd_connector_core::ErrorClass::Permanent);
    assert!(e.message.contains("`lastName`"), "{e}");
}

#[test]
fn the_shipped_openldap_and_active_directory_examples_are_valid() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/examples");
    for f in ["openldap.toml", "active-directory.toml"] {
        let mut table: toml::Table =
            toml::from_str(&std::fs::read_to_string(dir.join(f)).unwrap()).unwrap();
        for k in ["id", "type", "owner", "retry"] {
            table.remove(k);
        }
        // `[account] sync` is the configuration's (attribute sync), not the connector's.
        if let Some(toml::Value::Table(a)) = table.get_mut("account") {
            a.remove("sync");
        }
        let problems = match provd_connector_ldap::parse(&table, &dir) {
            Ok(_) => vec![],
            Err(p) => p,
        };
        // Only the CA file, which is the operator's own, may be missing here.
        assert!(
            problems.iter().all(|(k, _)| k == "tls_ca_file"),
            "{f}: {problems:?}"
        );
    }
}
