use super::*;

const VPN: &str = r#"{"id":"vpn","source":"corp","attribute":"groups","value":"cn=vpn"}"#;
const ENG: &str = r#"{"id":"eng","source":"saas","attribute":"groups","value":"engineers"}"#;

fn grant(id: i64, ty: &str, item: &str, state: &str, values: &[&str]) -> Grant {
    Grant {
        assignment: id,
        identity: "ada".into(),
        item_type: ty.into(),
        item_id: item.into(),
        state: state.parse().unwrap(),
        request_id: format!("r{id}"),
        requester: "ci-bot".into(),
        created_at: 10 * id,
        active_at: (state == "active").then_some(10 * id + 5),
        remove_at: None,
        entitlements: format!("[{}]", values.join(",")),
        accounts: Some(r#"{"corp":"uid=ada,ou=people"}"#.into()),
        jobs: None,
        revoke_jobs: None,
        disabled: Some(r#"{"corp":1}"#.into()),
        done: None,
        after_failed_revoke: None,
    }
}

fn on<'a>(held: &'a [Held], source: &str) -> &'a Held {
    held.iter().find(|h| h.source == source).unwrap()
}

fn via(h: &Held) -> Vec<String> {
    h.via.iter().map(ToString::to_string).collect()
}

/// Issue 33, finding 4: a value wanted by a role and by a direct grant is one holding,
/// and says both.
#[test]
fn one_holding_per_value_with_every_item_that_wants_it() {
    let held = derive(&[
        grant(1, "ROLE", "staff", "active", &[VPN, ENG]),
        grant(2, "ENTITLEMENT", "vpn", "active", &[VPN]),
    ]);
    assert_eq!(held.len(), 2);
    let vpn = on(&held, "corp");
    assert_eq!(via(vpn), ["ENTITLEMENT:vpn", "ROLE:staff"]);
    assert_eq!(
        (vpn.state, vpn.since, vpn.request_id.as_str()),
        ("active", 15, "r1")
    );
    assert_eq!(
        (vpn.item_type.as_str(), vpn.item_id.as_str()),
        ("ENTITLEMENT", "vpn")
    );
    assert_eq!(vpn.account.as_deref(), Some("uid=ada,ou=people"));
    assert_eq!(vpn.account_state, Some("disabled"));
    let eng = on(&held, "saas");
    assert_eq!(via(eng), ["ROLE:staff"]);
    assert_eq!((eng.account.as_deref(), eng.account_state), (None, None));
}

