//! Several agents on one PostgreSQL store (DESIGN §12), as real processes: chaos (kill -9
//! at random moments, SIGSTOP past the lease), leader failover while removeDates are due.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::json;

use crate::harness::{Agent, Env, eventually, free_port, post_until_accepted, random, wait};
use crate::pg::Pg;

/// Points `env` at a new database `db` on `pg`; returns a store handle on it.
pub async fn on_postgres(env: &Env, pg: &Pg, db: &str) -> provd::store::Store {
    pg.psql("postgres", &format!("CREATE DATABASE {db}"));
    let url = format!("{}?sslmode=disable", pg.url(db));
    let path = env.config();
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str(&format!(
        "[store]\npostgres_url = \"{url}\"\npool_size = 4\n"
    ));
    std::fs::write(&path, text).unwrap();
    provd::store::Store::postgres(&crate::pg_store::settings(url))
        .await
        .unwrap()
}

/// Agent `i` of several: its own name, port, state and spool directories; short leases.
pub struct Member {
    pub name: String,
    pub port: u16,
    vars: Vec<(&'static str, String)>,
}

impl Member {
    pub fn new(i: usize, lease: &str, leader_lease: &str) -> Member {
        let name = format!("agent-{i}");
        Member {
            port: free_port(),
            vars: vec![
                ("PROVD_AGENT__NAME", name.clone()),
                ("PROVD_AGENT__STATE_DIR", format!("state-{i}")),
                ("PROVD_AGENT__SPOOL_DIR", format!("spool-{i}")),
                ("PROVD_AGENT__LEASE", lease.to_string()),
                ("PROVD_AGENT__LEADER_LEASE", leader_lease.to_string()),
            ],
            name,
        }
    }

