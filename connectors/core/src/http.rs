//! The HTTP layer the SCIM and REST connectors share: one reqwest client per source
//! (rustls), timeouts, authentication (a static bearer token, or OAuth 2.0 client
//! credentials renewed before expiry and once on a 401), classification of failures
//! (DESIGN §6) and `Retry-After`. Secrets live in `SecretString`s and are only exposed
//! while building a request header or a token request; no error or log line carries them.

use std::path::Path;
use std::sync::Once;
use std::time::{Duration, Instant, SystemTime};

pub use reqwest::Method;
use reqwest::StatusCode;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::Mutex;

use crate::gate::{self, CredentialGate, Secret};
use crate::redact::{self, Redactor};
use crate::{ConnectorError, classify_http_status};

/// The shared connection settings of an HTTP source (`base_url`, auth, TLS, timeout).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    /// Where the API lives; paths are appended to it.
    pub base_url: String,
    /// File holding a static bearer token (first line); or
    #[serde(default)]
    pub token_file: Option<String>,
    /// the environment variable holding it; or
    #[serde(default)]
    pub token_env: Option<String>,
    /// OAuth 2.0 client credentials.
    #[serde(default)]
    pub oauth: Option<OAuthSettings>,
    /// How a static token is sent: `Bearer` (default) or `SSWS` (Okta API tokens).
    #[serde(default)]
    pub token_scheme: Option<String>,
    /// PEM file of a private CA; without it the system trust store is used.
    #[serde(default)]
    pub tls_ca_file: Option<String>,
    /// Time one request may take (default 30s).
    #[serde(default = "default_timeout")]
    pub timeout: String,
}

