//! Keeping secrets out of what a target says back.
//!
//! A target may echo a credential in its error text (`{"detail": "unauthorized: Bearer
//! <token>"}`, `{"error_description": "bad client_secret <secret>"}`). Whatever it says
//! ends up in a job's error, the append-only events, the status API and log lines, so a
//! connector scrubs every secret it holds for the source out of the target's text before
//! it builds an error, and caps that text's length.

use std::sync::RwLock;

use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

/// What replaces a secret in a target's text.
pub const REDACTED: &str = "[REDACTED]";

/// The most characters of a target's own text kept in one error message.
pub const MAX_TARGET_TEXT: usize = 512;

/// Secrets shorter than this are not searched for: replacing every `a` in a message
/// would hide more than it protects, and such a secret is no secret anyway.
const MIN_SECRET_LEN: usize = 4;

/// The secrets one source (or upstream) holds, each in every form a target may echo it
/// in (plain, percent-encoded, form-encoded), worked out once when the secret arrives:
/// every response body is scrubbed, so this is on the HTTP connectors' hot path. Tokens
/// obtained at run time are added as they arrive; the most recent few are kept, since a
/// target may echo an older one.
#[derive(Default)]
pub struct Redactor {
    fixed: Vec<SecretString>,
    issued: RwLock<Vec<Vec<SecretString>>>,
}

/// How many run-time tokens (OAuth access tokens) are remembered.
const ISSUED_KEPT: usize = 4;

/// A secret and its encoded forms (those that differ from it).
fn forms(secret: &str) -> Vec<SecretString> {
    let mut out = vec![SecretString::from(secret.to_string())];
    let encoded = crate::http::url_encode(secret);
    if encoded != secret {
        // Form encoding writes spaces as `+`.
        let form = encoded.replace("%20", "+");
        if form != encoded {
            out.push(SecretString::from(form));
        }
        out.push(SecretString::from(encoded));
    }
    out
}

impl Redactor {
    pub fn new(fixed: impl IntoIterator<Item = SecretString>) -> Self {
        Self {
            fixed: fixed
                .into_iter()
                .filter(|s| s.expose_secret().len() >= MIN_SECRET_LEN)
                .flat_map(|s| forms(s.expose_secret()))
                .collect(),
            issued: RwLock::new(Vec::new()),
        }
    }

    /// Remembers a token obtained at run time.
    pub fn add_issued(&self, token: &SecretString) {
        if token.expose_secret().len() < MIN_SECRET_LEN {
            return;
        }
        if let Ok(mut issued) = self.issued.write() {
            if issued.len() >= ISSUED_KEPT {
                issued.remove(0);
            }
            issued.push(forms(token.expose_secret()));
        }
    }

    /// Every needle, the issued ones read once.
    fn needles(&self) -> Vec<SecretString> {
        let mut all = self.fixed.clone();
        if let Ok(issued) = self.issued.read() {
            all.extend(issued.iter().flatten().cloned());
        }
        all
    }

    /// `text` with every known secret replaced, in its plain and encoded forms.
    pub fn redact(&self, text: &str) -> String {
        replace_all(text, &self.needles())
    }

    /// Redacts every string in a JSON value, keys included, in place.
    pub fn redact_json(&self, v: &mut Value) {
        let needles = self.needles();
        if !needles.is_empty() {
            redact_value(v, &needles);
        }
    }
}

fn replace_all(text: &str, needles: &[SecretString]) -> String {
    let mut out: Option<String> = None;
    for n in needles {
        let n = n.expose_secret();
        let current = out.as_deref().unwrap_or(text);
        if current.contains(n) {
            out = Some(current.replace(n, REDACTED));
        }
    }
    out.unwrap_or_else(|| text.to_string())
}

