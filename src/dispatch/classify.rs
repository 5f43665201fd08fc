//! DESIGN §6 rule 1: a source's `retryable_errors` turn a matching error retryable. Rules
//! 2–4 are the connector's own classification (`provd_connector_core::classify_*`).

use provd_connector_core::{ConnectorError, ErrorClass};
use regex::Regex;

/// The class the dispatcher acts on.
pub fn classify(err: &ConnectorError, retryable_errors: &[Regex]) -> ErrorClass {
    let matches = retryable_errors
        .iter()
        .any(|re| re.is_match(&err.message) || err.code.as_deref().is_some_and(|c| re.is_match(c)));
    if matches {
        ErrorClass::Retryable
    } else {
        err.class
    }
}

#[cfg(test)]
mod tests {
    use provd_connector_core::{classify_http_status, classify_io, classify_ldap_code};

    use super::*;

    fn re(s: &str) -> Vec<Regex> {
        vec![Regex::new(s).unwrap()]
    }

    #[test]
    fn rule_1_source_patterns_make_an_error_retryable() {
        let e = ConnectorError::permanent(Some("53".into()), "Server is busy, try later");
        assert_eq!(classify(&e, &[]), ErrorClass::Permanent);
        assert_eq!(
            classify(&e, &re("(?i)server is busy")),
            ErrorClass::Retryable
        );
        assert_eq!(
            classify(&e, &re("^53$")),
            ErrorClass::Retryable,
            "codes match too"
        );
        assert_eq!(classify(&e, &re("nope")), ErrorClass::Permanent);
    }

    #[test]
    fn rule_2_transport_failures() {
        use std::io::ErrorKind::*;
        for kind in [
            ConnectionRefused,
            HostUnreachable,
            ConnectionReset,
            TimedOut,
        ] {
            let e = ConnectorError::new(classify_io(kind), None, "x");
            assert_eq!(classify(&e, &[]), ErrorClass::Retryable, "{kind:?}");
        }
    }

    #[test]
    fn rule_3_protocol_codes() {
        for s in [408, 429, 502, 503, 504] {
            let e = ConnectorError::new(classify_http_status(s), Some(s.to_string()), "x");
            assert_eq!(classify(&e, &[]), ErrorClass::Retryable, "{s}");
        }
        for rc in [51, 52] {
            let e = ConnectorError::new(classify_ldap_code(rc), Some(rc.to_string()), "x");
            assert_eq!(classify(&e, &[]), ErrorClass::Retryable, "{rc}");
        }
    }

    #[test]
    fn rule_4_everything_else_is_permanent() {
        for s in [400, 401, 403, 404, 409] {
            let e = ConnectorError::new(classify_http_status(s), Some(s.to_string()), "x");
            assert_eq!(classify(&e, &[]), ErrorClass::Permanent, "{s}");
        }
        for rc in [49, 65, 32] {
            let e = ConnectorError::new(classify_ldap_code(rc), Some(rc.to_string()), "x");
            assert_eq!(classify(&e, &[]), ErrorClass::Permanent, "{rc}");
        }
    }
}
