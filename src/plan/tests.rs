use std::collections::{BTreeMap, BTreeSet};

use provd_connector_core::{Entitlement, Operation};

use super::*;
use crate::config::files::CatalogFile;
use crate::model::{RequestType, ValidItem, ValidRequest};

fn catalog() -> Catalog {
    let f: CatalogFile = toml::from_str(
        r#"
        [[entitlement]]
        id = "vpn"
        source = "ldap"
        attribute = "groups"
        value = "cn=vpn"
        [[entitlement]]
        id = "git"
        source = "ldap"
        attribute = "groups"
        value = "cn=git"
        [[entitlement]]
        id = "wiki"
        source = "flat"
        attribute = "groups"
        value = "editors"
        [[access_profile]]
        id = "ap-eng"
        entitlements = ["vpn", "git"]
        [[access_profile]]
        id = "ap-remote"
        entitlements = ["vpn"]
        [[role]]
        id = "eng"
        access_profiles = ["ap-eng"]
        entitlements = ["wiki"]
        "#,
    )
    .unwrap();
    let sources: BTreeSet<String> = ["ldap", "flat"].into_iter().map(String::from).collect();
    Catalog::build(f, &sources).0
}

fn item(ty: ItemType, id: &str) -> ValidItem {
    ValidItem {
        ty,
        id: id.into(),
        comment: Some("c".into()),
        start_at: None,
        remove_at: None,
        client_metadata: BTreeMap::new(),
    }
}

fn req(kind: RequestType, who: &[&str], items: Vec<ValidItem>) -> ValidRequest {
    ValidRequest {
        request_type: kind,
        requested_for: who.iter().map(|s| s.to_string()).collect(),
        items,
        client_metadata: BTreeMap::new(),
        account_ops: Vec::new(),
        repairs: Vec::new(),
    }
}

fn add(v: &str) -> Operation {
    Operation::AddEntitlement(Entitlement {
        attribute: "groups".into(),
        value: v.into(),
    })
}

fn remove(v: &str) -> Operation {
    Operation::RemoveEntitlement(Entitlement {
        attribute: "groups".into(),
        value: v.into(),
    })
}

fn live(
    id: i64,
    ty: ItemType,
    item: &str,
    state: AssignmentState,
    cat: &Catalog,
) -> LiveAssignment {
    LiveAssignment {
        id,
        identity: "u1".into(),
        ty,
        item_id: item.into(),
        state,
        request_id: format!("req{id}"),
        entitlements: granted(cat, ty, item),
    }
}

#[test]
fn a_role_expands_to_one_job_per_source_with_account_creation_first() {
    let cat = catalog();
    let p = plan(
        &req(
            RequestType::Grant,
            &["u1"],
            vec![item(ItemType::Role, "eng")],
        ),
        &cat,
        &Snapshot::default(),
        &SourceRules::default(),
    );
    assert_eq!(p.jobs.len(), 2);
    let flat = p.jobs.iter().find(|j| j.source == "flat").unwrap();
    assert_eq!(flat.ops, [Operation::CreateAccount, add("editors")]);
    let ldap = p.jobs.iter().find(|j| j.source == "ldap").unwrap();
    assert_eq!(
        ldap.ops,
        [Operation::CreateAccount, add("cn=git"), add("cn=vpn")]
    );
    assert_eq!(p.items[0].effect, Effect::Grant { supersedes: None });
    assert_eq!(p.items[0].jobs.len(), 2);
}

#[test]
fn two_identities_get_their_own_jobs() {
    let cat = catalog();
    let p = plan(
        &req(
            RequestType::Grant,
            &["u1", "u2"],
            vec![item(ItemType::Entitlement, "vpn")],
        ),
        &cat,
        &Snapshot::default(),
        &SourceRules::default(),
    );
    assert_eq!(p.jobs.len(), 2);
    assert_eq!(p.items.len(), 2);
    assert_ne!(p.jobs[0].identity, p.jobs[1].identity);
}

#[test]
fn an_existing_account_is_not_created_again() {
    let cat = catalog();
    let mut snap = Snapshot::default();
    snap.accounts.insert(("u1".into(), "ldap".into()));
    let p = plan(
        &req(
            RequestType::Grant,
            &["u1"],
            vec![item(ItemType::Entitlement, "vpn")],
        ),
        &cat,
        &snap,
        &SourceRules::default(),
    );
    assert_eq!(p.jobs[0].ops, [add("cn=vpn")]);
}

#[test]
fn items_sharing_an_entitlement_in_one_request_add_it_once() {
    let cat = catalog();
    let p = plan(
        &req(
            RequestType::Grant,
            &["u1"],
            vec![
                item(ItemType::AccessProfile, "ap-eng"),
                item(ItemType::AccessProfile, "ap-remote"),
            ],
        ),
        &cat,
        &Snapshot::default(),
        &SourceRules::default(),
    );
    assert_eq!(p.jobs.len(), 1);
    assert_eq!(
        p.jobs[0].ops,
        [Operation::CreateAccount, add("cn=git"), add("cn=vpn")]
    );
    assert_eq!(
        p.items[1].jobs,
        [0],
        "the second item is carried by the same job"
    );
}

