//! Pulling approved requests from an upstream governance service (Okta Identity
//! Governance's request API, seed 003), provisioning them, and writing the outcome back.
//!
//! - The listing (`status eq "APPROVED"`, `limit=200`) is followed through its
//!   `Link: <…>; rel="next"` pages; the id of the last request read is the checkpoint,
//!   kept in the store, so the next poll asks only for what came after it.
//! - Each upstream request id is the idempotency key of the provd request made from it:
//!   pulled again (next poll, restart, crash) it is never provisioned twice.
//! - A request whose entry or identity provd does not know is recorded as rejected with
//!   the reason — never dropped — and does not hold up the rest.
//! - 429 waits until `X-Rate-Limit-Reset`; 5xx and transport errors back off; a 401 that
//!   survives one token renewal marks the upstream unhealthy (`/readyz`, the log).
//! - When nothing more can happen without a person (every job ended, or waits on a manual
//!   task), one message summarising the outcome is posted to the request; until the
//!   upstream accepts it, it is tried again on every poll.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use provd_connector_core::http::{HttpClient, HttpSettings, Method, Response, url_encode};

use crate::intake::Intake;
use serde_json::{Value, json};

use crate::clock::SharedClock;
use crate::config::files::UpstreamSection;
use crate::intake::SubmitError;
use crate::store::jobs::JobState;
use crate::store::roles::JobOutcome;
use crate::store::roles::{Accounts, Upstream};
use crate::store::upstream::{Outcome, Unwritten};
use crate::store::{Store, StoreError};

const LIST: &str = "/governance/api/v2/requests";

