//! removeDate and startDate against a real slapd (and a manual source): removals fire
//! within a second of their due time, dates can be moved, a stopped agent catches up.
//! Due times are a few seconds ahead in real time: the agent is a separate process.

use crate::harness::wait;
use serde_json::{Value, json};

use crate::flow::{all_succeeded, settled, submit};
use crate::harness::{Env, eventually};
use crate::ldap::ldap_env;
use crate::slapd::Slapd;

const VPN: &str = "cn=vpn,ou=groups,dc=example,dc=com";
const GIT: &str = "cn=git,ou=groups,dc=example,dc=com";
const ADA: &str = "uid=ada,ou=people,dc=example,dc=com";

fn in_ms(ms: i64) -> (String, i64) {
    let at = jiff::Timestamp::now().as_millisecond() + ms;
    (
        jiff::Timestamp::from_millisecond(at).unwrap().to_string(),
        at,
    )
}

fn grant_until(who: &str, ent: &str, remove: &str) -> Value {
    json!({ "requestedFor": [who], "requestedItems": [{ "type": "ENTITLEMENT", "id": ent, "removeDate": remove }] })
}

/// The fired removals: (assignment, lag in ms), from the store's own record.
/// (assignment, lag in ms) of every fired removal, from the `removals_fired` events.
fn fired(env: &Env) -> Vec<(i64, i64)> {
    let mut out: Vec<(i64, i64)> = env
        .events()
        .iter()
        .filter(|e| e.kind == "removals_fired")
        .flat_map(|e| e.data["removals"].as_array().cloned().unwrap_or_default())
        .map(|r| {
            (
                r["assignment"].as_i64().unwrap(),
                r["lagMs"].as_i64().unwrap(),
            )
        })
        .collect();
    out.sort();
    out
}

