//! The removeDate scheduler. It sleeps until the earliest removeDate in the store (an
//! indexed MIN, never a scan), is woken early when a request sets an earlier one, and
//! fires every due removal exactly once, oldest first — also those that came due while
//! the agent was down. Firing writes a REVOKE through the normal planning path; dispatch
//! then removes the access (direct sources) or opens removal tasks (manual sources).
//!
//! startDate needs no scheduler of its own: a grant's job is written with its first
//! `next_attempt_at` at the startDate, and dispatch sleeps until the earliest one.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use provd_connector_core::Identity;
use tokio::sync::Notify;

use crate::clock::{SharedClock, rfc3339_ms, to_ms};
use crate::intake::Directory;
use crate::model::{RequestType, ValidItem, ValidRequest};
use crate::store::StoreError;
use crate::store::accept::Context;
use crate::store::roles::{Accounts, Schedule};
use crate::store::schedule::{Fired, Planned, Removal};

/// How long the scheduler waits at most before looking at the store again: only writes
/// from another process (a CLI `provd submit`) can change the next date without waking it.
const RECHECK: Duration = Duration::from_secs(1);
/// Removals recorded per transaction (phase 1: cheap).
const BATCH: usize = 500;
/// Revokes planned per transaction (phase 2: a request each): a group commit, like the
/// intake's. Small enough (under a tenth of a second) that newly due removals are
/// recorded between two planning batches; large enough that a burst of 100,000 is planned
/// within seconds (`cargo bench --bench schedule`).
const PLAN_BATCH: usize = 1000;

/// Fire lag (seconds between a removeDate and its firing), as a Prometheus histogram.
pub struct LagHistogram {
    counts: [AtomicU64; BUCKETS.len()],
    total: AtomicU64,
    sum_ms: AtomicU64,
}

const BUCKETS: [f64; 10] = [0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 60.0, 3600.0];

pub static FIRE_LAG: LagHistogram = LagHistogram {
    counts: [const { AtomicU64::new(0) }; BUCKETS.len()],
    total: AtomicU64::new(0),
    sum_ms: AtomicU64::new(0),
};

