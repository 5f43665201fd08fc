//! Configured URLs, checked before anything is built from them (DESIGN §25): parsed, of
//! a scheme the key allows, with a host, and without userinfo. A password in a URL ends
//! up in logs, `ps` and shell history, and reqwest sends `user:pw@` as HTTP Basic in
//! place of the configured token; credentials belong in the `*_file` / `*_env` keys.

use reqwest::Url;

/// What a key takes besides a host and one of its schemes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Query {
    /// A query string is refused (it has no use there, and may hide a secret).
    Refused,
    /// A query string is kept (an API that wants its key as `?api_key=`); its values are
    /// redacted wherever the target's words go.
    Allowed,
}

/// Checks `url` for a key that takes `schemes`; the error never repeats the URL (it may
/// hold a password).
pub fn check_url(url: &str, schemes: &[&str], query: Query) -> Result<Url, String> {
    let wanted = || {
        schemes
            .iter()
            .map(|s| format!("{s}://"))
            .collect::<Vec<_>>()
            .join(" or ")
    };
    let u = Url::parse(url.trim()).map_err(|e| format!("is not a URL ({e})"))?;
    if !schemes.contains(&u.scheme()) {
        return Err(format!(
            "must start with {}, not {}://",
            wanted(),
            u.scheme()
        ));
    }
    if u.host_str().is_none_or(str::is_empty) {
        return Err("names no host".into());
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err(
            "must not hold a user or password; give the credential in its *_file or *_env key"
                .into(),
        );
    }
    if u.fragment().is_some() {
        return Err("must not hold a fragment (`#…`)".into());
    }
    if query == Query::Refused && u.query().is_some() {
        return Err("must not hold a query string (`?…`)".into());
    }
    Ok(u)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HTTP: &[&str] = &["http", "https"];

    #[test]
    fn good_urls_pass() {
        assert!(check_url("https://api.example.com/v2", HTTP, Query::Refused).is_ok());
        assert!(check_url("http://127.0.0.1:8080", HTTP, Query::Refused).is_ok());
        assert!(check_url("http://[::1]:80/x", HTTP, Query::Refused).is_ok());
        assert!(check_url("https://h/api?api_key=K", HTTP, Query::Allowed).is_ok());
        assert!(check_url("ldaps://dc1.corp:636", &["ldap", "ldaps"], Query::Refused).is_ok());
    }

    #[test]
    fn bad_urls_are_refused_without_being_repeated() {
        for (url, says) in [
            ("ldap://h", "must start with http:// or https://"),
            ("file:///etc/passwd", "must start with http://"),
            ("gopher://h", "not gopher://"),
            ("http://[::1", "is not a URL"),
            (
                "http://svc:pa55w0rd@h/api",
                "must not hold a user or password",
            ),
            ("http://svc@h/api", "must not hold a user or password"),
            ("https://h/api?k=v", "query string"),
            ("https://h/api#x", "fragment"),
            ("not a url", "is not a URL"),
        ] {
            let e = check_url(url, HTTP, Query::Refused).unwrap_err();
            assert!(e.contains(says), "{url}: {e}");
            assert!(!e.contains("pa55w0rd"), "{e}");
        }
    }
}
