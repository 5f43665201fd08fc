//! Issue 34, finding 3, on the Samba DC: an account `reconcile --fix` (or any later
//! operation) made again after an out-of-band delete came back disabled, with
//! PASSWD_NOTREQD and no password, and drift read clean. Now the recreated account goes
//! through ENABLE_ACCOUNT like a new one: a fresh password is delivered and works.

use crate::ad::{delivered, delivering};
use crate::flow::{grant, settled, submit};
use crate::harness::eventually;
use crate::samba::Dc;

#[tokio::test]
async fn a_recreated_account_is_enabled_with_a_newly_delivered_password() {
    let dc = Dc::get();
    let ou = dc.ou("T9Staff");
    let vpn = dc.group("t9vpn", &ou);
    let (env, dir) = delivering(dc, &ou, &vpn, "t9ada,Ada,Lovelace,ada@example.com\n");
    let deliveries = || delivered(&dir, "t9ada").len();
    let password = || delivered(&dir, "t9ada").pop().unwrap();
    let agent = env.start().await;
    let rid = submit(&env, grant("t9ada", "ENTITLEMENT", "ent-vpn"));
    let jobs = settled(&env, &rid).await;
    assert_eq!(jobs[0].state.as_str(), "succeeded", "{:?}", jobs[0].errors);
    assert_eq!(deliveries(), 1);
    let first = password();
    let ada = format!("CN=Ada Lovelace,{ou}");
    dc.modify(&format!("dn: {ada}\nchangetype: delete\n"))
        .unwrap();
    // The operator repairs: the missing membership is planned, its add makes the account
    // again, and the recreated account is enabled with a new password.
    let out = env.cli(&["reconcile", "--source", "corp-ad", "--fix"]);
    assert!(out.status.success(), "{out:?}");
    let store = env.store();
    eventually(90, "the recreated account enabled", || {
        let store = store.clone();
        let delivered = deliveries();
        async move {
            let jobs = store.jobs(Default::default()).await.ok()?;
            let quiet = jobs.iter().all(|j| j.state.is_final());
            (quiet && delivered == 2).then_some(())
        }
    })
    .await;
    let jobs = store.jobs(Default::default()).await.unwrap();
    assert!(
        jobs.iter().all(|j| j.state.as_str() == "succeeded"),
        "{jobs:?}"
    );
    let bits: u32 = dc.values(&ada, "userAccountControl")[0].parse().unwrap();
    assert_eq!(bits & 0x2, 0, "enabled: {bits:#x}");
    assert_eq!(bits & 0x20, 0, "a password is required: {bits:#x}");
    let new = password();
    assert_ne!(new, first);
    // 773: the password is right and must be changed at first logon.
    let e = dc.bind(&ada, &new).unwrap_err();
    assert!(e.contains("data 773"), "{e}");
    assert_eq!(dc.values(&vpn, "member").len(), 1);

    // Deleted again; this time a grant's add finds it gone and makes it again (outcome
    // `recreated`): the restore that follows enables it with a third password.
    dc.modify(&format!("dn: {ada}\nchangetype: delete\n"))
        .unwrap();
    let rid = submit(&env, crate::flow::revoke("t9ada", "ENTITLEMENT", "ent-vpn"));
    settled(&env, &rid).await;
    let rid = submit(&env, grant("t9ada", "ENTITLEMENT", "ent-vpn"));
    settled(&env, &rid).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    let ended = loop {
        let jobs = store.jobs(Default::default()).await.unwrap();
        if jobs.iter().all(|j| j.state.is_final()) && deliveries() >= 3 {
            break jobs;
        }
        if std::time::Instant::now() > deadline {
            let ops: Vec<_> = jobs
                .iter()
                .map(|j| {
                    (
                        j.id,
                        j.state.as_str(),
                        format!("{:?}", j.ops),
                        j.errors.clone(),
                    )
                })
                .collect();
            panic!(
                "not enabled again: {} deliveries\n{ops:#?}\n{}",
                deliveries(),
                agent.log_text()
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(deliveries(), 3, "{ended:#?}");
    let bits: u32 = dc.values(&ada, "userAccountControl")[0].parse().unwrap();
    assert_eq!(bits & 0x2, 0, "enabled: {bits:#x}");
    let e = dc.bind(&ada, &password()).unwrap_err();
    assert!(e.contains("data 773"), "{e}");

    // Drift compares the enabled state: provd enables every account it makes here, so
    // one disabled by hand is drift even with no lifecycle state asking (it read clean).
    let drift = || {
        let out = env.cli(&["reconcile", "--source", "corp-ad", "--format", "json"]);
        assert!(out.status.success(), "{out:?}");
        let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        rows.as_array()
            .unwrap()
            .iter()
            .map(|d| {
                format!(
                    "{} {}",
                    d["kind"].as_str().unwrap(),
                    d["identity"].as_str().unwrap_or("")
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(drift(), Vec::<String>::new());
    dc.modify(&format!(
        "dn: {ada}\nchangetype: modify\nreplace: userAccountControl\nuserAccountControl: {}\n",
        bits | 0x2
    ))
    .unwrap();
    assert_eq!(drift(), ["disabled_unexpectedly t9ada"]);
}
