//! The dispatcher in-process, with the injected clock: retries, backoff, Retry-After,
//! classification overrides, max attempts, the breaker and shutdown. The target is a
//! scripted connector (real connectors and servers come with their own crates); time
//! moves only when the test moves it.

use crate::harness::wait;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use provd::clock::{Clock, ManualClock, SharedClock};
use provd::config::{Config, SourceKind};
use provd::dispatch::Dispatcher;
use provd::store::{JobState, Store};
use provd_connector_core::{BoxFuture, Connector, ConnectorError, Entitlement, Identity, Outcome};
use serde_json::json;
use tokio::sync::{Notify, oneshot};

use crate::harness::{Env, eventually};

/// Answers each call with the next scripted error, then with success; or hangs.
#[derive(Default)]
struct Scripted {
    errors: Mutex<VecDeque<ConnectorError>>,
    always: Option<ConnectorError>,
    hang: bool,
    calls: AtomicUsize,
    native_ids: Mutex<Vec<Option<String>>>,
}

impl Scripted {
    fn answer(
        &self,
        native: Option<&str>,
        ok: Outcome,
    ) -> BoxFuture<'_, Result<Outcome, ConnectorError>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.native_ids
            .lock()
            .unwrap()
            .push(native.map(String::from));
        let next = self
            .errors
            .lock()
            .unwrap()
            .pop_front()
            .or_else(|| self.always.clone());
        let hang = self.hang;
        Box::pin(async move {
            if hang {
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }
            match next {
                Some(e) => Err(e),
                None => Ok(ok),
            }
        })
    }
}

impl Connector for Scripted {
    fn create_account<'a>(
        &'a self,
        i: &'a Identity,
    ) -> BoxFuture<'a, Result<Outcome, ConnectorError>> {
        self.answer(
            None,
            Outcome::Created {
                native_id: format!("uid={}", i.id),
            },
        )
    }
    fn add_entitlement<'a>(
        &'a self,
        _: &'a Identity,
        n: Option<&'a str>,
        _: &'a Entitlement,
    ) -> BoxFuture<'a, Result<Outcome, ConnectorError>> {
        self.answer(n, Outcome::Applied)
    }
    fn remove_entitlement<'a>(
        &'a self,
        _: &'a Identity,
        n: Option<&'a str>,
        _: &'a Entitlement,
    ) -> BoxFuture<'a, Result<Outcome, ConnectorError>> {
        self.answer(n, Outcome::Applied)
    }
    fn disable_account<'a>(
        &'a self,
        _: &'a Identity,
        n: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Outcome, ConnectorError>> {
        self.answer(n, Outcome::Applied)
    }
    fn delete_account<'a>(
        &'a self,
        _: &'a Identity,
        n: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Outcome, ConnectorError>> {
        self.answer(n, Outcome::Applied)
    }
    fn check(&self) -> BoxFuture<'_, Result<(), ConnectorError>> {
        Box::pin(async { Ok(()) })
    }
}

struct Rig {
    _env: Env,
    store: Store,
    clock: Arc<ManualClock>,
    wake: Arc<Notify>,
    connector: Arc<Scripted>,
    config: Arc<Config>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// `source_toml` is appended to the `flat` source, which is then driven as a direct source.
fn rig(connector: Scripted, source_toml: &str, agent_toml: &str) -> Rig {
    let env = Env::new();
    let src = env.path().join("sources/flat.toml");
    let mut text = std::fs::read_to_string(&src).unwrap();
    text.push_str(source_toml);
    std::fs::write(&src, text).unwrap();
    let provd = env.path().join("provd.toml");
    let keys: Vec<&str> = agent_toml
        .lines()
        .filter_map(|l| l.split('=').next())
        .map(str::trim)
        .collect();
    let text: String = std::fs::read_to_string(&provd)
        .unwrap()
        .lines()
        .filter(|l| {
            !keys
                .iter()
                .any(|k| !k.is_empty() && l.trim_start().starts_with(&format!("{k} ")))
        })
        .map(|l| format!("{l}\n"))
        .collect();
    let text = text.replace("[agent]\n", &format!("[agent]\n{agent_toml}"));
    std::fs::write(&provd, text).unwrap();
    let mut config = Config::load(&provd).unwrap();
    config.sources.get_mut("flat").unwrap().kind = SourceKind::Ldap;
    let live = provd::config::Live::new(config);
    let config = live.get();
    let store = Store::open(&config.agent.state_dir).unwrap();
    let clock = Arc::new(ManualClock::new(
        jiff::Timestamp::from_second(1_900_000_000).unwrap(),
    ));
    let connector = Arc::new(connector);
    let mut connectors = provd::connectors::Connectors::new();
    connectors.insert("flat".into(), connector.clone() as Arc<dyn Connector>);
    let wake = Arc::new(Notify::new());
    let shared: SharedClock = clock.clone();
    let d = Dispatcher::new(
        store.clone(),
        live.clone(),
        connectors,
        shared,
        "test-agent".into(),
        wake.clone(),
    );
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        d.run(async {
            let _ = rx.await;
        })
        .await
        .unwrap();
    });
    Rig {
        _env: env,
        store,
        clock,
        wake,
        connector,
        config,
        stop: Some(tx),
        task: Some(task),
    }
}