fn redact_value(v: &mut Value, needles: &[SecretString]) {
    match v {
        Value::String(s) if s.len() >= MIN_SECRET_LEN => {
            let r = replace_all(s, needles);
            if r != *s {
                *s = r;
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|i| redact_value(i, needles)),
        Value::Object(map) => {
            if map
                .keys()
                .any(|k| needles.iter().any(|n| k.contains(n.expose_secret())))
            {
                let redacted: serde_json::Map<String, Value> = std::mem::take(map)
                    .into_iter()
                    .map(|(k, val)| (replace_all(&k, needles), val))
                    .collect();
                *map = redacted;
            }
            map.values_mut().for_each(|val| redact_value(val, needles));
        }
        _ => {}
    }
}

/// Replaces `secret` (plain and percent-encoded) in `text`.
pub fn scrub(text: &str, secret: &str) -> String {
    if secret.len() < MIN_SECRET_LEN {
        return text.to_string();
    }
    let mut out = text.replace(secret, REDACTED);
    let encoded = crate::http::url_encode(secret);
    if encoded != secret {
        out = out.replace(&encoded, REDACTED);
        // Form encoding writes spaces as `+`.
        let form = encoded.replace("%20", "+");
        if form != encoded {
            out = out.replace(&form, REDACTED);
        }
    }
    out
}

/// At most [`MAX_TARGET_TEXT`] characters of a target's text, cut on a character
/// boundary and marked as cut.
pub fn cap(text: &str) -> String {
    cap_to(text, MAX_TARGET_TEXT)
}

pub fn cap_to(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => text.to_string(),
        Some((at, _)) => format!("{}… ({} bytes cut)", &text[..at], text.len() - at),
    }
}

/// A URL for an error message: scheme, host and port, and path, but never userinfo, a
/// query string or a fragment (an `api_key=` there is a secret).
pub fn safe_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => {
            let host = u.host_str().unwrap_or("");
            match u.port_or_known_default() {
                Some(p) => format!("{}://{host}:{p}{}", u.scheme(), u.path()),
                None => format!("{}://{host}{}", u.scheme(), u.path()),
            }
        }
        Err(_) => strip_query(url),
    }
}

/// A request target (`/users?api_key=…`) without its query string or fragment.
pub fn strip_query(path: &str) -> String {
    match path.find(['?', '#']) {
        Some(at) => path[..at].to_string(),
        None => path.to_string(),
    }
}

/// The secrets a URL itself carries: the userinfo password and every query value
/// (`?api_key=…`), which a target may echo back.
pub fn url_secrets(url: &str) -> Vec<SecretString> {
    let Ok(u) = reqwest::Url::parse(url) else {
        return Vec::new();
    };
    let mut out: Vec<SecretString> = u
        .query_pairs()
        .map(|(_, v)| SecretString::from(v.into_owned()))
        .collect();
    if let Some(p) = u.password() {
        out.push(SecretString::from(p.to_string()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_replaced_plain_and_encoded() {
        let r = Redactor::new([SecretString::from("s3cr+t/value")]);
        let t = r.redact("bad client_secret s3cr+t/value, form s3cr%2Bt%2Fvalue");
        assert_eq!(t, "bad client_secret [REDACTED], form [REDACTED]");
        r.add_issued(&SecretString::from("eyJtoken"));
        assert_eq!(
            r.redact("unauthorized: Bearer eyJtoken"),
            "unauthorized: Bearer [REDACTED]"
        );
        let mut v = serde_json::json!({"detail": ["x eyJtoken"], "eyJtoken": 1});
        r.redact_json(&mut v);
        assert_eq!(
            v,
            serde_json::json!({"detail": ["x [REDACTED]"], "[REDACTED]": 1})
        );
    }

    #[test]
    fn short_secrets_are_not_searched() {
        let r = Redactor::new([SecretString::from("ab")]);
        assert_eq!(r.redact("abc"), "abc");
    }

    #[test]
    fn only_the_latest_issued_tokens_are_kept() {
        let r = Redactor::new([]);
        for i in 0..6 {
            r.add_issued(&SecretString::from(format!("token-{i}")));
        }
        assert_eq!(r.redact("token-0"), "token-0");
        assert_eq!(r.redact("token-5 token-2"), "[REDACTED] [REDACTED]");
    }

    #[test]
    fn long_text_is_capped_on_a_char_boundary() {
        let t = "é".repeat(600);
        let c = cap(&t);
        assert!(c.starts_with(&"é".repeat(512)));
        assert!(c.ends_with("(176 bytes cut)"), "{c}");
        assert_eq!(cap("short"), "short");
    }

    #[test]
    fn urls_lose_userinfo_and_query() {
        assert_eq!(
            safe_url("https://u:pw@idp.example:8443/oauth/token?api_key=K#f"),
            "https://idp.example:8443/oauth/token"
        );
        assert_eq!(safe_url("http://127.0.0.1/x"), "http://127.0.0.1:80/x");
        assert_eq!(strip_query("/users?api_key=K"), "/users");
        let s: Vec<String> = url_secrets("https://u:pw12@h/p?api_key=K3Y9&x=1")
            .iter()
            .map(|s| s.expose_secret().to_string())
            .collect();
        assert_eq!(s, ["K3Y9", "1", "pw12"]);
    }
}