fn default_timeout() -> String {
    "30s".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuthSettings {
    /// Token endpoint (`grant_type=client_credentials`, form-encoded).
    pub token_url: String,
    pub client_id: String,
    /// File holding the client secret (first line); or
    #[serde(default)]
    pub client_secret_file: Option<String>,
    /// the environment variable holding it.
    #[serde(default)]
    pub client_secret_env: Option<String>,
    /// Space-separated scopes to ask for.
    #[serde(default)]
    pub scope: Option<String>,
}

/// The keys of [`HttpSettings`], which sit at the top level of an HTTP source's file.
pub const HTTP_KEYS: [&str; 7] = [
    "base_url",
    "token_file",
    "token_env",
    "oauth",
    "token_scheme",
    "tls_ca_file",
    "timeout",
];

/// Splits a source's table into the shared HTTP settings and the connector's own keys
/// (serde's `flatten` cannot be combined with `deny_unknown_fields`).
pub fn split_settings(
    table: &toml::Table,
) -> Result<(HttpSettings, toml::Table), (String, String)> {
    let mut http = toml::Table::new();
    let mut rest = table.clone();
    for k in HTTP_KEYS {
        if let Some(v) = rest.remove(k) {
            http.insert(k.to_string(), v);
        }
    }
    let settings = toml::Value::Table(http)
        .try_into()
        .map_err(|e: toml::de::Error| (String::new(), e.to_string().trim().to_string()))?;
    Ok((settings, rest))
}

/// Reads a secret from `file` (first line, relative to `base`) or the variable `env`.
/// The error names the key and the path, never the content.
pub fn read_secret(
    base: &Path,
    file: Option<&str>,
    env: Option<&str>,
    key: &str,
) -> Result<SecretString, (String, String)> {
    match (file, env) {
        (Some(f), None) => {
            let path = if Path::new(f).is_absolute() {
                Path::new(f).to_path_buf()
            } else {
                base.join(f)
            };
            let text = std::fs::read_to_string(&path).map_err(|e| {
                (
                    format!("{key}_file"),
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            Ok(SecretString::from(
                text.lines().next().unwrap_or("").trim().to_string(),
            ))
        }
        (None, Some(v)) => std::env::var(v).map(SecretString::from).map_err(|_| {
            (
                format!("{key}_env"),
                format!("environment variable {v} is not set"),
            )
        }),
        (Some(_), Some(_)) => Err((
            format!("{key}_env"),
            format!("set only one of {key}_file and {key}_env"),
        )),
        (None, None) => Err((
            format!("{key}_file"),
            format!("set {key}_file or {key}_env"),
        )),
    }
}

static TLS_INIT: Once = Once::new();

/// rustls needs one process-wide crypto provider; ring is the one this build carries.
/// Idempotent; anything else in the process that builds a reqwest client calls it first.
pub fn init_tls() {
    TLS_INIT.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

enum Auth {
    None,
    /// A static token (the credential), sent with this scheme.
    Bearer(String),
    /// Client credentials (the credential is the client secret).
    OAuth(OAuth),
}

struct OAuth {
    token_url: String,
    client_id: String,
    scope: Option<String>,
    /// The access token, its expiry, and the fingerprint of the client secret it was
    /// obtained with (a changed secret means a new token).
    current: Mutex<Option<(SecretString, Instant, u64)>>,
}

/// The secret a client authenticates with, and the gate that keeps a wrong one from
/// being tried more than twice (401/403 count as failures).
struct Credential {
    secret: Secret,
    gate: CredentialGate,
}

/// Renew this long before the token's stated expiry.
const RENEW_EARLY: Duration = Duration::from_secs(30);

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

/// A response: status, `Retry-After`, and the body as JSON (`Null` when empty or not JSON).
#[derive(Debug, Clone)]
pub struct Response {
    pub status: StatusCode,
    pub retry_after: Option<Duration>,
    pub body: Value,
    /// The response headers (Link, rate-limit headers).
    pub headers: reqwest::header::HeaderMap,
}

impl Response {
    pub fn is_success(&self) -> bool {
        self.status.is_success()
    }

    /// A classified error for this response: 408/429/502/503/504 retryable (with
    /// `Retry-After`), the rest permanent; the target's own `detail` / `scimType` /
    /// `message` / `error` go into the message.
    pub fn error(&self, what: &str) -> ConnectorError {
        let code = self.status.as_u16();
        let mut detail = Vec::new();
        for key in [
            "scimType",
            "detail",
            "message",
            "error",
            "error_description",
        ] {
            if let Some(v) = self.body.get(key).and_then(Value::as_str) {
                detail.push(format!("{key}: {}", redact::cap_to(v, 256)));
            }
        }
        let detail = if detail.is_empty() {
            String::new()
        } else {
            format!(" ({})", detail.join("; "))
        };
        let mut e = ConnectorError::new(
            classify_http_status(code),
            Some(code.to_string()),
            format!("{what}: HTTP {code}{detail}"),
        )
        .with_retry_after(self.retry_after);
        if code == 401 || code == 403 {
            // provd's credentials were refused: every job of the source would fail the
            // same way, and none is at fault (DESIGN §20).
            e = e.auth_failure();
        }
        e
    }
}

/// One source's HTTP client.
pub struct HttpClient {
    client: reqwest::Client,
    base: String,
    auth: Auth,
    credential: Option<Credential>,
    /// Every secret this client holds, scrubbed from whatever the target says back.
    redactor: Redactor,
}

impl HttpClient {
    /// Builds the client; `base` is the directory secret and CA paths are relative to.
    pub fn new(s: &HttpSettings, base: &Path) -> Result<Self, (String, String)> {
        init_tls();
        let timeout = crate::duration::parse(&s.timeout).map_err(|e| ("timeout".to_string(), e))?;
        let mut builder = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)));
        if let Some(ca) = &s.tls_ca_file {
            let path = if Path::new(ca).is_absolute() {
                Path::new(ca).to_path_buf()
            } else {
                base.join(ca)
            };
            let pem = std::fs::read(&path).map_err(|e| {
                (
                    "tls_ca_file".to_string(),
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            let cert = reqwest::Certificate::from_pem(&pem)
                .map_err(|e| ("tls_ca_file".to_string(), e.to_string()))?;
            builder = builder.add_root_certificate(cert);
        }
        let client = builder.build().map_err(|e| {
            (
                "base_url".to_string(),
                format!("cannot build the HTTP client: {e}"),
            )
        })?;
        let resolve = |f: &str| {
            if Path::new(f).is_absolute() {
                Path::new(f).to_path_buf()
            } else {
                base.join(f)
            }
        };
        let mut secrets = redact::url_secrets(&s.base_url);
        let (auth, credential) = match (&s.oauth, &s.token_file, &s.token_env) {
            (Some(o), None, None) => {
                let secret = read_secret(
                    base,
                    o.client_secret_file.as_deref(),
                    o.client_secret_env.as_deref(),
                    "oauth.client_secret",
                )?;
                secrets.push(secret.clone());
                secrets.extend(redact::url_secrets(&o.token_url));
                let file = o.client_secret_file.as_deref().map(resolve);
                (
                    Auth::OAuth(OAuth {
                        token_url: o.token_url.clone(),
                        client_id: o.client_id.clone(),
                        scope: o.scope.clone(),
                        current: Mutex::new(None),
                    }),
                    Some(Secret::new(secret, file)),
                )
            }
            (None, None, None) => (Auth::None, None),
            (None, f, e) => {
                let secret = read_secret(base, f.as_deref(), e.as_deref(), "token")?;
                secrets.push(secret.clone());
                (
                    Auth::Bearer(s.token_scheme.clone().unwrap_or_else(|| "Bearer".into())),
                    Some(Secret::new(secret, f.as_deref().map(resolve))),
                )
            }
            (Some(_), _, _) => {
                return Err((
                    "oauth".into(),
                    "set either [oauth] or token_file / token_env, not both".into(),
                ));
            }
        };
        Ok(Self {
            client,
            base: s.base_url.trim_end_matches('/').to_string(),
            auth,
            credential: credential.map(|secret| Credential {
                secret,
                gate: CredentialGate::default(),
            }),
            redactor: Redactor::new(secrets),
        })
    }

    /// `text` without any secret this client holds.
    pub fn redact(&self, text: &str) -> String {
        self.redactor.redact(text)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    async fn token(
        &self,
        oauth: &OAuth,
        secret: &SecretString,
        fp: u64,
        renew: bool,
    ) -> Result<SecretString, ConnectorError> {
        let mut current = oauth.current.lock().await;
        if !renew
            && let Some((token, until, with)) = current.as_ref()
            && *with == fp
            && Instant::now() + RENEW_EARLY < *until
        {
            return Ok(token.clone());
        }
        let mut form = vec![
            ("grant_type", "client_credentials".to_string()),
            ("client_id", oauth.client_id.clone()),
        ];
        form.push(("client_secret", secret.expose_secret().to_string()));
        if let Some(scope) = &oauth.scope {
            form.push(("scope", scope.clone()));
        }
        let resp = self
            .client
            .post(&oauth.token_url)
            .form(&form)
            .send()
            .await
            .map_err(|e| self.transport("token request", &oauth.token_url, e))?;
        let status = resp.status();
        let retry_after = retry_after(resp.headers(), SystemTime::now());
        if !status.is_success() {
            let mut body: Value = resp.json().await.unwrap_or(Value::Null);
            self.redactor.redact_json(&mut body);
            let r = Response {
                status,
                retry_after,
                body,
                headers: Default::default(),
            };
            let mut e = r.error("token request");
            // invalid_client and the like: the client secret was refused.
            if matches!(status.as_u16(), 400 | 401 | 403) {
                e = e.auth_failure();
            }
            return Err(e);
        }
        let t: TokenResponse = resp.json().await.map_err(|e| {
            ConnectorError::permanent(
                Some("token".into()),
                format!("token response is not a token: {e}"),
            )
        })?;
        let lifetime = Duration::from_secs(t.expires_in.unwrap_or(3600));
        let token = SecretString::from(t.access_token);
        self.redactor.add_issued(&token);
        *current = Some((token.clone(), Instant::now() + lifetime, fp));
        tracing::debug!(token_url = %oauth.token_url, expires_in_s = lifetime.as_secs(), "OAuth token obtained");
        Ok(token)
    }

    /// Sends a request and returns any HTTP answer as a [`Response`]; transport failures
    /// are classified errors. With OAuth, a 401 renews the token once and tries again.
    /// A credential not yet known to be good goes alone, and one refused twice (401/403)
    /// is not sent again until its file changes or the connector is rebuilt (reload).
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Response, ConnectorError> {
        let Some(cred) = &self.credential else {
            return self.send_with(method, path, body, None).await;
        };
        let secret = gate::current(&cred.secret, &cred.gate);
        if cred.gate.has_failed() {
            self.redactor.add_issued(&secret);
        }
        let fp = gate::fingerprint(&secret);
        let attempt = cred
            .gate
            .enter(fp, Instant::now())
            .await
            .map_err(|refused| {
                let label = format!("{method} {}", redact::strip_query(path));
                ConnectorError::permanent(Some("401".into()), format!("{label}: {refused}"))
                    .auth_failure()
            })?;
        let result = self
            .send_with(method, path, body, Some((&secret, fp)))
            .await;
        let refused = match &result {
            Ok(r) if matches!(r.status.as_u16(), 401 | 403) => {
                Some(format!("HTTP {}", r.status.as_u16()))
            }
            Err(e) if e.auth => Some(e.message.clone()),
            _ => None,
        };
        match (refused, attempt) {
            (Some(answer), Some(a)) => a.failed(Instant::now(), &answer),
            (Some(answer), None) => {
                cred.gate
                    .failed_unguarded(fp, Instant::now(), &answer)
                    .await
            }
            (None, Some(a)) if result.is_ok() => a.succeeded(),
            _ => {}
        }
        result
    }

    async fn send_with(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        credential: Option<(&SecretString, u64)>,
    ) -> Result<Response, ConnectorError> {
        let mut renewed = false;
        loop {
            let mut req = self
                .client
                .request(method.clone(), self.url(path))
                .header("Accept", "application/scim+json, application/json");
            if let Some(b) = body {
                req = req
                    .header("Content-Type", "application/json")
                    .body(b.to_string());
            }
            match (&self.auth, credential) {
                (Auth::Bearer(scheme), Some((t, _))) if scheme == "Bearer" => {
                    req = req.bearer_auth(t.expose_secret())
                }
                (Auth::Bearer(scheme), Some((t, _))) => {
                    req = req.header("Authorization", format!("{scheme} {}", t.expose_secret()))
                }
                (Auth::OAuth(o), Some((secret, fp))) => {
                    req = req.bearer_auth(self.token(o, secret, fp, renewed).await?.expose_secret())
                }
                _ => {}
            }
            let label = format!("{method} {}", redact::strip_query(path));
            let resp = req
                .send()
                .await
                .map_err(|e| self.transport(&label, &self.url(path), e))?;
            let status = resp.status();
            if status == StatusCode::UNAUTHORIZED && !renewed && matches!(self.auth, Auth::OAuth(_))
            {
                renewed = true;
                tracing::info!(path, "401: renewing the OAuth token once");
                continue;
            }
            let retry_after = retry_after(resp.headers(), SystemTime::now());
            let headers = resp.headers().clone();
            let bytes = resp
                .bytes()
                .await
                .map_err(|e| self.transport(&label, &self.url(path), e))?;
            let mut body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            // Before any connector builds an error from it: the target may echo a secret.
            self.redactor.redact_json(&mut body);
            return Ok(Response {
                status,
                retry_after,
                body,
                headers,
            });
        }
    }
}

impl HttpClient {
    /// A failure before any HTTP answer: refused, reset, timeout, DNS → retryable. The
    /// message names the peer (scheme, host, port; never userinfo or a query) and the
    /// root cause (`connection refused`), redacted.
    fn transport(&self, what: &str, url: &str, e: reqwest::Error) -> ConnectorError {
        let code = if e.is_timeout() {
            "timeout"
        } else if e.is_connect() {
            "connect"
        } else {
            "transport"
        };
        let e = e.without_url();
        let cause = root_cause(&e);
        let peer = redact::safe_url(url);
        let msg = match code {
            "connect" => format!("{what}: cannot connect to {peer}: {cause}"),
            "timeout" => format!("{what}: {peer}: timed out ({cause})"),
            _ => format!("{what}: {peer}: {cause}"),
        };
        ConnectorError::retryable(Some(code.into()), redact::cap(&self.redact(&msg)))
    }
}

/// The innermost cause of an error chain (`Connection refused (os error 111)`), which is
/// what an operator needs; reqwest's own text is only "error sending request".
pub fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let top = e.to_string();
    let mut inner = None;
    let mut next = e.source();
    while let Some(cause) = next {
        inner = Some(cause.to_string());
        next = cause.source();
    }
    match inner {
        None => top,
        Some(inner) if top.starts_with("error sending request") || top.contains(&inner) => inner,
        // A TLS failure names the certificate problem at the top, the io error below.
        Some(inner) => format!("{top}: {inner}"),
    }
}

/// `Retry-After` as delta-seconds or an HTTP-date (RFC 9110 §10.2.3).
pub fn retry_after(headers: &reqwest::header::HeaderMap, now: SystemTime) -> Option<Duration> {
    let v = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    parse_retry_after(v, now)
}

pub fn parse_retry_after(v: &str, now: SystemTime) -> Option<Duration> {
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(now).unwrap_or_default())
}

/// Percent-encodes a value for a URL path segment or query component (RFC 3986
/// unreserved characters stay as they are).
pub fn url_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(
            parse_retry_after(&later, now),
            Some(Duration::from_secs(30))
        );
        let past = httpdate::fmt_http_date(now - Duration::from_secs(30));
        assert_eq!(parse_retry_after(&past, now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn encoding_for_paths() {
        assert_eq!(url_encode("a b/c?d&e=é"), "a%20b%2Fc%3Fd%26e%3D%C3%A9");
        assert_eq!(url_encode("A-z_0.9~"), "A-z_0.9~");
    }

    #[test]
    fn response_errors_are_classified_with_the_targets_detail() {
        let r = Response {
            status: StatusCode::TOO_MANY_REQUESTS,
            retry_after: Some(Duration::from_secs(7)),
            body: Value::Null,
            headers: Default::default(),
        };
        let e = r.error("POST /Users");
        assert_eq!(e.class, crate::ErrorClass::Retryable);
        assert_eq!(e.retry_after, Some(Duration::from_secs(7)));
        let body = serde_json::json!({ "scimType": "uniqueness", "detail": "userName taken" });
        let e = Response {
            status: StatusCode::CONFLICT,
            retry_after: None,
            body,
            headers: Default::default(),
        }
        .error("POST /Users");
        assert_eq!(e.class, crate::ErrorClass::Permanent);
        assert_eq!(
            e.message,
            "POST /Users: HTTP 409 (scimType: uniqueness; detail: userName taken)"
        );
        let e = Response {
            status: StatusCode::UNAUTHORIZED,
            retry_after: None,
            body: Value::Null,
            headers: Default::default(),
        }
        .error("x");
        assert!(e.source_wide);
    }

    #[test]
    fn secrets_come_from_files_or_variables_and_errors_never_hold_them() {
        let dir = std::env::temp_dir().join(format!("provd-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("s"), "hunter2\nignored\n").unwrap();
        let s = read_secret(&dir, Some("s"), None, "token").unwrap();
        assert_eq!(s.expose_secret(), "hunter2");
        let e = read_secret(&dir, Some("nope"), None, "token").unwrap_err();
        assert_eq!(e.0, "token_file");
        let e = read_secret(&dir, None, None, "oauth.client_secret").unwrap_err();
        assert_eq!(e.0, "oauth.client_secret_file");
        assert!(format!("{s:?}").contains("REDACTED") || !format!("{s:?}").contains("hunter2"));
    }

    #[tokio::test]
    async fn transport_errors_do_not_carry_credentials_from_the_url() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // Nothing listens there any more: the connection is refused.
        let s: HttpSettings = toml::from_str(&format!(
            "base_url = \"http://svc:pa55w0rd@127.0.0.1:{port}/api?key=K3Y\""
        ))
        .unwrap();
        let client = HttpClient::new(&s, Path::new(".")).unwrap();
        let e = client.send(Method::GET, "/Users", None).await.unwrap_err();
        assert_eq!(e.class, crate::ErrorClass::Retryable);
        assert!(e.message.starts_with("GET /Users:"), "{e}");
        assert!(
            !e.message.contains("pa55w0rd") && !e.message.contains("K3Y"),
            "{e}"
        );
        // Where and why: the peer and the cause, not only "error sending request".
        assert!(e.message.contains(&format!("127.0.0.1:{port}")), "{e}");
        assert!(e.message.to_lowercase().contains("refused"), "{e}");
    }

    /// A one-shot HTTP server answering every request with `status` and `body`.
    async fn answer_with(status: u16, body: String) -> u16 {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut c, _)) = l.accept().await {
                let body = body.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 65536];
                    let _ = c.read(&mut buf).await;
                    let resp = format!(
                        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = c.write_all(resp.as_bytes()).await;
                });
            }
        });
        port
    }

    #[tokio::test]
    async fn secrets_a_target_echoes_are_redacted_and_its_text_capped() {
        let dir = tempfile_dir("echo");
        std::fs::write(dir.join("token"), "tok-S3CRET-123\n").unwrap();
        std::fs::write(dir.join("cs"), "client-S3CRET-456\n").unwrap();
        let long = "x".repeat(5000);
        let body = format!(
            r#"{{"detail":"unauthorized: Bearer tok-S3CRET-123 for key QK3Y-789 {long}"}}"#
        );
        let port = answer_with(401, body).await;
        let s: HttpSettings = toml::from_str(&format!(
            "base_url = \"http://127.0.0.1:{port}/api?api_key=QK3Y-789\"\ntoken_file = \"token\""
        ))
        .unwrap();
        let client = HttpClient::new(&s, &dir).unwrap();
        let r = client.send(Method::GET, "/Users", None).await.unwrap();
        let e = r.error("GET /Users");
        assert!(e.source_wide);
        assert!(!e.message.contains("tok-S3CRET-123"), "{e}");
        assert!(!e.message.contains("QK3Y-789"), "{e}");
        assert!(e.message.contains("Bearer [REDACTED]"), "{e}");
        assert!(e.message.len() < 600, "{}", e.message.len());

        // A token endpoint that echoes the client secret.
        let body = r#"{"error":"invalid_client","error_description":"bad client_secret client-S3CRET-456"}"#;
        let port = answer_with(401, body.to_string()).await;
        let s: HttpSettings = toml::from_str(&format!(
            "base_url = \"http://127.0.0.1:{port}\"\n[oauth]\ntoken_url = \"http://127.0.0.1:{port}/oauth/token\"\nclient_id = \"c\"\nclient_secret_file = \"cs\""
        ))
        .unwrap();
        let client = HttpClient::new(&s, &dir).unwrap();
        let e = client.send(Method::GET, "/Users", None).await.unwrap_err();
        assert!(!e.message.contains("client-S3CRET-456"), "{e}");
        assert!(e.message.contains("bad client_secret [REDACTED]"), "{e}");
    }

    fn tempfile_dir(tag: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("provd-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
