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
/// Whether a file provd reads a secret or a credential list from can be trusted: owned
/// by the user provd runs as (or by root), and writable by nobody else. A file someone
/// else may write can swap the credential provd presents, or add a token it accepts.
pub fn check_trusted(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if m.uid() != me && m.uid() != 0 {
        return Err(format!(
            "{} belongs to user id {}, not to the user provd runs as ({me}) or root",
            path.display(),
            m.uid()
        ));
    }
    if m.mode() & 0o022 != 0 {
        return Err(format!(
            "{} is writable by its group or by everyone (mode {:o}); chmod go-w it",
            path.display(),
            m.mode() & 0o777
        ));
    }
    Ok(())
}

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
            check_trusted(&path).map_err(|e| (format!("{key}_file"), e))?;
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
    /// Keeps the gate of the client's secret (if it has one) in `memory`.
    pub fn remember_failures(&self, memory: std::sync::Arc<dyn gate::GateMemory>, source: &str) {
        if let Some(c) = &self.credential {
            c.gate.remember(memory, source);
        }
    }

    /// Builds the client; `base` is the directory secret and CA paths are relative to.
    pub fn new(s: &HttpSettings, base: &Path) -> Result<Self, (String, String)> {
        init_tls();
        use crate::url_check::{Query, check_url};
        check_url(&s.base_url, &["http", "https"], Query::Allowed)
            .map_err(|e| ("base_url".to_string(), e))?;
        if let Some(o) = &s.oauth {
            check_url(&o.token_url, &["http", "https"], Query::Refused)
                .map_err(|e| ("oauth.token_url".to_string(), e))?;
        }
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
        let fp = cred.gate.fingerprint(&secret);
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
        // Kept in the store by a gate memory: scrubbed of every secret this client holds.
        let refused = refused.map(|a| self.redactor.redact(&redact::cap(&a)));
        match (refused, attempt) {
            (Some(answer), Some(a)) => a.failed(Instant::now(), &answer).await,
            (Some(answer), None) => {
                cred.gate
                    .failed_unguarded(fp, Instant::now(), &answer)
                    .await
            }
            (None, Some(a)) if result.is_ok() => a.succeeded().await,
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
        if crate::error::is_tls(&e) {
            let msg = format!("{what}: {peer}: TLS: {cause}");
            return ConnectorError::permanent(Some("tls".into()), redact::cap(&self.redact(&msg)))
                .trust_failure();
        }
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
mod tests;
