//! An account deleted out of band and made again by a later operation (a connector's
//! `recreated` outcome) has none of the values provd gave the old one. Each of the
//! identity's other values on that source is planned again, through the one intake, so
//! that the access list and the target agree again without waiting for a reconcile
//! (DESIGN §21: "an operation that finds its account gone re-plans from the create";
//! issue 33, finding 5).

use std::collections::BTreeSet;
use std::time::Duration;

use provd_connector_core::{Entitlement, Operation};

use super::check::Grant;
use super::{EvidenceError, grants, submit_repair};
use crate::clock::to_ms;
use crate::config::Config;
use crate::intake::Intake;
use crate::store::audit::{AccessQuery, AuditQuery};
use crate::store::{Store, StoredEvent};

/// Events read per round.
const PAGE: usize = 500;
/// How far back a starting agent looks for recreations it may have missed while down
/// (each is planned once: its request is idempotent under the event's id).
const LOOK_BACK: Duration = Duration::from_secs(24 * 3600);

/// An account made again: (the connector call's event id, identity, source, and the
/// operation that found it gone).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Recreated {
    pub event: i64,
    pub identity: String,
    pub source: String,
    pub op: String,
}

/// The recreations among connector-call events.
pub fn recreations(events: &[StoredEvent]) -> Vec<Recreated> {
    events
        .iter()
        .filter(|e| e.kind == "connector_call" && e.data["outcome"] == "recreated")
        .filter_map(|e| {
            Some(Recreated {
                event: e.id,
                identity: e.identity.clone()?,
                source: e.source.clone()?,
                op: e.data["op"].as_str().unwrap_or_default().to_string(),
            })
        })
        .collect()
}

/// Whether a recreated account is enabled again first (issue 34, finding 3: a repaired
/// AD account came back disabled, with no password, and drift read clean). Only on a
/// source that enables what it creates (`[account.password]`), not when the account's
/// own enable or disable made it again (the enable sets the password itself; a leaver's
/// stays disabled), and not when provd's last word on it was a disable.
pub fn enables(recreated: &Recreated, enable_after_create: bool, left_disabled: bool) -> bool {
    enable_after_create
        && !left_disabled
        && !matches!(recreated.op.as_str(), "ENABLE_ACCOUNT" | "DISABLE_ACCOUNT")
}

/// What gives `identity` back its values on `source`: ENABLE_ACCOUNT first when
/// `enable` ([`enables`]), then every value granted there that was provisioned (a
/// pending one is on its way anyway).
pub fn restore_ops(
    grants: &[Grant],
    identity: &str,
    source: &str,
    enable: bool,
) -> Vec<(String, Operation)> {
    let values: BTreeSet<(&str, &str)> = grants
        .iter()
        .filter(|g| g.identity == identity && g.active)
        .map(|g| (g.attribute.as_str(), g.value.as_str()))
        .collect();
    let adds = values.into_iter().map(|(attribute, value)| {
        Operation::AddEntitlement(Entitlement {
            attribute: attribute.into(),
            value: value.into(),
        })
    });
    enable
        .then_some(Operation::EnableAccount)
        .into_iter()
        .chain(adds)
        .map(|op| (source.to_string(), op))
        .collect()
}

/// Plans the values of one recreated account again; the request's id, or None when
/// there was nothing to give back.
pub async fn restore(
    store: &Store,
    config: &Config,
    intake: &Intake,
    r: &Recreated,
) -> Result<Option<String>, EvidenceError> {
    let Some(source) = config.sources.get(&r.source) else {
        return Ok(None);
    };
    let held = store
        .holdings(AccessQuery {
            identity: Some(r.identity.clone()),
            ..Default::default()
        })
        .await?;
    let left_disabled = held
        .iter()
        .any(|h| h.account_disabled(&r.source) == Some(true));
    let enable = enables(
        r,
        config.rules.enable_after_create.contains(&r.source),
        left_disabled,
    );
    let ops = restore_ops(
        &grants(store, config, source).await?,
        &r.identity,
        &r.source,
        enable,
    );
    if ops.is_empty() {
        return Ok(None);
    }
    let dir = crate::intake::Directory::load(config, &**store, vec![r.identity.clone()]).await?;
    let Some(identity) = dir.lookup(&r.identity) else {
        return Ok(None);
    };
    let key = format!("restore:{}:{}", r.source, r.event);
    let why = ("restore", format!("{}:recreated#{}", r.source, r.event));
    submit_repair(intake, identity, ops, why, &key)
        .await
        .map(Some)
}

