//! The shared HTTP layer against small in-test servers.

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
    // Credentials in the URL are refused outright, without being repeated.
    let Err((key, e)) = HttpClient::new(&s, Path::new(".")) else {
        panic!("a URL with a password was taken");
    };
    assert_eq!(key, "base_url");
    assert!(
        e.contains("must not hold a user or password") && !e.contains("pa55w0rd"),
        "{e}"
    );
    let s: HttpSettings = toml::from_str(&format!(
        "base_url = \"http://127.0.0.1:{port}/api?key=K3Y\""
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
    let body =
        format!(r#"{{"detail":"unauthorized: Bearer tok-S3CRET-123 for key QK3Y-789 {long}"}}"#);
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
    let body =
        r#"{"error":"invalid_client","error_description":"bad client_secret client-S3CRET-456"}"#;
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
