//! Issue 34, item 9, on the Samba DC: nested groups were invisible. An account in group
//! `team`, which an administrator nested in the catalog's group `all`, holds `all`
//! through it: the read-back finds it (AD's in-chain rule, then the path), the access
//! list shows it `via` `group:…team…`, and drift calls it unexpected (nothing grants it)
//! without `--fix` touching it: provd writes direct membership only.

use serde_json::Value;

use crate::ad::env;
use crate::flow::{grant, settled, submit};
use crate::samba::{ADMIN_DN, ADMIN_PASSWORD, Dc};

#[tokio::test]
async fn nested_membership_shows_in_the_access_list_and_drift_via_its_group() {
    let dc = Dc::get();
    let ou = dc.ou("T13Staff");
    let vpn = dc.group("t13vpn", &ou);
    let all = dc.group("t13all", &ou);
    let team = dc.group("t13team", &ou);
    let env = env(
        dc,
        &ou,
        &vpn,
        (ADMIN_DN, ADMIN_PASSWORD),
        "",
        "t13ada,Ada,Lovelace,ada@example.com\n",
    );
    let catalog = env.path().join("catalog.toml");
    let mut text = std::fs::read_to_string(&catalog).unwrap();
    text.push_str(&format!(
        "[[entitlement]]\nid = \"ent-all\"\nsource = \"corp-ad\"\nattribute = \"groups\"\nvalue = \"{all}\"\n"
    ));
    std::fs::write(&catalog, text).unwrap();
    let _agent = env.start().await;
    let rid = submit(&env, grant("t13ada", "ENTITLEMENT", "ent-vpn"));
    let jobs = settled(&env, &rid).await;
    assert_eq!(jobs[0].state.as_str(), "succeeded", "{:?}", jobs[0].errors);
    let ada = format!("CN=Ada Lovelace,{ou}");
    // An administrator puts her in `team`, and `team` in `all`.
    for (group, member) in [(&team, &ada), (&all, &team)] {
        dc.modify(&format!(
            "dn: {group}\nchangetype: modify\nadd: member\nmember: {member}\n"
        ))
        .unwrap();
    }
    let json = |args: &[&str]| -> Vec<Value> {
        let out = env.cli(args);
        assert!(out.status.success(), "{out:?}");
        serde_json::from_slice::<Value>(&out.stdout)
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    };
    let via = format!("group:{team}");
    let drift = json(&[
        "reconcile",
        "--source",
        "corp-ad",
        "--fix",
        "--format",
        "json",
    ]);
    assert_eq!(drift.len(), 1, "{drift:?}");
    assert_eq!(
        (&drift[0]["kind"], &drift[0]["value"], &drift[0]["via"]),
        (
            &Value::from("unexpected"),
            &Value::from(all.clone()),
            &Value::from(via.clone())
        )
    );
    assert_eq!(
        dc.values(&all, "member"),
        std::slice::from_ref(&team),
        "--fix left it"
    );

    // "Who has all?" names her, through team; her own grant stays as it was.
    let rows = json(&["access", "list", "--item", "ent-all", "--format", "json"]);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["identity"], "t13ada");
    assert_eq!(rows[0]["state"], "active");
    assert_eq!(rows[0]["via"], serde_json::json!([via]));
    let hers = json(&["access", "list", "--identity", "t13ada", "--format", "json"]);
    assert_eq!(hers.len(), 2, "{hers:?}");
    // `provd drift` says the same from the stored read-back.
    let stored = json(&["drift", "--source", "corp-ad", "--format", "json"]);
    assert_eq!(stored, drift);
}
