//! Retry and breaker policies: the numbers a source's `[retry]` section settles. Deciding
//! what to do after a failure with them is `crate::dispatch::policy`.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use jiff::{SignedDuration, Timestamp};

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
