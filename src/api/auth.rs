//! Bearer tokens from `api.tokens_file`: one per line, compared in constant time.

use std::io::Write;
use std::path::Path;

use secrecy::{ExposeSecret, SecretString};

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("api.tokens_file {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("api.tokens_file {path} holds no token")]
    Empty { path: String },
}

/// Reads the tokens; if the file does not exist, creates it (mode 0600) with one random
/// token, so that a fresh install is never open to everyone. Returns whether it created it.
pub fn load_or_create(path: &Path) -> Result<(Vec<SecretString>, bool), TokenError> {
    let p = path.display().to_string();
    let mut created = false;
    if !path.exists() {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| TokenError::Io {
                path: p.clone(),
                source,
            })?;
        }
        let token = format!("{:032x}{:032x}", fastrand::u128(..), fastrand::u128(..));
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let mut f = opts.open(path).map_err(|source| TokenError::Io {
            path: p.clone(),
            source,
        })?;
        writeln!(f, "{token}").map_err(|source| TokenError::Io {
            path: p.clone(),
            source,
        })?;
        created = true;
    }
    let text = std::fs::read_to_string(path).map_err(|source| TokenError::Io {
        path: p.clone(),
        source,
    })?;
    let tokens = parse(&text);
    if tokens.is_empty() {
        return Err(TokenError::Empty { path: p });
    }
    Ok((tokens, created))
}

/// One token per line; blank lines and `#` comments ignored.
pub fn parse(text: &str) -> Vec<SecretString> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| SecretString::from(l.to_string()))
        .collect()
}

/// At most one log line per this many milliseconds for refused tokens: a client retrying
/// with a stale token, or someone guessing, must not flood the journal.
pub const FAILURE_LOG_EVERY_MS: i64 = 10_000;

/// Rate limit for "authentication failed" log lines.
#[derive(Debug, Default)]
pub struct FailureLog {
    last_ms: Option<i64>,
    suppressed: u64,
}

impl FailureLog {
    pub const fn new() -> Self {
        Self {
            last_ms: None,
            suppressed: 0,
        }
    }

    /// A failure at `now_ms`: `Some(n)` when it should be logged, `n` being how many were
    /// left unlogged since the last line.
    pub fn note(&mut self, now_ms: i64) -> Option<u64> {
        match self.last_ms {
            Some(last) if now_ms - last < FAILURE_LOG_EVERY_MS => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last_ms = Some(now_ms);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

/// What the presented `Authorization` header was, for the log: never the token itself.
pub fn describe_presented(header: Option<&str>) -> &'static str {
    match header {
        None => "none",
        Some(h) => match h.split_once(' ') {
            Some((scheme, _)) if scheme.eq_ignore_ascii_case("bearer") => {
                "bearer token not accepted"
            }
            Some(_) => "another scheme",
            None => "malformed",
        },
    }
}

/// Compares in time independent of where the two differ.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Is the `Authorization` header a valid bearer token? Every configured token is compared,
/// so the time taken does not tell which one matched.
pub fn authorized(header: Option<&str>, tokens: &[SecretString]) -> bool {
    // The scheme is case-insensitive (RFC 7235 §2.1): `bearer x` is as good as `Bearer x`.
    let Some(given) = header
        .and_then(|h| h.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
    else {
        return false;
    };
    tokens.iter().fold(false, |ok, t| {
        ct_eq(t.expose_secret().as_bytes(), given.as_bytes()) | ok
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens() {
        let tokens = parse("# comment\n\nabc\n  def  \n");
        assert_eq!(tokens.len(), 2);
        assert!(authorized(Some("Bearer abc"), &tokens));
        assert!(authorized(Some("Bearer def"), &tokens));
        assert!(!authorized(Some("Bearer abd"), &tokens));
        assert!(!authorized(Some("Bearer ab"), &tokens));
        assert!(!authorized(Some("abc"), &tokens));
        assert!(!authorized(Some("Basic abc"), &tokens));
        assert!(!authorized(None, &tokens));
        assert!(!authorized(Some("Bearer "), &parse("")));
        assert!(authorized(Some("bearer abc"), &tokens));
        assert!(authorized(Some("BEARER abc"), &tokens));
        assert!(!authorized(Some("Bearerabc"), &tokens));
    }

    #[test]
    fn failures_are_logged_at_most_once_per_period() {
        let mut f = FailureLog::default();
        assert_eq!(f.note(0), Some(0));
        assert_eq!(f.note(1), None);
        assert_eq!(f.note(9_999), None);
        assert_eq!(f.note(10_000), Some(2));
        assert_eq!(f.note(10_001), None);
        assert_eq!(
            describe_presented(Some("Bearer x")),
            "bearer token not accepted"
        );
        assert_eq!(describe_presented(Some("Basic x")), "another scheme");
        assert_eq!(describe_presented(None), "none");
    }

    #[test]
    fn creates_a_private_token_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/api-tokens");
        let (tokens, created) = load_or_create(&path).unwrap();
        assert!(created);
        assert_eq!(tokens.len(), 1);
        assert_eq!(tokens[0].expose_secret().len(), 64);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        let (again, created) = load_or_create(&path).unwrap();
        assert!(!created);
        assert_eq!(again[0].expose_secret(), tokens[0].expose_secret());
    }
}
