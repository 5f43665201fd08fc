//! Accepting a request on PostgreSQL: snapshot, decision and writes in one transaction,
//! as on SQLite. SQLite has one writer at a time; here several agents accept at once, so
//! the transaction first takes advisory locks on the idempotency key and on each identity
//! (in one order, so two transactions never wait on each other crosswise): two requests
//! for the same identity are decided one after the other, each seeing the other's
//! assignments, and jobs of one lane get ids in acceptance order. A group of requests
//! (group commit, DESIGN §18) takes all its locks at once, then accepts each request in a
//! savepoint of its own (a group of one needs none: refused, it is rolled back whole).
//! The rows are written by `accept_rows.rs`.

use super::accept_rows::{Write, write};
use super::{Tx, Typed};
use crate::clock::to_ms;
use crate::model::Snapshot;
use crate::store::accept::{Accepted, Replay, Submission, live_assignment};
use crate::store::{Result, StoreError};
use tokio_postgres::types::Type;

/// The advisory locks a request takes: its idempotency key and each identity it names.
pub(super) fn lock_names(key: Option<&str>, identities: &[String]) -> Vec<String> {
    key.map(|k| format!("key:{k}"))
        .into_iter()
        .chain(identities.iter().map(|id| format!("identity:{id}")))
        .collect()
}

/// Takes the advisory locks `names` for the rest of the transaction, in one round trip and
/// in the order of their hashes. Every transaction that takes several takes them in that
/// one order (a group of requests, a batch of removals), so two never wait on each other
/// crosswise.
pub(super) async fn lock_all(tx: &Tx<'_>, names: &[String]) -> Result<()> {
    if names.is_empty() {
        return Ok(());
    }
    super::exec(tx,
        "SELECT pg_advisory_xact_lock(h) FROM
           (SELECT DISTINCT hashtextextended(n, 0) AS h FROM unnest($1::text[]) AS n ORDER BY h) AS l",
        &[&names],
    )
    .await?;
    Ok(())
}

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

/// What the identities hold; `include`: an assignment to count although no longer live (a
/// removal fired a moment ago, whose revoke is being planned now).
pub(super) async fn snapshot(
    tx: &Tx<'_>,
    identities: &[String],
    include: Option<i64>,
) -> Result<Snapshot> {
    let mut snap = Snapshot::default();
    // Both reads in one round trip, each planned for its identities: they run on every
    // accept while the tables grow, and a plan cached when they were small scans them.
    let (live, held): (&[Typed], &[Typed]) = (
        &[(&identities, Type::TEXT_ARRAY), (&include, Type::INT8)],
        &[(&identities, Type::TEXT_ARRAY)],
    );
    let (rows, accounts) = futures_util::try_join!(
        super::query_planned(tx,
            "SELECT a.id, a.identity_id, a.item_type, a.item_id, a.state, a.request_id, a.entitlements,
                CASE WHEN a.state IN ('failed','revoking') THEN
                  (SELECT json_object_agg(j.source, j.state)::TEXT FROM request_items ri
                     JOIN item_jobs ij ON ij.item_id = ri.id JOIN jobs j ON j.id = ij.job_id
                     WHERE ri.assignment_id = a.id AND ri.request_id = a.request_id) END
             FROM assignments a
             WHERE a.identity_id = ANY($1) AND (a.state IN ('pending','active','failed') OR a.id = $2)
             ORDER BY a.id",
            live,
        ),
        super::query_planned(
            tx,
            "SELECT identity_id, source FROM accounts WHERE identity_id = ANY($1)",
            held,
        ),
    )?;
    for r in &rows {
        snap.assignments.push(live_assignment((
            r.get(0),
            r.get(1),
            r.get(2),
            r.get(3),
            r.get(4),
            r.get(5),
            r.get(6),
            r.get(7),
        ))?);
    }
    for r in &accounts {
        snap.accounts.insert((r.get(0), r.get(1)));
    }
    Ok(snap)
}

pub(super) async fn lookup_key(tx: &Tx<'_>, key: &str) -> Result<Option<Accepted>> {
    let Some(row) = super::query_opt(
        tx,
        "SELECT id, response, body FROM requests WHERE idempotency_key = $1",
        &[&key],
    )
    .await?
    else {
        return Ok(None);
    };
    let request_id: String = row.get(0);
    let job_ids = super::query(
        tx,
        "SELECT id FROM jobs WHERE request_id = $1 ORDER BY id",
        &[&request_id],
    )
    .await?
    .iter()
    .map(|r| r.get(0))
    .collect();
    Ok(Some(Accepted {
        request_id,
        response: serde_json::from_str(row.get(1)).map_err(corrupt)?,
        job_ids,
        body: Some(row.get(2)),
        removals: Vec::new(),
    }))
}

/// Plans and writes a request inside the caller's transaction, which holds the request's
/// locks ([`lock_names`]).
pub(super) async fn accept_in(tx: &Tx<'_>, s: &Submission<'_>) -> Result<Replay> {
    if let Some(key) = s.idempotency_key
        && let Some(found) = lookup_key(tx, key).await?
    {
        return Ok(Replay::Replayed(found));
    }
    let snap = snapshot(tx, &s.request.requested_for, s.include).await?;
    let request_id = crate::store::new_request_id(s.now);
    let (plan, response) = (s.ctx.decide)(s.request, &snap, &request_id);
    let w = Write {
        req: s.request,
        body: s.body,
        from: s.requester,
        idempotency_key: s.idempotency_key,
        ctx: s.ctx,
        plan: &plan,
        request_id: &request_id,
        response: &response,
    };
    let written = write(tx, &w, to_ms(s.now)).await?;
    Ok(Accepted::stored(request_id, response, written))
}
