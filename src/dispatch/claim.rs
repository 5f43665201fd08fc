//! Claiming: the jobs due under the lane rule, past the breakers (a half-open source gets
//! one probe job), and the correlation lookups of the accounts a batch is about to create.

use std::collections::BTreeMap;

use provd_connector_core::Operation;

use super::breaker::BreakerState;
use super::policy::add;
use super::{Dispatcher, Lookup};
use crate::clock::to_ms;
use crate::store::{Claim, Job, StoreError};

impl Dispatcher {
    pub(super) async fn claim(&self, free: usize) -> Result<Vec<Job>, StoreError> {
        let me = &self.inner;
        let now = me.clock.now();
        let (mut skip, half_open) = {
            let breakers = me.breakers.lock().map_err(|_| StoreError::Poisoned)?;
            let mut skip = Vec::new();
            let mut half = Vec::new();
            for (source, b) in breakers.iter() {
                match b.state(now) {
                    BreakerState::Closed => {}
                    BreakerState::Open { .. } => skip.push(source.clone()),
                    BreakerState::HalfOpen => {
                        skip.push(source.clone());
                        half.push(source.clone());
                    }
                }
            }
            (skip, half)
        };
        let lease_until = to_ms(add(now, self.config().agent.lease));
        let now_ms = to_ms(now);
        let mut claimed = Vec::new();
        for source in half_open {
            let newly = me
                .probing
                .lock()
                .map_err(|_| StoreError::Poisoned)?
                .insert(source.clone());
            if !newly || claimed.len() >= free {
                continue;
            }
            let got = me
                .queue
                .claim(Claim {
                    owner: me.owner.clone(),
                    limit: 1,
                    now: now_ms,
                    lease_until,
                    skip_sources: Vec::new(),
                    only_source: Some(source.clone()),
                })
                .await?;
            if got.is_empty() {
                me.probing
                    .lock()
                    .map_err(|_| StoreError::Poisoned)?
                    .remove(&source);
            } else {
                tracing::info!(source = %source, "probing source after breaker cool-down");
            }
            claimed.extend(got);
        }
        skip.sort();
        claimed.extend(
            me.queue
                .claim(Claim {
                    owner: me.owner.clone(),
                    limit: free.saturating_sub(claimed.len()),
                    now: now_ms,
                    lease_until,
                    skip_sources: skip,
                    only_source: None,
                })
                .await?,
        );
        if let Ok(mut running) = me.running.lock() {
            for j in &claimed {
                running.insert(j.id, j.clone());
            }
        }
        let actor = crate::model::agent_actor(&me.owner);
        for j in &claimed {
            tracing::info!(request_id = %j.request_id, job_id = j.id, source = %j.source, identity = %j.identity_id,
                state = "running", attempt = j.attempt, actor = %actor, "job claimed");
        }
        Ok(claimed)
    }

    /// Starts one correlation lookup per source for the claimed jobs that begin by
    /// creating an account (see `Connector::prefetch`); each waits for its source's.
    pub(super) fn prefetch(&self, jobs: Vec<Job>) -> Vec<(Job, Option<Lookup>)> {
        let creates = |j: &Job| {
            j.account.is_none() && matches!(j.ops.get(j.ops_done), Some(Operation::CreateAccount))
        };
        let mut groups: BTreeMap<&str, Vec<provd_connector_core::Identity>> = BTreeMap::new();
        for j in jobs.iter().filter(|j| creates(j)) {
            groups
                .entry(&j.source)
                .or_default()
                .push(j.identity.clone());
        }
        let connectors = self
            .inner
            .connectors
            .read()
            .map(|c| c.clone())
            .unwrap_or_default();
        let mut lookups: BTreeMap<String, Lookup> = BTreeMap::new();
        for (source, identities) in groups {
            let Some(connector) = connectors.get(source).cloned() else {
                continue;
            };
            if identities.len() < 2 {
                continue;
            }
            let (done, lookup) = tokio::sync::watch::channel(false);
            tokio::spawn(async move {
                connector.prefetch(identities).await;
                let _ = done.send(true);
            });
            lookups.insert(source.to_string(), lookup);
        }
        jobs.into_iter()
            .map(|j| {
                let lookup = creates(&j)
                    .then(|| lookups.get(&j.source).cloned())
                    .flatten();
                (j, lookup)
            })
            .collect()
    }
}
