//! Bearer tokens from `api.tokens_file` (DESIGN §14): named, stored as SHA-256 hashes
//! (`NAME sha256:HEX`); a line holding a bare token is still accepted, under the name
//! `api`. The name a request authenticated with is its requester in the audit trail.

use std::sync::{Arc, RwLock};

use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

pub use super::scope::{Scope, Scopes};

pub use super::token_file::{TokenError, load_or_create, new_token};

/// The name bare (unhashed) token lines are known by.
pub const PLAIN_NAME: &str = "api";

/// One accepted token.
pub struct Token {
    pub name: String,
    credential: Credential,
    /// What it may reach (DESIGN §25).
    pub scopes: Scopes,
}

enum Credential {
    /// A bare line: kept as given, compared as given.
    Plain(SecretString),
    /// `NAME sha256:HEX`: only the hash is known.
    Sha256([u8; 32]),
}

impl Token {
    /// Whether the token is stored as a hash (`tokens list` shows it).
    pub fn hashed(&self) -> bool {
        matches!(self.credential, Credential::Sha256(_))
    }
}

/// The tokens of one file, in file order.
#[derive(Default)]
pub struct Tokens(pub Vec<Token>);

/// Parses a tokens file: `NAME sha256:HEX [scopes=S,…]` or a bare token per line; blank
/// lines and `#` comments ignored. A bad line is named by its number, never by its content (it may be
/// a secret).
pub fn parse(text: &str) -> Result<Tokens, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut words = line.split_whitespace();
        let (Some(first), second, third, None) =
            (words.next(), words.next(), words.next(), words.next())
        else {
            return Err(format!(
                "line {}: expected `NAME sha256:HEX [scopes=…]` or a bare token",
                n + 1
            ));
        };
        let scopes = match third {
            None => Scopes::All,
            Some(word) => {
                let list = word.strip_prefix("scopes=").ok_or_else(|| {
                    format!("line {}: the third word must be `scopes=S,…`", n + 1)
                })?;
                Scopes::parse_list(list).map_err(|e| format!("line {}: {e}", n + 1))?
            }
        };
        let token = match second {
            None => Token {
                name: PLAIN_NAME.into(),
                credential: Credential::Plain(SecretString::from(first.to_string())),
                scopes,
            },
            Some(hash) => {
                // Not `check_name`'s message: it quotes the name, and a line that is not
                // `NAME sha256:HEX` may hold a token in that place.
                check_name(first).map_err(|_| {
                    format!(
                        "line {}: the name must be 1-64 letters, digits, `.`, `_`, `-` or `@`",
                        n + 1
                    )
                })?;
                let hex = hash.strip_prefix("sha256:").ok_or_else(|| {
                    format!("line {}: the hash must be written `sha256:HEX`", n + 1)
                })?;
                let digest = unhex(hex).ok_or_else(|| {
                    format!(
                        "line {}: `sha256:` must be followed by 64 hex digits",
                        n + 1
                    )
                })?;
                Token {
                    name: first.to_string(),
                    credential: Credential::Sha256(digest),
                    scopes,
                }
            }
        };
        out.push(token);
    }
    Ok(Tokens(out))
}

/// Token names: what the audit trail records as requester, so kept plain: 1–64 of
/// letters, digits, `.`, `_`, `-`, `@`, starting with a letter or digit.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "token name `{}`: use 1-64 letters, digits, `.`, `_`, `-` or `@`, starting with a letter or digit",
            name.escape_debug()
        ))
    }
}

/// `sha256:HEX` of a token, as the file stores it.
pub fn hash_line(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    let hex = crate::model::hex::encode(&digest);
    format!("sha256:{hex}")
}

fn unhex(s: &str) -> Option<[u8; 32]> {
    crate::model::hex::decode(s)?.try_into().ok()
}

/// The tokens in force, replaced as a whole when the file is reloaded (SIGHUP).
#[derive(Default)]
pub struct Keyring(RwLock<Arc<Tokens>>);

impl Keyring {
    pub fn new(tokens: Tokens) -> Arc<Self> {
        Arc::new(Self(RwLock::new(Arc::new(tokens))))
    }

    pub fn get(&self) -> Arc<Tokens> {
        match self.0.read() {
            Ok(t) => t.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    pub fn set(&self, tokens: Tokens) {
        match self.0.write() {
            Ok(mut t) => *t = Arc::new(tokens),
            Err(p) => *p.into_inner() = Arc::new(tokens),
        }
    }
}

/// At most one log line per this many milliseconds for refused tokens: a client retrying
/// with a stale token, or someone guessing, must not flood the journal.
pub const FAILURE_LOG_EVERY_MS: i64 = 10_000;

/// Rate limit for "authentication failed" log lines.
pub type FailureLog = crate::logging::Throttle;

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
pub(crate) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The name of the token the `Authorization` header presents, if it is valid.
pub fn authorized<'a>(header: Option<&str>, tokens: &'a Tokens) -> Option<&'a str> {
    presented(header, tokens).map(|t| t.name.as_str())
}