async fn member_until(slapd: &Slapd, group: &str, present: bool, secs: u64) {
    eventually(
        secs,
        &format!("membership in {group} to be {present}"),
        || async move {
            (slapd
                .values(group, "member")
                .await
                .contains(&ADA.to_string())
                == present)
                .then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn a_grant_is_removed_within_a_second_of_its_remove_date() {
    let slapd = Slapd::start().await;
    let env = ldap_env(&slapd.url(), "", &[]);
    let agent = env.start().await;
    let (due, _) = in_ms(3_000);
    let r: Value = agent
        .post(
            "/access-requests/v1",
            &grant_until("ada", "ent-vpn", &due).to_string(),
        )
        .await
        .json()
        .await
        .unwrap();
    let rid = r["newRequests"][0]["accessRequestIds"][0]
        .as_str()
        .unwrap()
        .to_string();
    all_succeeded(&settled(&env, &rid).await);
    assert!(slapd.values(VPN, "member").await.contains(&ADA.to_string()));
    let status: Value = agent
        .get("/access-request-status/v1?requested-for=ada")
        .await
        .json()
        .await
        .unwrap();
    assert!(
        status[0]["removeDate"].as_str().is_some(),
        "status shows the removeDate: {status}"
    );

    member_until(&slapd, VPN, false, 10).await;
    let f = fired(&env);
    assert_eq!(f.len(), 1, "fired exactly once");
    assert!(f[0].1 < 1_000, "fired {} ms after its due time", f[0].1);
    let log = agent.log_text();
    assert!(
        log.contains("removeDate scheduled") && log.contains("removal fired"),
        "{log}"
    );
    let metrics = agent
        .http
        .get(format!("{}/metrics", agent.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("provd_schedule_fire_lag_seconds_count 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_remove_date_can_be_shortened_and_extended() {
    let slapd = Slapd::start().await;
    let env = ldap_env(&slapd.url(), "", &[]);
    let agent = env.start().await;
    // vpn: an hour, then shortened to 2 s by granting it again.
    let (later, _) = in_ms(3_600_000);
    all_succeeded(&settled(&env, &submit(&env, grant_until("ada", "ent-vpn", &later))).await);
    // git: 2 s, then extended to an hour before it comes.
    let (soon, soon_ms) = in_ms(2_500);
    all_succeeded(&settled(&env, &submit(&env, grant_until("ada", "ent-git", &soon))).await);
    let body = grant_until("ada", "ent-git", &later).to_string();
    let r: Value = agent
        .post("/access-requests/v1", &body)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        r["existingRequests"].as_array().unwrap().len(),
        1,
        "a duplicate grant moves the date"
    );
    let (short, _) = in_ms(2_000);
    agent
        .post(
            "/access-requests/v1",
            &grant_until("ada", "ent-vpn", &short).to_string(),
        )
        .await;

    member_until(&slapd, VPN, false, 10).await;
    assert!(fired(&env).iter().all(|(_, lag)| *lag < 1_000));
    // Past git's original date, and it is still there.
    eventually(10, "git's original removeDate to pass", || async move {
        (jiff::Timestamp::now().as_millisecond() > soon_ms + 1_000).then_some(())
    })
    .await;
    assert!(
        slapd.values(GIT, "member").await.contains(&ADA.to_string()),
        "extended: not removed"
    );
    assert_eq!(fired(&env).len(), 1, "only vpn fired");
    let status: Value = agent
        .get("/access-request-status/v1?requested-for=ada")
        .await
        .json()
        .await
        .unwrap();
    let git = status
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "ent-git")
        .unwrap();
    assert_eq!(
        git["removeDate"].as_str().unwrap()[..19],
        later[..19],
        "{git}"
    );
}

#[tokio::test]
async fn a_start_date_grant_appears_only_at_its_time() {
    let slapd = Slapd::start().await;
    let env = ldap_env(&slapd.url(), "", &[]);
    let _agent = env.start().await;
    let (start, start_ms) = in_ms(2_500);
    let body = json!({ "requestedFor": ["ada"], "requestedItems": [{ "type": "ENTITLEMENT", "id": "ent-git", "startDate": start }] });
    let rid = submit(&env, body);
    let job = wait(env.store().jobs(Default::default()))
        .unwrap()
        .remove(0);
    assert_eq!(job.state.as_str(), "queued");
    assert!(
        !slapd.values(GIT, "member").await.contains(&ADA.to_string()),
        "not before its startDate"
    );
    all_succeeded(&settled(&env, &rid).await);
    assert!(slapd.values(GIT, "member").await.contains(&ADA.to_string()));
    let ran: i64 = env
        .events()
        .iter()
        .filter(|e| e.kind == "job_running")
        .map(|e| e.at)
        .min()
        .unwrap();
    assert!(
        ran >= start_ms,
        "claimed {} ms before its startDate",
        start_ms - ran
    );
}

#[tokio::test]
async fn an_agent_stopped_across_the_due_time_removes_the_access_when_it_starts_again() {
    let slapd = Slapd::start().await;
    let env = ldap_env(&slapd.url(), "", &[]);
    let mut agent = env.start().await;
    let (due, due_ms) = in_ms(2_000);
    all_succeeded(&settled(&env, &submit(&env, grant_until("ada", "ent-vpn", &due))).await);
    assert_eq!(agent.signal_and_wait("TERM", 15).await.code(), Some(0));
    eventually(
        10,
        "the due time to pass while the agent is down",
        || async move { (jiff::Timestamp::now().as_millisecond() > due_ms + 1_500).then_some(()) },
    )
    .await;
    assert!(
        slapd.values(VPN, "member").await.contains(&ADA.to_string()),
        "nobody removed it while down"
    );
    let _again = env.start().await;
    member_until(&slapd, VPN, false, 10).await;
    let f = fired(&env);
    assert_eq!(f.len(), 1);
    assert!(
        f[0].1 >= 1_500,
        "fired at start-up, late by the downtime: {} ms",
        f[0].1
    );
}

#[tokio::test]
async fn a_manual_source_gets_a_removal_task_or_a_disable_task_for_the_last_entitlement() {
    let env = Env::new();
    let badges = env.path().join("sources/badges.toml");
    let text =
        std::fs::read_to_string(&badges).unwrap() + "on_last_removal = \"disable_account\"\n";
    std::fs::write(&badges, text).unwrap();
    let _agent = env.start().await;
    let (due, _) = in_ms(2_500);
    let body = json!({ "requestedFor": ["ada"], "requestedItems": [
        { "type": "ENTITLEMENT", "id": "ent-view", "removeDate": due },
        { "type": "ENTITLEMENT", "id": "ent-hq", "removeDate": due }] });
    let rid = submit(&env, body);
    let store = env.store();
    // The owners do the grant tasks.
    let tasks = eventually(10, "grant tasks", || {
        let t = wait(store.tasks(provd::store::tasks::TaskFilter {
            open_only: true,
            ..Default::default()
        }))
        .unwrap();
        async move { (t.len() == 4).then_some(t) }
    })
    .await;
    for t in &tasks {
        let id: i64 = t.id;
        // Through `wait`, like every store call here: a PostgreSQL pool's connections
        // belong to the runtime that opened them, and this one blocks in `wait` later.
        wait(store.resolve_task(
            id,
            "DONE".into(),
            "owner@example.com".into(),
            String::new(),
            jiff::Timestamp::now().as_millisecond(),
        ))
        .unwrap();
    }
    all_succeeded(&settled(&env, &rid).await);
    let removal = eventually(10, "removal tasks after the removeDate", || {
        let t = wait(store.tasks(provd::store::tasks::TaskFilter {
            open_only: true,
            ..Default::default()
        }))
        .unwrap();
        async move { (t.len() == 2).then_some(t) }
    })
    .await;
    let by_source = |s: &str| removal.iter().find(|t| t.source == s).unwrap().clone();
    assert_eq!(by_source("flat").operation, "REMOVE_ENTITLEMENT");
    assert_eq!(by_source("flat").value, "VIEW");
    assert_eq!(
        by_source("badges").operation,
        "DISABLE_ACCOUNT",
        "HQ was ada's last badge entitlement"
    );
    assert!(fired(&env).iter().all(|(_, lag)| *lag < 1_000));
}