#[test]
fn a_held_or_pending_item_is_a_duplicate_and_moves_its_remove_date() {
    let cat = catalog();
    for state in [AssignmentState::Active, AssignmentState::Pending] {
        let snap = Snapshot {
            assignments: vec![live(7, ItemType::Role, "eng", state, &cat)],
            accounts: BTreeSet::new(),
        };
        let mut it = item(ItemType::Role, "eng");
        it.remove_at = Some("2031-01-01T00:00:00Z".parse().unwrap());
        let p = plan(
            &req(RequestType::Grant, &["u1"], vec![it.clone()]),
            &cat,
            &snap,
            &SourceRules::default(),
        );
        assert!(p.jobs.is_empty(), "{state:?}");
        assert_eq!(p.items[0].existing, Some((7, "req7".to_string())));
        assert_eq!(
            p.items[0].effect,
            Effect::SetRemoveDate {
                assignment: 7,
                remove_at: it.remove_at
            }
        );
    }
}

#[test]
fn entitlements_already_active_through_another_item_get_no_operation() {
    let cat = catalog();
    let snap = Snapshot {
        assignments: vec![live(
            1,
            ItemType::AccessProfile,
            "ap-remote",
            AssignmentState::Active,
            &cat,
        )],
        accounts: [("u1".to_string(), "ldap".to_string())]
            .into_iter()
            .collect(),
    };
    let p = plan(
        &req(
            RequestType::Grant,
            &["u1"],
            vec![item(ItemType::AccessProfile, "ap-eng")],
        ),
        &cat,
        &snap,
        &SourceRules::default(),
    );
    assert_eq!(
        p.jobs[0].ops,
        [add("cn=git")],
        "vpn is already provisioned by ap-remote"
    );
    assert_eq!(
        p.items[0].entitlements.len(),
        2,
        "the assignment still records both"
    );
}

#[test]
fn a_revoke_keeps_what_another_assignment_still_grants() {
    let cat = catalog();
    let snap = Snapshot {
        assignments: vec![
            live(
                1,
                ItemType::AccessProfile,
                "ap-eng",
                AssignmentState::Active,
                &cat,
            ),
            live(
                2,
                ItemType::AccessProfile,
                "ap-remote",
                AssignmentState::Active,
                &cat,
            ),
        ],
        accounts: BTreeSet::new(),
    };
    let p = plan(
        &req(
            RequestType::Revoke,
            &["u1"],
            vec![item(ItemType::AccessProfile, "ap-eng")],
        ),
        &cat,
        &snap,
        &SourceRules::default(),
    );
    assert_eq!(p.jobs.len(), 1);
    assert_eq!(
        p.jobs[0].ops,
        [remove("cn=git")],
        "cn=vpn stays: ap-remote grants it"
    );
    assert_eq!(p.jobs[0].kind, JobKind::Revoke);
    assert_eq!(
        p.items[0].effect,
        Effect::Revoke {
            assignment: Some(1)
        }
    );
}

#[test]
fn revoking_both_holders_in_one_request_removes_the_shared_value() {
    let cat = catalog();
    let snap = Snapshot {
        assignments: vec![
            live(
                1,
                ItemType::AccessProfile,
                "ap-eng",
                AssignmentState::Active,
                &cat,
            ),
            live(
                2,
                ItemType::AccessProfile,
                "ap-remote",
                AssignmentState::Active,
                &cat,
            ),
        ],
        accounts: BTreeSet::new(),
    };
    let p = plan(
        &req(
            RequestType::Revoke,
            &["u1"],
            vec![
                item(ItemType::AccessProfile, "ap-eng"),
                item(ItemType::AccessProfile, "ap-remote"),
            ],
        ),
        &cat,
        &snap,
        &SourceRules::default(),
    );
    assert_eq!(p.jobs[0].ops, [remove("cn=git"), remove("cn=vpn")]);
}

#[test]
fn a_revoke_with_remove_date_schedules_instead() {
    let cat = catalog();
    let snap = Snapshot {
        assignments: vec![live(
            1,
            ItemType::Role,
            "eng",
            AssignmentState::Active,
            &cat,
        )],
        accounts: BTreeSet::new(),
    };
    let mut it = item(ItemType::Role, "eng");
    let at: jiff::Timestamp = "2031-01-01T00:00:00Z".parse().unwrap();
    it.remove_at = Some(at);
    let p = plan(
        &req(RequestType::Revoke, &["u1"], vec![it.clone()]),
        &cat,
        &snap,
        &SourceRules::default(),
    );
    assert!(p.jobs.is_empty());
    assert_eq!(
        p.items[0].effect,
        Effect::ScheduleRemoval {
            assignment: 1,
            remove_at: at
        }
    );
    let p = plan(
        &req(RequestType::Revoke, &["u1"], vec![it]),
        &cat,
        &Snapshot::default(),
        &SourceRules::default(),
    );
    assert_eq!(
        p.items[0].effect,
        Effect::Nothing,
        "nothing held: nothing to schedule"
    );
}

