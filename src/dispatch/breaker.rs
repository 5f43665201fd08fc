//! A per-source circuit breaker: after `failures` consecutive retryable failures (or one
//! source-wide error such as bad credentials) the source gets no work for `cooldown`; then
//! one job probes it. Jobs that wait on an open breaker are simply not claimed, so they
//! spend no attempts.

use jiff::Timestamp;

use super::policy::{BreakerPolicy, add};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open {
        until: Timestamp,
    },
    /// The cool-down is over: one probe may go.
    HalfOpen,
}

#[derive(Debug, Default, Clone)]
pub struct Breaker {
    consecutive: u32,
    open_until: Option<Timestamp>,
}

impl Breaker {
    pub fn state(&self, now: Timestamp) -> BreakerState {
        match self.open_until {
            None => BreakerState::Closed,
            Some(until) if now < until => BreakerState::Open { until },
            Some(_) => BreakerState::HalfOpen,
        }
    }

    /// A success; returns true if this closed an open (probing) breaker, so that the
    /// operator who saw it open also sees it close.
    pub fn on_success(&mut self) -> bool {
        self.consecutive = 0;
        self.open_until.take().is_some()
    }

    /// A retryable failure; returns true if this opened the breaker.
    pub fn on_retryable(&mut self, now: Timestamp, policy: &BreakerPolicy) -> bool {
        self.consecutive = self.consecutive.saturating_add(1);
        let probing = self.open_until.is_some();
        if probing || self.consecutive >= policy.failures {
            self.open_until = Some(add(now, policy.cooldown));
            return true;
        }
        false
    }

    /// An error every job of the source would hit (bad credentials): open at once.
    pub fn on_source_wide(&mut self, now: Timestamp, policy: &BreakerPolicy) {
        self.consecutive = self.consecutive.max(policy.failures);
        self.open_until = Some(add(now, policy.cooldown));
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn opens_after_threshold_probes_after_cooldown() {
        let p = BreakerPolicy {
            failures: 3,
            cooldown: Duration::from_secs(10),
        };
        let t = Timestamp::from_second(1_800_000_000).unwrap();
        let mut b = Breaker::default();
        assert!(!b.on_retryable(t, &p));
        assert!(!b.on_retryable(t, &p));
        assert_eq!(b.state(t), BreakerState::Closed);
        assert!(b.on_retryable(t, &p));
        assert!(matches!(b.state(t), BreakerState::Open { .. }));
        let later = add(t, Duration::from_secs(10));
        assert_eq!(b.state(later), BreakerState::HalfOpen);
        // A failed probe opens it again at once.
        assert!(b.on_retryable(later, &p));
        assert!(matches!(b.state(later), BreakerState::Open { .. }));
        assert!(b.on_success(), "a probe's success closes the breaker");
        assert!(!b.on_success(), "closed already");
        assert_eq!(b.state(later), BreakerState::Closed);
    }

    #[test]
    fn source_wide_errors_open_at_once() {
        let p = BreakerPolicy::default();
        let t = Timestamp::from_second(1_800_000_000).unwrap();
        let mut b = Breaker::default();
        b.on_source_wide(t, &p);
        assert!(matches!(b.state(t), BreakerState::Open { .. }));
    }
}
