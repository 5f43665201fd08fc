use std::io::ErrorKind;
use std::time::Duration;

/// Whether trying the same operation again later can succeed (DESIGN §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ErrorClass {
    /// Transport failures and "busy / unavailable" answers: retried with backoff.
    Retryable,
    /// Everything else: the job fails with the target's code and message.
    Permanent,
}

impl ErrorClass {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Retryable => "retryable",
            ErrorClass::Permanent => "permanent",
        }
    }
}

/// A failed connector call, carrying its class and the target's own code and message.
///
/// The message must never contain a secret: connectors build it from the target's answer
/// and from non-secret settings only.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.describe())]
pub struct ConnectorError {
    /// Retryable or permanent, as the connector sees it; the source's `retryable_errors`
    /// can still turn a permanent error retryable.
    pub class: ErrorClass,
    /// The target's own code: an LDAP result code, an HTTP status, an errno name.
    pub code: Option<String>,
    /// The target's diagnostic message, or a description of the transport failure.
    pub message: String,
    /// How long the target asked us to wait (HTTP `Retry-After`).
    pub retry_after: Option<Duration>,
    /// Bad credentials and the like: other jobs for the same source would fail the same
    /// way, so the dispatcher opens the source's breaker at once.
    pub source_wide: bool,
    /// provd's own credentials were refused (LDAP bind 49, HTTP 401/403): the job is not
    /// at fault, so it spends no attempt and does not fail; it waits for the source.
    pub auth: bool,
    /// The connection's trust failed (TLS handshake, certificate, its name, its CA): a
    /// configuration or certificate problem, not the job's. Held like `auth` (DESIGN
    /// §24): no attempt spent, the breaker open, until the fix and a reload; failing every
    /// job in flight for good, as before, left each needing `jobs retry`.
    pub trust: bool,
}

impl ConnectorError {
    pub fn retryable(code: Option<String>, message: impl Into<String>) -> Self {
        Self::new(ErrorClass::Retryable, code, message)
    }

    pub fn permanent(code: Option<String>, message: impl Into<String>) -> Self {
        Self::new(ErrorClass::Permanent, code, message)
    }

    pub fn new(class: ErrorClass, code: Option<String>, message: impl Into<String>) -> Self {
        Self {
            class,
            code,
            message: message.into(),
            retry_after: None,
            source_wide: false,
            auth: false,
            trust: false,
        }
    }

    /// A transport error (`std::io::Error`) classified by its kind.
    pub fn from_io(err: &std::io::Error) -> Self {
        Self::new(
            classify_io(err.kind()),
            Some(format!("{:?}", err.kind())),
            err.to_string(),
        )
    }

    pub fn with_retry_after(mut self, after: Option<Duration>) -> Self {
        self.retry_after = after;
        self
    }

    pub fn source_wide(mut self) -> Self {
        self.source_wide = true;
        self
    }

    /// An authentication failure of provd's own credentials (implies source-wide).
    pub fn auth_failure(mut self) -> Self {
        self.source_wide = true;
        self.auth = true;
        self
    }

    /// A TLS trust failure (implies source-wide).
    pub fn trust_failure(mut self) -> Self {
        self.source_wide = true;
        self.trust = true;
        self
    }

    /// Whether provd's side holds the job (credentials refused, trust failed) rather than
    /// the job failing: it waits, spending nothing.
    pub fn held(&self) -> bool {
        self.auth || self.trust
    }

    /// The same error with every secret `r` knows scrubbed from its message, and the
    /// message capped; connectors call it on everything a target said.
    pub fn redacted(mut self, r: &crate::redact::Redactor) -> Self {
        self.message = crate::redact::cap_to(&r.redact(&self.message), 1024);
        self
    }

    fn describe(&self) -> String {
        match &self.code {
            Some(code) => format!("{} ({code}): {}", self.class.as_str(), self.message),
            None => format!("{}: {}", self.class.as_str(), self.message),
        }
    }
}

