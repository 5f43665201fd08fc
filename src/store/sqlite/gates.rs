//! The credential gate's memory on SQLite: one row per source.

use provd_connector_core::gate::{self, Admit, Remembered};
use rusqlite::{Connection, OptionalExtension, params};

use super::Sqlite;
use crate::store::Stamp;
use crate::store::roles::{Fut, Gates};
use crate::store::rules::gate::unblocked;
use crate::store::{Result, StoreError};

fn record(c: &Connection, source: &str) -> Result<Option<Remembered>> {
    let row = c
        .prepare_cached(
            "SELECT fingerprint, failures, at, last FROM credential_gates WHERE source = ?",
        )?
        .query_row([source], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get(2)?,
                r.get(3)?,
            ))
        })
        .optional()?;
    Ok(row.map(|(fp, failures, at_ms, last)| Remembered {
        fingerprint: crate::store::rules::gate::parse_fingerprint(&fp),
        failures: u32::try_from(failures).unwrap_or(u32::MAX),
        at_ms,
        last,
    }))
}

impl Gates for Sqlite {
    fn gate_admit(&self, source: String, fingerprint: u64, now: i64) -> Fut<Admit> {
        blocking!(self, |s| s.with(|c| {
            let tx = c.transaction()?;
            let decided = gate::admit(record(&tx, &source)?.as_ref(), fingerprint, now);
            if decided == Admit::Probe {
                tx.execute(
                    "UPDATE credential_gates SET at = ? WHERE source = ?",
                    params![now, source],
                )?;
            }
            tx.commit()?;
            Ok(decided)
        }))
    }

    fn gate_failed(&self, source: String, fingerprint: u64, now: i64, answer: String) -> Fut<()> {
        blocking!(self, |s| s.with(|c| {
            let tx = c.transaction()?;
            let r = gate::after_failure(record(&tx, &source)?.as_ref(), fingerprint, now, &answer);
            tx.execute(
                "INSERT OR REPLACE INTO credential_gates (source, fingerprint, failures, at, last)
                 VALUES (?, ?, ?, ?, ?)",
                params![
                    source,
                    crate::store::rules::gate::fingerprint_text(r.fingerprint),
                    r.failures,
                    r.at_ms,
                    r.last
                ],
            )?;
            tx.commit()?;
            Ok(())
        }))
    }

    fn gate_clear(&self, source: String, by: Option<Stamp>) -> Fut<bool> {
        blocking!(self, |s| s.with(|c| {
            let tx = c.transaction()?;
            let was = record(&tx, &source)?;
            tx.execute("DELETE FROM credential_gates WHERE source = ?", [&source])?;
            if let (Some(was), Some(by)) = (&was, &by) {
                super::audit::append(&tx, by.now, &unblocked(&source, was, &by.actor))?;
            }
            tx.commit()?;
            Ok(was.is_some())
        }))
    }

    fn gate_record(&self, source: String) -> Fut<Option<Remembered>> {
        blocking!(self, |s| s.with(|c| record(c, &source)))
    }

    fn gate_key(&self, _candidate: Vec<u8>) -> Fut<Option<Vec<u8>>> {
        Box::pin(async { Ok(None) })
    }
}
