//! Issue 34, item 7, on the Samba DC with a delegated service account: an account in
//! `CN=Users`, where that account has no rights, was linked; its leaver's job took a
//! group away, then failed on `userAccountControl` (50) and the person stayed enabled.
//! Now the link itself is refused, naming the entry and the right, before anything is
//! written, while accounts in the delegated OU are made and managed as before.

use crate::ad::env;
use crate::flow::{grant, settled, submit};
use crate::samba::{BASE, Dc};

#[tokio::test]
async fn an_account_the_service_account_may_not_manage_is_refused_at_link_time() {
    let dc = Dc::get();
    let ou = dc.ou("T12Staff");
    let vpn = dc.group("t12vpn", &ou);
    let svc = dc.delegated("t12svc", "Svc-Passw0rd!12", &ou);
    // Kim's account was made by an administrator in CN=Users.
    let kim = format!("CN=Kim Park,CN=Users,{BASE}");
    dc.user(&kim, "t12kim", "Kim-Passw0rd!12");
    let env = env(
        dc,
        &ou,
        &vpn,
        (&svc, "Svc-Passw0rd!12"),
        "",
        "t12kim,Kim,Park,kim@example.com\nt12ada,Ada,Lovelace,ada@example.com\n",
    );
    let _agent = env.start().await;
    // In the delegated OU: made, and put in the group.
    let rid = submit(&env, grant("t12ada", "ENTITLEMENT", "ent-vpn"));
    let jobs = settled(&env, &rid).await;
    assert_eq!(jobs[0].state.as_str(), "succeeded", "{:?}", jobs[0].errors);
    let ada = format!("CN=Ada Lovelace,{ou}");
    assert_eq!(dc.values(&vpn, "member"), std::slice::from_ref(&ada));

    // In CN=Users: refused for good, naming the entry and the right; nothing written.
    let rid = submit(&env, grant("t12kim", "ENTITLEMENT", "ent-vpn"));
    let jobs = settled(&env, &rid).await;
    assert_eq!(jobs[0].state.as_str(), "failed");
    assert_eq!(jobs[0].errors.len(), 1, "permanent: {:?}", jobs[0].errors);
    let said = &jobs[0].errors[0].message;
    assert!(
        said.contains(&kim) && said.contains("userAccountControl"),
        "{said}"
    );
    assert_eq!(dc.values(&vpn, "member"), [ada], "kim was not added");
    let linked = env
        .store()
        .native_id("t12kim".into(), "corp-ad".into())
        .await
        .unwrap();
    assert_eq!(linked, None, "not linked");
}