#[test]
fn a_revoke_of_an_item_not_held_still_cleans_up_its_values() {
    let cat = catalog();
    let p = plan(
        &req(
            RequestType::Revoke,
            &["u1"],
            vec![item(ItemType::Entitlement, "wiki")],
        ),
        &cat,
        &Snapshot::default(),
        &SourceRules::default(),
    );
    assert_eq!(p.jobs[0].ops, [remove("editors")]);
    assert_eq!(p.items[0].effect, Effect::Revoke { assignment: None });
}

#[test]
fn a_start_date_holds_the_job_and_splits_it_from_immediate_grants() {
    let cat = catalog();
    let mut later = item(ItemType::Entitlement, "git");
    later.start_at = Some("2031-01-01T00:00:00Z".parse().unwrap());
    let p = plan(
        &req(
            RequestType::Grant,
            &["u1"],
            vec![item(ItemType::Entitlement, "vpn"), later.clone()],
        ),
        &cat,
        &Snapshot::default(),
        &SourceRules::default(),
    );
    assert_eq!(p.jobs.len(), 2);
    assert_eq!(p.jobs[0].not_before, None);
    assert_eq!(p.jobs[0].ops, [Operation::CreateAccount, add("cn=vpn")]);
    assert_eq!(p.jobs[1].not_before, later.start_at);
    assert_eq!(
        p.jobs[1].ops,
        [add("cn=git")],
        "the account is created by the earlier job of the lane"
    );
}

#[test]
fn removing_the_last_entitlement_on_a_disable_on_last_source_disables_the_account() {
    let cat = catalog();
    let flat = BTreeSet::from(["flat".to_string(), "ldap".to_string()]);
    let snap = Snapshot {
        assignments: vec![
            live(1, ItemType::Role, "eng", AssignmentState::Active, &cat),
            live(
                2,
                ItemType::AccessProfile,
                "ap-remote",
                AssignmentState::Active,
                &cat,
            ),
        ],
        accounts: BTreeSet::new(),
    };
    let p = plan(
        &req(
            RequestType::Revoke,
            &["u1"],
            vec![item(ItemType::Role, "eng")],
        ),
        &cat,
        &snap,
        &SourceRules {
            disable_on_last: flat.clone(),
            ..Default::default()
        },
    );
    let on = |s: &str| p.jobs.iter().find(|j| j.source == s).unwrap().ops.clone();
    assert_eq!(
        on("flat"),
        [Operation::DisableAccount],
        "wiki was the last entitlement on flat"
    );
    assert_eq!(
        on("ldap"),
        [remove("cn=git")],
        "ap-remote keeps vpn on ldap: only git goes"
    );
}

#[test]
fn revoking_what_was_never_held_disables_nothing() {
    let cat = catalog();
    let flat = BTreeSet::from(["flat".to_string(), "ldap".to_string()]);
    // Holds nothing at all.
    let p = plan(
        &req(
            RequestType::Revoke,
            &["u1"],
            vec![item(ItemType::Role, "eng")],
        ),
        &cat,
        &Snapshot::default(),
        &SourceRules {
            disable_on_last: flat.clone(),
            ..Default::default()
        },
    );
    assert!(!p.jobs.is_empty());
    for j in &p.jobs {
        assert!(
            !j.ops.contains(&Operation::DisableAccount),
            "{} on {}: {:?}",
            j.identity,
            j.source,
            j.ops
        );
    }
    // Holds something elsewhere, not on flat: the revoke on flat disables nothing either.
    let snap = Snapshot {
        assignments: vec![live(
            2,
            ItemType::AccessProfile,
            "ap-remote",
            AssignmentState::Active,
            &cat,
        )],
        accounts: BTreeSet::new(),
    };
    let p = plan(
        &req(
            RequestType::Revoke,
            &["u1"],
            vec![item(ItemType::Role, "eng")],
        ),
        &cat,
        &snap,
        &SourceRules {
            disable_on_last: flat.clone(),
            ..Default::default()
        },
    );
    let flat_job = p.jobs.iter().find(|j| j.source == "flat").unwrap();
    assert!(
        !flat_job.ops.contains(&Operation::DisableAccount),
        "{:?}",
        flat_job.ops
    );
}

