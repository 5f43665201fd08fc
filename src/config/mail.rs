//! `[mail]` in `provd.toml` (DESIGN §15): how the agent reaches source owners by mail.
//! Optional: without it no mail is sent and owners get their tasks only by export.

use std::path::Path;
use std::time::Duration;

use jiff::civil::Time;
use secrecy::SecretString;
use serde::Deserialize;

use super::duration::Dur;
use crate::model::RetryPolicy;

/// `[mail]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MailSection {
    /// `smtp://host[:port]` (STARTTLS per `starttls`, port 587 by default) or
    /// `smtps://host[:port]` (TLS from the first byte, port 465); never with a password.
    pub smtp_url: String,
    /// The sender, `provd@example.com` or `"provd" <provd@example.com>`.
    pub from: String,
    /// Upgrade `smtp://` with STARTTLS and refuse a server that cannot (default true).
    /// Set false only for a relay on the same host.
    #[serde(default = "default_starttls")]
    pub starttls: bool,
    /// SMTP login; none, and no AUTH is attempted.
    #[serde(default)]
    pub username: Option<String>,
    /// File whose first line is the SMTP password (relative to provd.toml).
    #[serde(default)]
    pub password_file: Option<String>,
    /// At most one "new tasks" message per owner in this window (default 15m).
    #[serde(default = "default_batch")]
    pub batch: Dur,
    /// When the daily digest goes out, in the agent's time zone (default "08:00").
    #[serde(default = "default_digest_at")]
    pub digest_at: String,
}

fn default_starttls() -> bool {
    true
}
fn default_batch() -> Dur {
    Dur(Duration::from_secs(15 * 60))
}
fn default_digest_at() -> String {
    "08:00".into()
}

/// How the SMTP connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    /// `smtps://`: TLS from the first byte.
    Tls,
    /// `smtp://` upgraded with STARTTLS, which the server must offer.
    StartTls,
    /// `smtp://` with `starttls = false`: plain text (a local relay).
    Plain,
}

/// `[mail]`, checked: the sender parsed, the password read.
#[derive(Debug, Clone)]
pub struct Mail {
    pub host: String,
    pub port: u16,
    pub security: Security,
    /// The sender as written (checked to be an address).
    pub from: String,
    pub username: Option<String>,
    pub password: Option<SecretString>,
    pub batch: Duration,
    pub digest_at: Time,
    /// Backoff between failed sends: the `[retry]` defaults (no attempt limit: a message
    /// is tried until it goes, at most `max_interval` apart).
    pub retry: RetryPolicy,
}

/// Checks `[mail]`; an error names the key (`mail.…`) and says what is wrong.
pub fn build(base: &Path, s: &MailSection, retry: &RetryPolicy) -> Result<Mail, (String, String)> {
    let key = |k: &str| format!("mail.{k}");
    let url = s.smtp_url.trim();
    let (rest, tls, default_port) = if let Some(r) = url.strip_prefix("smtps://") {
        (r, true, 465)
    } else if let Some(r) = url.strip_prefix("smtp://") {
        (r, false, 587)
    } else {
        return Err((
            key("smtp_url"),
            "must start with smtp:// or smtps://".into(),
        ));
    };
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    if authority.contains('@') {
        return Err((
            key("smtp_url"),
            "must not hold a user or password; give mail.username and mail.password_file".into(),
        ));
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => match p.parse::<u16>() {
            Ok(p) if p > 0 => (h, p),
            _ => return Err((key("smtp_url"), format!("bad port `{p}`"))),
        },
        None => (authority, default_port),
    };
    if host.is_empty() {
        return Err((key("smtp_url"), "names no host".into()));
    }
    if let Err(e) = s.from.parse::<lettre::message::Mailbox>() {
        return Err((key("from"), format!("not a mail address: {e}")));
    }
    let password = match &s.password_file {
        None => None,
        Some(file) => Some(
            provd_connector_core::http::read_secret(base, Some(file), None, "password")
                .map_err(|(k, m)| (key(&k), m))?,
        ),
    };
    if password.is_some() != s.username.is_some() {
        return Err((
            key(if password.is_some() {
                "username"
            } else {
                "password_file"
            }),
            "mail.username and mail.password_file go together".into(),
        ));
    }
    if s.batch.0.is_zero() {
        return Err((key("batch"), "must be longer than 0s".into()));
    }
    let digest_at = s.digest_at.parse::<Time>().map_err(|e| {
        (
            key("digest_at"),
            format!("not a time of day like 08:00: {e}"),
        )
    })?;
    let security = match (tls, s.starttls) {
        (true, _) => Security::Tls,
        (false, true) => Security::StartTls,
        (false, false) => Security::Plain,
    };
    Ok(Mail {
        host: host.to_string(),
        port,
        security,
        from: s.from.clone(),
        username: s.username.clone(),
        password,
        batch: s.batch.0,
        digest_at,
        retry: retry.clone(),
    })
}

/// Whether `owner` can be mailed: tasks of an owner who is not an address cannot be.
pub fn is_address(owner: &str) -> bool {
    owner.parse::<lettre::Address>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(url: &str) -> MailSection {
        toml::from_str(&format!(
            "smtp_url = \"{url}\"\nfrom = \"provd <provd@example.com>\""
        ))
        .unwrap()
    }

    fn built(url: &str) -> Result<Mail, (String, String)> {
        build(Path::new("."), &section(url), &RetryPolicy::default())
    }

    #[test]
    fn urls_give_host_port_and_security() {
        let m = built("smtp://mail.example.com").unwrap();
        assert_eq!(
            (m.host.as_str(), m.port, m.security),
            ("mail.example.com", 587, Security::StartTls)
        );
        let m = built("smtps://mail.example.com:2465").unwrap();
        assert_eq!((m.port, m.security), (2465, Security::Tls));
        assert_eq!(m.batch, Duration::from_secs(900));
        assert_eq!(m.digest_at, jiff::civil::time(8, 0, 0, 0));
    }

    #[test]
    fn bad_settings_name_their_key() {
        assert_eq!(built("http://x").unwrap_err().0, "mail.smtp_url");
        let e = built("smtp://me:secret@x").unwrap_err();
        assert_eq!(e.0, "mail.smtp_url");
        assert!(!e.1.contains("secret"), "{}", e.1);
        assert_eq!(built("smtp://x:99999").unwrap_err().0, "mail.smtp_url");
        let mut s = section("smtp://x");
        s.from = "not an address".into();
        let e = build(Path::new("."), &s, &RetryPolicy::default()).unwrap_err();
        assert_eq!(e.0, "mail.from");
        let mut s = section("smtp://x");
        s.username = Some("provd".into());
        let e = build(Path::new("."), &s, &RetryPolicy::default()).unwrap_err();
        assert_eq!(e.0, "mail.password_file");
        let mut s = section("smtp://x");
        s.digest_at = "8 o'clock".into();
        let e = build(Path::new("."), &s, &RetryPolicy::default()).unwrap_err();
        assert_eq!(e.0, "mail.digest_at");
    }

    #[test]
    fn unknown_keys_are_refused() {
        let e = toml::from_str::<MailSection>(
            "smtp_url = \"smtp://x\"\nfrom = \"a@b\"\npasword = \"x\"",
        )
        .unwrap_err();
        assert!(e.to_string().contains("pasword"), "{e}");
    }

    #[test]
    fn owners_are_addresses_or_not() {
        assert!(is_address("payroll-team@example.com"));
        assert!(!is_address("payroll team"));
    }
}
