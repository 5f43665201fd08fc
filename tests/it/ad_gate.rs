//! Issue 34, finding 1, on the Samba DC: the credential gate's memory outlives the
//! process. With a wrong service password, three starts of the agent and two `provd check
//! --connect` used to spend five binds and lock the account (threshold 5); now the store
//! remembers the secret that failed, and only `provd sources unblock` (or a changed
//! file) lets it be tried again.

use crate::ad::env;
use crate::flow::{grant, submit};
use crate::harness::eventually;
use crate::samba::{BASE, Dc};

fn bad_binds(dc: &Dc, dn: &str) -> u32 {
    dc.values(dn, "badPwdCount")
        .first()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_wrong_service_password_is_remembered_across_restarts_and_checks_until_unblocked() {
    let dc = Dc::get();
    let ou = dc.ou("T7Staff");
    let vpn = dc.group("t7vpn", &ou);
    let svc = format!("CN=t7svc,OU=Service,{BASE}");
    dc.user(&svc, "t7svc", "Svc7-Passw0rd!");
    let env = env(
        dc,
        &ou,
        &vpn,
        (&svc, "Wr0ng7-Passw0rd!"),
        "",
        "t7a,Anna,A,a@example.com\n",
    );
    submit(&env, grant("t7a", "ENTITLEMENT", "ent-vpn"));
    // An operator's first remedy, three times over: restart the service.
    for start in 1..=3 {
        let mut agent = env.start().await;
        eventually(30, "the bind tried or refused by the gate", || {
            let log = agent.log_text();
            async move {
                (log.contains("LDAP bind refused") || log.contains("not tried")).then_some(())
            }
        })
        .await;
        agent.signal_and_wait("TERM", 20).await;
        assert!(bad_binds(dc, &svc) <= 1, "after start {start}");
    }
    for _ in 0..2 {
        let out = env.cli(&["check", "--connect"]);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success());
        assert!(stderr.contains("not tried"), "{stderr}");
        assert!(!stderr.contains("Wr0ng7"), "the password leaked: {stderr}");
    }
    let bad = bad_binds(dc, &svc);
    assert!(bad <= 2, "{bad} failed binds reached the DC");
    let locked = dc.values(&svc, "lockoutTime");
    assert!(
        locked.is_empty() || locked == ["0"],
        "locked out: {locked:?}"
    );
    // The operator unblocks: one more try reaches the DC (and fails: same password).
    let out = env.cli(&["sources", "unblock", "nope"]);
    assert_eq!(out.status.code(), Some(2), "an unknown source is named");
    let out = env.cli(&["sources", "unblock", "corp-ad"]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("unblocked by cli:"));
    let out = env.cli(&["check", "--connect"]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success());
    assert!(
        !stderr.contains("not tried"),
        "tried after the unblock: {stderr}"
    );
    assert_eq!(bad_binds(dc, &svc), bad + 1);
    let trail = env.cli(&["audit", "--kind", "source_unblocked"]);
    let trail = String::from_utf8_lossy(&trail.stdout).into_owned();
    assert!(
        trail.contains("corp-ad") && trail.contains("cli:"),
        "{trail}"
    );
    assert!(!trail.contains("Wr0ng7"), "{trail}");
    // The file fixed: a changed secret is tried at once, no unblock needed.
    std::fs::write(env.path().join("ad-password"), "Svc7-Passw0rd!\n").unwrap();
    let out = env.cli(&["check", "--connect"]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        dc.values(&svc, "badPwdCount").first().map(String::as_str) == Some("0"),
        "a good bind resets the DC's count"
    );
}
