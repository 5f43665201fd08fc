//! The SMTP connection, from `[mail]`: STARTTLS, implicit TLS or (a local relay) plain,
//! with a deadline on every exchange so a silent server cannot hold the mailer.

use std::time::Duration;

use base64::Engine;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use provd_connector_core::redact::Redactor;
use secrecy::{ExposeSecret, SecretString};

use crate::config::mail::{Mail, Security};

/// How long one SMTP exchange may take.
const TIMEOUT: Duration = Duration::from_secs(30);

/// The connection, with what to take out of the server's words.
pub struct Transport {
    inner: AsyncSmtpTransport<Tokio1Executor>,
    redactor: Redactor,
}

/// A failed send, its text redacted: lettre never repeats the password, but a server may
/// echo it in its reply (`535 … credentials [ / provd / <password>]`), and that reply
/// reaches the terminal of `provd tasks send` and the log.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SendError(String);

/// The password in every form a server may echo it: as given, and as AUTH LOGIN and
/// AUTH PLAIN put it on the wire (base64).
fn redactor(m: &Mail) -> Redactor {
    let Some(password) = &m.password else {
        return Redactor::default();
    };
    let b64 = base64::engine::general_purpose::STANDARD;
    let p = password.expose_secret();
    let user = m.username.as_deref().unwrap_or("");
    Redactor::new([
        password.clone(),
        SecretString::from(b64.encode(p)),
        SecretString::from(b64.encode(format!("\0{user}\0{p}"))),
    ])
}

pub fn transport(m: &Mail) -> Result<Transport, SendError> {
    type Smtp = AsyncSmtpTransport<Tokio1Executor>;
    let builder = match m.security {
        Security::Tls => Smtp::relay(&m.host),
        Security::StartTls => Smtp::starttls_relay(&m.host),
        Security::Plain => Ok(Smtp::builder_dangerous(&m.host)),
    }
    .map_err(|e| SendError(format!("{}: {e}", m.host)))?;
    let mut builder = builder.port(m.port).timeout(Some(TIMEOUT));
    if let (Some(user), Some(password)) = (&m.username, &m.password) {
        builder = builder.credentials(Credentials::new(
            user.clone(),
            password.expose_secret().to_string(),
        ));
    }
    Ok(Transport {
        inner: builder.build(),
        redactor: redactor(m),
    })
}

pub async fn send(t: &Transport, message: Message) -> Result<(), SendError> {
    t.inner
        .send(message)
        .await
        .map(|_| ())
        .map_err(|e| SendError(t.redactor.redact(&e.to_string())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_echoed_password_is_redacted_in_every_form() {
        let mail = Mail {
            host: "h".into(),
            port: 25,
            security: Security::Plain,
            from: "a@b.c".into(),
            username: Some("provd".into()),
            password: Some(SecretString::from("Tr0ub4dor&3")),
            batch: Duration::from_secs(1),
            digest_at: jiff::civil::Time::midnight(),
            retry: crate::model::RetryPolicy::default(),
        };
        let r = redactor(&mail);
        let b64 = base64::engine::general_purpose::STANDARD;
        for echo in [
            "535 authentication failed for credentials [ / provd / Tr0ub4dor&3]".to_string(),
            format!("535 bad {}", b64.encode("Tr0ub4dor&3")),
            format!("535 bad {}", b64.encode("\0provd\0Tr0ub4dor&3")),
        ] {
            let out = r.redact(&echo);
            assert!(out.contains("[REDACTED]"), "{out}");
            assert!(!out.contains("Tr0ub4dor"), "{out}");
        }
    }
}