#[derive(Debug, thiserror::Error)]
pub enum PollError {
    #[error("rate limited until {0}")]
    RateLimited(i64),
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    #[error("{0}")]
    Transient(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub struct Puller {
    pub cfg: UpstreamSection,
    http: HttpClient,
    /// Checkpoints, what was pulled, what was written back.
    upstream: Arc<dyn Upstream>,
    /// The identities pulled requests name.
    accounts: Arc<dyn Accounts>,
    live: Arc<crate::config::Live>,
    clock: SharedClock,
    /// Where pulled requests go in, like every other request.
    intake: Intake,
}

/// The path and query of a `Link: <URL>; rel="next"` header, if there is one.
pub fn next_link(link: &str) -> Option<String> {
    link.split(',').find_map(|part| {
        let (url, params) = part.split_once(';')?;
        if !params.split(';').any(|p| {
            p.trim().trim_matches('"') == "rel=\"next\""
                || p.trim() == "rel=next"
                || p.trim() == "rel=\"next\""
        }) {
            return None;
        }
        let url = url.trim().trim_start_matches('<').trim_end_matches('>');
        // Keep the path and query: the client adds its own base URL.
        let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
        Some(
            after_scheme
                .find('/')
                .map_or("/".to_string(), |i| after_scheme[i..].to_string()),
        )
    })
}

/// The one message written back for a request, or None while provd is still working on it.
pub fn summary(outcome: &str, reason: Option<&str>, jobs: &[JobOutcome]) -> Option<String> {
    if outcome == "rejected" {
        return Some(format!(
            "provd: not provisioned: {}",
            reason.unwrap_or("rejected")
        ));
    }
    if jobs
        .iter()
        .any(|(s, _, _)| matches!(s, JobState::Queued | JobState::Running | JobState::Retrying))
    {
        return None;
    }
    let failed: Vec<String> = jobs
        .iter()
        .filter(|(s, _, _)| *s == JobState::Failed)
        .map(|(_, src, e)| format!("{src}: {}", e.as_deref().unwrap_or("failed")))
        .collect();
    let manual: Vec<&str> = jobs
        .iter()
        .filter(|(s, _, _)| *s == JobState::Manual)
        .map(|(_, src, _)| src.as_str())
        .collect();
    Some(if !failed.is_empty() {
        format!("provd: provisioning failed: {}", failed.join("; "))
    } else if !manual.is_empty() {
        format!("provd: waiting for a manual task on {}", manual.join(", "))
    } else if jobs.iter().all(|(s, _, _)| *s == JobState::Canceled) && !jobs.is_empty() {
        "provd: canceled".to_string()
    } else {
        "provd: access granted".to_string()
    })
}

impl Puller {
    pub fn new(
        cfg: UpstreamSection,
        base: &Path,
        store: Store,
        live: Arc<crate::config::Live>,
        clock: SharedClock,
        intake: Intake,
    ) -> Result<Self, (String, String)> {
        let settings = HttpSettings {
            base_url: cfg.base_url.clone(),
            token_file: cfg.token_file.clone(),
            token_env: None,
            token_scheme: cfg.token_scheme.clone(),
            oauth: cfg.oauth.clone(),
            tls_ca_file: None,
            timeout: "30s".into(),
        };
        let http = HttpClient::new(&settings, base)?;
        Ok(Self {
            cfg,
            http,
            upstream: store.as_upstream(),
            accounts: store.as_accounts(),
            live,
            clock,
            intake,
        })
    }

    fn now(&self) -> i64 {
        self.clock.now().as_millisecond()
    }

    /// Polls, writes back, sleeps; until `stop`. Only while this agent leads: a pull and
    /// its checkpoint are singleton work.
    pub async fn run(self, mut leading: crate::leading::Leading, stop: impl Future<Output = ()>) {
        tokio::pin!(stop);
        let mut failures: u32 = 0;
        loop {
            if !leading.now() {
                tokio::select! {
                    _ = &mut stop => return,
                    _ = leading.wait() => {}
                }
            }
            let result = self.poll().await;
            let word = match &result {
                Ok(_) => "ok",
                Err(PollError::RateLimited(_)) => "rate_limited",
                Err(PollError::Unauthorized(_)) => "unauthorized",
                Err(_) => "error",
            };
            crate::metrics::poll(&self.cfg.name, word);
            let wait = match result {
                Ok(n) => {
                    failures = 0;
                    let _ = self
                        .upstream
                        .set_upstream_health(self.cfg.name.clone(), None, self.now())
                        .await;
                    if n > 0 {
                        tracing::info!(upstream = %self.cfg.name, pulled = n, "approved requests pulled");
                    }
                    self.cfg.poll_interval.0
                }
                Err(PollError::RateLimited(reset)) => {
                    let ms = (reset * 1000 - self.now()).max(0) as u64;
                    tracing::warn!(upstream = %self.cfg.name, wait_ms = ms, "rate limited: waiting for X-Rate-Limit-Reset");
                    Duration::from_millis(ms)
                }
                Err(PollError::Unauthorized(e)) => {
                    tracing::error!(upstream = %self.cfg.name, error = %e, "upstream refuses our credentials (after renewing the token): unhealthy");
                    let _ = self
                        .upstream
                        .set_upstream_health(self.cfg.name.clone(), Some(e), self.now())
                        .await;
                    self.cfg.poll_interval.0
                }
                Err(e) => {
                    failures += 1;
                    let wait = crate::model::RetryPolicy::default()
                        .ceiling(failures)
                        .min(self.cfg.poll_interval.0.max(Duration::from_secs(1)) * 10);
                    tracing::warn!(upstream = %self.cfg.name, error = %e, retry_in_ms = wait.as_millis() as u64, "pull failed; backing off");
                    let _ = self
                        .upstream
                        .set_upstream_health(self.cfg.name.clone(), Some(e.to_string()), self.now())
                        .await;
                    wait
                }
            };
            if let Err(e) = self.write_back().await {
                tracing::warn!(upstream = %self.cfg.name, error = %e, "write-back failed; tried again next poll");
            }
            tokio::select! {
                _ = &mut stop => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    fn classify(&self, r: &Response) -> PollError {
        match r.status.as_u16() {
            429 => {
                let reset = r
                    .headers
                    .get("X-Rate-Limit-Reset")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<i64>().ok());
                PollError::RateLimited(reset.unwrap_or(self.now() / 1000 + 60))
            }
            401 | 403 => PollError::Unauthorized(r.error("list requests").message),
            _ => PollError::Transient(r.error("list requests").message),
        }
    }

    /// One pass over the listing, from the checkpoint to the end. Returns how many new
    /// requests were taken in (accepted or rejected).
    pub async fn poll(&self) -> Result<usize, PollError> {
        let name = self.cfg.name.clone();
        let filter = url_encode("status eq \"APPROVED\"");
        let mut path = match self.upstream.upstream_cursor(name.clone()).await? {
            Some(c) => format!("{LIST}?filter={filter}&limit=200&after={}", url_encode(&c)),
            None => format!("{LIST}?filter={filter}&limit=200"),
        };
        let mut taken = 0;
        loop {
            let r = self
                .http
                .send(Method::GET, &path, None)
                .await
                .map_err(|e| match e.code.as_deref() {
                    Some("401") | Some("403") => PollError::Unauthorized(e.message),
                    _ => PollError::Transient(e.message),
                })?;
            if !r.is_success() {
                return Err(self.classify(&r));
            }
            let data = r
                .body
                .get("data")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for item in &data {
                taken += usize::from(self.take(item).await?);
            }
            if let Some(last) = data
                .last()
                .and_then(|d| d.get("id"))
                .and_then(Value::as_str)
            {
                self.upstream
                    .set_upstream_cursor(name.clone(), last.to_string(), self.now())
                    .await?;
            }
            let link = r
                .headers
                .get_all("link")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect::<Vec<_>>()
                .join(",");
            match next_link(&link) {
                Some(next) if !data.is_empty() => path = next,
                _ => return Ok(taken),
            }
        }
    }

    /// Takes in one listed request; true if it was new.
    async fn take(&self, item: &Value) -> Result<bool, PollError> {
        let name = &self.cfg.name;
        let Some(id) = item.get("id").and_then(Value::as_str) else {
            return Ok(false);
        };
        // The filter asks for APPROVED only; a server that sends others anyway is not obeyed.
        if item.get("status").and_then(Value::as_str) != Some("APPROVED")
            || self
                .upstream
                .upstream_seen(name.clone(), id.to_string())
                .await?
        {
            return Ok(false);
        }
        let now = self.now();
        let external = item
            .pointer("/requestedFor/externalId")
            .and_then(Value::as_str)
            .unwrap_or("");
        let entry = item
            .pointer("/requested/entryId")
            .and_then(Value::as_str)
            .unwrap_or("");
        let reject = async |reason: String| -> Result<bool, PollError> {
            tracing::warn!(upstream = %name, upstream_id = id, reason = %reason, "pulled request rejected");
            self.upstream
                .record_upstream(name.clone(), id.to_string(), Outcome::Rejected(reason), now)
                .await?;
            Ok(true)
        };
        let Some(target) = self.cfg.items.get(entry) else {
            return reject(format!(
                "unknown catalog entry `{entry}` (not in [upstream.items])"
            ))
            .await;
        };
        let Some(identity) = self.identity(external).await? else {
            return reject(format!(
                "no identity with {} = `{external}`",
                self.cfg.identity_attribute
            ))
            .await;
        };
        let body = json!({
            "requestedFor": [identity],
            "requestType": "GRANT_ACCESS",
            "requestedItems": [{ "type": target.ty, "id": target.id, "comment": format!("{name} request {id}") }],
            "clientMetadata": { "upstream": name, "upstreamRequestId": id },
        })
        .to_string();
        let key = format!("upstream:{name}:{id}");
        let result = self
            .intake
            .submit(
                body.as_bytes(),
                &crate::model::Requester::upstream(name),
                Some(&key),
            )
            .await;
        match result {
            Ok(replay) => {
                let rid = replay.accepted().request_id.clone();
                self.upstream
                    .record_upstream(
                        name.clone(),
                        id.to_string(),
                        Outcome::Accepted(rid.clone()),
                        now,
                    )
                    .await?;
                tracing::info!(upstream = %name, upstream_id = id, request_id = %rid, "pulled request accepted");
                Ok(true)
            }
            Err(SubmitError::Invalid(inv)) => reject(inv.to_string()).await,
            Err(e @ SubmitError::KeyReused { .. }) => reject(e.to_string()).await,
            Err(SubmitError::Store(e)) => Err(e.into()),
            Err(SubmitError::Internal(e)) => Err(PollError::Transient(e)),
        }
    }

    async fn identity(&self, external: &str) -> Result<Option<String>, StoreError> {
        let config = self.live.get();
        crate::intake::identity::resolve(
            &*self.accounts,
            &config,
            &self.cfg.identity_attribute,
            external,
        )
        .await
    }

    /// Posts the outcome of every request that reached one and was not written back yet.
    pub async fn write_back(&self) -> Result<usize, PollError> {
        let pending: Vec<Unwritten> = self.upstream.unwritten(self.cfg.name.clone()).await?;
        let mut written = 0;
        for p in pending {
            let jobs = match &p.request_id {
                Some(rid) => self.upstream.request_jobs(rid.clone()).await?,
                None => Vec::new(),
            };
            let Some(message) = summary(&p.outcome, p.reason.as_deref(), &jobs) else {
                continue;
            };
            let path = format!("{LIST}/{}/messages", url_encode(&p.upstream_id));
            let r = self
                .http
                .send(Method::POST, &path, Some(&json!({ "message": message })))
                .await
                .map_err(|e| PollError::Transient(e.message))?;
            if r.is_success() {
                self.upstream
                    .mark_written(
                        self.cfg.name.clone(),
                        p.upstream_id.clone(),
                        message,
                        self.now(),
                    )
                    .await?;
                written += 1;
            } else if r.status.as_u16() == 429 {
                return Err(self.classify(&r));
            } else {
                tracing::warn!(upstream = %self.cfg.name, upstream_id = %p.upstream_id, error = %r.error("write back").message, "write-back refused; tried again next poll");
            }
        }
        Ok(written)
    }
}

/// Starts one puller per `[[upstream]]`.
pub fn start(
    live: &Arc<crate::config::Live>,
    store: &Store,
    clock: &SharedClock,
    intake: &Intake,
    leading: &crate::leading::Leading,
    stop: impl Fn() -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>>,
) -> Result<Vec<tokio::task::JoinHandle<()>>, String> {
    let config = live.get();
    let base = config.path.parent().unwrap_or(Path::new(".")).to_path_buf();
    let mut tasks = Vec::new();
    for u in &config.upstreams {
        let p = Puller::new(
            u.clone(),
            &base,
            store.clone(),
            live.clone(),
            clock.clone(),
            intake.clone(),
        )
        .map_err(|(k, m)| format!("{}: upstream `{}`: {k}: {m}", config.path.display(), u.name))?;
        tasks.push(tokio::spawn(p.run(leading.clone(), stop())));
    }
    Ok(tasks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_headers() {
        let l = "<https://x.okta.com/governance/api/v2/requests?limit=2&after=req1>; rel=\"next\", <https://x.okta.com/governance/api/v2/requests?limit=2>; rel=\"self\"";
        assert_eq!(
            next_link(l).as_deref(),
            Some("/governance/api/v2/requests?limit=2&after=req1")
        );
        assert_eq!(next_link("<https://x/a>; rel=\"self\""), None);
        assert_eq!(next_link(""), None);
    }

    #[test]
    fn summaries() {
        let j = |s: &str| {
            let state = JobState::parse(s).unwrap();
            (state, "src".to_string(), Some("boom".to_string()))
        };
        assert_eq!(
            summary("rejected", Some("unknown entry"), &[]).unwrap(),
            "provd: not provisioned: unknown entry"
        );
        assert_eq!(
            summary("accepted", None, &[j("succeeded"), j("running")]),
            None
        );
        assert_eq!(
            summary("accepted", None, &[j("succeeded")]).unwrap(),
            "provd: access granted"
        );
        assert_eq!(
            summary("accepted", None, &[]).unwrap(),
            "provd: access granted",
            "a duplicate: already held"
        );
        assert_eq!(
            summary("accepted", None, &[j("succeeded"), j("failed")]).unwrap(),
            "provd: provisioning failed: src: boom"
        );
        assert_eq!(
            summary("accepted", None, &[j("manual")]).unwrap(),
            "provd: waiting for a manual task on src"
        );
    }
}
