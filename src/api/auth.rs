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
    let Some(given) = header
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(str::trim)
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
