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

/// What became of a pulled request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Accepted as this provd request.
    Accepted(String),
    /// Rejected, for this reason (written back to the upstream).
    Rejected(String),
}

impl Outcome {
    /// The outcome column's text.
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Accepted(_) => "accepted",
            Outcome::Rejected(_) => "rejected",
        }
    }

    /// (request id, reason) as the store keeps them: one of the two is set.
    pub fn columns(&self) -> (Option<&str>, Option<&str>) {
        match self {
            Outcome::Accepted(id) => (Some(id), None),
            Outcome::Rejected(why) => (None, Some(why)),
        }
    }
}

/// An upstream's health, for `/readyz`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Health {
    pub name: String,
    pub healthy: bool,
    pub last_error: Option<String>,
    pub last_poll_at: Option<i64>,
}
