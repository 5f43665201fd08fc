//! Crash safety: `kill -9` at random moments while a few hundred grants flow to a real
//! slapd; after restarts, every accepted request is provisioned exactly once in effect —
//! one entry per identity, one membership each, every job succeeded.

use crate::harness::wait;
use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::json;

use crate::harness::{Agent, eventually, post_until_accepted, random};
use crate::ldap::ldap_env;
use crate::slapd::Slapd;

const N: usize = 200;
const VPN: &str = "cn=vpn,ou=groups,dc=example,dc=com";

#[tokio::test]
async fn kill_9_at_random_moments_loses_nothing_and_applies_nothing_twice() {
    let slapd = Slapd::start().await;
    let env = ldap_env(
        &slapd.url(),
        "[retry]\ninitial = \"100ms\"\nmax_interval = \"500ms\"\n",
        &[],
    );
    let mut ids = String::from("id,firstName,lastName,email\n");
    for i in 0..N {
        ids.push_str(&format!("c{i},C{i},L{i},c{i}@example.com\n"));
    }
    std::fs::write(env.path().join("identities.csv"), ids).unwrap();

    let mut agent = Agent::start(&env).await;
    let http = crate::harness::client();
    let base = agent.base.clone();
    let token = env.token().to_string();
    // The clients: one grant per identity, retried (same Idempotency-Key) until a 202;
    // four at once, so that the agent is killed during group commits of several requests.
    let submitter = tokio::spawn(async move {
        let mut clients = tokio::task::JoinSet::new();
        for c in 0..4 {
            let (http, base, token) = (http.clone(), base.clone(), token.clone());
            clients.spawn(async move {
                let mut accepted = BTreeSet::new();
                for i in (c..N).step_by(4) {
                    let body = json!({ "requestedFor": [format!("c{i}")], "requestedItems": [{ "type": "ENTITLEMENT", "id": "ent-vpn" }] });
                    let key = format!("crash-c{i}");
                    let id = post_until_accepted(&http, std::slice::from_ref(&base), &token, &key, &body.to_string()).await;
                    accepted.insert(id);
                }
                accepted
            });
        }
        let mut accepted = BTreeSet::new();
        while let Some(part) = clients.join_next().await {
            accepted.extend(part.unwrap());
        }
        accepted
    });

    // Kill the agent at random moments while requests arrive and jobs run.
    let mut kills = 0;
    while !submitter.is_finished() || kills < 3 {
        tokio::time::sleep(Duration::from_millis(random(150, 600))).await;
        let status = agent.signal_and_wait("KILL", 10).await;
        assert_eq!(status.code(), None);
        kills += 1;
        agent = Agent::start(&env).await;
    }
    let accepted = submitter.await.unwrap();
    assert_eq!(
        accepted.len(),
        N,
        "one request per identity, retries deduplicated by the key"
    );

    // Every accepted request is on disk and ends with all its jobs succeeded.
    let store = env.store();
    let jobs = eventually(60, "every job to succeed", || {
        let jobs = wait(store.jobs(Default::default())).unwrap();
        async move {
            (jobs.len() >= N && jobs.iter().all(|j| j.state.as_str() == "succeeded"))
                .then_some(jobs)
        }
    })
    .await;
    let requests: BTreeSet<String> = jobs.iter().map(|j| j.request_id.clone()).collect();
    assert_eq!(
        requests, accepted,
        "no accepted request lost, none invented"
    );
    assert_eq!(jobs.len(), N, "one job per grant");

    // The directory holds exactly one entry and one membership per identity.
    let entries = slapd
        .search("ou=people,dc=example,dc=com", "(uid=c*)")
        .await;
    let uids: BTreeSet<String> = entries.iter().map(|e| e.attrs["uid"][0].clone()).collect();
    assert_eq!(entries.len(), N, "no duplicate accounts");
    assert_eq!(uids.len(), N);
    let members = slapd.values(VPN, "member").await;
    assert_eq!(
        members.len(),
        N + 1,
        "every identity a member once (+ the seed member)"
    );
    let retried = jobs
        .iter()
        .filter(|j| j.errors.iter().any(|e| e.class == "lease"))
        .count();
    eprintln!(
        "crash test: {kills} kill -9, {retried} jobs taken back from a dead agent, all {N} provisioned once"
    );
    drop(agent);
}
