//! ASYNC answers (DESIGN §16): `POST _metadata.callbackURL` with `{secret, output}`,
//! retried with backoff until the subscription's deadline, then recorded as expired. The
//! invocations wait in the store, so a restart (or another agent taking the lead) picks
//! them up. One agent calls back: the leader.

use std::time::Duration;

use secrecy::ExposeSecret;
use serde_json::json;

use super::{Triggers, body, output};
use crate::clock::to_ms;
use crate::model::RetryPolicy;
use crate::store::triggers::{Answer, CallbackEnd, Invocation};
use crate::store::{Stamp, StoreError};

/// Between failed callbacks: 1 s, doubling, at most a minute apart.
fn backoff() -> RetryPolicy {
    RetryPolicy {
        initial: Duration::from_secs(1),
        factor: 2.0,
        max_interval: Duration::from_secs(60),
        ..RetryPolicy::default()
    }
}

/// How long one callback may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// What a callback attempt came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Delivered,
    /// Worth trying again (transport error, 5xx, 408, 429).
    Retry(String),
    /// SailPoint will never take it (another 4xx: a wrong secret, a finished invocation).
    Refused(String),
}

/// Classifies a callback's HTTP status.
pub fn classify(status: u16, text: &str) -> Outcome {
    match status {
        200..=299 => Outcome::Delivered,
        408 | 429 | 500..=599 => Outcome::Retry(format!("HTTP {status}: {text}")),
        _ => Outcome::Refused(format!("HTTP {status}: {text}")),
    }
}

/// A target's words, with the secret taken out should it echo it (plain or encoded: the
/// redactor every connector uses), and cut short.
fn scrub(text: &str, secret: &str) -> String {
    let redactor = provd_connector_core::redact::Redactor::new([secrecy::SecretString::from(
        secret.to_string(),
    )]);
    redactor.redact(text).chars().take(200).collect()
}

async fn post(client: &reqwest::Client, url: &str, secret: &str, a: &Answer) -> Outcome {
    let body = json!({ "secret": secret, "output": output(a) });
    match client.post(url).json(&body).send().await {
        Ok(r) => {
            let status = r.status().as_u16();
            let text = r.text().await.unwrap_or_default();
            classify(status, &scrub(&text, secret))
        }
        // reqwest's words name the URL, never the body we sent.
        Err(e) => Outcome::Retry(provd_connector_core::http::root_cause(&e)),
    }
}

impl Triggers {
    /// The answer of an invocation stored undecided (a DYNAMIC one that took too long).
    async fn late_answer(&self, inv: &Invocation) -> Result<Option<Answer>, StoreError> {
        let config = self.live.get();
        let Some(trigger) = config.triggers.get(&inv.trigger) else {
            return Ok(None);
        };
        let Ok(value) = serde_json::from_str(&inv.body) else {
            return Ok(None);
        };
        let Ok(sub) = body::submitted(&value) else {
            return Ok(None);
        };
        let v = self.decide(&config, trigger, &sub).await?;
        let a = Answer {
            approved: v.approved,
            comment: v.comment,
            approver: v.approver,
            rule: v.rule,
        };
        let now = to_ms(self.clock.now());
        self.store
            .answer_invocation(
                inv.clone(),
                a.clone(),
                Stamp::new(format!("trigger:{}", inv.trigger), now),
            )
            .await?;
        Ok(Some(a))
    }

    async fn finish(
        &self,
        inv: &Invocation,
        state: &'static str,
        error: Option<String>,
    ) -> Result<(), StoreError> {
        let now = to_ms(self.clock.now());
        tracing::info!(trigger = %inv.trigger, access_request_id = %inv.access_request_id, outcome = state,
            attempts = inv.attempts + 1, error = error.as_deref().unwrap_or("-"), "pre-approval callback ended");
        self.store
            .finish_invocation(
                inv.clone(),
                CallbackEnd { state, error },
                Stamp::new(self.agent.clone(), now),
            )
            .await
    }

    /// One invocation's callback attempt.
    async fn call_back(&self, client: &reqwest::Client, inv: Invocation) -> Result<(), StoreError> {
        let now = to_ms(self.clock.now());
        if inv.deadline_at.is_some_and(|d| now >= d) {
            return self
                .finish(&inv, "expired", Some("the response deadline passed".into()))
                .await;
        }
        let answer = match &inv.answer {
            Some(a) => a.clone(),
            None => match self.late_answer(&inv).await? {
                Some(a) => a,
                None => {
                    return self
                        .finish(
                            &inv,
                            "refused",
                            Some("the invocation can no longer be decided".into()),
                        )
                        .await;
                }
            },
        };
        let (Some(url), Some(sealed)) = (&inv.callback_url, &inv.sealed_secret) else {
            return self
                .finish(&inv, "refused", Some("no callback URL".into()))
                .await;
        };
        let secret = match self.sealer.open(&inv.id, sealed) {
            Ok(s) => s,
            Err(e) => return self.finish(&inv, "refused", Some(e.to_string())).await,
        };
        match post(client, url, secret.expose_secret(), &answer).await {
            Outcome::Delivered => self.finish(&inv, "delivered", None).await,
            Outcome::Refused(e) => self.finish(&inv, "refused", Some(e)).await,
            Outcome::Retry(e) => {
                let wait = backoff().ceiling(inv.attempts as u32 + 1);
                let next = now + wait.as_millis() as i64;
                tracing::warn!(trigger = %inv.trigger, access_request_id = %inv.access_request_id, attempt = inv.attempts + 1,
                    retry_in_ms = wait.as_millis() as u64, error = %e, "pre-approval callback failed; will retry");
                self.store.retry_invocation(inv.id.clone(), next, e).await
            }
        }
    }

    /// Makes the callbacks that are due; returns how many were tried.
    pub async fn callbacks(&self, client: &reqwest::Client) -> Result<usize, StoreError> {
        let now = to_ms(self.clock.now());
        let due = self.store.due_invocations(now, 50).await?;
        let n = due.len();
        for inv in due {
            self.call_back(client, inv).await?;
        }
        Ok(n)
    }
}

/// Calls back until `stop`, while this agent leads.
pub async fn run(
    triggers: Triggers,
    mut leading: crate::leading::Leading,
    stop: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(stop);
    provd_connector_core::http::init_tls();
    let client = match reqwest::Client::builder().timeout(TIMEOUT).build() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "no HTTP client for pre-approval callbacks");
            return;
        }
    };
    loop {
        if !leading.now() {
            tokio::select! {
                _ = &mut stop => return,
                _ = leading.wait() => {}
            }
        }
        if let Err(e) = triggers.callbacks(&client).await {
            tracing::error!(error = %e, "pre-approval callbacks failed");
        }
        tokio::select! {
            _ = &mut stop => return,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_decide_whether_to_try_again() {
        assert_eq!(classify(204, ""), Outcome::Delivered);
        assert!(matches!(classify(503, "busy"), Outcome::Retry(_)));
        assert!(matches!(classify(429, ""), Outcome::Retry(_)));
        assert_eq!(
            classify(400, "bad secret"),
            Outcome::Refused("HTTP 400: bad secret".into())
        );
    }

    #[test]
    fn an_echoed_secret_is_scrubbed() {
        assert_eq!(
            scrub("wrong secret s3cr3t given", "s3cr3t"),
            "wrong secret [REDACTED] given"
        );
        // As a form or URL would carry it, too.
        assert_eq!(
            scrub("secret=a%2Bb%2Fc%3D given", "a+b/c="),
            "secret=[REDACTED] given"
        );
        assert_eq!(scrub(&"x".repeat(500), "").len(), 200);
    }
}