/// Issue 33, finding 5: a role whose LDAP half failed and whose SCIM half succeeded is
/// failed on one source and held on the other.
#[test]
fn a_half_failed_grant_is_failed_where_it_failed_and_held_where_it_did_not() {
    let mut g = grant(1, "ROLE", "staff", "failed", &[VPN, ENG]);
    g.jobs = Some(r#"{"corp":"failed","saas":"succeeded"}"#.into());
    let held = derive(&[g.clone()]);
    assert_eq!(on(&held, "corp").state, "failed");
    assert_eq!(on(&held, "saas").state, "active");
    // Another grant that holds the value makes it held, failed or not.
    let held = derive(&[g, grant(2, "ENTITLEMENT", "vpn", "active", &[VPN])]);
    assert_eq!(on(&held, "corp").state, "active");
    assert_eq!(via(on(&held, "corp")), ["ENTITLEMENT:vpn", "ROLE:staff"]);
}

#[test]
fn a_value_is_removed_only_once_nothing_wants_it() {
    let mut role = grant(1, "ROLE", "staff", "revoking", &[VPN, ENG]);
    let vpn = grant(2, "ENTITLEMENT", "vpn", "active", &[VPN]);
    let held = derive(&[role.clone(), vpn]);
    let corp = on(&held, "corp");
    assert_eq!(
        (corp.state, via(corp)),
        ("active", vec!["ENTITLEMENT:vpn".to_string()])
    );
    assert_eq!(on(&held, "saas").state, "removing");
    assert_eq!(via(on(&held, "saas")), ["ROLE:staff"]);
    role.revoke_jobs = Some(r#"{"saas":"succeeded"}"#.into());
    assert_eq!(on(&derive(&[role]), "saas").state, "gone");
}

#[test]
fn removal_is_scheduled_only_when_every_grant_that_wants_it_ends() {
    let mut a = grant(1, "ROLE", "staff", "active", &[VPN]);
    let mut b = grant(2, "ENTITLEMENT", "vpn", "pending", &[VPN]);
    a.remove_at = Some(100);
    let held = derive(&[a.clone(), b.clone()]);
    assert_eq!((held[0].state, held[0].until), ("active", None));
    b.remove_at = Some(200);
    let held = derive(&[a, b]);
    assert_eq!(
        (held[0].state, held[0].until),
        ("removal_scheduled", Some(200))
    );
}

#[test]
fn a_value_under_way_is_pending_and_a_value_nothing_holds_since_its_first_request() {
    let held = derive(&[
        grant(2, "ROLE", "staff", "pending", &[VPN]),
        grant(3, "ENTITLEMENT", "vpn", "failed", &[VPN]),
    ]);
    assert_eq!((held[0].state, held[0].since), ("pending", 20));
    let held = derive(&[grant(3, "ENTITLEMENT", "vpn", "failed", &[VPN])]);
    assert_eq!(held[0].state, "failed");
}

#[test]
fn an_item_with_nothing_to_provision_is_one_holding_on_no_source() {
    let held = derive(&[grant(1, "ROLE", "empty", "active", &[])]);
    assert_eq!(held.len(), 1);
    assert_eq!(
        (
            held[0].source.as_str(),
            held[0].item_type.as_str(),
            held[0].item_id.as_str()
        ),
        ("-", "ROLE", "empty")
    );
    assert_eq!(held[0].account, None);
}

/// Issue 33, finding 4: "who has X" finds the same people whether X is the role, its
/// access profile or the entitlement.
#[test]
fn asking_by_a_role_a_profile_or_an_entitlement_finds_the_same_holdings() {
    let file: crate::config::files::CatalogFile = toml::from_str(
        r#"
        [[entitlement]]
        id = "vpn"
        source = "corp"
        attribute = "groups"
        value = "cn=vpn"
        [[entitlement]]
        id = "eng"
        source = "saas"
        attribute = "groups"
        value = "engineers"
        [[access_profile]]
        id = "ap-remote"
        entitlements = ["vpn"]
        [[role]]
        id = "staff"
        access_profiles = ["ap-remote"]
        entitlements = ["eng"]
        "#,
    )
    .unwrap();
    let sources = BTreeSet::from(["corp".to_string(), "saas".to_string()]);
    let (catalog, problems) = Catalog::build(file, &sources);
    assert!(problems.is_empty(), "{problems:?}");
    let held = derive(&[grant(1, "ROLE", "staff", "active", &[VPN, ENG])]);
    let who = |item: &str| -> Vec<&str> {
        held.iter()
            .filter(|h| gives(h, item, &catalog))
            .map(|h| h.item_id.as_str())
            .collect()
    };
    assert_eq!(who("staff"), ["vpn", "eng"]);
    assert_eq!(who("ap-remote"), ["vpn"], "the profile's part of the role");
    assert_eq!(who("vpn"), ["vpn"]);
    assert_eq!(who("eng"), ["eng"]);
    assert!(who("nothing").is_empty());
}

#[test]
fn a_grant_state_on_each_source_follows_its_jobs_there() {
    let mut g = grant(1, "ROLE", "staff", "pending", &[VPN]);
    g.remove_at = Some(5);
    assert_eq!(grant_state(&g, "corp"), "pending");
    let mut g = grant(1, "ROLE", "staff", "active", &[VPN]);
    g.remove_at = Some(5);
    assert_eq!(grant_state(&g, "corp"), "removal_scheduled");
    let mut revoking = grant(1, "ROLE", "staff", "revoking", &[VPN]);
    assert_eq!(grant_state(&revoking, "corp"), "removing");
    // Two revokes, the first canceled: the later one's job counts.
    revoking.revoke_jobs = Some(r#"{"corp":"canceled","corp":"succeeded"}"#.into());
    assert_eq!(grant_state(&revoking, "corp"), "gone");
    assert_eq!(grant_state(&revoking, "saas"), "removing");
}

/// PostgreSQL simulation seed 157: a role's removal of a value failed on a source after
/// a later grant asked for the value again there; that grant was revoked in turn and the
/// value went. The role's failed removal is moot, and the value is gone, not `removing`.
#[test]
fn a_failed_removal_of_a_value_granted_again_is_no_longer_removing() {
    let mut role = grant(1, "ROLE", "staff", "revoking", &[VPN, ENG]);
    role.revoke_jobs = Some(r#"{"corp":"failed","saas":"succeeded"}"#.into());
    let held = derive(std::slice::from_ref(&role));
    assert_eq!(on(&held, "corp").state, "removing", "nothing came after it");
    // A later job of the lane changed something else: still removing.
    role.after_failed_revoke = Some(
        r#"{"corp":[[{"op":"ADD_ENTITLEMENT","attribute":"groups","value":"cn=wiki"}]]}"#.into(),
    );
    assert_eq!(
        on(&derive(std::slice::from_ref(&role)), "corp").state,
        "removing"
    );
    // One added the value again: that grant's now, and this removal is moot.
    role.after_failed_revoke = Some(
        r#"{"corp":[[{"op":"ADD_ENTITLEMENT","attribute":"groups","value":"cn=vpn"}],[{"op":"REMOVE_ENTITLEMENT","attribute":"groups","value":"cn=vpn"}]]}"#
            .into(),
    );
    assert_eq!(
        on(&derive(std::slice::from_ref(&role)), "corp").state,
        "gone"
    );
    let direct = grant(2, "ENTITLEMENT", "vpn", "active", &[VPN]);
    let held = derive(&[role, direct]);
    assert_eq!(on(&held, "corp").state, "active");
    assert_eq!(via(on(&held, "corp")), ["ENTITLEMENT:vpn"]);
}

/// The seen side (DESIGN §21): the latest job that gave the value, unless an evidence
/// snapshot showed it later; a value nothing has given yet is not seen.
#[test]
fn a_holding_is_seen_by_the_latest_job_that_gave_it_or_a_later_snapshot() {
    let mut role = grant(1, "ROLE", "staff", "active", &[VPN, ENG]);
    role.done = Some(r#"{"corp":[7,1000],"saas":[8,1100]}"#.into());
    let mut direct = grant(2, "ENTITLEMENT", "vpn", "active", &[VPN]);
    direct.done = Some(r#"{"corp":[9,2000]}"#.into());
    let pending = grant(
        3,
        "ENTITLEMENT",
        "eng2",
        "pending",
        &[ENG.replace("engineers", "x").as_str()],
    );
    let mut held = derive(&[role, direct, pending]);
    let seen = |h: &Held| h.seen.as_ref().map(|s| (s.at, s.by.clone()));
    assert_eq!(seen(on(&held, "corp")), Some((2000, "job 9".into())));
    let x = held.iter().find(|h| h.value == "x").unwrap();
    assert_eq!(seen(x), None, "pending: not seen yet");
    let corp = held.iter_mut().find(|h| h.source == "corp").unwrap();
    corp.see("import", 4, 1500);
    assert_eq!(seen(corp), Some((2000, "job 9".into())), "an older export");
    corp.see("readback", 5, 3000);
    assert_eq!(seen(corp), Some((3000, "read-back #5".into())));
}