    pub async fn start(&self, env: &Env) -> Agent {
        Agent::start_on(env, self.port, &self.vars).await
    }
}

const N: usize = 1000;
const VPN: &str = "cn=vpn,ou=groups,dc=example,dc=com";
const GIT: &str = "cn=git,ou=groups,dc=example,dc=com";

/// Identity `c{i}`: every one gets VPN (LDAP); every fifth also the CRM sales role
/// (REST); every tenth GIT until a removeDate a few seconds after it is submitted.
fn grant(i: usize) -> serde_json::Value {
    let remove_git =
        jiff::Timestamp::from_millisecond(jiff::Timestamp::now().as_millisecond() + 6_000)
            .unwrap()
            .to_string();
    let mut items = vec![json!({ "type": "ENTITLEMENT", "id": "ent-vpn" })];
    if i.is_multiple_of(5) {
        items.push(json!({ "type": "ENTITLEMENT", "id": "ent-sales" }));
    }
    if i % 10 == 1 {
        items.push(json!({ "type": "ENTITLEMENT", "id": "ent-git", "removeDate": remove_git }));
    }
    json!({ "requestedFor": [format!("c{i}")], "requestedItems": items })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_agents_survive_kills_and_stalls_applying_everything_once() {
    let slapd = crate::slapd::Slapd::start().await;
    let api =
        crate::httpservers::JsonServer::start(json!({ "users": [], "memberships": [] })).await;
    let crm = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/sources/crm.toml"),
    )
    .unwrap()
    .replace("http://127.0.0.1:3000", &api.base())
    .replace(
        "max_attempts = 8",
        "max_attempts = 30\ninitial = \"100ms\"\nmax_interval = \"500ms\"",
    )
    // A real API refuses a second user of the same name; json-server refuses only a second
    // id (500). Keyed by the username, a create that loses a race with another agent's
    // (an agent SIGSTOPped between its lookup and its POST) is answered "exists" and the
    // user is correlated, as with an API that answers 409.
    .replace(
        "body = '{\"username\": \"{id}\"",
        "body = '{\"id\": \"{id}\", \"username\": \"{id}\"",
    )
    .replace("already = [409]", "already = [409, 500]")
    // The same for a membership: an agent stalled between its lookup and its POST must
    // meet a refusal, as with an API that keeps one membership per user and role.
    .replace(
        "body = '{\"userId\": \"{native_id}\", \"role\": \"{value}\"}'",
        "body = '{\"id\": \"{native_id}-{value}\", \"userId\": \"{native_id}\", \"role\": \"{value}\"}'\nalready = [409, 500]",
    );
    assert_eq!(crm.matches("already = [409, 500]").count(), 2, "{crm}");
    let env = crate::ldap::ldap_env(
        &slapd.url(),
        "[retry]\nmax_attempts = 30\ninitial = \"100ms\"\nmax_interval = \"500ms\"\n",
        &[("crm.toml", crm)],
    );
    let catalog = env.path().join("catalog.toml");
    let mut text = std::fs::read_to_string(&catalog).unwrap();
    text.push_str("\n[[entitlement]]\nid = \"ent-sales\"\nsource = \"crm\"\nattribute = \"roles\"\nvalue = \"sales\"\n");
    std::fs::write(&catalog, text).unwrap();
    let mut ids = String::from("id,firstName,lastName,email\n");
    for i in 0..N {
        ids.push_str(&format!("c{i},C{i},L{i},c{i}@example.com\n"));
    }
    std::fs::write(env.path().join("identities.csv"), ids).unwrap();
    let pg = Pg::start();
    let store = on_postgres(&env, &pg, "chaos").await;

    let members: Vec<Member> = (0..3).map(|i| Member::new(i, "3s", "2s")).collect();
    let mut agents = Vec::new();
    for m in &members {
        agents.push(Some(m.start(&env).await));
    }

    // The client: one request per identity to any agent, retried (same key) until a 202.
    let ports: Vec<u16> = members.iter().map(|m| m.port).collect();
    let token = env.token().to_string();
    let submitter = tokio::spawn(async move {
        let http = crate::harness::client();
        let mut accepted = BTreeSet::new();
        let bases: Vec<String> = ports
            .iter()
            .map(|p| format!("http://127.0.0.1:{p}"))
            .collect();
        for i in 0..N {
            let body = grant(i).to_string();
            // Each request starts at another agent: they all take requests.
            let mut order = bases.clone();
            order.rotate_left(i % bases.len());
            let key = format!("chaos-c{i}");
            accepted.insert(post_until_accepted(&http, &order, &token, &key, &body).await);
        }
        accepted
    });

    // Chaos while requests arrive and jobs run: kill -9 a random agent and restart it;
    // once, SIGSTOP another past its lease and SIGCONT it after.
    let (mut kills, mut stalled) = (0, false);
    while !submitter.is_finished() || kills < 4 {
        tokio::time::sleep(Duration::from_millis(random(300, 900))).await;
        let k = random(0, 3) as usize;
        if !stalled && kills == 2 {
            let s = (k + 1) % 3;
            if let Some(a) = &agents[s] {
                a.signal("STOP");
                tokio::time::sleep(Duration::from_secs(5)).await;
                a.signal("CONT");
                stalled = true;
            }
        }
        if let Some(mut a) = agents[k].take() {
            assert_eq!(a.signal_and_wait("KILL", 10).await.code(), None);
        }
        kills += 1;
        agents[k] = Some(members[k].start(&env).await);
    }
    let accepted = submitter.await.unwrap();
    assert_eq!(
        accepted.len(),
        N,
        "one request per identity, retries deduplicated by the key"
    );

    // Every accepted request applied: all jobs succeeded, the GIT removals included.
    let s = store.clone();
    let jobs = eventually(
        120,
        "every job, grants and fired removals, to succeed",
        || {
            let jobs = wait(s.jobs(Default::default())).unwrap();
            async move {
                let revokes = jobs.iter().filter(|j| j.kind == "revoke").count();
                (revokes == N / 10 && jobs.iter().all(|j| j.state.as_str() == "succeeded"))
                    .then_some(jobs)
            }
        },
    )
    .await;
    let requests: BTreeSet<String> = jobs
        .iter()
        .filter(|j| j.kind != "revoke")
        .map(|j| j.request_id.clone())
        .collect();
    assert_eq!(
        requests, accepted,
        "no accepted request lost, none invented"
    );

    // Each entry and membership exactly once.
    let entries = slapd
        .search("ou=people,dc=example,dc=com", "(uid=c*)")
        .await;
    let uids: BTreeSet<String> = entries.iter().map(|e| e.attrs["uid"][0].clone()).collect();
    assert_eq!((entries.len(), uids.len()), (N, N), "no duplicate entries");
    assert_eq!(
        slapd.values(VPN, "member").await.len(),
        N + 1,
        "every identity a VPN member once (+ the seed)"
    );
    let git: Vec<String> = slapd.values(GIT, "member").await;
    assert!(
        git.iter().all(|m| !m.contains("uid=c")),
        "every GIT grant removed at its removeDate: {git:?}"
    );
    let users = api.get("/users").await;
    let names: Vec<&str> = users
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["username"].as_str().unwrap())
        .collect();
    let unique: BTreeSet<&&str> = names.iter().collect();
    assert_eq!(
        (names.len(), unique.len()),
        (N / 5, N / 5),
        "one CRM user each"
    );
    let memberships = api.get("/memberships").await;
    let pairs: Vec<(String, String)> = memberships
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["userId"].to_string(), m["role"].to_string()))
        .collect();
    let unique: BTreeSet<&(String, String)> = pairs.iter().collect();
    assert_eq!(
        (pairs.len(), unique.len()),
        (N / 5, N / 5),
        "one CRM membership each"
    );

    // No recorded outcome overwritten by a stale agent: one end per job in the trail, by
    // the epoch that held it; every removal fired once.
    let events = wait(store.events_after(0, usize::MAX >> 1)).unwrap();
    let mut ends: BTreeMap<i64, usize> = BTreeMap::new();
    for e in events.iter().filter(|e| e.kind == "job_succeeded") {
        *ends.entry(e.job_id.unwrap()).or_default() += 1;
    }
    assert!(ends.values().all(|n| *n == 1), "a job ended twice");
    assert_eq!(ends.len(), jobs.len());
    let mut fired: BTreeMap<i64, usize> = BTreeMap::new();
    for e in events.iter().filter(|e| e.kind == "removals_fired") {
        for r in e.data["removals"].as_array().unwrap() {
            *fired.entry(r["assignment"].as_i64().unwrap()).or_default() += 1;
        }
    }
    assert_eq!(fired.len(), N / 10);
    assert!(fired.values().all(|n| *n == 1), "a removeDate fired twice");
    let taken_back = jobs
        .iter()
        .filter(|j| j.errors.iter().any(|e| e.class == "lease"))
        .count();
    let writers: BTreeSet<String> = events.iter().filter_map(|e| e.writer.clone()).collect();
    eprintln!(
        "chaos: 3 agents, {kills} kill -9, 1 SIGSTOP past the lease; {taken_back} jobs taken back; {} jobs and {} removals applied once, by {} processes",
        jobs.len(),
        fired.len(),
        writers.len()
    );
    drop(agents);
}

