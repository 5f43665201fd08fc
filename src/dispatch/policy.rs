//! When to try a failed job again: exponential backoff with full jitter, capped, limited
//! by attempts and elapsed time (DESIGN §6). Pure: the caller passes the time and the
//! random fraction, so every branch is testable.

use std::time::Duration;

use jiff::Timestamp;
use provd_connector_core::ErrorClass;

pub use crate::model::{BreakerPolicy, RetryPolicy, add};

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
}
