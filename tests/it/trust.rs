//! Issue 34, item 2 (DESIGN §24): a TLS trust failure — here a `tls_server_name` the
//! server's certificate does not carry — holds the source's jobs as refused credentials
//! do: no attempt spent, nothing failed, the reason on the job and in the log. Before, it
//! failed every job in flight for good, and each needed `jobs retry` after the fix.

use crate::flow::{all_succeeded, grant, settled, submit};
use crate::harness::eventually;
use crate::ldap::{VPN, ldap_env};
use crate::slapd::Slapd;

#[tokio::test]
async fn a_wrong_tls_server_name_holds_jobs_until_the_fix_and_a_reload() {
    let slapd = Slapd::start_tls().await;
    let ca = slapd.certs.as_ref().unwrap().ca.display().to_string();
    let wrong = "tls_server_name = \"wrong.example.com\"\n";
    let env = ldap_env(
        &slapd.ldaps_url(),
        &format!("tls_ca_file = \"{ca}\"\n{wrong}"),
        &[],
    );
    let agent = env.start().await;
    let request = submit(&env, grant("ada", "ENTITLEMENT", "ent-vpn"));
    let store = env.store();
    // Held: the attempt given back (`job_released`, which `jobs show` lists) with why.
    let released = eventually(30, "the job held for the TLS failure", || {
        let (store, request) = (store.clone(), request.clone());
        async move {
            let q = provd::store::audit::AuditQuery {
                request: Some(request),
                kinds: vec!["job_released".into()],
                limit: 10,
                ..Default::default()
            };
            store.audit(q).await.ok()?.into_iter().next()
        }
    })
    .await;
    let data = &released.data;
    assert_eq!(data["reason"], "trust", "{data}");
    assert_eq!(data["error"]["class"], "held", "{data}");
    assert_eq!(data["error"]["code"], "tls", "{data}");
    let job = store.job(released.job_id.unwrap()).await.unwrap().unwrap();
    assert!(!job.state.is_final(), "held, not ended: {:?}", job.state);
    assert!(job.errors.is_empty(), "no attempt failed: {:?}", job.errors);
    assert!(
        agent.log_text().contains("TLS connection is not trusted"),
        "the log says why"
    );
    assert!(
        !slapd
            .values(VPN, "member")
            .await
            .iter()
            .any(|m| m.contains("ada"))
    );
    let ready: serde_json::Value = agent.get("/readyz").await.json().await.unwrap();
    let why = ready["held"]["corp"].as_str().unwrap_or_default();
    assert!(why.contains("TLS"), "/readyz says why: {ready}");

    // The fix and a reload let the job go: no retry command.
    let path = env.path().join("sources/corp.toml");
    let fixed = std::fs::read_to_string(&path).unwrap().replace(wrong, "");
    std::fs::write(&path, fixed).unwrap();
    agent.signal("HUP");
    all_succeeded(&settled(&env, &request).await);
    assert!(
        slapd
            .values(VPN, "member")
            .await
            .contains(&"uid=ada,ou=people,dc=example,dc=com".to_string())
    );
    let ready: serde_json::Value = agent.get("/readyz").await.json().await.unwrap();
    assert_eq!(ready["held"], serde_json::json!({}), "{ready}");
}