/// The leader dies (kill -9) just before removeDates come due: another agent takes the
/// lease over and fires them, once each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_killed_before_removals_are_due_another_fires_them() {
    let env = Env::new();
    let pg = Pg::start();
    let store = on_postgres(&env, &pg, "failover").await;
    let members: Vec<Member> = (0..2).map(|i| Member::new(i, "10s", "2s")).collect();
    let first = members[0].start(&env).await;
    let second = members[1].start(&env).await;
    let leader = eventually(10, "a leader", || {
        let s = store.clone();
        async move { wait(s.leader(provd::store::SINGLETON.into())).unwrap() }
    })
    .await;
    let (mut leading, other) = if leader.holder == members[0].name {
        (first, second)
    } else {
        (second, first)
    };
    let due_ms = jiff::Timestamp::now().as_millisecond() + 4_000;
    let due = jiff::Timestamp::from_millisecond(due_ms)
        .unwrap()
        .to_string();
    let mut rids = Vec::new();
    for who in ["ada", "grace", "mallory"] {
        let body = json!({ "requestedFor": [who], "requestedItems": [{ "type": "ENTITLEMENT", "id": "ent-hq", "removeDate": due }] });
        let r = other.post("/access-requests/v1", &body.to_string()).await;
        assert_eq!(r.status(), 202);
        let v: serde_json::Value = r.json().await.unwrap();
        rids.push(
            v["newRequests"][0]["accessRequestIds"][0]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(leading.signal_and_wait("KILL", 10).await.code(), None);
    let fired = eventually(20, "the removals fired by the surviving agent", || {
        let s = store.clone();
        async move {
            let events = wait(s.events_after(0, 100_000)).unwrap();
            let fired: Vec<(i64, i64)> = events
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
            (fired.len() >= 3).then_some(fired)
        }
    })
    .await;
    let assignments: BTreeSet<i64> = fired.iter().map(|(a, _)| *a).collect();
    assert_eq!(
        (fired.len(), assignments.len()),
        (3, 3),
        "each fired once: {fired:?}"
    );
    let now_leader = wait(store.leader(provd::store::SINGLETON.into()))
        .unwrap()
        .unwrap();
    assert_ne!(now_leader.holder, leader.holder);
    assert!(now_leader.epoch > leader.epoch);
    let lag = fired.iter().map(|(_, l)| *l).max().unwrap();
    eprintln!(
        "failover: leader killed 1.5 s before the due time; removals fired {lag} ms late by {}",
        now_leader.holder
    );
    // The readiness answer names the new leader and counts the agents alive.
    let ready: serde_json::Value = other.get("/readyz").await.json().await.unwrap();
    assert_eq!(ready["leader"], now_leader.holder.as_str());
    // The killed agent leaves the count once its heartbeat expires (issue 31 #9).
    eventually(20, "the dead agent no longer counted", || {
        let other = &other;
        async move {
            let ready: serde_json::Value = other.get("/readyz").await.json().await.ok()?;
            (ready["agents"].as_u64() == Some(1)).then_some(())
        }
    })
    .await;
    let metrics = other.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains(&format!(
            "provd_agent_leader{{agent=\"{}\"}} 1",
            now_leader.holder
        )),
        "{metrics}"
    );
    assert!(metrics.contains("provd_lease_lost_total 0"), "{metrics}");
    drop(other);
}

