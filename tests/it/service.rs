//! provd as a systemd service: sd_notify READY / WATCHDOG / STATUS / STOPPING on a
//! NOTIFY_SOCKET the test opens, and the unit file checked by systemd-analyze.

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use crate::harness::{Agent, Env};

/// Reads notify datagrams until `want` has been seen (or panics at the deadline).
fn wait_for(sock: &UnixDatagram, seen: &mut Vec<String>, want: &str, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut buf = [0u8; 4096];
    while !seen
        .iter()
        .any(|m| m.lines().any(|l| l == want || l.starts_with(want)))
    {
        assert!(
            Instant::now() < deadline,
            "no {want} within {secs}s; got {seen:?}"
        );
        if let Ok(n) = sock.recv(&mut buf) {
            seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
}

#[tokio::test]
async fn the_agent_notifies_ready_watchdog_status_and_stopping() {
    let env = Env::new();
    let path = env.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut agent = Agent::start_with(
        &env,
        &[
            ("NOTIFY_SOCKET", path.display().to_string()),
            ("WATCHDOG_USEC", "600000".to_string()),
        ],
    )
    .await;
    let mut seen = Vec::new();
    wait_for(&sock, &mut seen, "READY=1", 10);
    wait_for(&sock, &mut seen, "WATCHDOG=1", 10);
    wait_for(&sock, &mut seen, "STATUS=queue depth 0", 10);
    // Pings keep coming at about half the 600 ms watchdog interval.
    let pings_before = seen.iter().filter(|m| m.contains("WATCHDOG=1")).count();
    let until = Instant::now() + Duration::from_millis(1_500);
    let mut buf = [0u8; 4096];
    while Instant::now() < until {
        if let Ok(n) = sock.recv(&mut buf) {
            seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    let pings = seen.iter().filter(|m| m.contains("WATCHDOG=1")).count() - pings_before;
    assert!(pings >= 3, "{pings} pings in 1.5 s");
    let status = agent.signal_and_wait("TERM", 15).await;
    assert_eq!(status.code(), Some(0));
    wait_for(&sock, &mut seen, "STOPPING=1", 5);
}

#[test]
fn the_unit_verifies_and_rates_2_or_lower() {
    let Ok(out) = std::process::Command::new("systemd-analyze")
        .arg("--version")
        .output()
    else {
        eprintln!("systemd-analyze is not installed; skipping");
        return;
    };
    assert!(out.status.success());
    let dir = tempfile::tempdir().unwrap();
    // The unit as shipped, pointed at the binary just built (verify checks ExecStart exists).
    let unit = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/provd.service"),
    )
    .unwrap();
    let unit = unit.replace("/usr/bin/provd", crate::harness::BIN);
    let path = dir.path().join("provd.service");
    std::fs::write(&path, unit).unwrap();
    let verify = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&verify.stderr).to_string()
        + &String::from_utf8_lossy(&verify.stdout);
    assert!(
        verify.status.success() && text.trim().is_empty(),
        "systemd-analyze verify: {text}"
    );
    let sec = std::process::Command::new("systemd-analyze")
        .args(["security", "--offline=true"])
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&sec.stdout);
    let score: f64 = text
        .lines()
        .find_map(|l| l.split("Overall exposure level for provd.service: ").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no score in: {text}"));
    assert!(score <= 2.0, "exposure {score}");
}

#[tokio::test]
async fn sighup_reloads_the_catalog_and_refuses_an_invalid_set() {
    let env = Env::new();
    let path = env.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let agent = Agent::start_with(&env, &[("NOTIFY_SOCKET", path.display().to_string())]).await;
    let mut seen = Vec::new();
    wait_for(&sock, &mut seen, "READY=1", 10);
    let body = |who: &str| {
        serde_json::json!({ "requestedFor": [who], "requestedItems": [{ "type": "ENTITLEMENT", "id": "ent-new" }] }).to_string()
    };
    assert_eq!(
        agent
            .post("/access-requests/v1", &body("ada"))
            .await
            .status(),
        400,
        "not in the catalog yet"
    );

    let catalog = env.path().join("catalog.toml");
    let good = std::fs::read_to_string(&catalog).unwrap()
        + "[[entitlement]]\nid = \"ent-new\"\nsource = \"flat\"\nattribute = \"groups\"\nvalue = \"NEW\"\n";
    std::fs::write(&catalog, &good).unwrap();
    let hup = || {
        std::process::Command::new("kill")
            .args(["-HUP", &agent.pid().to_string()])
            .status()
            .unwrap()
    };
    assert!(hup().success());
    wait_for(&sock, &mut seen, "RELOADING=1", 10);
    let (a, u) = (
        agent.http.clone(),
        format!("{}/access-requests/v1", agent.base),
    );
    crate::harness::eventually(10, "ent-new to be requestable", || {
        let (a, u, b) = (a.clone(), u.clone(), body("ada"));
        async move {
            let r = a
                .post(&u)
                .bearer_auth("t0ken-for-tests-1234567890")
                .body(b)
                .send()
                .await
                .ok()?;
            (r.status() == 202).then_some(())
        }
    })
    .await;
    assert!(agent.log_text().contains("configuration reloaded"));

    // A broken set is refused, naming the problem; the old one keeps serving.
    std::fs::write(
        &catalog,
        good.replace(
            "source = \"flat\"\nattribute = \"groups\"\nvalue = \"NEW\"",
            "source = \"nowhere\"\nattribute = \"groups\"\nvalue = \"NEW\"",
        ),
    )
    .unwrap();
    assert!(hup().success());
    crate::harness::eventually(10, "the refusal to be logged", || {
        let log = agent.log_text();
        async move { log.contains("new configuration refused").then_some(()) }
    })
    .await;
    let log = agent.log_text();
    assert!(log.contains("names source `nowhere`"), "{log}");
    assert_eq!(
        agent
            .post("/access-requests/v1", &body("grace"))
            .await
            .status(),
        202,
        "the old catalog still serves"
    );
}

/// Issue 13 item 15: the shipped config and unit work together. Under
/// `ProtectSystem=strict` only the state directory is writable, so the spool lives
/// there; `Documentation=` names a file the README's install steps install; secrets are
/// installed 0600 for the unit's user.
#[test]
fn the_shipped_config_unit_and_install_steps_agree() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = provd::config::Config::load(&root.join("config/provd.toml")).unwrap();
    let spool = config.agent.spool_dir.clone().unwrap();
    assert!(
        spool.starts_with(&config.agent.state_dir),
        "{} is not under {}",
        spool.display(),
        config.agent.state_dir.display()
    );
    let unit = std::fs::read_to_string(root.join("systemd/provd.service")).unwrap();
    // The install steps are in the reference (docs/running.md) since the README was split.
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap()
        + &std::fs::read_to_string(root.join("docs/running.md")).unwrap();
    let doc = unit
        .lines()
        .find_map(|l| l.strip_prefix("Documentation=file://"))
        .unwrap();
    assert!(
        readme.contains(&format!("README.md {doc}")),
        "{doc} is not installed by the README"
    );
    assert!(unit.contains("StateDirectory=provd") && unit.contains("ProtectSystem=strict"));
    assert!(readme.contains("spool_dir = \"/var/lib/provd/spool\""));
    assert!(unit.contains("LimitNOFILE="));
    let user = unit.lines().find_map(|l| l.strip_prefix("User=")).unwrap();
    assert!(readme.contains(&format!(
        "install -m 0600 -o {user} -g {user} /dev/stdin /etc/provd/api-tokens"
    )));
    let sysusers = std::fs::read_to_string(root.join("systemd/provd.sysusers")).unwrap();
    assert!(sysusers.contains(&format!("u {user} ")));
}
