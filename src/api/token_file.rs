//! The tokens file itself: created on first start, and changed by `provd tokens add|revoke`
//! (DESIGN §14). Every change rewrites the file whole (temporary file, fsync, rename), so
//! a crash leaves the old file or the new one, and the running agent picks the change up
//! on SIGHUP.

use std::io::Write;
use std::path::Path;

use secrecy::SecretString;

use super::auth::{PLAIN_NAME, Scopes, Tokens, check_name, hash_line, parse};

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("api.tokens_file {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("api.tokens_file {path}: {message}")]
    Invalid { path: String, message: String },
    #[error("api.tokens_file {path} holds no token")]
    Empty { path: String },
    /// `tokens add` of a name in use, `tokens revoke` of an unknown one, a bad name.
    #[error("{0}")]
    Usage(String),
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> TokenError + '_ {
    move |source| TokenError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// A new random token: 32 bytes from the operating system's random source, as hex.
pub fn new_token() -> Result<SecretString, TokenError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| TokenError::Io {
        path: "(random source)".into(),
        source: std::io::Error::other(e.to_string()),
    })?;
    Ok(SecretString::from(crate::model::hex::encode(&bytes)))
}

/// Reads the tokens; if the file does not exist, creates it (mode 0600) with one random
/// bare token (name `api`), so that a fresh install is never open to everyone and its
/// operator can read the token to start with. Returns whether it created it.
pub fn load_or_create(path: &Path) -> Result<(Tokens, bool), TokenError> {
    let mut created = false;
    if !path.exists() {
        use secrecy::ExposeSecret;
        let token = new_token()?;
        write_new(path, &format!("{}\n", token.expose_secret()), true)?;
        created = true;
    }
    let tokens = load(path)?;
    if tokens.0.is_empty() {
        return Err(TokenError::Empty {
            path: path.display().to_string(),
        });
    }
    Ok((tokens, created))
}

/// Reads and parses the file (for SIGHUP: an invalid file is refused as a whole).
pub fn load(path: &Path) -> Result<Tokens, TokenError> {
    let invalid = |message: String| TokenError::Invalid {
        path: path.display().to_string(),
        message,
    };
    provd_connector_core::http::check_trusted(path).map_err(invalid)?;
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    let tokens = parse(&text).map_err(invalid)?;
    // A bare line is the token itself: whoever can read the file can use it. (This also
    // keeps `tokens_file = /etc/passwd` from turning every account line into a token.)
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)
        .map_err(io(path))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 && tokens.0.iter().any(|t| !t.hashed()) {
        return Err(invalid(format!(
            "holds bare tokens but others can read it (mode {:o}); chmod 600 it, or replace them with `provd tokens add`",
            mode & 0o777
        )));
    }
    Ok(tokens)
}

/// `provd tokens add NAME [--scope …]`: appends `NAME sha256:HEX [scopes=…]` and returns
/// the token, which exists nowhere else: it is shown once.
pub fn add(path: &Path, name: &str, scopes: &Scopes) -> Result<SecretString, TokenError> {
    use secrecy::ExposeSecret;
    check_name(name).map_err(TokenError::Usage)?;
    let text = if path.exists() {
        std::fs::read_to_string(path).map_err(io(path))?
    } else {
        String::new()
    };
    let tokens = parse(&text).map_err(|message| TokenError::Invalid {
        path: path.display().to_string(),
        message,
    })?;
    if tokens.0.iter().any(|t| t.name == name) {
        return Err(TokenError::Usage(format!(
            "a token named `{name}` exists already: revoke it first, or choose another name"
        )));
    }
    let token = new_token()?;
    let mut new = text;
    if !new.is_empty() && !new.ends_with('\n') {
        new.push('\n');
    }
    new.push_str(&format!("{name} {}", hash_line(token.expose_secret())));
    if let Some(word) = scopes.file_word() {
        new.push(' ');
        new.push_str(&word);
    }
    new.push('\n');
    write_new(path, &new, false)?;
    Ok(token)
}

/// `provd tokens list`: (name, hashed, scopes) in file order; never a token.
pub fn list(path: &Path) -> Result<Vec<(String, bool, Scopes)>, TokenError> {
    Ok(load(path)?
        .0
        .iter()
        .map(|t| (t.name.clone(), t.hashed(), t.scopes.clone()))
        .collect())
}

