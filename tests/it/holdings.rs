//! One truth about access (issue 33): each finding of the issue has a regression test here
//! that failed before its fix, against real servers.

use crate::flow::{grant, settled, submit};
use crate::harness::{Env, eventually};
use crate::httpservers::Scim;
use crate::joiners::{ADA, GIT, TOKEN, VPN, member, setup};
use crate::slapd::Slapd;

const GRACE: &str = "uid=grace,ou=people,dc=example,dc=com";

/// Sets the lifecycle state of `id`'s row in identities.csv (the file the agent runs on).
fn set_state(env: &Env, id: &str, state: &str) {
    let path = env.path().join("identities.csv");
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<String> = text
        .lines()
        .map(|l| {
            if l.starts_with(&format!("{id},")) {
                let mut cells: Vec<&str> = l.split(',').collect();
                let last = cells.len() - 1;
                cells[last] = state;
                cells.join(",")
            } else {
                l.to_string()
            }
        })
        .collect();
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
}

/// Waits until `dn` carries (or not) the disable marker of the LDAP source's recipe.
async fn disabled(slapd: &Slapd, dn: &str, yes: bool) {
    eventually(20, &format!("{dn} disabled: {yes}"), || async move {
        let types = slapd.values(dn, "employeeType").await;
        (types.iter().any(|t| t == "disabled") == yes).then_some(())
    })
    .await;
}

/// Finding 1: a leaver edited into identities.csv and imported with `provd identities
/// import`, or let through with `--confirm` after the guard held the reload, is disabled.
/// Before, the import diffed the file against the same (already edited) file on disk:
/// the state was recorded and nothing was planned, and every later import, PUT or SIGHUP
/// was a no-op for the person.
#[tokio::test]
async fn a_leaver_edited_into_identities_csv_loses_access_however_the_edit_is_applied() {
    let slapd = Slapd::start().await;
    let scim = Scim::start(TOKEN).await;
    scim.group("engineers").await;
    let env = setup(&slapd, &scim);
    // A guard of 1: one leaver (three sources) is a mass change here.
    let lifecycle = env.path().join("lifecycle.toml");
    let text = std::fs::read_to_string(&lifecycle).unwrap();
    std::fs::write(
        &lifecycle,
        text.replace("max_changes = 25", "max_changes = 1"),
    )
    .unwrap();
    set_state(&env, "ada", "active");
    set_state(&env, "grace", "active");
    let agent = env.start().await;
    for (who, ent) in [("ada", "ent-vpn"), ("grace", "ent-git")] {
        let rid = submit(&env, grant(who, "ENTITLEMENT", ent));
        settled(&env, &rid).await;
    }
    member(&slapd, VPN, ADA, true).await;
    member(&slapd, GIT, GRACE, true).await;
    disabled(&slapd, ADA, false).await;

    // HR edits ada's row; the operator imports the file itself.
    set_state(&env, "ada", "leaver");
    let csv = env.path().join("identities.csv");
    let csv = csv.to_str().unwrap();
    let out = env.cli(&["identities", "import", csv, "--confirm"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("ada: active -> leaver"), "{said}");
    disabled(&slapd, ADA, true).await;

    // grace's edit reaches the agent by SIGHUP: held by the guard, nothing done...
    set_state(&env, "grace", "leaver");
    agent.signal("HUP");
    eventually(10, "the reload held", || async {
        agent
            .log_text()
            .contains("new configuration refused")
            .then_some(())
    })
    .await;
    disabled(&slapd, GRACE, false).await;
    // ...until the operator confirms it as the log line says.
    let out = env.cli(&["identities", "import", csv, "--confirm"]);
    assert!(out.status.success());
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("grace: active -> leaver"), "{said}");
    assert!(!said.contains("ada:"), "ada's change is made once: {said}");
    disabled(&slapd, GRACE, true).await;
    // The next reload finds nothing left to change: it is not held again.
    agent.signal("HUP");
    eventually(10, "the reload taken", || async {
        agent
            .log_text()
            .contains("configuration reloaded")
            .then_some(())
    })
    .await;
    disabled(&slapd, ADA, true).await;
}
