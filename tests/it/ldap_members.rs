//! Member changes of one group arriving together are written in batches (one modify of
//! many values); whatever the batching, each change gets its own exact answer.

use futures_util::future::join_all;
use provd_connector_core::{Connector, Entitlement, Outcome};

use crate::ldap::{GIT, connector, person};
use crate::slapd::Slapd;

fn dn(i: usize) -> String {
    format!("uid=m{i},ou=people,dc=example,dc=com")
}

#[tokio::test]
async fn concurrent_member_changes_of_one_group_each_get_their_own_answer() {
    let slapd = Slapd::start().await;
    let (_d, c) = connector(&slapd, "").await;
    let git = Entitlement {
        attribute: "groups".into(),
        value: GIT.into(),
    };
    let who: Vec<_> = (0..12).map(|i| person(&format!("m{i}"))).collect();
    let dns: Vec<String> = (0..12).map(dn).collect();
    for w in &who {
        assert!(matches!(
            c.create_account(w).await.unwrap(),
            Outcome::Created { .. }
        ));
    }
    // m5 is a member already. The changes below pass an LDAP search first (is the account
    // still there?), then the first to arrive goes out alone and the others queue behind
    // it and go as one batch; a batch holding m5 is refused whole (20) and written again
    // one by one, where m5's change is "already so".
    assert_eq!(
        c.add_entitlement(&who[5], Some(&dns[5]), &git)
            .await
            .unwrap(),
        Outcome::Applied
    );
    let adds = join_all((0..12).map(|i| c.add_entitlement(&who[i], Some(&dns[i]), &git))).await;
    let adds: Vec<Outcome> = adds.into_iter().map(|r| r.unwrap()).collect();
    for (i, o) in adds.iter().enumerate() {
        let want = if i == 5 {
            Outcome::Unchanged
        } else {
            Outcome::Applied
        };
        assert_eq!(*o, want, "m{i}: {adds:?}");
    }
    let mut members = slapd.values(GIT, "member").await;
    members.sort();
    let mut want: Vec<String> = dns.clone();
    want.push("cn=admin,dc=example,dc=com".into());
    want.sort();
    assert_eq!(members, want);

    // Removals together: m11 is gone already (by hand), the rest go in batches.
    assert_eq!(
        c.remove_entitlement(&who[11], Some(&dns[11]), &git)
            .await
            .unwrap(),
        Outcome::Applied
    );
    let removes =
        join_all((0..12).map(|i| c.remove_entitlement(&who[i], Some(&dns[i]), &git))).await;
    let removes: Vec<Outcome> = removes.into_iter().map(|r| r.unwrap()).collect();
    assert_eq!(removes[11], Outcome::Unchanged, "{removes:?}");
    assert!(
        removes[..11].iter().all(|o| *o == Outcome::Applied),
        "{removes:?}"
    );
    assert_eq!(
        slapd.values(GIT, "member").await,
        ["cn=admin,dc=example,dc=com"]
    );

    // One member per modify, when a directory wants it so: the same answers.
    let (_d2, one) = connector(&slapd, "[groups]\nmembers_per_modify = 1\n").await;
    let adds = join_all((0..4).map(|i| one.add_entitlement(&who[i], Some(&dns[i]), &git))).await;
    assert!(
        adds.iter().all(|o| matches!(o, Ok(Outcome::Applied))),
        "{adds:?}"
    );
    assert_eq!(slapd.values(GIT, "member").await.len(), 5);
}

#[tokio::test]
async fn a_batch_to_a_missing_group_fails_each_change_with_the_servers_answer() {
    let slapd = Slapd::start().await;
    let (_d, c) = connector(&slapd, "").await;
    let nowhere = Entitlement {
        attribute: "groups".into(),
        value: "cn=nowhere,ou=groups,dc=example,dc=com".into(),
    };
    let who: Vec<_> = (0..6).map(|i| person(&format!("m{i}"))).collect();
    let dns: Vec<String> = (0..6).map(dn).collect();
    for w in &who {
        c.create_account(w).await.unwrap();
    }
    let all = join_all((0..6).map(|i| c.add_entitlement(&who[i], Some(&dns[i]), &nowhere))).await;
    for r in all {
        let e = r.expect_err("no such group");
        assert_eq!(e.code.as_deref(), Some("32"), "{e:?}");
    }
}

/// Issue 34, item 5, on slapd without the refint overlay: an account moved to another OU
/// (its `[account] ou` renders differently) is named by its new DN in its groups; provd
/// rewrites them, as AD does by itself.
#[tokio::test]
async fn a_moved_account_keeps_its_groups_on_openldap() {
    let slapd = Slapd::start().await;
    for ou in ["sales", "eng"] {
        slapd.ldapadd(&format!(
            "dn: ou={ou},dc=example,dc=com\nobjectClass: organizationalUnit\nou: {ou}\n"
        ));
    }
    let (_d, c) = crate::ldap::connector_with(&slapd, "", |t| {
        t.replace(
            "[account]\n",
            "[account]\nou = \"ou={department},dc=example,dc=com\"\n",
        )
    })
    .await;
    let mut grace = person("grace");
    grace.attributes.insert("department".into(), "sales".into());
    let git = Entitlement {
        attribute: "groups".into(),
        value: GIT.into(),
    };
    let at_sales = "uid=grace,ou=sales,dc=example,dc=com".to_string();
    assert_eq!(
        c.create_account(&grace).await.unwrap(),
        Outcome::Created {
            native_id: at_sales.clone()
        }
    );
    c.add_entitlement(&grace, Some(&at_sales), &git)
        .await
        .unwrap();
    grace.attributes.insert("department".into(), "eng".into());
    let moved: std::collections::BTreeMap<String, String> =
        [("dn".to_string(), "uid=grace;ou=eng".to_string())].into();
    let at_eng = "uid=grace,ou=eng,dc=example,dc=com".to_string();
    let want = Outcome::Moved {
        native_id: at_eng.clone(),
    };
    assert_eq!(
        c.update_account(&grace, Some(&at_sales), &moved)
            .await
            .unwrap(),
        want
    );
    // Sent again (a retried attempt whose answer was lost): the entry is there already.
    assert_eq!(
        c.update_account(&grace, Some(&at_sales), &moved)
            .await
            .unwrap(),
        want
    );
    let members = slapd.values(GIT, "member").await;
    assert!(members.contains(&at_eng), "{members:?}");
    assert!(!members.contains(&at_sales), "{members:?}");
    // The link holds: the removal finds the account where it went.
    assert_eq!(
        c.remove_entitlement(&grace, Some(&at_eng), &git)
            .await
            .unwrap(),
        Outcome::Applied
    );
}
