//! `provd reconcile --source S [--fix]` (DESIGN §17): every account provd manages on a
//! direct source read back through its connector, stored as a snapshot, compared with
//! what provd granted. `--fix` repairs missing access through the normal queue (never a
//! direct write); a source with `reconcile_every` is read back on that schedule.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use jiff::Timestamp;
use provd_connector_core::{Connector, Entitlement, Identity};

use super::check::Drift;
use super::export::Seen;
use super::{EvidenceError, compare, repair};
use crate::clock::to_ms;
use crate::config::Config;
use crate::config::files::UnmanagedMembers;
use crate::intake::Intake;
use crate::store::evidence::{SeenRow, SnapshotMeta};
use crate::store::rules::events::Note;
use crate::store::{Stamp, Store};

/// Read-backs under way at once.
const CONCURRENCY: usize = 8;

/// What a reconcile found.
#[derive(Debug, Clone)]
pub struct Reconciled {
    pub snapshot: i64,
    /// Accounts read; of those, gone.
    pub accounts: usize,
    pub gone: usize,
    pub elapsed: Duration,
    pub drift: Vec<Drift>,
    pub repairs: Vec<String>,
    /// Unmanaged members `--fix` took out of their groups.
    pub removed: usize,
}

/// The drift kind of someone provd does not manage in a group it does.
const UNMANAGED: &str = "unmanaged_member";

/// Where a reconcile reads from and writes to.
pub struct Ctx<'a> {
    pub store: &'a Store,
    pub config: &'a Config,
    pub intake: &'a Intake,
    pub connector: Arc<dyn Connector>,
    /// Who runs it (`cli:USER`, `agent:NAME`).
    pub actor: &'a str,
}

/// Reads back every managed account of `source` and compares; with `fix`, plans repairs.
pub async fn reconcile(
    ctx: &Ctx<'_>,
    source: &str,
    fix: bool,
    now: Timestamp,
) -> Result<Reconciled, EvidenceError> {
    let Ctx {
        store,
        config,
        intake,
        connector,
        actor,
    } = ctx;
    let (store, config, intake, actor) = (*store, *config, *intake, *actor);
    let started = Instant::now();
    let managed = store.managed_accounts(source.to_string()).await?;
    let dir = crate::intake::Directory::load(
        config,
        &**store,
        managed.iter().map(|(i, _)| i.clone()).collect(),
    )
    .await?;
    let candidates: Vec<Entitlement> = config
        .catalog
        .entitlements_of(source)
        .map(|e| Entitlement {
            attribute: e.attribute.clone(),
            value: e.value.clone(),
        })
        .collect();
    let mut seen: BTreeMap<String, Seen> = BTreeMap::new();
    // The status the connector could tell (None: it cannot, and it is not judged).
    let mut status: BTreeMap<String, bool> = BTreeMap::new();
    let mut gone = 0;
    for chunk in managed.chunks(CONCURRENCY) {
        let reads = chunk.iter().map(|(who, native)| {
            let (connector, candidates) = (connector.clone(), &candidates);
            let identity = dir.lookup(who);
            async move {
                let r = match &identity {
                    Some(i) => connector.read_account(i, Some(native), candidates).await,
                    None => Ok(None),
                };
                (native.clone(), r)
            }
        });
        for (native, r) in join_all(reads).await {
            let r = r.map_err(|e| EvidenceError::Invalid(format!("reading {native} back: {e}")))?;
            match r {
                None => gone += 1,
                Some(back) => {
                    if let Some(d) = back.disabled {
                        status.insert(native.clone(), d);
                    }
                    seen.insert(
                        native.clone(),
                        Seen {
                            key: native,
                            values: back
                                .values
                                .into_iter()
                                .map(|e| (e.attribute, e.value))
                                .collect(),
                            disabled: back.disabled.unwrap_or(false),
                            nested: back
                                .nested
                                .into_iter()
                                .map(|(e, via)| ((e.attribute, e.value), via))
                                .collect(),
                        },
                    );
                }
            }
        }
    }
    // Members of managed groups that are none of the managed accounts (DESIGN §21): kept
    // in the snapshot like any account seen, so that `provd drift` shows them too.
    let known: Vec<(Identity, String)> = managed
        .iter()
        .filter_map(|(who, native)| dir.lookup(who).map(|i| (i, native.clone())))
        .collect();
    for e in &candidates {
        let members = connector
            .unmanaged_members(e, &known)
            .await
            .map_err(|err| EvidenceError::Invalid(format!("reading {} members: {err}", e.value)))?;
        for m in members.into_iter().flatten() {
            seen.entry(m.clone())
                .or_insert_with(|| Seen {
                    key: m,
                    values: BTreeSet::new(),
                    disabled: false,
                    nested: Default::default(),
                })
                .values
                .insert((e.attribute.clone(), e.value.clone()));
        }
    }
    let mut rows = Vec::with_capacity(seen.len());
    for s in seen.values() {
        rows.push(SeenRow {
            account: s.key.clone(),
            values: s.values_json().map_err(EvidenceError::Invalid)?,
            disabled: s.disabled,
        });
    }
    let meta = SnapshotMeta {
        id: 0,
        source: source.to_string(),
        kind: "readback".into(),
        sha256: None,
        rows: seen.len() as i64,
        as_of: to_ms(now),
        actor: actor.to_string(),
        taken_at: to_ms(now),
        status_told: !status.is_empty(),
    };
    let snapshot = store.record_snapshot(meta, rows, Vec::new()).await?;
    let Some(src) = config.sources.get(source) else {
        return Err(EvidenceError::Invalid(format!("no source `{source}`")));
    };
    let drift = compare(store, config, src, &seen, Some(&status)).await?;
    let (repairs, removed) = if fix {
        let removed = match src.unmanaged_members {
            UnmanagedMembers::Remove => remove_unmanaged(ctx, &drift, now).await?,
            UnmanagedMembers::Report => 0,
        };
        let made = repair(store, config, intake, source, snapshot, &drift, &seen).await?;
        (made, removed)
    } else {
        (Vec::new(), 0)
    };
    let elapsed = started.elapsed();
    tracing::info!(
        source,
        snapshot,
        accounts = managed.len(),
        gone,
        elapsed_ms = elapsed.as_millis() as u64,
        missing = drift.iter().filter(|d| d.kind == "missing").count(),
        unexpected = drift.iter().filter(|d| d.kind == "unexpected").count(),
        unmanaged = drift.iter().filter(|d| d.kind == UNMANAGED).count(),
        repairs = repairs.len(),
        removed,
        actor,
        "source reconciled"
    );
    Ok(Reconciled {
        snapshot,
        accounts: managed.len(),
        gone,
        elapsed,
        drift,
        repairs,
        removed,
    })
}