/// What the restore loop runs with.
pub struct Restorer {
    pub store: Store,
    pub live: std::sync::Arc<crate::config::Live>,
    pub intake: Intake,
    pub clock: crate::clock::SharedClock,
    pub leading: crate::leading::Leading,
}

/// Follows the connector calls while this agent leads and restores each recreated
/// account's values. A failed round is logged and tried again from the same place.
pub async fn run(r: Restorer, stop: impl std::future::Future<Output = ()>) {
    let Restorer {
        store,
        live,
        intake,
        clock,
        mut leading,
    } = r;
    tokio::pin!(stop);
    let since = to_ms(clock.now()) - LOOK_BACK.as_millis() as i64;
    let mut after = 0;
    let mut first = true;
    loop {
        if !leading.now() {
            tokio::select! {
                _ = &mut stop => return,
                _ = leading.wait() => {}
            }
        }
        let q = AuditQuery {
            kinds: vec!["connector_call".into()],
            since: first.then_some(since),
            after,
            limit: PAGE,
            ..Default::default()
        };
        let round = async {
            let events = store.audit(q).await?;
            let config = live.get();
            for r in recreations(&events) {
                if let Some(request) = restore(&store, &config, &intake, &r).await? {
                    tracing::info!(identity = %r.identity, source = %r.source, request_id = %request,
                        event = r.event, "recreated account: its values planned again");
                }
            }
            Ok::<_, EvidenceError>(events.last().map(|e| e.id))
        };
        let full = match round.await {
            Ok(last) => {
                first = false;
                if let Some(id) = last {
                    after = id;
                }
                last.is_some()
            }
            Err(e) => {
                // A store that is down is logged once for the whole agent, not per round.
                let down =
                    matches!(&e, EvidenceError::Store(s) if crate::logging::store_unavailable(s));
                if !down {
                    tracing::error!(error = %e, "restoring recreated accounts failed");
                }
                false
            }
        };
        if full {
            continue;
        }
        tokio::select! {
            _ = &mut stop => return,
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(id: i64, outcome: &str) -> StoredEvent {
        StoredEvent {
            id,
            at: 0,
            kind: "connector_call".into(),
            request_id: None,
            job_id: Some(1),
            source: Some("corp".into()),
            identity: Some("ada".into()),
            data: serde_json::json!({ "outcome": outcome, "op": "ADD_ENTITLEMENT" }),
            writer: None,
            actor: None,
        }
    }

    #[test]
    fn only_a_recreated_outcome_restores() {
        let found = recreations(&[call(1, "applied"), call(2, "recreated")]);
        assert_eq!(
            found,
            [Recreated {
                event: 2,
                identity: "ada".into(),
                source: "corp".into(),
                op: "ADD_ENTITLEMENT".into(),
            }]
        );
    }

    #[test]
    fn the_identitys_provisioned_values_are_given_back_once_each() {
        let g = |who: &str, v: &str, active| Grant {
            identity: who.into(),
            account: Some(format!("uid={who}")),
            alias: None,
            attribute: "groups".into(),
            value: v.into(),
            active,
        };
        let grants = [
            g("ada", "vpn", true),
            g("ada", "vpn", true),
            g("ada", "git", true),
            g("ada", "wiki", false),
            g("bob", "vpn", true),
        ];
        let values = |enable| -> Vec<String> {
            restore_ops(&grants, "ada", "corp", enable)
                .iter()
                .map(|(s, o)| match o {
                    Operation::AddEntitlement(e) => format!("{s}:{}", e.value),
                    other => format!("{s}:{other:?}"),
                })
                .collect()
        };
        assert_eq!(values(false), ["corp:git", "corp:vpn"]);
        assert_eq!(values(true), ["corp:EnableAccount", "corp:git", "corp:vpn"]);
    }

    #[test]
    fn a_recreated_account_is_enabled_unless_it_is_to_stay_disabled() {
        let by = |op: &str| Recreated {
            event: 1,
            identity: "ada".into(),
            source: "ad".into(),
            op: op.into(),
        };
        assert!(enables(&by("ADD_ENTITLEMENT"), true, false));
        assert!(enables(&by("REMOVE_ENTITLEMENT"), true, false));
        // A source that leaves new accounts disabled; a leaver's account.
        assert!(!enables(&by("ADD_ENTITLEMENT"), false, false));
        assert!(!enables(&by("ADD_ENTITLEMENT"), true, true));
        // The enable sets its password itself; a disable keeps it disabled.
        assert!(!enables(&by("ENABLE_ACCOUNT"), true, false));
        assert!(!enables(&by("DISABLE_ACCOUNT"), true, false));
    }
}
