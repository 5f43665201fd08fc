//! How an attempt that did not succeed ends: the breaker's view of the source, the retry
//! policy's decision, and credentials refused (the job waits, spending nothing).

use provd_connector_core::{ConnectorError, ErrorClass};

use super::breaker::{Breaker, BreakerState};
use super::policy::{Decision, decide};
use super::{After, Dispatcher, classify, policy};
use crate::clock::{from_ms, rfc3339_ms, to_ms};
use crate::store::jobs::{AttemptError, Ending, Finish, OpRecord};
use crate::store::{Job, StoreError};

impl Dispatcher {
    pub(super) fn breaker(
        &self,
        source: &str,
        f: impl FnOnce(&mut Breaker, &crate::dispatch::policy::BreakerPolicy),
    ) {
        let me = &self.inner;
        let policy = self
            .config()
            .sources
            .get(source)
            .map(|s| s.breaker.clone())
            .unwrap_or_default();
        if let Ok(mut b) = me.breakers.lock() {
            let breaker = b.entry(source.to_string()).or_default();
            f(breaker, &policy);
            let state = match breaker.state(me.clock.now()) {
                BreakerState::Closed => 0,
                BreakerState::HalfOpen => 1,
                BreakerState::Open { .. } => 2,
            };
            crate::metrics::breaker(source, state);
        }
        if let Ok(mut p) = me.probing.lock() {
            p.remove(source);
        }
    }

    pub(super) fn failed_attempt(
        &self,
        job: &Job,
        source: Option<&crate::config::Source>,
        err: &ConnectorError,
        records: Vec<OpRecord>,
    ) -> Result<After, StoreError> {
        let me = &self.inner;
        let now = me.clock.now();
        let class = source.map_or(err.class, |s| classify::classify(err, &s.retryable_errors));
        if err.held() {
            // provd's credentials or the connection's trust, not the job: no attempt
            // spent, nothing failed. The breaker holds every job of the source until it
            // probes again, and the connector itself refuses to try the same secret more
            // than twice.
            let class = if err.auth { "auth" } else { "held" };
            crate::metrics::attempt(&job.source, class);
            self.breaker(&job.source, |b, p| b.on_source_wide(now, p));
            crate::metrics::held(&job.source, &err.message);
            let locked = err.message.contains("data 775");
            if !err.auth {
                tracing::error!(source = %job.source, error = %err,
                    "breaker opened: the source's TLS connection is not trusted (certificate, its name or its CA); jobs wait (no attempts spent) until the fix and a reload (SIGHUP)");
            } else if locked {
                tracing::error!(source = %job.source, error = %err,
                    "breaker opened: the service account is LOCKED; unlock it, then reload (SIGHUP)");
            } else {
                tracing::warn!(source = %job.source, error = %err,
                    "breaker opened: the source refused provd's credentials; jobs wait (no attempts spent) until the secret changes or a reload");
            }
            let error = AttemptError {
                at: rfc3339_ms(to_ms(now)),
                attempt: job.attempt,
                class: class.into(),
                code: err.code.clone(),
                message: err.message.clone(),
            };
            return self.end(Finish {
                job: job.clone(),
                owner: me.owner.clone(),
                now: to_ms(now),
                ops: records,
                ending: Ending::Released { error },
            });
        }
        crate::metrics::attempt(&job.source, class.as_str());
        if err.source_wide {
            self.breaker(&job.source, |b, p| b.on_source_wide(now, p));
            tracing::warn!(source = %job.source, error = %err, "breaker opened: error affects every job of the source");
        } else if class == ErrorClass::Retryable {
            let mut opened = false;
            self.breaker(&job.source, |b, p| opened = b.on_retryable(now, p));
            if opened {
                tracing::warn!(source = %job.source, "breaker opened after consecutive retryable failures");
            }
        } else {
            let mut closed = false;
            self.breaker(&job.source, |b, _| closed = b.on_success());
            if closed {
                tracing::info!(source = %job.source, "breaker closed: the source answers again");
            }
        }
        let policy = source.map(|s| s.retry.clone()).unwrap_or_default();
        let policy = policy::RetryPolicy {
            max_attempts: job.max_attempts,
            ..policy
        };
        let window_start = from_ms(job.window_start.unwrap_or(to_ms(now)));
        let decision = decide(
            &policy,
            class,
            job.attempt,
            window_start,
            now,
            err.retry_after,
            fastrand::f64(),
        );
        let error = AttemptError {
            at: rfc3339_ms(to_ms(now)),
            attempt: job.attempt,
            class: class.as_str().into(),
            code: err.code.clone(),
            message: err.message.clone(),
        };
        let ending = match decision {
            Decision::Retry { at } => Ending::Retry {
                at: to_ms(at),
                error,
            },
            Decision::Fail { reason } => Ending::Failed { error, reason },
        };
        self.end(Finish {
            job: job.clone(),
            owner: me.owner.clone(),
            now: to_ms(now),
            ops: records,
            ending,
        })
    }
}
