//! The PostgreSQL store (DESIGN §12): the conformance suite every backend passes, then
//! what only several agents on one database need (fencing, SKIP LOCKED claims, the
//! append-only trigger), against a throwaway cluster of the test's own.

use provd::store::Store;
use provd::store::postgres::Settings;

use crate::pg::Pg;

pub fn settings(url: String) -> Settings {
    Settings {
        url,
        password: None,
        tls_ca_file: None,
        pool_size: 4,
    }
}

/// A fresh, empty database on `pg`, as a store.
pub async fn fresh(pg: &Pg, name: &str) -> Store {
    pg.psql("postgres", &format!("CREATE DATABASE {name}"));
    Store::postgres(&settings(format!("{}?sslmode=disable", pg.url(name))))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_passes_the_conformance_suite() {
    let pg = Pg::start();
    for (i, (name, case)) in provd::store::conformance::selected().enumerate() {
        let store = fresh(&pg, &format!("case{i}")).await;
        match tokio::spawn(case(store)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("{name}: {e}"),
            Err(e) => panic!("{name}: {e}"),
        }
    }
}

/// Two handles on one database stand for two agents.
async fn two(pg: &Pg, name: &str) -> (Store, Store) {
    let a = fresh(pg, name).await;
    let b = Store::postgres(&settings(format!("{}?sslmode=disable", pg.url(name))))
        .await
        .unwrap();
    (a, b)
}

pub async fn grant(store: &Store, who: &str, n: usize) {
    use provd::model::{RequestType, ValidItem, ValidRequest};
    let catalog: provd::config::files::CatalogFile = toml::from_str(
        r#"
        [[entitlement]]
        id = "vpn"
        source = "flat"
        attribute = "groups"
        value = "VPN"
        "#,
    )
    .unwrap();
    let catalog = provd::config::Catalog::build(
        catalog,
        &std::collections::BTreeSet::from(["flat".to_string()]),
    )
    .0;
    for i in 0..n {
        let id = format!("{who}{i}");
        let identity = provd_connector_core::Identity {
            id: id.clone(),
            attributes: Default::default(),
        };
        let c = catalog.clone();
        let ctx = provd::store::Context {
            identities: [(id.clone(), identity)].into(),
            decide: std::sync::Arc::new(move |req, snap, rid| {
                let plan = provd::plan::plan(req, &c, snap, &Default::default());
                let answer = provd::wire::accepted(rid, &plan);
                (plan, answer)
            }),
        };
        let request = ValidRequest {
            request_type: RequestType::Grant,
            requested_for: vec![id],
            items: vec![ValidItem {
                ty: provd::config::ItemType::Entitlement,
                id: "vpn".into(),
                comment: None,
                start_at: None,
                remove_at: Some(jiff::Timestamp::from_millisecond(50_000).unwrap()),
                client_metadata: Default::default(),
            }],
            client_metadata: Default::default(),
            account_ops: Vec::new(),
            repairs: Vec::new(),
        };
        store
            .accept(provd::store::roles::Accept {
                request,
                body: "{}".into(),
                requester: provd::model::Requester::other("test"),
                idempotency_key: None,
                ctx,
                now: jiff::Timestamp::from_millisecond(1_000).unwrap(),
            })
            .await
            .unwrap();
    }
}

pub fn claim(owner: &str, now: i64, until: i64, limit: usize) -> provd::store::Claim {
    provd::store::Claim {
        owner: owner.into(),
        limit,
        now,
        lease_until: until,
        ..Default::default()
    }
}

/// A stalled agent's lease is taken back by another: the stalled one's outcome, renewal
/// and release all write nothing, the new holder's count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_agent_is_fenced_by_the_lease_epoch() {
    let pg = Pg::start();
    let (a, b) = two(&pg, "fence").await;
    grant(&a, "u", 1).await;
    let stale = a
        .claim(claim("a#1", 2_000, 3_000, 10))
        .await
        .unwrap()
        .remove(0);
    assert_eq!(stale.lease_epoch, 1);
    assert_eq!(
        b.expire_leases(3_001, None, "b".into())
            .await
            .unwrap()
            .len(),
        1
    );
    let fresh = b
        .claim(claim("b#1", 3_002, 9_000, 10))
        .await
        .unwrap()
        .remove(0);
    assert_eq!((fresh.id, fresh.lease_epoch), (stale.id, 2));
    // Even the same owner name with the old epoch is refused.
    let mut same_owner = stale.clone();
    same_owner.lease_owner = Some("b#1".into());
    let late = a
        .succeed(stale.clone(), "a#1".into(), 3_003, Vec::new())
        .await;
    assert!(
        matches!(late, Err(provd::store::StoreError::LeaseLost { .. })),
        "{late:?}"
    );
    let forged = a.succeed(same_owner, "b#1".into(), 3_003, Vec::new()).await;
    assert!(
        matches!(forged, Err(provd::store::StoreError::LeaseLost { .. })),
        "{forged:?}"
    );
    assert_eq!(
        a.renew("a#1".into(), vec![(stale.id, 1)], 99_000)
            .await
            .unwrap(),
        [stale.id]
    );
    a.release(stale.clone(), "a#1".into(), 3_004).await.unwrap();
    assert!(
        b.renew("b#1".into(), vec![(fresh.id, 2)], 99_000)
            .await
            .unwrap()
            .is_empty()
    );
    b.succeed(fresh.clone(), "b#1".into(), 3_005, Vec::new())
        .await
        .unwrap();
    let j = b.job(fresh.id).await.unwrap().unwrap();
    assert_eq!(j.state.as_str(), "succeeded");
    // The trail shows one success, by the new holder.
    let events = b.events_after(0, 1000).await.unwrap();
    let ends: Vec<_> = events
        .iter()
        .filter(|e| e.kind == "job_succeeded")
        .collect();
    assert_eq!(ends.len(), 1);
}

