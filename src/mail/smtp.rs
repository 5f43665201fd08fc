//! The SMTP connection, from `[mail]`: STARTTLS, implicit TLS or (a local relay) plain,
//! with a deadline on every exchange so a silent server cannot hold the mailer.

use std::time::Duration;

use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use secrecy::ExposeSecret;

use crate::config::mail::{Mail, Security};

/// How long one SMTP exchange may take.
const TIMEOUT: Duration = Duration::from_secs(30);

pub type Transport = AsyncSmtpTransport<Tokio1Executor>;

/// A failed send. The server's reply and lettre's words carry no credential: lettre sends
/// the password only inside AUTH and never repeats it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SendError(String);

pub fn transport(m: &Mail) -> Result<Transport, SendError> {
    let builder = match m.security {
        Security::Tls => Transport::relay(&m.host),
        Security::StartTls => Transport::starttls_relay(&m.host),
        Security::Plain => Ok(Transport::builder_dangerous(&m.host)),
    }
    .map_err(|e| SendError(format!("{}: {e}", m.host)))?;
    let mut builder = builder.port(m.port).timeout(Some(TIMEOUT));
    if let (Some(user), Some(password)) = (&m.username, &m.password) {
        builder = builder.credentials(Credentials::new(
            user.clone(),
            password.expose_secret().to_string(),
        ));
    }
    Ok(builder.build())
}

pub async fn send(t: &Transport, message: Message) -> Result<(), SendError> {
    t.send(message)
        .await
        .map(|_| ())
        .map_err(|e| SendError(e.to_string()))
}
