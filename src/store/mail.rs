//! What the agent remembers of the mail it sent each source owner (DESIGN §15), so that a
//! restart (or another agent taking the lead) neither repeats a message nor skips one.

use rusqlite::params;

use super::{Result, sqlite::Sqlite};

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

impl Sqlite {
    pub fn mail_marks(&self) -> Result<Vec<MailMark>> {
        self.with(|c| {
            Ok(c.prepare_cached(
                "SELECT owner, announced_through, announced_at, digest_on FROM mail_state ORDER BY owner",
            )?
            .query_map([], |r| {
                Ok(MailMark {
                    owner: r.get(0)?,
                    announced_through: r.get(1)?,
                    announced_at: r.get(2)?,
                    digest_on: r.get(3)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    pub fn set_mail_mark(&self, m: &MailMark, now: i64) -> Result<()> {
        self.with(|c| {
            c.prepare_cached(
                "INSERT INTO mail_state (owner, announced_through, announced_at, digest_on, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(owner) DO UPDATE SET announced_through = ?2, announced_at = ?3, digest_on = ?4, updated_at = ?5",
            )?
            .execute(params![m.owner, m.announced_through, m.announced_at, m.digest_on, now])?;
            Ok(())
        })
    }
}
