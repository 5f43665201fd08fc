//! Durations in configuration files: `"500ms"`, `"2s"`, `"10m"`, `"24h"`, `"3d"`.

use std::time::Duration;

pub fn parse(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .ok_or_else(|| format!("`{s}` has no unit (use ms, s, m, h or d)"))?;
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` does not start with a number"))?;
    let secs = match unit.trim() {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86400.0,
        other => {
            return Err(format!(
                "`{s}`: unknown unit `{other}` (use ms, s, m, h or d)"
            ));
        }
    };
    if !secs.is_finite() || !(0.0..=1e10).contains(&secs) {
        return Err(format!("`{s}` is out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units() {
        assert_eq!(parse("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(parse("24h").unwrap(), Duration::from_secs(86400));
        assert_eq!(parse("3d").unwrap(), Duration::from_secs(3 * 86400));
        assert_eq!(parse("1.5s").unwrap(), Duration::from_millis(1500));
    }

    #[test]
    fn rejects_bad_input() {
        for bad in ["", "10", "s", "10x", "-1s", "1e99d"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