/// The token the `Authorization` header presents, if it is valid. Every token is
/// compared, so the time taken does not tell which one matched.
pub fn presented<'a>(header: Option<&str>, tokens: &'a Tokens) -> Option<&'a Token> {
    // The scheme is case-insensitive (RFC 7235 §2.1): `bearer x` is as good as `Bearer x`.
    let given = header
        .and_then(|h| h.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())?;
    let digest = Sha256::digest(given.as_bytes());
    tokens.0.iter().fold(None, |found, t| {
        let ok = match &t.credential {
            Credential::Plain(p) => ct_eq(p.expose_secret().as_bytes(), given.as_bytes()),
            Credential::Sha256(h) => ct_eq(h, &digest),
        };
        if ok && found.is_none() {
            Some(t)
        } else {
            found
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens() {
        let tokens = parse("# comment\n\nabc\n  def  \n").unwrap();
        assert_eq!(tokens.0.len(), 2);
        assert_eq!(authorized(Some("Bearer abc"), &tokens), Some("api"));
        assert_eq!(authorized(Some("Bearer def"), &tokens), Some("api"));
        assert_eq!(authorized(Some("Bearer abd"), &tokens), None);
        assert_eq!(authorized(Some("Bearer ab"), &tokens), None);
        assert_eq!(authorized(Some("abc"), &tokens), None);
        assert_eq!(authorized(Some("Basic abc"), &tokens), None);
        assert_eq!(authorized(None, &tokens), None);
        assert_eq!(authorized(Some("Bearer "), &parse("").unwrap()), None);
        assert_eq!(authorized(Some("bearer abc"), &tokens), Some("api"));
        assert_eq!(authorized(Some("BEARER abc"), &tokens), Some("api"));
        assert_eq!(authorized(Some("Bearerabc"), &tokens), None);
    }

    #[test]
    fn named_tokens_are_known_by_their_hash() {
        let file = format!(
            "ci-bot {}\nhr-portal {}\nplain\n",
            hash_line("t1"),
            hash_line("t2")
        );
        assert!(!file.contains("t1\n"));
        let tokens = parse(&file).unwrap();
        assert_eq!(authorized(Some("Bearer t1"), &tokens), Some("ci-bot"));
        assert_eq!(authorized(Some("Bearer t2"), &tokens), Some("hr-portal"));
        assert_eq!(authorized(Some("Bearer plain"), &tokens), Some("api"));
        assert_eq!(authorized(Some("Bearer t3"), &tokens), None);
        // The hash itself is not a token.
        let h = hash_line("t1");
        assert_eq!(authorized(Some(&format!("Bearer {h}")), &tokens), None);
        assert!(tokens.0[0].hashed() && !tokens.0[2].hashed());
    }

    #[test]
    fn scoped_lines() {
        let file = format!(
            "sp {} scopes=trigger:sp\nhr {}\n",
            hash_line("t1"),
            hash_line("t2")
        );
        let tokens = parse(&file).unwrap();
        let sp = presented(Some("Bearer t1"), &tokens).unwrap();
        assert!(sp.scopes.allows(&Scope::Trigger("sp".into())));
        assert!(!sp.scopes.allows(&Scope::Intake));
        let hr = presented(Some("Bearer t2"), &tokens).unwrap();
        assert_eq!(hr.scopes, Scopes::All, "no scopes= keeps every scope");
        let e = parse(&format!("sp {} scopes=root\n", hash_line("t")))
            .err()
            .unwrap();
        assert!(e.starts_with("line 1: unknown scope `root`"), "{e}");
        let e = parse(&format!("sp {} root\n", hash_line("t")))
            .err()
            .unwrap();
        assert!(e.starts_with("line 1: the third word"), "{e}");
    }

    #[test]
    fn bad_lines_are_named_by_number_not_content() {
        let e = parse("ok\nbot sha256:12\n").err().unwrap();
        assert!(e.starts_with("line 2:"), "{e}");
        let e = parse("bot md5:ab\n").err().unwrap();
        assert!(e.contains("line 1") && e.contains("sha256:"), "{e}");
        let e = parse("a b c d\n").err().unwrap();
        assert!(e.starts_with("line 1:") && !e.contains(" b "), "{e}");
        let e = parse(&format!("-x {}\n", hash_line("t"))).err().unwrap();
        assert!(e.starts_with("line 1: the name"), "{e}");
        // A token with a word after it (a comment, say) is refused without being quoted.
        let e = parse("s3cr3t/+tok3n== ci-bot\n").err().unwrap();
        assert!(!e.contains("s3cr3t"), "{e}");
        assert!(check_name("ci-bot.v2@corp").is_ok());
        assert!(check_name("").is_err() && check_name("a b").is_err());
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
}