impl LagHistogram {
    pub fn observe(&self, lag_ms: i64) {
        let lag_ms = lag_ms.max(0) as u64;
        for (i, b) in BUCKETS.iter().enumerate() {
            if lag_ms as f64 / 1000.0 <= *b {
                self.counts[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.total.fetch_add(1, Ordering::Relaxed);
        self.sum_ms.fetch_add(lag_ms, Ordering::Relaxed);
    }

    /// Prometheus text exposition.
    pub fn render(&self, out: &mut String) {
        out.push_str("# HELP provd_schedule_fire_lag_seconds Time from a removeDate to its removal being fired.\n");
        out.push_str("# TYPE provd_schedule_fire_lag_seconds histogram\n");
        for (i, b) in BUCKETS.iter().enumerate() {
            out.push_str(&format!(
                "provd_schedule_fire_lag_seconds_bucket{{le=\"{b}\"}} {}\n",
                self.counts[i].load(Ordering::Relaxed)
            ));
        }
        let total = self.total.load(Ordering::Relaxed);
        out.push_str(&format!(
            "provd_schedule_fire_lag_seconds_bucket{{le=\"+Inf\"}} {total}\n"
        ));
        out.push_str(&format!(
            "provd_schedule_fire_lag_seconds_sum {}\n",
            self.sum_ms.load(Ordering::Relaxed) as f64 / 1000.0
        ));
        out.push_str(&format!("provd_schedule_fire_lag_seconds_count {total}\n"));
    }
}

pub struct Scheduler {
    /// Removal dates: what comes due, and the revokes it becomes.
    pub removals: Arc<dyn Schedule>,
    /// The identities a revoke is planned for.
    pub accounts: Arc<dyn Accounts>,
    /// The configuration in force (replaced on reload).
    pub live: Arc<crate::config::Live>,
    pub clock: SharedClock,
    /// Woken when a request sets or moves a removeDate.
    pub wake: Arc<Notify>,
    /// Woken after firing, so the revoke jobs start at once.
    pub dispatch: Arc<Notify>,
    /// Beaten on every pass (for the systemd watchdog).
    pub liveness: Option<Arc<crate::daemon::watchdog::Liveness>>,
    /// Firing and planning are the leader's (several agents on one store).
    pub leading: crate::leading::Leading,
}

impl Scheduler {
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> Result<(), StoreError> {
        tokio::pin!(shutdown);
        loop {
            self.beat();
            if !self.leading.now() {
                // Another agent fires removals; beat while waiting to lead.
                tokio::select! {
                    _ = &mut shutdown => return Ok(()),
                    _ = self.leading.wait() => {}
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
                continue;
            }
            match self.fire_due().await {
                Ok(_) => {}
                Err(StoreError::NotLeader) => {
                    tracing::warn!("removals not fired: this agent no longer leads");
                    continue;
                }
                Err(e) => {
                    // The store may be back in a moment (a PostgreSQL failover).
                    if !crate::logging::store_unavailable(&e) {
                        tracing::error!(error = %e, "firing removals failed; tried again shortly");
                    }
                    tokio::select! {
                        _ = &mut shutdown => return Ok(()),
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                    continue;
                }
            }
            let now = to_ms(self.clock.now());
            let wait = match self.removals.next_removal().await? {
                Some(at) => Duration::from_millis((at - now).max(0) as u64).min(RECHECK),
                None => RECHECK,
            };
            tokio::select! {
                _ = &mut shutdown => return Ok(()),
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    fn beat(&self) {
        if let Some(l) = &self.liveness {
            l.beat_schedule();
        }
    }

    /// Records every removal due now (oldest first), then plans the revokes of what was
    /// recorded, one small batch at a time with recording in between: recording is what
    /// must happen on time. Returns how many removals were recorded.
    pub async fn fire_due(&self) -> Result<usize, StoreError> {
        let mut total = 0;
        loop {
            loop {
                let now = to_ms(self.clock.now());
                let fired: Vec<Fired> = self.removals.fire(now, BATCH).await?;
                for f in &fired {
                    FIRE_LAG.observe(f.lag_ms);
                    tracing::info!(identity = %f.identity, item = %f.item_id, assignment = f.assignment,
                        due = %rfc3339_ms(f.remove_at), lag_ms = f.lag_ms, "removeDate reached: removal fired");
                }
                total += fired.len();
                if fired.len() < BATCH {
                    break;
                }
            }
            self.beat();
            if self.plan_fired().await? == 0 {
                return Ok(total);
            }
        }
    }

    /// Phase 2: a revoke request for up to PLAN_BATCH fired removals not planned yet
    /// (also those a crash left between the phases); returns how many.
    async fn plan_fired(&self) -> Result<usize, StoreError> {
        let now = self.clock.now();
        let config = self.live.get();
        let fired = self.removals.unplanned(PLAN_BATCH).await?;
        if fired.is_empty() {
            return Ok(0);
        }
        let ids = fired.iter().map(|f| f.identity.clone()).collect();
        let dir = Directory::load(&config, &*self.accounts, ids).await?;
        let identities = fired
            .iter()
            .map(|f| {
                // An identity gone from the directory still loses its access.
                let found = dir.lookup(&f.identity).unwrap_or_else(|| Identity {
                    id: f.identity.clone(),
                    attributes: BTreeMap::new(),
                });
                (f.identity.clone(), found)
            })
            .collect();
        let ctx = Context {
            identities,
            decide: crate::intake::decider(config.clone()),
        };
        let removals: Vec<Removal> = fired.into_iter().map(removal).collect();
        let planned: Vec<Planned> = self.removals.plan_fired(removals, ctx, now).await?;
        if planned.is_empty() {
            return Ok(0);
        }
        for p in &planned {
            match &p.request_id {
                Some(rid) => {
                    tracing::info!(request_id = %rid, identity = %p.identity, item = %p.item_id,
                        assignment = p.assignment, jobs = p.jobs, "removal planned")
                }
                None => {
                    tracing::info!(identity = %p.identity, item = %p.item_id, assignment = p.assignment,
                        "removal superseded: the item was granted again")
                }
            }
        }
        self.dispatch.notify_one();
        Ok(planned.len())
    }
}

/// The REVOKE a fired removal becomes: planned like any request, keyed so that it is
/// planned once however often phase 2 runs.
/// The revoke names the grant request it ends and keeps the grant's `clientMetadata` (the
/// ticket an auditor follows from one to the other).
pub fn removal(fired: Fired) -> Removal {
    let comment = format!(
        "removeDate {} reached; ends the access granted by request {}",
        rfc3339_ms(fired.remove_at),
        fired.grant_request
    );
    let meta: std::collections::BTreeMap<String, String> = fired
        .grant_metadata
        .as_deref()
        .and_then(|m| serde_json::from_str(m).ok())
        .unwrap_or_default();
    let request = ValidRequest {
        request_type: RequestType::Revoke,
        requested_for: vec![fired.identity.clone()],
        items: vec![ValidItem {
            ty: fired.ty,
            id: fired.item_id.clone(),
            comment: Some(comment.clone()),
            start_at: None,
            remove_at: None,
            client_metadata: meta.clone(),
        }],
        client_metadata: Default::default(),
        account_ops: Vec::new(),
        repairs: Vec::new(),
    };
    let body =
        serde_json::json!({ "requestedFor": [fired.identity], "requestType": "REVOKE_ACCESS",
        "requestedItems": [{ "type": fired.ty.as_str(), "id": fired.item_id, "comment": comment,
            "clientMetadata": meta }] })
        .to_string();
    let key = format!("schedule:{}:{}", fired.assignment, fired.remove_at);
    Removal {
        fired,
        request,
        body,
        key,
    }
}