/// Whether a TLS error (rustls') is anywhere in `e`'s chain: an untrusted or expired
/// certificate, a name it does not carry, a failed handshake.
pub fn is_tls(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(e);
    while let Some(err) = next {
        if err.is::<rustls::Error>() {
            return true;
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && io
                .get_ref()
                .is_some_and(|inner| inner.is::<rustls::Error>())
        {
            return true;
        }
        next = err.source();
    }
    false
}

/// DESIGN §6 rule 2: connection refused, no route, reset, timeout, DNS → retryable.
pub fn classify_io(kind: ErrorKind) -> ErrorClass {
    match kind {
        ErrorKind::ConnectionRefused
        | ErrorKind::ConnectionReset
        | ErrorKind::ConnectionAborted
        | ErrorKind::NotConnected
        | ErrorKind::BrokenPipe
        | ErrorKind::TimedOut
        | ErrorKind::HostUnreachable
        | ErrorKind::NetworkUnreachable
        | ErrorKind::NetworkDown
        | ErrorKind::AddrNotAvailable
        | ErrorKind::UnexpectedEof
        | ErrorKind::Interrupted
        | ErrorKind::WouldBlock => ErrorClass::Retryable,
        _ => ErrorClass::Permanent,
    }
}

/// DESIGN §6 rule 3 for HTTP: 408, 429, 502, 503, 504 → retryable; everything else is
/// permanent (2xx never reaches here).
pub fn classify_http_status(status: u16) -> ErrorClass {
    match status {
        408 | 429 | 502 | 503 | 504 => ErrorClass::Retryable,
        _ => ErrorClass::Permanent,
    }
}

/// DESIGN §6 rule 3 for LDAP: busy (51) and unavailable (52) → retryable. Result codes
/// 80+ that ldap3 reports for a lost connection are transport failures, also retryable.
pub fn classify_ldap_code(rc: u32) -> ErrorClass {
    match rc {
        51 | 52 => ErrorClass::Retryable,
        // 81 serverDown, 85 timeout, 91 connectError (client-side codes)
        81 | 85 | 91 => ErrorClass::Retryable,
        _ => ErrorClass::Permanent,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_failures_are_retryable() {
        for kind in [
            ErrorKind::ConnectionRefused,
            ErrorKind::ConnectionReset,
            ErrorKind::TimedOut,
            ErrorKind::HostUnreachable,
            ErrorKind::NetworkUnreachable,
        ] {
            assert_eq!(classify_io(kind), ErrorClass::Retryable, "{kind:?}");
        }
        assert_eq!(
            classify_io(ErrorKind::PermissionDenied),
            ErrorClass::Permanent
        );
        assert_eq!(classify_io(ErrorKind::InvalidData), ErrorClass::Permanent);
    }

    #[test]
    fn http_statuses_follow_design_rule_3() {
        for s in [408, 429, 502, 503, 504] {
            assert_eq!(classify_http_status(s), ErrorClass::Retryable, "{s}");
        }
        for s in [400, 401, 403, 404, 409, 422, 500, 501] {
            assert_eq!(classify_http_status(s), ErrorClass::Permanent, "{s}");
        }
    }

    #[test]
    fn ldap_busy_and_unavailable_are_retryable() {
        assert_eq!(classify_ldap_code(51), ErrorClass::Retryable);
        assert_eq!(classify_ldap_code(52), ErrorClass::Retryable);
        for rc in [16, 20, 32, 49, 50, 65, 68] {
            assert_eq!(classify_ldap_code(rc), ErrorClass::Permanent, "{rc}");
        }
    }

    #[test]
    fn display_names_class_code_and_message() {
        let e = ConnectorError::permanent(Some("49".into()), "invalid credentials");
        assert_eq!(e.to_string(), "permanent (49): invalid credentials");
        let io = std::io::Error::from(ErrorKind::ConnectionRefused);
        let e = ConnectorError::from_io(&io);
        assert_eq!(e.class, ErrorClass::Retryable);
        assert_eq!(e.code.as_deref(), Some("ConnectionRefused"));
    }
}
