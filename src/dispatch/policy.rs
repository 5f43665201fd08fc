//! When to try a failed job again: exponential backoff with full jitter, capped, limited
//! by attempts and elapsed time (DESIGN §6). Pure: the caller passes the time and the
//! random fraction, so every branch is testable.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use jiff::{SignedDuration, Timestamp};
use provd_connector_core::ErrorClass;

use crate::config::files::RetrySection;

#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    pub initial: Duration,
    pub factor: f64,
    pub max_interval: Duration,
    pub max_attempts: u32,
    pub max_elapsed: Duration,
}

impl Default for RetryPolicy {
    /// DESIGN §6: 2 s, ×2, capped at 10 min, 10 attempts or 24 h.
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(2),
            factor: 2.0,
            max_interval: Duration::from_secs(600),
            max_attempts: 10,
            max_elapsed: Duration::from_secs(86_400),
        }
    }
}

impl RetryPolicy {
    /// `base` with the keys `section` sets; errors name the key.
    pub fn from_section(
        base: &RetryPolicy,
        section: &RetrySection,
    ) -> Result<Self, (String, String)> {
        let p = RetryPolicy {
            initial: section.initial.map_or(base.initial, |d| d.0),
            factor: section.factor.unwrap_or(base.factor),
            max_interval: section.max_interval.map_or(base.max_interval, |d| d.0),
            max_attempts: section.max_attempts.unwrap_or(base.max_attempts),
            max_elapsed: section.max_elapsed.map_or(base.max_elapsed, |d| d.0),
        };
        if !(p.factor.is_finite() && p.factor >= 1.0) {
            return Err(("factor".into(), "must be a number of at least 1.0".into()));
        }
        if p.max_attempts == 0 {
            return Err(("max_attempts".into(), "must be at least 1".into()));
        }
        if p.initial.is_zero() {
            return Err(("initial".into(), "must be more than 0".into()));
        }
        if p.max_interval < p.initial {
            return Err((
                "max_interval".into(),
                "must not be less than initial".into(),
            ));
        }
        Ok(p)
    }

    /// The most the wait after failed attempt `attempt` (1-based) may be: initial ×
    /// factor^(attempt-1), capped at max_interval.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        ExponentialBuilder::default()
            .with_min_delay(self.initial)
            .with_max_delay(self.max_interval)
            .with_factor(self.factor as f32)
            .without_max_times()
            .build()
            .nth(attempt.saturating_sub(1).min(64) as usize)
            .unwrap_or(self.max_interval)
            .min(self.max_interval)
    }
}

/// What to do with a job whose attempt failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Try again at this time.
    Retry { at: Timestamp },
    /// Give up; the reason goes into the job's error list.
    Fail { reason: String },
}

/// Decides after failed attempt `attempt` (1-based). `jitter` is a fraction in [0, 1):
/// full jitter waits `jitter × ceiling`. The target's `Retry-After` is a floor.
pub fn decide(
    policy: &RetryPolicy,
    class: ErrorClass,
    attempt: u32,
    window_start: Timestamp,
    now: Timestamp,
    retry_after: Option<Duration>,
    jitter: f64,
) -> Decision {
    if class == ErrorClass::Permanent {
        return Decision::Fail {
            reason: "permanent error".into(),
        };
    }
    if attempt >= policy.max_attempts {
        return Decision::Fail {
            reason: format!("gave up after {attempt} attempts (max_attempts)"),
        };
    }
    let wait = policy.ceiling(attempt).mul_f64(jitter.clamp(0.0, 1.0));
    let wait = wait.max(retry_after.unwrap_or_default());
    let at = add(now, wait);
    if at > add(window_start, policy.max_elapsed) {
        return Decision::Fail {
            reason: format!(
                "gave up: the next attempt would come more than {}s after the first (max_elapsed)",
                policy.max_elapsed.as_secs()
            ),
        };
    }
    Decision::Retry { at }
}

pub fn add(t: Timestamp, d: Duration) -> Timestamp {
    SignedDuration::try_from(d)
        .ok()
        .and_then(|d| t.checked_add(d).ok())
        .unwrap_or(Timestamp::MAX)
}

/// When to stop sending a source work and when to probe it again.
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerPolicy {
    pub failures: u32,
    pub cooldown: Duration,
}

