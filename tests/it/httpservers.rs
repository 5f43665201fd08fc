//! Throwaway HTTP servers for the SCIM and REST connector tests: the real scim2-server
//! (PyPI) and json-server (npm), installed by tests/run under target/test-tools; plus two
//! small servers of our own for what those cannot do: an OAuth token endpoint, and a server
//! that answers 429 with Retry-After.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::harness::{eventually, free_port};

pub fn tool(rel: &str) -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target/test-tools")
        .join(rel);
    assert!(
        p.exists(),
        "{} is missing: run `bash tests/run` once to install the test servers",
        p.display()
    );
    p
}

/// What SailPoint's own Python SDK reads from an `/access-request-status` answer: one
/// object per item (`id`, `state`, `cancelable`, `cancelled`), parsed by the SDK's
/// `RequestedItemStatus` model (tests/tools/sailpoint_status.py). Panics with the SDK's
/// message when it refuses the answer.
pub fn sailpoint_sdk_reads(status: &serde_json::Value) -> Vec<serde_json::Value> {
    use std::io::Write;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/tools/sailpoint_status.py");
    let mut child = Command::new(tool("venv/bin/python"))
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(status.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the SailPoint SDK refused the status answer: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A process killed on drop.
pub struct Proc {
    child: Option<Child>,
}

impl Proc {
    pub fn new(child: Child) -> Proc {
        Proc { child: Some(child) }
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn wait_http(url: &str, token: Option<&str>) {
    let http = crate::harness::client();
    // A Python server starting on a loaded 2-core machine took more than 20 s (a PG
    // suite beside a long simulation run); the deadline only matters when it never comes.
    eventually(60, url, || {
        let mut req = http.get(url);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        async move {
            req.send()
                .await
                .ok()
                .filter(|r| r.status().is_success())
                .map(|_| ())
        }
    })
    .await;
}

pub struct Scim {
    pub port: u16,
    pub token: String,
    proc: Proc,
}

impl Scim {
    pub async fn start(token: &str) -> Scim {
        Self::start_on(free_port(), token).await
    }

    pub async fn start_on(port: u16, token: &str) -> Scim {
        let child = Command::new(tool("venv/bin/scim2-server"))
            .args(["--port", &port.to_string(), "--bearer-token", token])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let s = Scim {
            port,
            token: token.into(),
            proc: Proc { child: Some(child) },
        };
        wait_http(&format!("{}/ServiceProviderConfig", s.base()), Some(token)).await;
        s
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}/v2", self.port)
    }

    pub fn stop(&mut self) {
        self.proc.stop();
    }

    pub async fn post(&self, path: &str, body: serde_json::Value) -> serde_json::Value {
        let r = crate::harness::client()
            .post(format!("{}{path}", self.base()))
            .bearer_auth(&self.token)
            .header("content-type", "application/scim+json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.status());
        r.json().await.unwrap()
    }

    /// A change made by hand on the server (DELETE, or PATCH with `body`).
    pub async fn by_hand(&self, method: &str, path: &str, body: Option<serde_json::Value>) {
        let c = crate::harness::client();
        let url = format!("{}{path}", self.base());
        let req = match method {
            "DELETE" => c.delete(url),
            _ => c
                .patch(url)
                .header("content-type", "application/scim+json")
                .body(body.unwrap_or_default().to_string()),
        };
        let r = req.bearer_auth(&self.token).send().await.unwrap();
        assert!(r.status().is_success(), "{method} {path}: {}", r.status());
    }

    pub async fn get(&self, path: &str) -> serde_json::Value {
        let r = crate::harness::client()
            .get(format!("{}{path}", self.base()))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        r.json().await.unwrap()
    }

    pub async fn group(&self, name: &str) -> String {
        let g = self
            .post("/Groups", serde_json::json!({ "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": name }))
            .await;
        g["id"].as_str().unwrap().to_string()
    }

    /// The member ids of a group.
    pub async fn members(&self, group_id: &str) -> Vec<String> {
        let g = self.get(&format!("/Groups/{group_id}")).await;
        let mut m: Vec<String> = g["members"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|m| m["value"].as_str().unwrap().to_string())
            .collect();
        m.sort();
        m
    }
}

pub struct JsonServer {
    pub port: u16,
    pub dir: tempfile::TempDir,
    _proc: Proc,
}

impl JsonServer {
    pub async fn start(db: serde_json::Value) -> JsonServer {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("db.json"), db.to_string()).unwrap();
        let port = free_port();
        let child = Command::new(tool("node_modules/.bin/json-server"))
            .current_dir(dir.path())
            .args([
                "--port",
                &port.to_string(),
                "--host",
                "127.0.0.1",
                "db.json",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let s = JsonServer {
            port,
            dir,
            _proc: Proc { child: Some(child) },
        };
        wait_http(&format!("{}/db", s.base()), None).await;
        s
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub async fn get(&self, path: &str) -> serde_json::Value {
        crate::harness::client()
            .get(format!("{}{path}", self.base()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

/// An OAuth 2.0 token endpoint (client credentials). Hands out `tokens` in turn (the last
/// one again when they run out), each valid `expires_in` seconds; counts requests and
/// refuses a wrong client secret with 401.
pub struct TokenServer {
    pub url: String,
    pub requests: Arc<AtomicUsize>,
    _task: tokio::task::JoinHandle<()>,
}

impl TokenServer {
    pub async fn start(secret: &str, tokens: Vec<String>, expires_in: u64) -> TokenServer {
        use axum::extract::State;
        use axum::routing::post;
        let requests = Arc::new(AtomicUsize::new(0));
        let state = (requests.clone(), Arc::new(tokens), secret.to_string());
        let app = axum::Router::new()
            .route(
                "/token",
                post(move |State((n, tokens, secret)): State<(Arc<AtomicUsize>, Arc<Vec<String>>, String)>, body: String| async move {
                    let i = n.fetch_add(1, Ordering::SeqCst);
                    let form: Vec<(String, String)> = body
                        .split('&')
                        .filter_map(|kv| kv.split_once('='))
                        .map(|(k, v)| (k.to_string(), v.replace("%20", " ").replace('+', " ")))
                        .collect();
                    let get = |k: &str| form.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
                    if get("grant_type").as_deref() != Some("client_credentials") || get("client_secret") != Some(secret) {
                        return (axum::http::StatusCode::UNAUTHORIZED, axum::Json(serde_json::json!({ "error": "invalid_client" })));
                    }
                    let token = tokens.get(i).or(tokens.last()).cloned().unwrap_or_default();
                    (axum::http::StatusCode::OK, axum::Json(serde_json::json!({ "access_token": token, "token_type": "Bearer", "expires_in": expires_in })))
                }),
            )
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/token", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        TokenServer {
            url,
            requests,
            _task: task,
        }
    }
}

/// Answers every request with 429 and `Retry-After: 120`, counting them.
pub struct TooMany {
    pub base: String,
    pub requests: Arc<AtomicUsize>,
    _task: tokio::task::JoinHandle<()>,
}

impl TooMany {
    pub async fn start() -> TooMany {
        let requests = Arc::new(AtomicUsize::new(0));
        let n = requests.clone();
        let app = axum::Router::new().fallback(move || {
            let n = n.clone();
            async move {
                n.fetch_add(1, Ordering::SeqCst);
                (
                    axum::http::StatusCode::TOO_MANY_REQUESTS,
                    [("Retry-After", "120")],
                    "slow down",
                )
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        TooMany {
            base,
            requests,
            _task: task,
        }
    }
}

/// A target that echoes credentials back in its errors, as some do: every API request is
/// answered 401 with the presented Authorization header in `detail`; a token endpoint
/// (`/oauth/token`) answers 401 with the posted form (client secret included) in
/// `error_description`.
pub struct Echo {
    pub base: String,
    _task: tokio::task::JoinHandle<()>,
}

impl Echo {
    pub async fn start() -> Echo {
        let app = axum::Router::new()
            .route(
                "/oauth/token",
                axum::routing::post(|body: String| async move {
                    (
                        axum::http::StatusCode::UNAUTHORIZED,
                        axum::Json(serde_json::json!({
                            "error": "invalid_client",
                            "error_description": format!("bad client_secret in {body}")
                        })),
                    )
                }),
            )
            .fallback(|headers: axum::http::HeaderMap| async move {
                let auth = headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                (
                    axum::http::StatusCode::UNAUTHORIZED,
                    axum::Json(serde_json::json!({ "detail": format!("unauthorized: {auth}") })),
                )
            });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Echo { base, _task: task }
    }
}
