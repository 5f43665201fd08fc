//! Issue 34, item 6, on the Samba DC: `sAMAccountName` derived from names. With
//! `{unique(lower(ascii(firstName)).lower(ascii(lastName)), 20)}` and correlation by an
//! attribute that names one person (`employeeID = "{id}"`), two Ada Lovelaces get two
//! accounts (`ada.lovelace`, `ada.lovelace2`), Jürgen Groß gets `jurgen.gross`, and a
//! second grant finds each person's own account, never a namesake's.

use std::collections::BTreeSet;

use crate::flow::{all_succeeded, custom_env, grant, settled, submit};
use crate::harness::Env;
use crate::samba::{ADMIN_DN, ADMIN_PASSWORD, BASE, DC_NAME, Dc};

/// The name-based source of docs/connectors.md, under `ou`.
fn named_env(dc: &Dc, ou: &str, groups: &[(&str, &str)], people: &str) -> Env {
    let source = format!(
        r#"id = "corp-ad"
type = "ldap"
owner = "ad-team@example.com"
directory = "ad"
url = "{url}"
tls_ca_file = "{ca}"
tls_server_name = "{DC_NAME}"
bind_dn = "{ADMIN_DN}"
bind_password_file = "../ad-password"
[account]
native_id = "CN={{firstName}} {{lastName}},{ou}"
correlation = "employeeID"
search_base = "{BASE}"
object_classes = ["user"]
[account.attributes]
employeeID = "{{id}}"
sAMAccountName = "{{unique(lower(ascii(firstName)).lower(ascii(lastName)), 20)}}"
userPrincipalName = "{{id}}@example.test"
givenName = "{{firstName}}"
sn = "{{lastName}}"
"#,
        url = dc.url(),
        ca = dc.ca.display(),
    );
    let catalog: String = groups
        .iter()
        .map(|(id, dn)| {
            format!(
                "[[entitlement]]\nid = \"{id}\"\nsource = \"corp-ad\"\nattribute = \"groups\"\nvalue = \"{dn}\"\n"
            )
        })
        .collect();
    let env = custom_env(&[("corp-ad.toml", source)], &catalog);
    std::fs::write(
        env.path().join("ad-password"),
        format!("{ADMIN_PASSWORD}\n"),
    )
    .unwrap();
    std::fs::write(
        env.path().join("identities.csv"),
        format!("id,firstName,lastName,email\n{people}"),
    )
    .unwrap();
    env
}

#[tokio::test]
async fn name_based_account_names_give_namesakes_two_accounts() {
    let dc = Dc::get();
    let ou = dc.ou("T8Staff");
    let (vpn, wiki) = (dc.group("t8vpn", &ou), dc.group("t8wiki", &ou));
    let env = named_env(
        dc,
        &ou,
        &[("ent-vpn", &vpn), ("ent-wiki", &wiki)],
        "t8a,Ada,Lovelace,a@example.com\nt8b,Ada,Lovelace,b@example.com\nt8c,Jürgen,Groß,c@example.com\n",
    );
    let check = env.cli(&["check", "--connect"]);
    assert!(check.status.success(), "{check:?}");
    let _agent = env.start().await;
    for who in ["t8a", "t8b", "t8c"] {
        let rid = submit(&env, grant(who, "ENTITLEMENT", "ent-vpn"));
        all_succeeded(&settled(&env, &rid).await);
    }
    // (dn, sAMAccountName); a DN with non-ASCII letters comes base64-encoded and reads
    // empty here, which is fine: only the two Adas' DNs are compared.
    let sam_of = |id: &str| {
        let rows = dc
            .search(
                BASE,
                "sub",
                &format!("(employeeID={id})"),
                &["sAMAccountName"],
            )
            .unwrap();
        let sams: Vec<_> = rows
            .into_iter()
            .filter(|(_, k, _)| k.eq_ignore_ascii_case("sAMAccountName"))
            .collect();
        assert_eq!(sams.len(), 1, "{id}: {sams:?}");
        (sams[0].0.clone(), sams[0].2.clone())
    };
    let (a, b, c) = (sam_of("t8a"), sam_of("t8b"), sam_of("t8c"));
    assert_eq!(
        [a.1.as_str(), b.1.as_str(), c.1.as_str()],
        ["ada.lovelace", "ada.lovelace2", "jurgen.gross"]
    );
    assert_ne!(a.0, b.0, "two entries");
    // The second Ada's next grant goes to her own account, found by employeeID.
    let rid = submit(&env, grant("t8b", "ENTITLEMENT", "ent-wiki"));
    all_succeeded(&settled(&env, &rid).await);
    let members: BTreeSet<String> = dc
        .values(&wiki, "member")
        .into_iter()
        .map(|m| m.to_lowercase())
        .collect();
    assert_eq!(members, BTreeSet::from([b.0.to_lowercase()]));
    let accounts = dc
        .search(&ou, "sub", "(objectClass=user)", &["sAMAccountName"])
        .unwrap()
        .into_iter()
        .filter(|(_, k, _)| k.eq_ignore_ascii_case("sAMAccountName"))
        .count();
    assert_eq!(accounts, 3, "no account twice");
}
