//! Issue 34, item 5, on the Samba DC: CN and OU never followed a rename or a department
//! move. With `[account] ou = "OU={department},…"` a new account goes to its
//! department's OU, and an identity change that places it elsewhere moves or renames the
//! entry with one modrdn: provd's link follows it and AD keeps the group membership.

use crate::ad::env;
use crate::flow::{grant, revoke, settled, submit};
use crate::harness::eventually;
use crate::samba::{ADMIN_DN, ADMIN_PASSWORD, Dc};

#[tokio::test]
async fn a_department_move_and_a_new_surname_move_and_rename_the_entry_with_its_groups() {
    let dc = Dc::get();
    let staff = dc.ou("T11Staff");
    let (sales, eng) = (dc.ou("Sales,OU=T11Staff"), dc.ou("Eng,OU=T11Staff"));
    let vpn = dc.group("t11vpn", &staff);
    let env = env(dc, &staff, &vpn, (ADMIN_DN, ADMIN_PASSWORD), "", "");
    let d = env.path();
    let file = d.join("sources").join("corp-ad.toml");
    let conf = std::fs::read_to_string(&file).unwrap();
    std::fs::write(
        &file,
        conf.replace(
            "[account]\n",
            &format!("[account]\nou = \"OU={{department}},{staff}\"\n"),
        ),
    )
    .unwrap();
    let person = |last: &str, dept: &str| {
        format!(
            "id,firstName,lastName,email,department\nt11ada,Ada,{last},ada@example.com,{dept}\n"
        )
    };
    std::fs::write(d.join("identities.csv"), person("Lovelace", "Sales")).unwrap();
    let check = env.cli(&["check"]);
    assert!(check.status.success(), "{check:?}");
    let store = env.store();
    let _agent = env.start().await;
    let rid = submit(&env, grant("t11ada", "ENTITLEMENT", "ent-vpn"));
    let jobs = settled(&env, &rid).await;
    assert_eq!(jobs[0].state.as_str(), "succeeded", "{:?}", jobs[0].errors);
    let at_sales = format!("CN=Ada Lovelace,{sales}");
    assert_eq!(
        dc.dns(&staff, "(sAMAccountName=t11ada)"),
        std::slice::from_ref(&at_sales)
    );

    // An import that changes what the placement renders: one UPDATE_ACCOUNT, one modrdn.
    let change = |last: &str, dept: &str, want: String| {
        let file = d.join(format!("people-{last}-{dept}.csv"));
        std::fs::write(&file, person(last, dept)).unwrap();
        let out = env.cli(&["identities", "import", file.to_str().unwrap()]);
        assert!(out.status.success(), "{out:?}");
        let store = store.clone();
        async move {
            eventually(60, "the entry moved", || {
                let (store, want) = (store.clone(), want.clone());
                async move {
                    let jobs = store.jobs(Default::default()).await.ok()?;
                    let quiet = jobs.iter().all(|j| j.state.is_final());
                    let native = store
                        .native_id("t11ada".into(), "corp-ad".into())
                        .await
                        .ok()??;
                    (quiet && native == want).then_some(jobs)
                }
            })
            .await
        }
    };
    let at_eng = format!("CN=Ada Lovelace,{eng}");
    let jobs = change("Lovelace", "Eng", at_eng.clone()).await;
    assert!(
        jobs.iter().all(|j| j.state.as_str() == "succeeded"),
        "{jobs:?}"
    );
    assert_eq!(
        dc.dns(&staff, "(sAMAccountName=t11ada)"),
        std::slice::from_ref(&at_eng)
    );
    assert_eq!(dc.values(&vpn, "member"), [at_eng], "the group follows");

    // A new surname renames it where it is.
    let renamed = format!("CN=Ada Byron,{eng}");
    change("Byron", "Eng", renamed.clone()).await;
    assert_eq!(
        dc.dns(&staff, "(sAMAccountName=t11ada)"),
        std::slice::from_ref(&renamed)
    );
    assert_eq!(
        dc.values(&renamed, "sn"),
        ["Lovelace"],
        "only the RDN follows: sn is not in [account] sync"
    );
    assert_eq!(dc.values(&vpn, "member"), [renamed]);

    // The link holds: the revoke finds the account where it went.
    let rid = submit(&env, revoke("t11ada", "ENTITLEMENT", "ent-vpn"));
    let jobs = settled(&env, &rid).await;
    assert_eq!(jobs[0].state.as_str(), "succeeded", "{:?}", jobs[0].errors);
    assert!(dc.values(&vpn, "member").is_empty());
}
