//! Applying identity changes, whatever brought them (identities.csv at start or SIGHUP,
//! `identities import`, `PUT /identities/v1`): read what each identity was as the store
//! last applied it and what it holds, diff, hold a mass change unless confirmed, hand the
//! requests to the intake, then store the identities as applied. Should the agent stop
//! between the two, the change is found and made again the next time (every operation is
//! idempotent, a duplicate grant is reported as existing).
//!
//! The store is the base of every diff (issue 33): identities.csv's rows are stored as
//! applied (`from_file`) the first time the agent or the CLI sees them, so that an edit of
//! the file is diffed against what was applied, never against the edited file itself.

use std::collections::{BTreeMap, BTreeSet};

use provd_connector_core::Identity;

use super::{Change, Sync, change, state_name, summary};
use crate::config::{Config, ItemType};
use crate::intake::{Intake, SubmitError};
use crate::model::Requester;
use crate::store::audit::{AccessQuery, AuditQuery};
use crate::store::roles::{Accounts, Audit};
use crate::store::rules::events::Note;
use crate::store::{Stamp, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// More accounts would be disabled or deleted within the guard's window than
    /// `max_changes`: nothing was done.
    #[error(
        "held: this change would disable or delete {accounts} accounts ({recent} more were within the last {window}), more than lifecycle max_changes ({max}): {summary}; nothing was changed. Confirm it to go ahead."
    )]
    Held {
        accounts: usize,
        recent: usize,
        window: String,
        max: usize,
        summary: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("identity `{identity}`: {error}")]
    Submit {
        identity: String,
        error: SubmitError,
    },
}

/// What was done.
#[derive(Debug, Default)]
pub struct Applied {
    /// Identities whose state changed.
    pub changes: Vec<Change>,
    /// Requests stored for them.
    pub requests: usize,
}

/// What each of `identities` was before (the store's identity, else the one in
/// `csv_before`, i.e. `identities.csv` as it was) and what it holds, diffed into changes.
pub async fn plan(
    config: &Config,
    store: &(impl Accounts + Audit + ?Sized),
    identities: &[Identity],
    csv_before: &BTreeMap<String, Identity>,
) -> Result<Vec<Change>, StoreError> {
    Ok(diff(config, store, identities, csv_before).await?.0)
}

/// [`plan`]'s changes, with each identity as it was before (None: new).
async fn diff(
    config: &Config,
    store: &(impl Accounts + Audit + ?Sized),
    identities: &[Identity],
    csv_before: &BTreeMap<String, Identity>,
) -> Result<(Vec<Change>, BTreeMap<String, Identity>), StoreError> {
    let sync: Sync = config
        .sources
        .values()
        .filter(|s| !s.sync.is_empty())
        .map(|s| (s.id.clone(), s.sync.clone()))
        .collect();
    let ids: Vec<String> = identities.iter().map(|i| i.id.clone()).collect();
    let mut before = store.identities(ids).await?;
    for i in identities {
        if let (false, Some(row)) = (before.contains_key(&i.id), csv_before.get(&i.id)) {
            before.insert(i.id.clone(), row.clone());
        }
    }
    if config.lifecycle.states.is_empty() && sync.is_empty() {
        return Ok((Vec::new(), before));
    }
    let moving: Vec<String> = identities
        .iter()
        .filter(|new| {
            state_name(&config.lifecycle, before.get(&new.id))
                != state_name(&config.lifecycle, Some(new))
        })
        .map(|i| i.id.clone())
        .collect();
    let accounts = if moving.is_empty() {
        BTreeMap::new()
    } else {
        store.account_sources(moving).await?
    };
    let none = BTreeSet::new();
    let mut out = Vec::new();
    for new in identities {
        let old = before.get(&new.id);
        let has = accounts.get(&new.id).unwrap_or(&none);
        // Cheap first: most imports change no state, and need no look at holdings.
        if !accounts.contains_key(&new.id) {
            let c = change(&config.lifecycle, &sync, old, new, &[], has);
            if !c.is_empty() {
                out.push(c);
            }
            continue;
        }
        let held: Vec<(ItemType, String)> = store
            .holdings(AccessQuery {
                identity: Some(new.id.clone()),
                ..Default::default()
            })
            .await?
            .into_iter()
            .filter(|h| h.is_live())
            .filter_map(|h| ItemType::parse(&h.item_type).map(|ty| (ty, h.item_id)))
            .collect();
        let c = change(&config.lifecycle, &sync, old, new, &held, has);
        if !c.is_empty() {
            out.push(c);
        }
    }
    Ok((out, before))
}

