//! What the agent remembers of the mail it sent each source owner (DESIGN §15), so that a
//! restart (or another agent taking the lead) neither repeats a message nor skips one.

/// One owner's mail so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MailMark {
    pub owner: String,
    /// The highest task id a message has told this owner of.
    pub announced_through: i64,
    /// When the last "new tasks" message went (ms).
    pub announced_at: Option<i64>,
    /// The day (agent's time zone, `YYYY-MM-DD`) of the last daily digest.
    pub digest_on: Option<String>,
}
