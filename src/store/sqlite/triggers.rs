//! SailPoint trigger invocations on SQLite.

use super::Sqlite;
use crate::store::roles::{Fut, Stamp, Triggers};
use crate::store::rules::events;
use crate::store::triggers::{Answer, CallbackEnd, Invocation, TriggerEvent};
use crate::store::{Result, StoreError};

use crate::store::events::Event;
use crate::store::triggers::*;
use rusqlite::{OptionalExtension, Row, params};

fn row(r: &Row<'_>) -> rusqlite::Result<Invocation> {
    invocation_from(r).map_err(super::cells::driver_error)
}

impl Sqlite {
    /// Stores a new invocation with its answer's event (when decided), or returns the one
    /// stored before under the same id.
    pub fn record_invocation(&self, inv: &Invocation, actor: &str) -> Result<(Invocation, bool)> {
        self.with(|c| {
            let tx = c.transaction()?;
            let a = inv.answer.as_ref();
            let n = tx
                .prepare_cached(&format!(
                    "INSERT OR IGNORE INTO trigger_invocations ({COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
                ))?
                .execute(params![
                    inv.id, inv.trigger, inv.access_request_id, inv.identity, inv.mode, inv.body,
                    a.map(|a| a.approved), a.map(|a| &a.comment), a.map(|a| &a.approver), a.map(|a| &a.rule),
                    inv.callback_url, inv.sealed_secret, inv.state, inv.attempts, inv.next_attempt_at,
                    inv.deadline_at, inv.received_at
                ])?;
            if n > 0
                && let Some(a) = a
            {
                let event = Event { kind: "trigger_decision", identity: inv.identity.as_deref(), data: decision_event(inv, a), actor, ..Default::default() };
                super::audit::append(&tx, inv.received_at, &event)?;
            }
            let stored = tx
                .prepare_cached(&format!("SELECT {COLUMNS} FROM trigger_invocations WHERE id = ?"))?
                .query_row([&inv.id], row)?;
            tx.commit()?;
            Ok((stored, n > 0))
        })
    }

    /// Callbacks to make now, oldest first.
    pub fn due_invocations(&self, now: i64, limit: usize) -> Result<Vec<Invocation>> {
        self.with(|c| {
            Ok(c.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM trigger_invocations WHERE state = 'pending' AND next_attempt_at <= ?
                 ORDER BY next_attempt_at, id LIMIT ?"
            ))?
            .query_map(params![now, limit as i64], row)?
            .collect::<rusqlite::Result<Vec<_>>>()?)
        })
    }

    pub fn invocation(&self, id: &str) -> Result<Option<Invocation>> {
        self.with(|c| {
            Ok(c.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM trigger_invocations WHERE id = ?"
            ))?
            .query_row([id], row)
            .optional()?)
        })
    }

    /// Records the answer of an invocation decided late, with its event.
    pub fn answer_invocation(&self, inv: &Invocation, a: &Answer, by: &Stamp) -> Result<()> {
        self.with(|c| {
            let tx = c.transaction()?;
            let n = tx
                .prepare_cached(
                    "UPDATE trigger_invocations SET approved = ?, comment = ?, approver = ?, rule = ? WHERE id = ? AND approved IS NULL",
                )?
                .execute(params![a.approved, a.comment, a.approver, a.rule, inv.id])?;
            if n > 0 {
                super::audit::append(&tx, by.now, &events::trigger_decision(inv, a, &by.actor))?;
            }
            tx.commit()?;
            Ok(())
        })
    }

    /// A failed callback: when to try again, and why it failed.
    pub fn retry_invocation(&self, id: &str, next_at: i64, error: &str) -> Result<()> {
        self.with(|c| {
            c.prepare_cached(
                "UPDATE trigger_invocations SET attempts = attempts + 1, next_attempt_at = ?, last_error = ? WHERE id = ? AND state = 'pending'",
            )?
            .execute(params![next_at, error, id])?;
            Ok(())
        })
    }

    /// The callback went (`delivered`) or its deadline passed (`expired`): recorded with
    /// an event. The sealed secret is dropped: nothing will need it again.
    pub fn finish_invocation(&self, inv: &Invocation, end: &CallbackEnd, by: &Stamp) -> Result<()> {
        self.with(|c| {
            let tx = c.transaction()?;
            let n = tx
                .prepare_cached(
                    "UPDATE trigger_invocations SET state = ?, attempts = attempts + 1, last_error = ?, done_at = ?, sealed_secret = NULL
                     WHERE id = ? AND state = 'pending'",
                )?
                .execute(params![end.state, end.error, by.now, inv.id])?;
            if n > 0 {
                super::audit::append(&tx, by.now, &events::trigger_callback(inv, end, &by.actor))?;
            }
            tx.commit()?;
            Ok(())
        })
    }

    /// An event of a trigger's own (denied items of a decision, …).
    pub fn trigger_event(&self, e: &TriggerEvent, by: &Stamp) -> Result<()> {
        self.with(|c| super::audit::append(c, by.now, &events::trigger_event(e, &by.actor)))
    }
}

impl Triggers for Sqlite {
    fn record_invocation(&self, inv: Invocation, actor: String) -> Fut<(Invocation, bool)> {
        blocking!(self, |s| s.record_invocation(&inv, &actor))
    }
    fn invocation(&self, id: String) -> Fut<Option<Invocation>> {
        blocking!(self, |s| s.invocation(&id))
    }
    fn due_invocations(&self, now: i64, limit: usize) -> Fut<Vec<Invocation>> {
        blocking!(self, |s| s.due_invocations(now, limit))
    }
    fn answer_invocation(&self, inv: Invocation, answer: Answer, by: Stamp) -> Fut<()> {
        blocking!(self, |s| s.answer_invocation(&inv, &answer, &by))
    }
    fn retry_invocation(&self, id: String, next_at: i64, error: String) -> Fut<()> {
        blocking!(self, |s| s.retry_invocation(&id, next_at, &error))
    }
    fn finish_invocation(&self, inv: Invocation, end: CallbackEnd, by: Stamp) -> Fut<()> {
        blocking!(self, |s| s.finish_invocation(&inv, &end, &by))
    }
    fn trigger_event(&self, entry: TriggerEvent, by: Stamp) -> Fut<()> {
        blocking!(self, |s| s.trigger_event(&entry, &by))
    }
}