/// `--fix` on a source whose `[reconcile] unmanaged_members = "remove"`: takes each
/// unmanaged member out of its group, one event each; returns how many. A member the
/// source refuses to let go is logged and left (the rest still go).
async fn remove_unmanaged(
    ctx: &Ctx<'_>,
    drift: &[Drift],
    now: Timestamp,
) -> Result<usize, EvidenceError> {
    let mut removed = 0;
    for d in drift.iter().filter(|d| d.kind == UNMANAGED) {
        let e = Entitlement {
            attribute: d.attribute.clone(),
            value: d.value.clone(),
        };
        match ctx.connector.remove_member(&e, &d.account).await {
            Ok(_) => {
                let note = Note::UnmanagedMemberRemoved {
                    source: d.source.clone(),
                    member: d.account.clone(),
                    attribute: d.attribute.clone(),
                    value: d.value.clone(),
                };
                ctx.store
                    .note(note, Stamp::new(ctx.actor, to_ms(now)))
                    .await?;
                tracing::info!(source = %d.source, member = %d.account, value = %d.value,
                    actor = ctx.actor, "unmanaged member removed");
                removed += 1;
            }
            Err(err) => {
                tracing::warn!(source = %d.source, member = %d.account, value = %d.value,
                    error = %err, "unmanaged member not removed");
            }
        }
    }
    Ok(removed)
}

/// What the scheduled reconciles run with.
pub struct Scheduled {
    pub store: Store,
    pub live: Arc<crate::config::Live>,
    pub connectors: crate::connectors::Connectors,
    pub intake: Intake,
    pub clock: crate::clock::SharedClock,
    pub leading: crate::leading::Leading,
    /// `agent:NAME`.
    pub agent: String,
}

/// Reconciles each source that sets `reconcile_every`, on that schedule, while this agent
/// leads; it reports drift and repairs nothing (`provd reconcile --fix` does).
pub async fn run(sched: Scheduled, stop: impl std::future::Future<Output = ()>) {
    let Scheduled {
        store,
        live,
        connectors,
        intake,
        clock,
        mut leading,
        agent,
    } = sched;
    tokio::pin!(stop);
    let mut last: BTreeMap<String, Instant> = BTreeMap::new();
    loop {
        if !leading.now() {
            tokio::select! {
                _ = &mut stop => return,
                _ = leading.wait() => {}
            }
        }
        let config = live.get();
        for s in config.sources.values() {
            let (Some(every), Some(c)) = (s.reconcile_every, connectors.get(&s.id)) else {
                continue;
            };
            if last.get(&s.id).is_some_and(|at| at.elapsed() < every) {
                continue;
            }
            last.insert(s.id.clone(), Instant::now());
            let ctx = Ctx {
                store: &store,
                config: &config,
                intake: &intake,
                connector: c.clone(),
                actor: &agent,
            };
            let done = reconcile(&ctx, &s.id, false, clock.now()).await;
            if let Err(e) = done {
                tracing::error!(source = %s.id, error = %e, "reconcile failed");
            }
        }
        tokio::select! {
            _ = &mut stop => return,
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
    }
}
