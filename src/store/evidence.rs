//! Evidence (DESIGN §17): the account exports imported (or read back from a direct
//! source), the accounts the latest one showed, and the tasks whose effect it showed.

/// One import or read-back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotMeta {
    pub id: i64,
    pub source: String,
    /// `import` or `readback`.
    pub kind: String,
    pub sha256: Option<String>,
    pub rows: i64,
    pub as_of: i64,
    pub actor: String,
    pub taken_at: i64,
    /// Whether its rows tell each account's status (an export with a status column, a
    /// read-back whose connector reads it); if not, their `disabled` says nothing and
    /// drift does not judge the accounts' state from them.
    pub status_told: bool,
}

/// One account as a snapshot showed it; `values` is `[[attribute, value], …]` JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenRow {
    pub account: String,
    pub values: String,
    pub disabled: bool,
}
