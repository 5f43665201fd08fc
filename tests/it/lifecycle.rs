//! The daemon's life: SIGTERM, a killed agent's job taken back, one agent per state
//! directory, cancel.

use crate::harness::wait;
use serde_json::{Value, json};

use crate::harness::{Env, eventually};
use crate::httpservers::sailpoint_sdk_reads;

#[tokio::test]
async fn sigterm_stops_the_agent_with_exit_0() {
    let env = Env::new();
    let mut agent = env.start().await;
    let status = agent.signal_and_wait("TERM", 15).await;
    assert_eq!(status.code(), Some(0));
    let log = agent.log_text();
    assert!(log.contains("\"stopped\""), "{log}");
    for line in log.lines() {
        let v: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            v["timestamp"].is_string() && v["level"].is_string(),
            "{line}"
        );
    }
}

#[tokio::test]
async fn a_job_leased_by_a_killed_agent_is_taken_back_after_restart_with_its_history() {
    let env = Env::new();
    let mut agent = env.start().await;
    let status = agent.signal_and_wait("KILL", 10).await;
    assert_eq!(status.code(), None, "killed by a signal");

    let body = json!({ "requestedFor": ["ada"], "requestedItems": [{ "type": "ENTITLEMENT", "id": "ent-view" }] });
    assert!(
        env.cli_with(&["submit", "-"], Some(body.to_string().as_bytes()))
            .status
            .success()
    );
    // The killed agent had claimed the job, with a lease that is far from expiring.
    let store = env.store();
    let now = jiff::Timestamp::now().as_millisecond();
    let claimed = wait(store.claim(provd::store::Claim {
        owner: "killed-agent".into(),
        limit: 10,
        now,
        lease_until: now + 3_600_000,
        ..Default::default()
    }))
    .unwrap();
    assert_eq!(claimed.len(), 1);
    let id = claimed[0].id;

    let again = env.start().await;
    let job = eventually(10, "the job to be taken back and run", || {
        let j = wait(store.job(id)).unwrap().unwrap();
        async move { (j.state.as_str() == "manual").then_some(j) }
    })
    .await;
    assert_eq!(job.attempt, 2, "the killed agent's attempt is kept");
    assert_eq!(job.errors.len(), 1);
    assert_eq!(job.errors[0].class, "lease");
    assert!(job.errors[0].message.contains("killed-agent"));
    assert!(again.log_text().contains("taken back"));
}

#[tokio::test]
async fn a_second_agent_on_the_same_state_directory_is_refused() {
    let env = Env::new();
    let _agent = env.start().await;
    let out = std::process::Command::new(crate::harness::BIN)
        .args(["run", "--config"])
        .arg(env.config())
        .env(
            "PROVD_API__LISTEN",
            format!("127.0.0.1:{}", crate::harness::free_port()),
        )
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already running"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn cancel_stops_what_has_not_been_applied() {
    let env = Env::new();
    let agent = env.start().await;
    let body = json!({ "requestedFor": ["grace"], "requestedItems": [
        { "type": "ACCESS_PROFILE", "id": "ap-basic", "startDate": "2099-01-01T00:00:00Z" }] });
    let v: Value = agent
        .post("/access-requests/v1", &body.to_string())
        .await
        .json()
        .await
        .unwrap();
    let rid = v["newRequests"][0]["accessRequestIds"][0]
        .as_str()
        .unwrap()
        .to_string();
    let jobs = wait(env.store().jobs(Default::default())).unwrap();
    assert!(
        jobs.iter()
            .all(|j| j.state.as_str() == "queued" && j.next_attempt_at.is_some()),
        "held until startDate"
    );

    let r = agent
        .post(
            "/access-requests/v1/cancel",
            &json!({ "accessRequestId": rid }).to_string(),
        )
        .await;
    assert_eq!(r.status(), 400, "comment is required");
    let r = agent
        .post(
            "/access-requests/v1/cancel",
            &json!({ "accessRequestId": "nope", "comment": "x" }).to_string(),
        )
        .await;
    assert_eq!(r.status(), 404);
    // Issue 35: SailPoint's SDK read `cancelable: false` (the field was missing) while a
    // cancel was accepted, and found no `cancelledRequestDetails`.
    let status: Value = agent
        .get("/access-request-status/v1?requested-for=grace")
        .await
        .json()
        .await
        .unwrap();
    let read = sailpoint_sdk_reads(&status);
    assert_eq!(read[0]["state"], "EXECUTING");
    assert_eq!(read[0]["cancelable"], true, "{read:?}");
    assert_eq!(read[0]["cancelled"], Value::Null);
    let r = agent
        .post(
            "/access-requests/v1/cancel",
            &json!({ "accessRequestId": rid, "comment": "no longer needed" }).to_string(),
        )
        .await;
    assert_eq!(r.status(), 202);
    let status: Value = agent
        .get("/access-request-status/v1?requested-for=grace")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(status[0]["state"], "CANCELLED");
    let read = sailpoint_sdk_reads(&status);
    assert_eq!(read[0]["state"], "CANCELLED");
    assert_eq!(read[0]["cancelable"], false, "{read:?}");
    let cancelled = &read[0]["cancelled"];
    assert_eq!(cancelled["comment"], "no longer needed");
    assert_eq!(cancelled["ownerType"], "IDENTITY");
    assert!(
        !cancelled["owner"].as_str().unwrap().is_empty(),
        "{cancelled}"
    );
    assert!(cancelled["modified"].as_str().is_some(), "{cancelled}");
    // A cancel now would stop nothing: refused, naming the field, and nothing changes.
    let r = agent
        .post(
            "/access-requests/v1/cancel",
            &json!({ "accessRequestId": rid, "comment": "twice" }).to_string(),
        )
        .await;
    assert_eq!(r.status(), 400);
    let said = r.text().await.unwrap();
    assert!(
        said.contains("accessRequestId") && said.contains("nothing left to cancel"),
        "{said}"
    );
    let again: Value = agent
        .get("/access-request-status/v1?requested-for=grace")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        again[0]["cancelledRequestDetails"]["comment"],
        "no longer needed"
    );
    assert!(
        wait(env.store().jobs(Default::default()))
            .unwrap()
            .iter()
            .all(|j| j.state.as_str() == "canceled")
    );
}