/// Claims from two agents at once never take one job twice nor two jobs of one lane.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_claims_share_the_queue_without_overlap() {
    let pg = Pg::start();
    let (a, b) = two(&pg, "claims").await;
    grant(&a, "u", 60).await;
    // A second job in u0's lane: it must wait for the first.
    grant(&a, "u", 1).await;
    let (x, y) = tokio::join!(
        a.claim(claim("a", 2_000, 60_000, 40)),
        b.claim(claim("b", 2_000, 60_000, 40))
    );
    let (x, y) = (x.unwrap(), y.unwrap());
    let mut ids: Vec<i64> = x.iter().chain(&y).map(|j| j.id).collect();
    ids.sort();
    let n = ids.len();
    ids.dedup();
    assert_eq!(ids.len(), n, "no job claimed twice");
    assert_eq!(n, 60, "every lane head, and not u0's second job");
    assert!(!ids.contains(&61));
}

/// The leader lease: one holder at a time, taken over when it expires (a new epoch), and
/// the former leader's singleton writes refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_lease_fences_singleton_writes() {
    use provd::store::SINGLETON;
    let pg = Pg::start();
    let (a, b) = two(&pg, "leader").await;
    grant(&a, "u", 3).await;
    assert_eq!(
        a.lead(SINGLETON.into(), "A".into(), 1_000, 11_000)
            .await
            .unwrap(),
        Some(1)
    );
    assert_eq!(
        b.lead(SINGLETON.into(), "B".into(), 2_000, 12_000)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        a.lead(SINGLETON.into(), "A".into(), 5_000, 15_000)
            .await
            .unwrap(),
        Some(1),
        "renewed"
    );
    assert!(matches!(
        b.fire(60_000, 10).await,
        Err(provd::store::StoreError::NotLeader)
    ));
    // A stalls past its lease; B takes over.
    assert_eq!(
        b.lead(SINGLETON.into(), "B".into(), 15_001, 25_000)
            .await
            .unwrap(),
        Some(2)
    );
    assert!(matches!(
        a.fire(60_000, 10).await,
        Err(provd::store::StoreError::NotLeader)
    ));
    assert!(matches!(
        a.set_upstream_cursor("okta".into(), "x".into(), 1).await,
        Err(provd::store::StoreError::NotLeader)
    ));
    assert_eq!(
        b.fire(60_000, 10).await.unwrap().len(),
        3,
        "fired once, by B"
    );
    assert!(b.fire(60_000, 10).await.unwrap().is_empty());
    let leader = a.leader(SINGLETON.into()).await.unwrap().unwrap();
    assert_eq!((leader.holder.as_str(), leader.epoch), ("B", 2));
    // Resigning hands over at once.
    b.resign(SINGLETON.into(), "B".into()).await.unwrap();
    assert_eq!(
        a.lead(SINGLETON.into(), "A".into(), 16_000, 26_000)
            .await
            .unwrap(),
        Some(3)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_append_only_and_the_store_checks_out() {
    let pg = Pg::start();
    let store = fresh(&pg, "audit").await;
    grant(&store, "u", 1).await;
    for sql in [
        "UPDATE events SET kind = 'x'",
        "DELETE FROM events",
        "TRUNCATE events",
    ] {
        let out = std::process::Command::new("psql")
            .args(["-X", "-v", "ON_ERROR_STOP=1", "-d"])
            .arg(pg.url("audit"))
            .args(["-c", sql])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{sql} was allowed");
        assert!(String::from_utf8_lossy(&out.stderr).contains("append-only"));
    }
    assert_eq!(pg.psql("audit", "SELECT COUNT(*) FROM events"), "2");
    store.quick_check().await.unwrap();
    let (found, known) = store.schema_version().await.unwrap();
    assert_eq!(found, known);
    // Both backends report the same version.
    let dir = tempfile::tempdir().unwrap();
    let sqlite = Store::open(dir.path()).unwrap();
    assert_eq!(sqlite.schema_version().await.unwrap(), (found, known));
    assert!(!store.location().contains("password"));
}

/// The password never travels in the URL, comes from its own setting, and a wrong one is
/// an error that does not show it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_password_is_kept_out_of_urls_and_errors() {
    let pg = Pg::start_scram("superuser-pw");
    let err = Store::postgres(&settings(format!(
        "postgres://postgres:hunter2secret@127.0.0.1:{}/postgres?sslmode=disable",
        pg.port
    )))
    .await
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("must not hold a password") && !err.contains("hunter2secret"),
        "{err}"
    );
    pg.psql(
        "postgres",
        "CREATE ROLE provd LOGIN PASSWORD 'correct-horse'",
    );
    pg.psql("postgres", "CREATE DATABASE pw OWNER provd");
    let url = format!("postgres://provd@127.0.0.1:{}/pw?sslmode=disable", pg.port);
    let mut s = settings(url.clone());
    s.password = Some("wrong-battery".to_string().into());
    let err = Store::postgres(&s).await.unwrap_err().to_string();
    assert!(
        err.contains("password") && !err.contains("wrong-battery"),
        "{err}"
    );
    s.password = Some("correct-horse".to_string().into());
    let store = Store::postgres(&s).await.unwrap();
    store.ping().await.unwrap();
    let dbg = format!("{store:?} {s:?}");
    assert!(!dbg.contains("correct-horse"), "{dbg}");
}

/// An agent started again under its name takes back its former self's leases at once,
/// and only those.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_agent_reclaims_only_its_own_leases() {
    let pg = Pg::start();
    let (a, _) = two(&pg, "reclaim").await;
    grant(&a, "u", 2).await;
    let mine = a
        .claim(claim("host:a#old", 2_000, 999_000, 1))
        .await
        .unwrap()
        .remove(0);
    let theirs = a
        .claim(claim("host:ab#live", 2_000, 999_000, 1))
        .await
        .unwrap()
        .remove(0);
    let moved = a
        .reclaim("host:a".into(), "host:a#new".into(), 3_000)
        .await
        .unwrap();
    assert_eq!(
        moved.iter().map(|m| m.job_id).collect::<Vec<_>>(),
        [mine.id]
    );
    assert_eq!(
        a.job(theirs.id).await.unwrap().unwrap().state.as_str(),
        "running"
    );
    assert!(
        a.expire_leases(3_000, None, "a".into())
            .await
            .unwrap()
            .is_empty(),
        "nothing expired yet"
    );
}