impl Rig {
    async fn submit(&self, who: &str, ent: &str) -> i64 {
        let body = json!({ "requestedFor": [who], "requestedItems": [{ "type": "ENTITLEMENT", "id": ent }] });
        let r = provd::intake::submit(
            &self.config,
            &self.store,
            self.clock.now(),
            body.to_string().as_bytes(),
            &provd::model::Requester::other("test"),
            None,
        )
        .await
        .unwrap();
        self.wake.notify_one();
        r.accepted().job_ids[0]
    }

    async fn until(
        &self,
        id: i64,
        what: &str,
        f: impl Fn(&provd::store::Job) -> bool,
    ) -> provd::store::Job {
        let store = self.store.clone();
        let wake = self.wake.clone();
        eventually(10, what, || {
            wake.notify_one();
            let j = wait(store.job(id)).unwrap().unwrap();
            let ok = f(&j);
            async move { ok.then_some(j) }
        })
        .await
    }

    fn advance(&self, secs: u64) {
        self.clock.advance(Duration::from_secs(secs));
        self.wake.notify_one();
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap();
    }
}

fn retryable(msg: &str) -> ConnectorError {
    ConnectorError::retryable(Some("ConnectionRefused".into()), msg)
}

#[tokio::test]
async fn retryable_errors_back_off_on_the_injected_clock_then_succeed() {
    let c = Scripted {
        errors: Mutex::new(VecDeque::from([
            retryable("refused 1"),
            retryable("refused 2"),
        ])),
        ..Default::default()
    };
    let r = rig(c, "", "");
    let id = r.submit("ada", "ent-view").await;
    let j = r
        .until(id, "first retry", |j| j.state == JobState::Retrying)
        .await;
    let start = r.clock.now().as_millisecond();
    let next = j.next_attempt_at.unwrap();
    assert!(
        next >= start && next <= start + 2_000,
        "full jitter within the 2 s ceiling: {}",
        next - start
    );
    assert_eq!(j.errors[0].message, "refused 1");
    r.advance(3);
    let j = r
        .until(id, "second retry", |j| {
            j.state == JobState::Retrying && j.attempt == 2
        })
        .await;
    assert!(
        j.next_attempt_at.unwrap() <= r.clock.now().as_millisecond() + 4_000,
        "ceiling doubled to 4 s"
    );
    r.advance(5);
    let j = r
        .until(id, "success", |j| j.state == JobState::Succeeded)
        .await;
    assert_eq!(j.attempt, 3);
    assert_eq!(j.errors.len(), 2);
    assert_eq!(
        wait(r.store.native_id("ada".into(), "flat".into()))
            .unwrap()
            .as_deref(),
        Some("uid=ada")
    );
    let seen = r.connector.native_ids.lock().unwrap().clone();
    assert_eq!(
        seen.last().unwrap().as_deref(),
        Some("uid=ada"),
        "the created account's id reaches the next operation"
    );
    r.stop().await;
}

