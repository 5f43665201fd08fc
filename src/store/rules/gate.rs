//! How a credential gate's fingerprint is kept: 16 hex digits. The gate's rule itself
//! (`admit`, `after_failure`) lives beside the gate, in the connectors' core.

use provd_connector_core::gate::Remembered;

use crate::store::events::Event;

/// The fingerprint as stored.
pub fn fingerprint_text(fp: u64) -> String {
    format!("{fp:016x}")
}

/// A stored fingerprint; an unreadable one is 0, which no secret has (so it never
/// matches and the secret gets its tries).
pub fn parse_fingerprint(text: &str) -> u64 {
    u64::from_str_radix(text, 16).unwrap_or(0)
}

/// The audit event of an operator's `provd sources unblock`.
pub fn unblocked<'a>(source: &'a str, was: &Remembered, actor: &'a str) -> Event<'a> {
    Event {
        kind: "source_unblocked",
        source: Some(source),
        data: serde_json::json!({ "failures": was.failures, "last": was.last }),
        actor,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_round_trip_and_garbage_matches_nothing() {
        for fp in [1, 0xdead_beef, u64::MAX] {
            assert_eq!(parse_fingerprint(&fingerprint_text(fp)), fp);
        }
        assert_eq!(parse_fingerprint("zz"), 0);
    }
}
