//! Evidence (DESIGN §17): a manual source's own account export, imported, verifies the
//! tasks whose effect it shows and reveals drift; missing access is repaired through the
//! normal queue (a manual source's repair is a new task for its owner).

pub mod check;
pub mod export;
pub mod reconcile;
pub mod restore;

use std::collections::{BTreeMap, BTreeSet};

use jiff::Timestamp;
use provd_connector_core::{Entitlement, Operation, template};
use sha2::{Digest, Sha256};

use crate::clock::to_ms;
use crate::config::{Config, Source};
use crate::intake::{Intake, SubmitError};
use crate::model::{RequestType, Requester, ValidRequest};
use crate::store::audit::AccessQuery;
use crate::store::evidence::{SeenRow, SnapshotMeta};
use crate::store::rules::TaskStatus;
use crate::store::tasks::TaskFilter;
use crate::store::{Store, StoreError};
use check::{Drift, Grant};
use export::Seen;

#[derive(Debug, thiserror::Error)]
pub enum EvidenceError {
    /// Bad usage or a bad file: nothing stored.
    #[error("{0}")]
    Invalid(String),
    /// A guard refused the file (without --force): nothing stored.
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What an import did.
#[derive(Debug, Clone)]
pub struct Imported {
    pub snapshot: i64,
    pub rows: usize,
    /// How the file was read (`CSV, UTF-8`, `xlsx, sheet …`).
    pub read_as: String,
    pub verified: Vec<i64>,
    pub drift: Vec<Drift>,
    /// Repair requests made for missing access.
    pub repairs: Vec<String>,
}

fn sha256(bytes: &[u8]) -> String {
    crate::model::hex::encode(&Sha256::digest(bytes))
}

/// The account key provd expects an identity to have on `source`: the one it recorded,
/// else the source's `[account] native_id` template, else the identity's id.
fn account_key(
    source: &Source,
    recorded: Option<&str>,
    identity: Option<&provd_connector_core::Identity>,
    id: &str,
) -> String {
    if let Some(r) = recorded {
        return r.to_string();
    }
    source
        .manual
        .as_ref()
        .and_then(|m| m.account.as_ref())
        .and_then(|a| a.native_id.as_deref())
        .zip(identity)
        .and_then(|(t, i)| template::fill(t, i, template::verbatim).ok())
        .unwrap_or_else(|| id.to_string())
}

/// What provd granted on `source`, per identity, with the account key it expects.
pub async fn grants(
    store: &Store,
    config: &Config,
    source: &Source,
) -> Result<Vec<Grant>, StoreError> {
    let holdings = store.holdings(AccessQuery::default()).await?;
    let ids: Vec<String> = holdings
        .iter()
        .map(|h| h.identity.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let dir = crate::intake::Directory::load(config, &**store, ids).await?;
    // Every holding on this source (DESIGN §21), whatever its state: one being removed
    // or whose operation failed may still be seen and is not unexpected meanwhile; only
    // a held one can be missing (drift is judged once a holding's operations ended).
    // Held here once its job here succeeded, whatever the grant's other sources did
    // (issue 33, finding 6: a role pending elsewhere hid missing access).
    Ok(crate::holdings::derive(&holdings)
        .into_iter()
        .filter(|h| h.source == source.id)
        .map(|h| {
            let identity = dir.lookup(&h.identity);
            let account = account_key(source, h.account.as_deref(), identity.as_ref(), &h.identity);
            // The key the identity's attributes give now (a mover renamed by sync).
            let now = account_key(source, None, identity.as_ref(), &h.identity);
            Grant {
                alias: (now != account).then_some(now),
                account: Some(account),
                active: h.is_held(),
                identity: h.identity,
                attribute: h.attribute,
                value: h.value,
            }
        })
        .collect())
}

/// Identities with a job on `source` still under way: a repair would race it, and its
/// accounts' state is not judged until it ends.
async fn busy_identities(store: &Store, source: &str) -> Result<BTreeSet<String>, StoreError> {
    Ok(store
        .jobs(crate::store::jobs::JobFilter {
            source: Some(source.to_string()),
            ..Default::default()
        })
        .await?
        .into_iter()
        .filter(|j| !j.state.is_final())
        .map(|j| j.identity_id)
        .collect())
}

/// What each identity's lifecycle state wants of its account's status on `source`
/// (an account action for the source: DISABLE wants it disabled, ENABLE enabled; no
/// action, DELETE, or a job still under way there: no judgement yet).
pub async fn status_wants(
    store: &Store,
    config: &Config,
    source: &str,
) -> Result<Vec<check::WantStatus>, StoreError> {
    let managed = store.managed_accounts(source.to_string()).await?;
    let busy = busy_identities(store, source).await?;
    let ids = managed.iter().map(|(i, _)| i.clone()).collect();
    let dir = crate::intake::Directory::load(config, &**store, ids).await?;
    Ok(managed
        .into_iter()
        .filter(|(who, _)| !busy.contains(who))
        .filter_map(|(who, account)| {
            let disabled = wants_status(config, &dir.lookup(&who)?, source)?;
            Some(check::WantStatus {
                identity: who,
                account,
                disabled,
            })
        })
        .collect())
}

/// Whether `identity`'s lifecycle state wants its account on `source` disabled (true)
/// or enabled (false); None: it says nothing of it, or deletes it. Where it says
/// nothing, a source that enables every account it makes (AD with `[account.password]`)
/// wants it enabled: a disabled one there is an account nobody can use (issue 34: a
/// repaired account came back disabled and drift read clean).
fn wants_status(
    config: &Config,
    identity: &provd_connector_core::Identity,
    source: &str,
) -> Option<bool> {
    use crate::config::lifecycle::AccountAction;
    let enables = || {
        config
            .sources
            .get(source)
            .is_some_and(|s| s.creates_disabled())
            .then_some(false)
    };
    let Some(state) = config.lifecycle.state_of(&identity.attributes) else {
        return enables();
    };
    match state.accounts.get(source) {
        Some(AccountAction::Disable) => Some(true),
        Some(AccountAction::Enable) => Some(false),
        Some(AccountAction::Delete) => None,
        None => enables(),
    }
}

/// Everything a snapshot of `source` disagrees with (DESIGN §21): access missing,
/// unexpected or held by an account provd does not manage, and, where the snapshot can
/// tell an account's status (`status`: key -> disabled), status the lifecycle does not
/// want. Import, reconcile and `provd drift` all judge through here.
pub async fn compare(
    store: &Store,
    config: &Config,
    source: &Source,
    seen: &BTreeMap<String, Seen>,
    status: Option<&BTreeMap<String, bool>>,
) -> Result<Vec<Drift>, StoreError> {
    let managed: BTreeMap<String, String> = store
        .managed_accounts(source.id.clone())
        .await?
        .into_iter()
        .map(|(who, key)| (key, who))
        .collect();
    let mut drift = check::drift(
        &source.id,
        &grants(store, config, source).await?,
        seen,
        &known_values(config, &source.id),
        &managed,
    );
    if let Some(status) = status {
        let wants = status_wants(store, config, &source.id).await?;
        drift.extend(check::status_drift(&source.id, &wants, status));
        drift.extend(check::gone_accounts(&source.id, &wants, seen));
    }
    Ok(drift)
}

/// The (attribute, value) pairs the catalog grants on `source`.
pub fn known_values(config: &Config, source: &str) -> BTreeSet<(String, String)> {
    config
        .catalog
        .entitlements_of(source)
        .map(|e| (e.attribute.clone(), e.value.clone()))
        .collect()
}

/// Plans a repair for each identity missing access (one request per identity, through
/// the one intake): the account first if the snapshot lacks it, then the values. An
/// identity with a job still under way on the source is left alone (the repair would
/// race it). Returns the repair requests made.
pub async fn repair(
    store: &Store,
    config: &Config,
    intake: &Intake,
    source: &str,
    snapshot: i64,
    missing: &[Drift],
    seen: &BTreeMap<String, Seen>,
) -> Result<Vec<String>, EvidenceError> {
    let busy = busy_identities(store, source).await?;
    let mut per_identity: BTreeMap<String, Vec<&Drift>> = BTreeMap::new();
    for d in missing.iter().filter(|d| d.kind == "missing") {
        if let Some(who) = &d.identity
            && !busy.contains(who)
        {
            per_identity.entry(who.clone()).or_default().push(d);
        }
    }
    let dir =
        crate::intake::Directory::load(config, &**store, per_identity.keys().cloned().collect())
            .await?;
    let mut made = Vec::new();
    for (who, ds) in per_identity {
        let Some(identity) = dir.lookup(&who) else {
            continue;
        };
        let mut ops = Vec::new();
        let create = !ds.iter().any(|d| seen.contains_key(&d.account));
        let leaver = wants_status(config, &identity, source) == Some(true);
        let values: Vec<&&Drift> = ds
            .iter()
            .filter(|d| d.attribute != check::ACCOUNT)
            .collect();
        // A leaver's gone account is reported, not made again only to be disabled.
        if leaver && values.is_empty() {
            continue;
        }
        if create {
            ops.push((source.to_string(), Operation::CreateAccount));
            // Made again as a grant makes it (issue 34, finding 3): enabled with a new
            // password where the source enables what it creates; a leaver's stays
            // disabled (below).
            if !leaver && config.rules.enable_after_create.contains(source) {
                ops.push((source.to_string(), Operation::EnableAccount));
            }
        }
        ops.extend(values.iter().map(|d| {
            (
                source.to_string(),
                Operation::AddEntitlement(Entitlement {
                    attribute: d.attribute.clone(),
                    value: d.value.clone(),
                }),
            )
        }));
        // A leaver's account made again is made as the state wants it: disabled.
        if create && leaver {
            ops.push((source.to_string(), Operation::DisableAccount));
        }
        let key = format!("repair:{source}:{snapshot}:{who}");
        let why = ("repair", format!("{source}:#{snapshot}"));
        made.push(submit_repair(intake, identity, ops, why, &key).await?);
    }
    Ok(made)
}

/// One repair request for `identity` (requester `evidence`, `clientMetadata` `why`),
/// idempotent under `key`; its request id.
pub(crate) async fn submit_repair(
    intake: &Intake,
    identity: provd_connector_core::Identity,
    ops: Vec<(String, Operation)>,
    why: (&str, String),
    key: &str,
) -> Result<String, EvidenceError> {
    let who = identity.id.clone();
    let request = ValidRequest {
        request_type: RequestType::Grant,
        requested_for: vec![who.clone()],
        items: Vec::new(),
        client_metadata: [(why.0.to_string(), why.1)].into(),
        account_ops: Vec::new(),
        repairs: ops,
    };
    let replay = intake
        .submit_valid(
            request,
            [(who, identity)].into(),
            &Requester::other("evidence"),
            Some(key),
        )
        .await
        .map_err(|e| match e {
            SubmitError::Store(e) => EvidenceError::Store(e),
            e => EvidenceError::Invalid(e.to_string()),
        })?;
    Ok(replay.accepted().request_id.clone())
}

/// One export to import, as `provd accounts import` was given it.
pub struct ExportFile<'a> {
    pub source: &'a str,
    pub bytes: &'a [u8],
    /// When the export was taken.
    pub as_of: Timestamp,
    /// Past the stale and max_drop guards.
    pub force: bool,
    pub actor: &'a str,
}

/// `provd accounts import --source S FILE [--as-of T] [--force]`.
pub async fn import(
    store: &Store,
    config: &Config,
    intake: &Intake,
    file: ExportFile<'_>,
    now: Timestamp,
) -> Result<Imported, EvidenceError> {
    let ExportFile {
        source: source_id,
        bytes,
        as_of,
        force,
        actor,
    } = file;
    let source = config
        .sources
        .get(source_id)
        .ok_or_else(|| EvidenceError::Invalid(format!("--source: no source `{source_id}`")))?;
    let export = source
        .manual
        .as_ref()
        .and_then(|m| m.export.as_ref())
        .ok_or_else(|| {
            EvidenceError::Invalid(format!(
                "--source: `{source_id}` has no [export] section describing its account export"
            ))
        })?;
    let (rows, read_as) = export::table(bytes).map_err(EvidenceError::Invalid)?;
    let seen = export::accounts(&rows, export).map_err(|p| EvidenceError::Invalid(p.join("\n")))?;
    let as_of_ms = to_ms(as_of);
    if let Some(last) = store.last_snapshot(source_id.to_string()).await?
        && !force
    {
        if as_of_ms < last.as_of {
            return Err(EvidenceError::Refused(format!(
                "this export is as of {}, older than the last one ({}); --force takes it anyway",
                crate::clock::rfc3339_ms(as_of_ms),
                crate::clock::rfc3339_ms(last.as_of)
            )));
        }
        let drop = crate::config::max_drop(&export.max_drop).unwrap_or(0.2);
        let floor = (last.rows as f64) * (1.0 - drop);
        if (seen.len() as f64) < floor {
            return Err(EvidenceError::Refused(format!(
                "this export has {} accounts, the last one {}: more than {} fewer; --force takes it anyway",
                seen.len(),
                last.rows,
                export.max_drop
            )));
        }
    }
    let tasks = store
        .tasks(TaskFilter {
            source: Some(source_id.to_string()),
            ..Default::default()
        })
        .await?;
    // The key each identity's account has now: a task names the key of its day.
    let keys: BTreeMap<String, String> = store
        .managed_accounts(source_id.to_string())
        .await?
        .into_iter()
        .collect();
    let verified: Vec<i64> = tasks
        .iter()
        .filter(|t| {
            t.verified_at.is_none() && matches!(t.status, TaskStatus::Open | TaskStatus::Done)
        })
        .filter(|t| t.created_at <= as_of_ms)
        .filter(|t| {
            let now = keys.get(&t.identity_id).map(String::as_str);
            check::shows(t, now, &seen, export.status.is_some())
        })
        .map(|t| t.id)
        .collect();
    let mut stored = Vec::with_capacity(seen.len());
    for s in seen.values() {
        stored.push(SeenRow {
            account: s.key.clone(),
            values: s.values_json().map_err(EvidenceError::Invalid)?,
            disabled: s.disabled,
        });
    }
    let meta = SnapshotMeta {
        id: 0,
        source: source_id.to_string(),
        kind: "import".into(),
        sha256: Some(sha256(bytes)),
        rows: seen.len() as i64,
        as_of: as_of_ms,
        actor: actor.to_string(),
        taken_at: to_ms(now),
        status_told: export.status.is_some(),
    };
    let snapshot = store
        .record_snapshot(meta, stored, verified.clone())
        .await?;
    let status: Option<BTreeMap<String, bool>> = export
        .status
        .as_ref()
        .map(|_| seen.iter().map(|(k, s)| (k.clone(), s.disabled)).collect());
    let drift = compare(store, config, source, &seen, status.as_ref()).await?;
    let repairs = repair(store, config, intake, source_id, snapshot, &drift, &seen).await?;
    tracing::info!(source = %source_id, snapshot, rows = seen.len(), verified = verified.len(),
        missing = drift.iter().filter(|d| d.kind == "missing").count(),
        unexpected = drift.iter().filter(|d| d.kind == "unexpected").count(), actor, "account export imported");
    Ok(Imported {
        snapshot,
        rows: seen.len(),
        read_as,
        verified,
        drift,
        repairs,
    })
}

/// What finds the unverified tasks now (DESIGN §17): per source with an `[export]` (and
/// among `base.source`, if set), its DONE tasks answered more than its `verify_within`
/// ago that no export has shown; `base`'s other conditions kept.
pub fn unverified_filters(config: &Config, base: &TaskFilter, now_ms: i64) -> Vec<TaskFilter> {
    config
        .sources
        .values()
        .filter(|s| base.source.as_ref().is_none_or(|only| *only == s.id))
        .filter_map(|s| {
            let e = s.manual.as_ref()?.export.as_ref()?;
            Some(TaskFilter {
                source: Some(s.id.clone()),
                unverified_before: Some(now_ms - e.verify_within.0.as_millis() as i64),
                ..base.clone()
            })
        })
        .collect()
}

/// The accounts a source's latest snapshot showed.
pub async fn latest(store: &Store, source: &str) -> Result<BTreeMap<String, Seen>, StoreError> {
    let rows = store.seen_accounts(source.to_string()).await?;
    let mut out = BTreeMap::new();
    for r in rows {
        let seen = Seen::from_row(r.account.clone(), &r.values, r.disabled)
            .map_err(|e| StoreError::Corrupt(format!("source_accounts {}: {e}", r.account)))?;
        out.insert(r.account, seen);
    }
    Ok(out)
}

/// Drift of every source with a snapshot (or just `only`).
pub async fn drift(
    store: &Store,
    config: &Config,
    only: Option<&str>,
) -> Result<Vec<Drift>, StoreError> {
    let mut out = Vec::new();
    for s in config
        .sources
        .values()
        .filter(|s| only.is_none_or(|o| o == s.id))
    {
        let Some(meta) = store.last_snapshot(s.id.clone()).await? else {
            continue;
        };
        let seen = latest(store, &s.id).await?;
        // Each account's status, where the snapshot told it (an export with a status
        // column, a read-back whose connector reads it). An import recorded before
        // snapshots said so is judged by the source's export description, as it was then.
        let exported = s
            .manual
            .as_ref()
            .and_then(|m| m.export.as_ref()?.status.as_ref())
            .is_some();
        let told = meta.status_told || (meta.kind == "import" && exported);
        let status: Option<BTreeMap<String, bool>> =
            told.then(|| seen.iter().map(|(k, r)| (k.clone(), r.disabled)).collect());
        out.extend(compare(store, config, s, &seen, status.as_ref()).await?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unverified_tasks_are_looked_for_per_exporting_source_with_its_own_window() {
        let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/provd.toml");
        let config = Config::load(&shipped).unwrap();
        let now = 30 * 86_400_000;
        let base = TaskFilter {
            owner: Some("payroll-team@example.com".into()),
            ..Default::default()
        };
        // Only payroll exports its accounts; its window is 7 days; the owner is kept.
        let filters = unverified_filters(&config, &base, now);
        assert_eq!(filters.len(), 1, "{filters:?}");
        assert_eq!(filters[0].source.as_deref(), Some("payroll"));
        assert_eq!(filters[0].unverified_before, Some(now - 7 * 86_400_000));
        assert_eq!(filters[0].owner, base.owner);
        // A source asked for that exports nothing: nothing to look for.
        let other = TaskFilter {
            source: Some("crm".into()),
            ..Default::default()
        };
        assert!(unverified_filters(&config, &other, now).is_empty());
    }
}
