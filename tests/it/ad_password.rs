//! Issue 34, item 4, on the Samba DC: a rehire got the old account with its old password,
//! and an operator had no way to give a person a new one. `provd accounts reset-password`
//! and a rehire (`on_rehire = "reset"`, the default) now set, deliver and require the
//! change of a new password, which is nowhere provd writes.

use crate::ad::{delivered, delivering, set_state, with_lifecycle};
use crate::flow::{grant, settled, submit};
use crate::harness::eventually;
use crate::samba::Dc;

const ADA: &str = "t10ada,Ada,Lovelace,ada@example.com";

#[tokio::test]
async fn reset_password_and_a_rehire_deliver_new_passwords() {
    let dc = Dc::get();
    let ou = dc.ou("T10Staff");
    let vpn = dc.group("t10vpn", &ou);
    let (env, dir) = delivering(dc, &ou, &vpn, &format!("{ADA}\n"));
    with_lifecycle(&env);
    let delivered = || delivered(&dir, "t10ada");
    let store = env.store();
    // Every job ended and `n` passwords delivered.
    let quiet = |n: usize, what: &'static str| {
        let store = store.clone();
        async move {
            eventually(90, what, || {
                let store = store.clone();
                async move {
                    let jobs = store.jobs(Default::default()).await.ok()?;
                    let done = jobs.iter().all(|j| j.state.is_final());
                    (done && delivered().len() >= n).then_some(jobs)
                }
            })
            .await
        }
    };
    let agent = env.start().await;
    set_state(&env, ADA, "active");
    let rid = submit(&env, grant("t10ada", "ENTITLEMENT", "ent-vpn"));
    let jobs = settled(&env, &rid).await;
    assert_eq!(jobs[0].state.as_str(), "succeeded", "{:?}", jobs[0].errors);
    let ada = format!("CN=Ada Lovelace,{ou}");
    let first = delivered()[0].clone();

    // Refused, naming what is wrong, with nothing queued.
    let out = env.cli(&[
        "accounts",
        "reset-password",
        "--source",
        "corp-ad",
        "t10nobody",
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("t10nobody"),
        "{out:?}"
    );
    let out = env.cli(&["accounts", "reset-password", "--source", "nope", "t10ada"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("nope"),
        "{out:?}"
    );
    assert_eq!(store.jobs(Default::default()).await.unwrap().len(), 1);

    // The operator's reset: a new password, delivered, to be changed; the old one is void.
    let out = env.cli(&[
        "accounts",
        "reset-password",
        "--source",
        "corp-ad",
        "t10ada",
    ]);
    assert!(out.status.success(), "{out:?}");
    let jobs = quiet(2, "the reset").await;
    let reset = jobs.iter().max_by_key(|j| j.id).unwrap();
    assert_eq!(
        (reset.state.as_str(), format!("{:?}", reset.ops)),
        ("succeeded", "[ResetPassword]".to_string()),
        "{:?}",
        reset.errors
    );
    let second = delivered()[1].clone();
    assert_ne!(second, first);
    let e = dc.bind(&ada, &second).unwrap_err();
    assert!(
        e.contains("data 773"),
        "the new one works, to be changed: {e}"
    );
    let e = dc.bind(&ada, &first).unwrap_err();
    assert!(e.contains("data 52e"), "the old one is void: {e}");

    // Leaver, then rehire: the enable comes after a third password.
    set_state(&env, ADA, "leaver");
    quiet(2, "the leaver").await;
    let bits: u32 = dc.values(&ada, "userAccountControl")[0].parse().unwrap();
    assert_eq!(bits & 0x2, 0x2, "disabled: {bits:#x}");
    set_state(&env, ADA, "active");
    let jobs = quiet(3, "the rehire").await;
    let rehire = jobs.iter().max_by_key(|j| j.id).unwrap();
    assert_eq!(
        (rehire.state.as_str(), format!("{:?}", rehire.ops)),
        ("succeeded", "[ResetPassword, EnableAccount]".to_string()),
        "{:?}",
        rehire.errors
    );
    let third = delivered()[2].clone();
    assert!(third != first && third != second);
    let bits: u32 = dc.values(&ada, "userAccountControl")[0].parse().unwrap();
    assert_eq!(bits & 0x2, 0, "enabled: {bits:#x}");
    let e = dc.bind(&ada, &third).unwrap_err();
    assert!(e.contains("data 773"), "{e}");
    assert_eq!(dc.values(&vpn, "member").len(), 1, "access kept");

    // None of the three is anywhere provd writes.
    let state = env.path().join("state");
    let mut bytes = std::fs::read(state.join("provd.db")).unwrap();
    bytes.extend(std::fs::read(state.join("provd.db-wal")).unwrap_or_default());
    let log = agent.log_text();
    for p in [&first, &second, &third] {
        assert!(
            !bytes.windows(p.len()).any(|w| w == p.as_bytes()),
            "in the store"
        );
        assert!(!log.contains(p.as_str()), "in the log");
    }
}