#[test]
fn account_operations_go_where_the_identity_has_an_account_after_its_removals() {
    let cat = catalog();
    let snap = Snapshot {
        assignments: vec![live(
            1,
            ItemType::AccessProfile,
            "ap-eng",
            AssignmentState::Active,
            &cat,
        )],
        accounts: [("u1".to_string(), "ldap".to_string())].into(),
    };
    let mut r = req(
        RequestType::Revoke,
        &["u1"],
        vec![item(ItemType::AccessProfile, "ap-eng")],
    );
    r.account_ops = vec![
        ("ldap".into(), Operation::DisableAccount),
        ("flat".into(), Operation::DisableAccount),
    ];
    let p = plan(&r, &cat, &snap, &SourceRules::default());
    assert_eq!(
        p.jobs.len(),
        1,
        "no account on flat: nothing to disable there"
    );
    assert_eq!(
        p.jobs[0].ops,
        [
            remove("cn=git"),
            remove("cn=vpn"),
            Operation::DisableAccount
        ]
    );
    // Alone (no items): a job of its own; twice: once.
    let mut r = req(RequestType::Grant, &["u1"], Vec::new());
    r.account_ops = vec![
        ("ldap".into(), Operation::EnableAccount),
        ("ldap".into(), Operation::EnableAccount),
    ];
    let p = plan(&r, &cat, &snap, &SourceRules::default());
    assert_eq!(p.jobs.len(), 1);
    assert_eq!(
        (p.jobs[0].kind, p.jobs[0].ops.clone()),
        (JobKind::Grant, vec![Operation::EnableAccount])
    );
    // A rehire on a source that resets passwords (DESIGN §24): a new one first, once.
    let resets = SourceRules {
        reset_on_rehire: ["ldap".to_string()].into(),
        ..Default::default()
    };
    let p = plan(&r, &cat, &snap, &resets);
    assert_eq!(
        p.jobs[0].ops,
        [Operation::ResetPassword, Operation::EnableAccount]
    );
}

/// Issue 33 (simulation seed 24): a role that failed on one source but succeeded on
/// another holds what it gave there; the snapshot gives only those values.
fn failed_role_held_on_ldap(cat: &Catalog) -> Snapshot {
    let mut role = live(1, ItemType::Role, "eng", AssignmentState::Failed, cat);
    role.entitlements.retain(|g| g.source == "ldap");
    Snapshot {
        assignments: vec![
            role,
            live(
                2,
                ItemType::Entitlement,
                "vpn",
                AssignmentState::Active,
                cat,
            ),
        ],
        accounts: BTreeSet::new(),
    }
}

#[test]
fn a_failed_grant_keeps_what_it_provisioned_when_another_item_is_revoked() {
    let cat = catalog();
    let snap = failed_role_held_on_ldap(&cat);
    let revoke = |ty, id| {
        plan(
            &req(RequestType::Revoke, &["u1"], vec![item(ty, id)]),
            &cat,
            &snap,
            &SourceRules::default(),
        )
    };
    let p = revoke(ItemType::Entitlement, "vpn");
    assert!(
        p.jobs.is_empty(),
        "the role's ldap half holds cn=vpn: {p:?}"
    );
    assert_eq!(
        p.items[0].effect,
        Effect::Revoke {
            assignment: Some(2)
        }
    );

    // Revoking the failed role takes what it gave (not cn=vpn, which the entitlement
    // still wants; nothing on `flat`, where it gave nothing) and ends it.
    let p = revoke(ItemType::Role, "eng");
    assert_eq!(
        p.items[0].effect,
        Effect::Revoke {
            assignment: Some(1)
        }
    );
    assert_eq!(p.jobs.len(), 1, "{p:?}");
    assert_eq!(
        (p.jobs[0].source.as_str(), &p.jobs[0].ops[..]),
        ("ldap", &[remove("cn=git")][..])
    );
}

#[test]
fn a_new_grant_of_a_failed_item_supersedes_it_and_adds_only_what_it_missed() {
    let cat = catalog();
    let snap = Snapshot {
        accounts: [
            ("u1".to_string(), "ldap".to_string()),
            ("u1".into(), "flat".into()),
        ]
        .into(),
        ..failed_role_held_on_ldap(&cat)
    };
    let p = plan(
        &req(
            RequestType::Grant,
            &["u1"],
            vec![item(ItemType::Role, "eng")],
        ),
        &cat,
        &snap,
        &SourceRules::default(),
    );
    assert_eq!(
        p.items[0].effect,
        Effect::Grant {
            supersedes: Some(1)
        }
    );
    assert_eq!(p.items[0].existing, None, "a failed grant is no duplicate");
    assert_eq!(p.jobs.len(), 1, "{p:?}");
    assert_eq!(
        (p.jobs[0].source.as_str(), &p.jobs[0].ops[..]),
        ("flat", &[add("editors")][..])
    );
}