impl Default for BreakerPolicy {
    /// DESIGN §6: open after 5 consecutive retryable failures.
    fn default() -> Self {
        Self {
            failures: 5,
            cooldown: Duration::from_secs(30),
        }
    }
}

impl BreakerPolicy {
    pub fn with(&self, section: &RetrySection) -> Self {
        Self {
            failures: section.breaker_failures.unwrap_or(self.failures).max(1),
            cooldown: section.breaker_cooldown.map_or(self.cooldown, |d| d.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> Timestamp {
        Timestamp::from_second(1_800_000_000).unwrap()
    }

    #[test]
    fn ceiling_grows_by_factor_and_caps() {
        let p = RetryPolicy::default();
        assert_eq!(p.ceiling(1), Duration::from_secs(2));
        assert_eq!(p.ceiling(2), Duration::from_secs(4));
        assert_eq!(p.ceiling(5), Duration::from_secs(32));
        assert_eq!(p.ceiling(9), Duration::from_secs(512));
        assert_eq!(p.ceiling(10), Duration::from_secs(600));
        assert_eq!(p.ceiling(1000), Duration::from_secs(600));
    }

    #[test]
    fn full_jitter_scales_the_ceiling() {
        let p = RetryPolicy::default();
        let d = decide(&p, ErrorClass::Retryable, 3, t0(), t0(), None, 0.5);
        assert_eq!(
            d,
            Decision::Retry {
                at: add(t0(), Duration::from_secs(4))
            }
        );
        let d = decide(&p, ErrorClass::Retryable, 3, t0(), t0(), None, 0.0);
        assert_eq!(d, Decision::Retry { at: t0() });
    }

    #[test]
    fn retry_after_is_a_floor() {
        let p = RetryPolicy::default();
        let d = decide(
            &p,
            ErrorClass::Retryable,
            1,
            t0(),
            t0(),
            Some(Duration::from_secs(60)),
            0.9,
        );
        assert_eq!(
            d,
            Decision::Retry {
                at: add(t0(), Duration::from_secs(60))
            }
        );
    }

    #[test]
    fn permanent_fails_at_once() {
        let p = RetryPolicy::default();
        let d = decide(&p, ErrorClass::Permanent, 1, t0(), t0(), None, 0.5);
        assert!(matches!(d, Decision::Fail { .. }));
    }

    #[test]
    fn max_attempts_then_fail() {
        let p = RetryPolicy::default();
        assert!(matches!(
            decide(&p, ErrorClass::Retryable, 9, t0(), t0(), None, 0.5),
            Decision::Retry { .. }
        ));
        let d = decide(&p, ErrorClass::Retryable, 10, t0(), t0(), None, 0.5);
        assert_eq!(
            d,
            Decision::Fail {
                reason: "gave up after 10 attempts (max_attempts)".into()
            }
        );
    }

    #[test]
    fn max_elapsed_then_fail() {
        let p = RetryPolicy::default();
        let now = add(t0(), Duration::from_secs(86_300));
        let d = decide(&p, ErrorClass::Retryable, 8, t0(), now, None, 0.99);
        assert!(
            matches!(d, Decision::Fail { ref reason } if reason.contains("max_elapsed")),
            "{d:?}"
        );
        let d = decide(&p, ErrorClass::Retryable, 8, t0(), now, None, 0.1);
        assert!(matches!(d, Decision::Retry { .. }), "{d:?}");
    }

    #[test]
    fn section_overrides_and_validates() {
        let s: RetrySection = toml::from_str("max_attempts = 5\ninitial = \"1s\"").unwrap();
        let p = RetryPolicy::from_section(&RetryPolicy::default(), &s).unwrap();
        assert_eq!(p.max_attempts, 5);
        assert_eq!(p.initial, Duration::from_secs(1));
        assert_eq!(p.factor, 2.0);
        let s: RetrySection = toml::from_str("factor = 0.5").unwrap();
        assert_eq!(
            RetryPolicy::from_section(&RetryPolicy::default(), &s)
                .unwrap_err()
                .0,
            "factor"
        );
        let s: RetrySection = toml::from_str("max_attempts = 0").unwrap();
        assert_eq!(
            RetryPolicy::from_section(&RetryPolicy::default(), &s)
                .unwrap_err()
                .0,
            "max_attempts"
        );
    }
}
