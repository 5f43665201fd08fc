//! From ldap3's errors and result codes to classified [`ConnectorError`]s (DESIGN §6).

use ldap3::LdapError;
use ldap3::result::LdapResult;
use provd_connector_core::{ConnectorError, ErrorClass, classify_ldap_code};

/// Result codes by name, for messages an operator can read.
pub fn code_name(rc: u32) -> &'static str {
    match rc {
        0 => "success",
        16 => "noSuchAttribute",
        20 => "attributeOrValueExists",
        21 => "invalidAttributeSyntax",
        32 => "noSuchObject",
        34 => "invalidDNSyntax",
        49 => "invalidCredentials",
        50 => "insufficientAccessRights",
        51 => "busy",
        52 => "unavailable",
        53 => "unwillingToPerform",
        64 => "namingViolation",
        65 => "objectClassViolation",
        68 => "entryAlreadyExists",
        _ => "ldapError",
    }
}

/// A failed LDAP result: the code, its name and the server's diagnostic message.
pub fn from_result(what: &str, r: &LdapResult) -> ConnectorError {
    let mut e = ConnectorError::new(
        classify_ldap_code(r.rc),
        Some(r.rc.to_string()),
        format!(
            "{what}: {} ({}){}",
            code_name(r.rc),
            r.rc,
            if r.text.is_empty() {
                String::new()
            } else {
                format!(": {}", r.text)
            }
        ),
    );
    // provd's own credentials refused (AD: `data 52e` wrong password, `775` locked):
    // every job of the source would fail the same way, and none is at fault.
    if r.rc == 49 && what == "bind" {
        e = e.auth_failure();
    } else if r.rc == 53 && what == "bind" {
        e = e.source_wide();
    }
    e
}

/// A transport or protocol failure from ldap3.
pub fn from_ldap(what: &str, err: LdapError) -> ConnectorError {
    match err {
        LdapError::LdapResult { result } => from_result(what, &result),
        // tokio-rustls reports a failed handshake (untrusted certificate, wrong name) as an
        // I/O error; retrying cannot fix a trust problem, every job would hit it, and none
        // is at fault: the jobs wait for the fix and a reload.
        LdapError::Io { source } if source.get_ref().is_some_and(|e| e.is::<rustls::Error>()) => {
            ConnectorError::permanent(Some("tls".into()), format!("{what}: TLS: {source}"))
                .trust_failure()
        }
        // Everything else on the wire is a transport failure: refused, reset, DNS, timeout,
        // a connection the server closed.
        LdapError::Io { source } => ConnectorError::retryable(
            Some(format!("{:?}", source.kind())),
            format!("{what}: {source}"),
        ),
        LdapError::Timeout { .. } => {
            ConnectorError::retryable(Some("timeout".into()), format!("{what}: no answer in time"))
        }
        e @ (LdapError::OpSend { .. }
        | LdapError::ResultRecv { .. }
        | LdapError::IdScrubSend { .. }
        | LdapError::EndOfStream) => ConnectorError::retryable(
            Some("connection".into()),
            format!("{what}: connection lost: {e}"),
        ),
        // A certificate that does not verify is a configuration problem for every job.
        e @ (LdapError::Rustls { .. } | LdapError::DNSName { .. }) => ConnectorError::new(
            ErrorClass::Permanent,
            Some("tls".into()),
            format!("{what}: TLS: {e}"),
        )
        .source_wide(),
        other => ConnectorError::permanent(None, format!("{what}: {other}")),
    }
}

/// Is this error one a fresh connection could avoid (the pooled one was dropped)?
pub fn is_transport(e: &ConnectorError) -> bool {
    e.class == ErrorClass::Retryable
        && e.code
            .as_deref()
            .is_some_and(|c| !c.chars().all(|d| d.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(rc: u32, text: &str) -> LdapResult {
        LdapResult {
            rc,
            matched: String::new(),
            text: text.into(),
            refs: vec![],
            ctrls: vec![],
        }
    }

    #[test]
    fn result_codes_are_classified_and_named() {
        let e = from_result("bind", &result(49, "bad"));
        assert_eq!(
            (e.class, e.code.as_deref(), e.source_wide),
            (ErrorClass::Permanent, Some("49"), true)
        );
        assert_eq!(e.message, "bind: invalidCredentials (49): bad");
        let e = from_result("modify", &result(65, ""));
        assert_eq!((e.class, e.source_wide), (ErrorClass::Permanent, false));
        for rc in [51, 52] {
            assert_eq!(
                from_result("add", &result(rc, "")).class,
                ErrorClass::Retryable
            );
        }
    }

    #[test]
    fn transport_failures_are_retryable_and_recognised() {
        let e = from_ldap(
            "connect",
            LdapError::Io {
                source: std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
            },
        );
        assert_eq!(e.class, ErrorClass::Retryable);
        assert!(is_transport(&e));
        assert!(
            !is_transport(&from_result("add", &result(52, ""))),
            "a busy server is not a dead connection"
        );
        let e = from_ldap("search", LdapError::EndOfStream);
        assert!(is_transport(&e));
    }
}
