//! Applying identity changes: read what each identity was and holds, diff, hold a mass
//! change unless confirmed, hand the requests to the intake. Callers store the identities
//! afterwards: should they fail between the two, the change is found and made again the
//! next time (every operation is idempotent, a duplicate grant is reported as existing).

use std::collections::BTreeMap;

use provd_connector_core::Identity;

use super::{Change, Sync, change, state_name, summary};
use crate::config::{Config, ItemType};
use crate::intake::{Intake, SubmitError};
use crate::model::Requester;
use crate::store::StoreError;
use crate::store::audit::AccessQuery;
use crate::store::roles::{Accounts, Audit};

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

/// Plans and submits the changes `identities` bring (see [`plan`] for `csv_before`);
/// `confirm` lets a mass change through.
pub async fn apply(
    config: &Config,
    store: &(impl Accounts + Audit + ?Sized),
    intake: &Intake,
    identities: &[Identity],
    csv_before: &BTreeMap<String, Identity>,
    confirm: bool,
) -> Result<Applied, ApplyError> {
    let changes = plan(config, store, identities, csv_before).await?;
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
            revoked = c.revoke.len(), granted = c.grant.len(), account_operations = c.accounts.len(), actor = "lifecycle",
            "lifecycle change planned");
    }
    Ok(Applied { changes, requests })
}
