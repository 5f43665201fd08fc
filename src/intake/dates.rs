//! `startDate` / `removeDate`: RFC 3339 date-times, or bare dates `YYYY-MM-DD` meaning
//! the start of that day in the request's `clientMetadata.timeZone` or the agent's zone
//! (seed 000: "12:00 AM in the time zone set on the requester's browser").

use jiff::Timestamp;
use jiff::civil::Date;
use jiff::tz::TimeZone;

/// Parses a date field. Errors are phrased for the person who wrote the request.
pub fn resolve(text: &str, zone: &TimeZone) -> Result<Timestamp, String> {
    let looks_bare =
        text.len() == 10 && text.as_bytes().get(4) == Some(&b'-') && !text.contains('T');
    if looks_bare {
        let date: Date = text
            .parse()
            .map_err(|e| format!("`{text}` is not a valid date (YYYY-MM-DD): {e}"))?;
        // jiff picks the first instant of the day, also where midnight itself falls in a
        // DST gap (the day then starts at 01:00).
        let zoned = date
            .to_zoned(zone.clone())
            .and_then(|z| z.start_of_day())
            .map_err(|_| out_of_range(text))?;
        return Ok(zoned.timestamp());
    }
    check_offset(text)?;
    text.parse::<Timestamp>().map_err(|_| {
        // Well-formed but not representable: say so, not "not a date".
        let civil = text.get(..19).and_then(|t| t.parse::<jiff::civil::DateTime>().ok());
        if civil.is_some() {
            out_of_range(text)
        } else {
            format!("`{text}` is neither an RFC 3339 date-time with an offset (2030-01-31T17:00:00Z) nor a date (2030-01-31)")
        }
    })
}

fn out_of_range(text: &str) -> String {
    format!(
        "`{text}` is too far in the future: the latest moment provd can keep is {}",
        Timestamp::MAX.strftime("%Y-%m-%dT%H:%M:%SZ")
    )
}

/// RFC 3339 offsets are `Z` or `±HH:MM` with HH at most 23; jiff would take up to ±25:59,
/// a date no one meant.
fn check_offset(text: &str) -> Result<(), String> {
    let b = text.as_bytes();
    if b.len() < 6 {
        return Ok(());
    }
    let tail = &b[b.len() - 6..];
    let is_offset = matches!(tail[0], b'+' | b'-')
        && tail[1].is_ascii_digit()
        && tail[2].is_ascii_digit()
        && tail[3] == b':'
        && tail[4].is_ascii_digit()
        && tail[5].is_ascii_digit();
    if !is_offset {
        return Ok(());
    }
    let hours = u32::from(tail[1] - b'0') * 10 + u32::from(tail[2] - b'0');
    let minutes = u32::from(tail[4] - b'0') * 10 + u32::from(tail[5] - b'0');
    if hours > 23 || minutes > 59 {
        let offset = &text[text.len() - 6..];
        return Err(format!(
            "`{text}`: the offset {offset} is out of range (RFC 3339 offsets run from -23:59 to +23:59)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tz(name: &str) -> TimeZone {
        TimeZone::get(name).unwrap()
    }

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn date_times_keep_their_offset() {
        let utc = TimeZone::UTC;
        assert_eq!(
            resolve("2030-01-31T17:00:00Z", &utc).unwrap(),
            at("2030-01-31T17:00:00Z")
        );
        assert_eq!(
            resolve("2030-01-31T17:00:00+02:00", &utc).unwrap(),
            at("2030-01-31T15:00:00Z")
        );
        assert!(
            resolve("2030-01-31T17:00:00", &utc).is_err(),
            "a date-time needs an offset"
        );
        assert!(resolve("tomorrow", &utc).is_err());
        for bad in [
            "2030-01-31T17:00:00+25:00",
            "2030-01-31T17:00:00-24:00",
            "2030-01-31T17:00:00+02:60",
        ] {
            let e = resolve(bad, &utc).unwrap_err();
            assert!(e.contains("out of range"), "{e}");
        }
        assert!(resolve("2030-01-31T17:00:00+23:59", &utc).is_ok());
        for far in ["9999-12-31T23:59:59Z", "9999-12-31"] {
            let e = resolve(far, &utc).unwrap_err();
            assert!(
                e.contains("too far in the future") && e.contains("9999-12-30"),
                "{e}"
            );
        }
        assert!(resolve("2030-02-30", &utc).is_err());
    }

    #[test]
    fn bare_dates_start_the_day_in_the_zone_across_dst() {
        // New York: DST begins 2030-03-10; midnight is EST (-5) before, EDT (-4) after.
        let ny = tz("America/New_York");
        assert_eq!(
            resolve("2030-03-09", &ny).unwrap(),
            at("2030-03-09T05:00:00Z")
        );
        assert_eq!(
            resolve("2030-03-11", &ny).unwrap(),
            at("2030-03-11T04:00:00Z")
        );
        // Berlin: DST ends 2030-10-27; CEST (+2) before, CET (+1) after.
        let be = tz("Europe/Berlin");
        assert_eq!(
            resolve("2030-10-26", &be).unwrap(),
            at("2030-10-25T22:00:00Z")
        );
        assert_eq!(
            resolve("2030-10-28", &be).unwrap(),
            at("2030-10-27T23:00:00Z")
        );
        // Sydney: DST ends 2030-04-07 (+11 → +10), southern hemisphere.
        let sy = tz("Australia/Sydney");
        assert_eq!(
            resolve("2030-04-06", &sy).unwrap(),
            at("2030-04-05T13:00:00Z")
        );
        assert_eq!(
            resolve("2030-04-08", &sy).unwrap(),
            at("2030-04-07T14:00:00Z")
        );
    }

    #[test]
    fn a_day_whose_midnight_is_skipped_starts_at_the_first_real_instant() {
        // Santiago: DST starts 2030-09-08 at 00:00 → 01:00 (-4 → -3).
        let sc = tz("America/Santiago");
        let ts = resolve("2030-09-08", &sc).unwrap();
        assert_eq!(ts.to_zoned(sc).time(), jiff::civil::time(1, 0, 0, 0));
    }
}