#[tokio::test]
async fn a_permanent_error_fails_the_job_at_once_with_the_code_in_status() {
    let c = Scripted {
        always: Some(ConnectorError::permanent(
            Some("65".into()),
            "objectClassViolation",
        )),
        ..Default::default()
    };
    let r = rig(c, "", "");
    let id = r.submit("ada", "ent-view").await;
    let j = r
        .until(id, "failure", |j| j.state == JobState::Failed)
        .await;
    assert_eq!(j.attempt, 1);
    assert_eq!(j.errors[0].code.as_deref(), Some("65"));
    assert_eq!(j.errors[0].class, "permanent");
    let q = provd::store::status::StatusQuery {
        request_id: Some(j.request_id.clone()),
        limit: 10,
        ..Default::default()
    };
    let s = provd::wire::status_items(&wait(r.store.status(q)).unwrap(), &Default::default());
    assert_eq!(s[0]["state"], "PROVISIONING_FAILED");
    assert_eq!(s[0]["errorMessages"][0][0]["text"], "objectClassViolation");
    r.stop().await;
}

#[tokio::test]
async fn a_source_pattern_makes_an_error_retryable_and_max_attempts_ends_it() {
    let c = Scripted {
        always: Some(ConnectorError::permanent(
            Some("80".into()),
            "Server is BUSY now",
        )),
        ..Default::default()
    };
    let r = rig(
        c,
        "[retry]\nmax_attempts = 2\nretryable_errors = [\"(?i)server is busy\"]\n",
        "",
    );
    let id = r.submit("ada", "ent-view").await;
    let j = r
        .until(id, "retrying", |j| j.state == JobState::Retrying)
        .await;
    assert_eq!(j.errors[0].class, "retryable");
    r.advance(3);
    let j = r
        .until(id, "failed after 2", |j| j.state == JobState::Failed)
        .await;
    assert_eq!(j.attempt, 2);
    r.stop().await;
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let e = retryable("slow down").with_retry_after(Some(Duration::from_secs(120)));
    let c = Scripted {
        errors: Mutex::new(VecDeque::from([e])),
        ..Default::default()
    };
    let r = rig(c, "", "");
    let id = r.submit("ada", "ent-view").await;
    let j = r
        .until(id, "retrying", |j| j.state == JobState::Retrying)
        .await;
    assert!(j.next_attempt_at.unwrap() >= r.clock.now().as_millisecond() + 120_000);
    r.stop().await;
}

#[tokio::test]
async fn an_open_breaker_holds_other_jobs_without_spending_attempts() {
    let c = Scripted {
        always: Some(retryable("down")),
        ..Default::default()
    };
    let r = rig(
        c,
        "[retry]\nbreaker_failures = 2\nbreaker_cooldown = \"60s\"\n",
        "workers = 1\n",
    );
    let a = r.submit("ada", "ent-view").await;
    r.until(a, "a retrying", |j| j.state == JobState::Retrying)
        .await;
    let b = r.submit("grace", "ent-view").await;
    r.until(b, "b retrying", |j| j.state == JobState::Retrying)
        .await;
    // Two consecutive failures: the breaker is open. A third job is not even tried.
    let c_id = r.submit("mallory", "ent-view").await;
    r.advance(10); // a and b are due again, but the source is closed for 60 s
    let calls = r.connector.calls.load(Ordering::SeqCst);
    for _ in 0..20 {
        r.wake.notify_one();
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        r.connector.calls.load(Ordering::SeqCst),
        calls,
        "no calls while the breaker is open"
    );
    assert_eq!(
        wait(r.store.job(c_id)).unwrap().unwrap().attempt,
        0,
        "waiting spends no attempt"
    );
    r.advance(60);
    // One probe, taken in due order: c came due (accepted) before a's and b's retries.
    r.until(c_id, "c probed after the cool-down", |j| j.attempt == 1)
        .await;
    assert_eq!(
        r.connector.calls.load(Ordering::SeqCst),
        calls + 1,
        "one probe"
    );
    assert_eq!(wait(r.store.job(a)).unwrap().unwrap().attempt, 1);
    r.stop().await;
}

#[tokio::test]
async fn shutdown_releases_a_job_stuck_past_the_grace_period_without_spending_its_attempt() {
    let c = Scripted {
        hang: true,
        ..Default::default()
    };
    let r = rig(c, "", "shutdown_grace = \"200ms\"\n");
    let id = r.submit("ada", "ent-view").await;
    r.until(id, "running", |j| j.state == JobState::Running)
        .await;
    let store = r.store.clone();
    r.stop().await;
    let j = wait(store.job(id)).unwrap().unwrap();
    assert_eq!(j.state, JobState::Queued);
    assert_eq!(j.attempt, 0);
    assert!(j.lease_owner.is_none());
}
