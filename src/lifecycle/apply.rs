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
use crate::store::audit::AccessQuery;
use crate::store::roles::{Accounts, Audit};
use crate::store::{Stamp, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// More accounts would be disabled or deleted than `max_changes`: nothing was done.
    #[error(
        "held: this change would disable or delete {accounts} accounts, more than lifecycle max_changes ({max}): {summary}; nothing was changed. Confirm it to go ahead."
    )]
    Held {
        accounts: usize,
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

/// What each of `identities` was before (the store's imported identity, else the one in
/// `csv_before`, i.e. `identities.csv` before this change) and what it holds, diffed into
/// changes.
pub async fn plan(
    config: &Config,
    store: &(impl Accounts + Audit + ?Sized),
    identities: &[Identity],
    csv_before: &BTreeMap<String, Identity>,
) -> Result<Vec<Change>, StoreError> {
    let sync: Sync = config
        .sources
        .values()
        .filter(|s| !s.sync.is_empty())
        .map(|s| (s.id.clone(), s.sync.clone()))
        .collect();
    if config.lifecycle.states.is_empty() && sync.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<String> = identities.iter().map(|i| i.id.clone()).collect();
    let stored = store.identities(ids).await?;
    let mut out = Vec::new();
    for new in identities {
        let old = stored.get(&new.id).or_else(|| csv_before.get(&new.id));
        // Cheap first: most imports change no state, and need no look at holdings.
        if state_name(&config.lifecycle, old) == state_name(&config.lifecycle, Some(new)) {
            let c = change(&config.lifecycle, &sync, old, new, &[]);
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
            .filter(|h| h.state != crate::store::rules::AssignmentState::Revoking)
            .filter_map(|h| ItemType::parse(&h.item_type).map(|ty| (ty, h.item_id)))
            .collect();
        let c = change(&config.lifecycle, &sync, old, new, &held);
        if !c.is_empty() {
            out.push(c);
        }
    }
    Ok(out)
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
    let changes = plan(config, store, &identities, &config.identities).await?;
    let accounts: usize = changes.iter().map(Change::removals).sum();
    let max = config.lifecycle.max_changes;
    if accounts > max && !confirm {
        return Err(ApplyError::Held {
            accounts,
            max,
            summary: summary(&changes),
        });
    }
    let by_id: BTreeMap<&str, &Identity> = identities.iter().map(|i| (i.id.as_str(), i)).collect();
    let from = Requester::lifecycle();
    let mut requests = 0;
    for c in &changes {
        let Some(identity) = by_id.get(c.identity.as_str()) else {
            continue;
        };
        for request in c.requests() {
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
