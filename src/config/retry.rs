//! A `[retry]` section (in provd.toml or a source file) applied over the defaults.

use super::files::RetrySection;
use crate::model::{BreakerPolicy, RetryPolicy};

/// `base` with the keys `section` sets; errors name the key.
pub fn retry_policy(
    base: &RetryPolicy,
    section: &RetrySection,
) -> Result<RetryPolicy, (String, String)> {
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

/// `base` with the breaker keys `section` sets.
pub fn breaker_policy(base: &BreakerPolicy, section: &RetrySection) -> BreakerPolicy {
    BreakerPolicy {
        failures: section.breaker_failures.unwrap_or(base.failures).max(1),
        cooldown: section.breaker_cooldown.map_or(base.cooldown, |d| d.0),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn section_overrides_and_validates() {
        let s: RetrySection = toml::from_str("max_attempts = 5\ninitial = \"1s\"").unwrap();
        let p = retry_policy(&RetryPolicy::default(), &s).unwrap();
        assert_eq!(p.max_attempts, 5);
        assert_eq!(p.initial, Duration::from_secs(1));
        assert_eq!(p.factor, 2.0);
        let s: RetrySection = toml::from_str("factor = 0.5").unwrap();
        assert_eq!(
            retry_policy(&RetryPolicy::default(), &s).unwrap_err().0,
            "factor"
        );
        let s: RetrySection = toml::from_str("max_attempts = 0").unwrap();
        assert_eq!(
            retry_policy(&RetryPolicy::default(), &s).unwrap_err().0,
            "max_attempts"
        );
    }
}