/// `10m`, `90s`: the window as an operator would write it.
fn window_text(d: std::time::Duration) -> String {
    match d.as_secs() {
        s if s % 60 == 0 && s > 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// Account disables and deletes that identity changes brought within the guard's window
/// before `now` (each `identity_changed` event says how many).
async fn recent_removals(
    config: &Config,
    store: &(impl Accounts + Audit + ?Sized),
    now: i64,
) -> Result<usize, StoreError> {
    let window = i64::try_from(config.lifecycle.guard_window.as_millis()).unwrap_or(i64::MAX);
    let events = store
        .audit(AuditQuery {
            kinds: vec!["identity_changed".into()],
            since: Some(now.saturating_sub(window)),
            limit: 100_000,
            ..Default::default()
        })
        .await?;
    Ok(events
        .iter()
        .filter_map(|e| e.data["accountRemovals"].as_u64())
        .map(|n| n as usize)
        .sum())
}

/// Plans and submits the changes `identities` bring, then stores them as applied
/// (`from_file`: as identities.csv's rows); `confirm` lets a mass change through.
pub async fn apply(
    config: &Config,
    store: &(impl Accounts + Audit + ?Sized),
    intake: &Intake,
    identities: Vec<Identity>,
    from_file: bool,
    by: Stamp,
    confirm: bool,
) -> Result<Applied, ApplyError> {
    if identities.is_empty() {
        return Ok(Applied::default());
    }
    let (changes, before) = diff(config, store, &identities, &config.identities).await?;
    let accounts: usize = changes.iter().map(Change::removals).sum();
    let max = config.lifecycle.max_changes;
    if accounts > 0 && !confirm {
        let recent = recent_removals(config, store, by.now).await?;
        if accounts + recent > max {
            return Err(ApplyError::Held {
                accounts,
                recent,
                window: window_text(config.lifecycle.guard_window),
                max,
                summary: summary(&changes),
            });
        }
    }
    // Each identity that changed at all is an event naming it, its changed fields and
    // the actor; the requests its change causes carry the event's id (issue 33, 7).
    let mut causes: BTreeMap<&str, i64> = BTreeMap::new();
    for new in &identities {
        let old = before.get(&new.id);
        if old == Some(new) {
            continue;
        }
        let c = changes.iter().find(|c| c.identity == new.id);
        let mut data = super::changed_fields(old, new, &config.lifecycle.audit_values);
        data["from"] = serde_json::json!(c.and_then(|c| c.from.clone()));
        data["to"] = serde_json::json!(c.and_then(|c| c.to.clone()));
        data["accountRemovals"] = serde_json::json!(c.map_or(0, Change::removals));
        let id = store
            .note(
                Note::IdentityChanged {
                    identity: new.id.clone(),
                    data,
                },
                by.clone(),
            )
            .await?;
        causes.insert(new.id.as_str(), id);
    }
    let by_id: BTreeMap<&str, &Identity> = identities.iter().map(|i| (i.id.as_str(), i)).collect();
    let from = Requester::lifecycle_as(&by.actor);
    let mut requests = 0;
    for c in &changes {
        let Some(identity) = by_id.get(c.identity.as_str()) else {
            continue;
        };
        for request in c.requests(causes.get(c.identity.as_str()).copied()) {
            let ids = BTreeMap::from([(c.identity.clone(), (*identity).clone())]);
            intake
                .submit_valid(request, ids, &from, None)
                .await
                .map_err(|error| ApplyError::Submit {
                    identity: c.identity.clone(),
                    error,
                })?;
            requests += 1;
        }
        tracing::info!(identity = %c.identity, from = c.from.as_deref().unwrap_or(""), to = c.to.as_deref().unwrap_or(""),
            revoked = c.revoke.len(), granted = c.grant.len(), account_operations = c.accounts.len(), actor = %by.actor,
            "lifecycle change planned");
    }
    store.import_identities(identities, from_file, by).await?;
    Ok(Applied { changes, requests })
}

/// identities.csv against the store: rows the store has never seen are stored as they
/// are (the base later edits are diffed against: nothing is planned for them, as for any
/// row present when the agent first started), and rows that differ from the version last
/// applied from the file, or (`before`, at a reload) from the file as it was, are applied.
pub async fn file(
    config: &Config,
    before: Option<&Config>,
    store: &(impl Accounts + Audit + ?Sized),
    intake: &Intake,
    by: Stamp,
) -> Result<Applied, ApplyError> {
    let (seen, applied) = seed(config, store, by.clone()).await?;
    let edited: Vec<Identity> = config
        .identities
        .values()
        .filter(|row| seen.contains(&row.id))
        .filter(|row| {
            applied.get(&row.id).is_some_and(|a| a != *row)
                || before.is_some_and(|b| b.identities.get(&row.id) != Some(*row))
        })
        .cloned()
        .collect();
    apply(config, store, intake, edited, true, by, false).await
}

/// Stores identities.csv's rows the store has never seen; returns the ids it had before
/// and its rows last applied from the file.
pub async fn seed(
    config: &Config,
    store: &(impl Accounts + Audit + ?Sized),
    by: Stamp,
) -> Result<(BTreeSet<String>, BTreeMap<String, Identity>), StoreError> {
    let seen: BTreeSet<String> = store.identity_ids().await?.into_iter().collect();
    let new: Vec<Identity> = config
        .identities
        .values()
        .filter(|row| !seen.contains(&row.id))
        .cloned()
        .collect();
    if !new.is_empty() {
        tracing::info!(identities = new.len(), actor = %by.actor, "identities.csv: rows stored as the base of later changes");
        store.import_identities(new, true, by).await?;
    }
    Ok((seen, store.file_identities().await?))
}