/// `provd tokens revoke NAME`: removes its line (`api`: every bare token line). Returns
/// how many lines went.
pub fn revoke(path: &Path, name: &str) -> Result<usize, TokenError> {
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    // Refuse to rewrite a file that does not parse: its bad line might be a token.
    parse(&text).map_err(|message| TokenError::Invalid {
        path: path.display().to_string(),
        message,
    })?;
    let mut kept = String::new();
    let mut removed = 0;
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let named = match (words.next(), words.next()) {
            (Some(n), Some(_)) => Some(n),
            (Some(w), None) if !w.starts_with('#') => Some(PLAIN_NAME),
            _ => None,
        };
        if named == Some(name) {
            removed += 1;
        } else {
            kept.push_str(line);
            kept.push('\n');
        }
    }
    if removed == 0 {
        return Err(TokenError::Usage(format!("no token named `{name}`")));
    }
    write_new(path, &kept, false)?;
    Ok(removed)
}

/// Writes `text` as the file's new content: a private temporary file beside it, synced,
/// then renamed over it (`create_only`: refuse if the file appeared meanwhile).
fn write_new(path: &Path, text: &str, create_only: bool) -> Result<(), TokenError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir).map_err(io(path))?;
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "tokens".into());
    let tmp = dir.join(format!(".{file_name}.{}.tmp", std::process::id()));
    // `sudo provd tokens add`: the file stays the agent's, with its mode (issue 35) —
    // never readable by others, nor by the group while it holds bare tokens.
    let bare = crate::config::holds_bare_tokens(text);
    let owner = crate::ownership::of(path).map(|o| o.at_most(if bare { 0o600 } else { 0o640 }));
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let result = (|| {
        let mut f = opts.open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        crate::ownership::hand_over(&tmp, owner)?;
        if create_only {
            // A hard link fails if the name exists: never replace a file made meanwhile.
            std::fs::hard_link(&tmp, path)?;
            std::fs::remove_file(&tmp)?;
        } else {
            std::fs::rename(&tmp, path)?;
        }
        std::fs::File::open(&dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(io(path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::auth::authorized;
    use secrecy::ExposeSecret;

    #[test]
    fn creates_a_private_token_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/api-tokens");
        let (tokens, created) = load_or_create(&path).unwrap();
        assert!(created);
        assert_eq!(tokens.0.len(), 1);
        assert_eq!(tokens.0[0].name, "api");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.trim().len(), 64);
        let (again, created) = load_or_create(&path).unwrap();
        assert!(!created);
        let bearer = format!("Bearer {}", text.trim());
        assert_eq!(authorized(Some(&bearer), &again), Some("api"));
    }

    #[test]
    fn add_list_revoke() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        std::fs::write(&path, "# ours\nplain-old\n").unwrap();
        let t = add(&path, "ci-bot", &Scopes::All).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            !text.contains(t.expose_secret()),
            "the token is stored hashed"
        );
        assert!(text.starts_with("# ours\nplain-old\nci-bot sha256:"));
        assert!(matches!(
            add(&path, "ci-bot", &Scopes::All),
            Err(TokenError::Usage(_))
        ));
        assert!(matches!(
            add(&path, "bad name", &Scopes::All),
            Err(TokenError::Usage(_))
        ));
        let sp = Scopes::parse_list("trigger:sp").unwrap();
        add(&path, "sp", &sp).unwrap();
        assert_eq!(
            list(&path).unwrap(),
            vec![
                ("api".into(), false, Scopes::All),
                ("ci-bot".into(), true, Scopes::All),
                ("sp".into(), true, sp)
            ]
        );
        assert_eq!(revoke(&path, "sp").unwrap(), 1);
        let bearer = format!("Bearer {}", t.expose_secret());
        assert_eq!(
            authorized(Some(&bearer), &load(&path).unwrap()),
            Some("ci-bot")
        );
        assert_eq!(revoke(&path, "ci-bot").unwrap(), 1);
        assert_eq!(authorized(Some(&bearer), &load(&path).unwrap()), None);
        assert!(matches!(revoke(&path, "ci-bot"), Err(TokenError::Usage(_))));
        assert_eq!(revoke(&path, "api").unwrap(), 1);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "# ours\n");
    }
}
