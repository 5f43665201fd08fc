//! What the agent remembers of each upstream governance service: where its listing was
//! read up to, whether it is healthy, and every request pulled from it with its outcome and
//! whether the write-back message was accepted.

/// A pulled request whose write-back has not been accepted yet.
#[derive(Debug, Clone)]
pub struct Unwritten {
    pub upstream_id: String,
    pub request_id: Option<String>,
    pub outcome: String,
    pub reason: Option<String>,
}

/// A pulled request: where from, the provd request it became (None: rejected) and why.
#[derive(Debug, Clone)]
pub struct Pulled {
    pub upstream: String,
    pub request_id: Option<String>,
    pub reason: Option<String>,
    pub received_at: i64,
}

/// An upstream's health, for `/readyz`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Health {
    pub name: String,
    pub healthy: bool,
    pub last_error: Option<String>,
    pub last_poll_at: Option<i64>,
}
