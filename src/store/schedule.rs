//! Time-bound access in the store: which assignments are due for removal, and firing one —
//! a REVOKE planned and written by the same code as any request (so refcounting, status and
//! settling need nothing special), in the same transaction that re-checks the assignment
//! is still live and still due at that moment. Its idempotency key is the assignment and
//! its due time: a fire that was recorded is never recorded again, and one that was not
//! left nothing behind (a crash between the two is impossible: it is one transaction).

use jiff::Timestamp;
use rusqlite::{OptionalExtension, params};
use serde_json::json;

use super::accept::{Accepted, Context, Replay, accept_in};
use super::events::{self, Event};
use super::{Result, Store};
use crate::clock::{rfc3339_ms, to_ms};
use crate::config::ItemType;
use crate::intake::validate::{RequestType, ValidItem, ValidRequest};

/// An assignment whose removeDate has come.
#[derive(Debug, Clone)]
pub struct Due {
    pub assignment: i64,
    pub identity: String,
    pub ty: ItemType,
    pub item_id: String,
    pub remove_at: i64,
}

/// A fired removal.
#[derive(Debug, Clone)]
pub struct Fired {
    pub due: Due,
    pub request_id: String,
    pub jobs: usize,
    pub lag_ms: i64,
}

impl Store {
    /// The earliest removeDate of a live assignment (indexed: no table scan).
    pub fn next_removal(&self) -> Result<Option<i64>> {
        self.with(|c| {
            Ok(c.prepare_cached("SELECT MIN(remove_at) FROM assignments WHERE remove_at IS NOT NULL AND state IN ('pending','active')")?
                .query_row([], |r| r.get(0))?)
        })
    }

    /// Due removals, oldest first.
    pub fn due_removals(&self, now: i64, limit: usize) -> Result<Vec<Due>> {
        self.with(|c| {
            let rows = c
                .prepare_cached(
                    "SELECT id, identity_id, item_type, item_id, remove_at FROM assignments
                     WHERE remove_at IS NOT NULL AND remove_at <= ? AND state IN ('pending','active')
                     ORDER BY remove_at, id LIMIT ?",
                )?
                .query_map(params![now, limit as i64], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?, r.get::<_, String>(3)?, r.get::<_, i64>(4)?))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows
                .into_iter()
                .filter_map(|(assignment, identity, ty, item_id, remove_at)| {
                    ItemType::parse(&ty).map(|ty| Due { assignment, identity, ty, item_id, remove_at })
                })
                .collect())
        })
    }

    /// Fires `due` removals in one transaction; ones that changed meanwhile (moved,
    /// cleared, already revoked) are skipped.
    pub fn fire(&self, due: &[Due], ctx: &Context<'_>, now: Timestamp) -> Result<Vec<Fired>> {
        let now_ms = to_ms(now);
        self.with(|c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let mut fired = Vec::new();
            for d in due {
                let still: Option<(String, Option<i64>)> = tx
                    .prepare_cached("SELECT state, remove_at FROM assignments WHERE id = ?")?
                    .query_row([d.assignment], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()?;
                let live = matches!(&still, Some((state, Some(at))) if (state == "active" || state == "pending") && *at == d.remove_at && *at <= now_ms);
                if !live {
                    continue;
                }
                let comment = format!("removeDate {} reached", rfc3339_ms(d.remove_at));
                let req = ValidRequest {
                    request_type: RequestType::Revoke,
                    requested_for: vec![d.identity.clone()],
                    items: vec![ValidItem {
                        ty: d.ty,
                        id: d.item_id.clone(),
                        comment: Some(comment.clone()),
                        start_at: None,
                        remove_at: None,
                        client_metadata: Default::default(),
                    }],
                    client_metadata: Default::default(),
                };
                let body = json!({ "requestedFor": [d.identity], "requestType": "REVOKE_ACCESS",
                    "requestedItems": [{ "type": d.ty.as_str(), "id": d.item_id, "comment": comment }] })
                .to_string();
                let key = format!("schedule:{}:{}", d.assignment, d.remove_at);
                let Replay::New(Accepted { request_id, job_ids, .. }) = accept_in(&tx, &req, &body, "schedule", Some(&key), ctx, now)? else {
                    continue;
                };
                let lag_ms = now_ms - d.remove_at;
                events::append(
                    &tx,
                    now_ms,
                    &Event {
                        kind: "removal_fired",
                        request_id: Some(&request_id),
                        identity: Some(&d.identity),
                        data: json!({ "assignment": d.assignment, "due": rfc3339_ms(d.remove_at), "lagMs": lag_ms, "jobs": job_ids.len() }),
                        ..Default::default()
                    },
                )?;
                fired.push(Fired { due: d.clone(), request_id, jobs: job_ids.len(), lag_ms });
            }
            tx.commit()?;
            Ok(fired)
        })
    }
}