/// The database restarts under a running agent: it reports itself not ready meanwhile,
/// takes requests again when the database is back, and dispatches them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_rides_out_a_database_restart() {
    let env = Env::new();
    let pg = Pg::start();
    on_postgres(&env, &pg, "restart").await;
    let agent = env.start().await;
    let body = |who: &str| {
        json!({ "requestedFor": [who], "requestedItems": [{ "type": "ENTITLEMENT", "id": "ent-hq" }] }).to_string()
    };
    let tasks_for = |who: &'static str| {
        let agent = &agent;
        async move {
            eventually(15, &format!("{who}'s tasks"), || async {
                let t: Vec<serde_json::Value> = agent.get("/tasks/v1").await.json().await.ok()?;
                t.iter().any(|t| t["identity_id"] == who).then_some(())
            })
            .await
        }
    };
    assert_eq!(
        agent
            .post("/access-requests/v1", &body("ada"))
            .await
            .status(),
        202
    );
    tasks_for("ada").await;
    pg.stop();
    eventually(15, "/readyz to report the store down", || async {
        (agent.get("/readyz").await.status() == 503).then_some(())
    })
    .await;
    let refused = agent
        .post("/access-requests/v1", &body("grace"))
        .await
        .status();
    assert!(refused.is_server_error(), "{refused}");
    pg.restart();
    eventually(15, "/readyz to be ready again", || async {
        (agent.get("/readyz").await.status() == 200).then_some(())
    })
    .await;
    assert_eq!(
        agent
            .post("/access-requests/v1", &body("grace"))
            .await
            .status(),
        202
    );
    // Dispatched after the restart.
    tasks_for("grace").await;
    // The log is at debug level here; the database client's statements (with request
    // bodies and identities as parameters) stay out of it.
    let log = agent.log_text();
    assert!(
        !log.contains("tokio_postgres") && !log.contains("executing statement"),
        "{log}"
    );
}
