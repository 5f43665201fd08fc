//! Dispatch: a pool of `agent.workers` workers that claim due jobs from the store, hand
//! each operation to its source's connector, and record what came back. Retry decisions
//! ([`policy`]) and classification ([`classify`]) are pure and kept apart from the loop.

pub mod breaker;
mod claim;
pub mod classify;
mod commit;
mod failure;
mod heartbeat;
mod leases;
mod manual;
mod owner;
pub mod policy;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use provd_connector_core::{ConnectorError, Operation, Outcome, apply};
use tokio::sync::Notify;
use tokio::task::JoinSet;

use crate::clock::{SharedClock, to_ms};
use crate::config::{Config, SourceKind};
use crate::connectors::Connectors;
use crate::store::jobs::{Ending, Finish, OpRecord};
use crate::store::roles::Queue;
use crate::store::{Job, Store, StoreError};
use breaker::{Breaker, BreakerState};
use commit::Commit;

/// How long one connector call may take before it counts as a (retryable) timeout.
const OP_TIMEOUT: Duration = Duration::from_secs(60);
/// How often the store is looked at when nothing wakes the dispatcher: picks up jobs
/// written by a CLI `provd submit` in another process.
const POLL: Duration = Duration::from_millis(500);
/// Jobs claimed per worker ahead of need (leased, waiting in a local queue).
const CLAIM_AHEAD: usize = 4;
/// How often expired leases are looked for.
const LEASE_SWEEP: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct Dispatcher {
    inner: Arc<Inner>,
}

struct Inner {
    /// The store as dispatch uses it: the queue (manual tasks go through `opener`), and
    /// the accounts, to never link one person's account to another (`owner`).
    queue: Arc<dyn Queue>,
    accounts: Arc<dyn crate::store::roles::Accounts>,
    live: Arc<crate::config::Live>,
    connectors: std::sync::RwLock<Arc<Connectors>>,
    clock: SharedClock,
    owner: String,
    wake: Arc<Notify>,
    breakers: Mutex<BTreeMap<String, Breaker>>,
    probing: Mutex<BTreeSet<String>>,
    running: Mutex<BTreeMap<i64, Job>>,
    stopping: AtomicBool,
    liveness: Option<Arc<crate::daemon::watchdog::Liveness>>,
    /// Attempts' ends go to one committer, which writes all that are waiting in one
    /// transaction (group commit): see [`commit`].
    commits: tokio::sync::mpsc::UnboundedSender<Commit>,
    commit_queue: Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<Commit>>>,
    /// Jobs between claim and hand-off to the committer (for its batching window).
    busy: AtomicUsize,
    /// Manual jobs' tasks, opened in batches.
    opener: manual::Opener,
}

/// A claim running beside the dispatch loop.
type ClaimTask = tokio::task::JoinHandle<Result<Vec<Job>, StoreError>>;

/// Done once a batch correlation lookup for the job's source has answered.
type Lookup = tokio::sync::watch::Receiver<bool>;

/// Where a job stands when its worker lets go of it.
enum After {
    /// Its end is with the committer, which forgets the job once that is on disk.
    Committing,
    /// Written already (manual tasks opened).
    Done,
    /// Stopped half-way by shutdown: still leased, for `run` to release.
    Stopped,
}

impl Dispatcher {
    pub fn new(
        store: Store,
        live: Arc<crate::config::Live>,
        connectors: Connectors,
        clock: SharedClock,
        owner: String,
        wake: Arc<Notify>,
    ) -> Self {
        let (commits, commit_queue) = tokio::sync::mpsc::unbounded_channel();
        Self {
            inner: Arc::new(Inner {
                opener: manual::opener(store.as_tasks(), store.writers()),
                queue: store.as_queue(),
                accounts: store.as_accounts(),
                live,
                connectors: std::sync::RwLock::new(Arc::new(connectors)),
                clock,
                owner,
                wake,
                breakers: Mutex::new(BTreeMap::new()),
                probing: Mutex::new(BTreeSet::new()),
                running: Mutex::new(BTreeMap::new()),
                stopping: AtomicBool::new(false),
                liveness: None,
                commits,
                commit_queue: Mutex::new(Some(commit_queue)),
                busy: AtomicUsize::new(0),
            }),
        }
    }

    /// Hands how an attempt ended to the committer (see [`commit`]).
    fn end(&self, f: Finish) -> Result<After, StoreError> {
        self.inner
            .commits
            .send(Commit::End(Box::new(f)))
            .map_err(|_| StoreError::Conflict("the committer has stopped".into()))?;
        Ok(After::Committing)
    }

    /// Jobs claimed from now on use these connectors; running ones keep theirs.
    /// New connectors (a reload): each comes with fresh credentials and a fresh
    /// authentication gate, so every breaker closes at once: a source whose secret was
    /// fixed is tried right away, and one still broken opens its breaker again on the
    /// first answer.
    pub fn set_connectors(&self, connectors: Connectors) {
        if let Ok(mut c) = self.inner.connectors.write() {
            *c = Arc::new(connectors);
        }
        if let Ok(mut b) = self.inner.breakers.lock() {
            for (source, breaker) in b.iter_mut() {
                if breaker.on_success() {
                    tracing::info!(source = %source, "breaker closed by the reload");
                }
                crate::metrics::breaker(source, 0);
            }
        }
        self.inner.wake.notify_one();
    }

    fn config(&self) -> Arc<Config> {
        self.inner.live.get()
    }

    /// Beats `live` on every pass of the loop (for the systemd watchdog).
    pub fn with_liveness(self, live: Arc<crate::daemon::watchdog::Liveness>) -> Self {
        match Arc::try_unwrap(self.inner) {
            Ok(mut inner) => {
                inner.liveness = Some(live);
                Self {
                    inner: Arc::new(inner),
                }
            }
            Err(inner) => Self { inner },
        }
    }

    /// Runs until `shutdown` completes; then stops claiming, lets in-flight jobs finish
    /// within the grace period and releases the rest without spending their attempt.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<(), StoreError> {
        let me = &self.inner;
        let workers = self.config().agent.workers.max(1);
        let queue = me
            .commit_queue
            .lock()
            .map_err(|_| StoreError::Poisoned)?
            .take();
        let committer = queue.map(|q| {
            let inner = self.inner.clone();
            tokio::spawn(async move {
                let shared = commit::Shared {
                    store: &*inner.queue,
                    busy: &inner.busy,
                    running: &inner.running,
                };
                commit::run(shared, q).await;
            })
        });
        let heartbeat = heartbeat::spawn(self.inner.clone());
        let mut inflight: JoinSet<()> = JoinSet::new();
        let mut ready: std::collections::VecDeque<(Job, Option<Lookup>)> =
            std::collections::VecDeque::new();
        let mut shutdown = std::pin::pin!(shutdown);
        let mut last_sweep = Instant::now();
        // The claim under way (how many it asked for), whether to claim again as soon
        // as there is room, and when to try again after a failed claim.
        let mut claiming: Option<(usize, ClaimTask)> = None;
        let mut claim_again = true;
        let mut claim_retry_at: Option<Instant> = None;
        // A claim that failed may have committed all the same (the connection broke
        // after the commit): its jobs are leased to this agent, which never got them.
        let mut claim_unsure = false;
        loop {
            if let Some(l) = &me.liveness {
                l.beat_dispatch();
            }
            if last_sweep.elapsed() >= LEASE_SWEEP {
                last_sweep = Instant::now();
                let now = to_ms(me.clock.now());
                match me.queue.expire_leases(now, None, me.owner.clone()).await {
                    Ok(moved) => {
                        for m in moved {
                            tracing::warn!(job_id = m.job_id, request_id = %m.request_id, source = %m.source,
                                identity = %m.identity_id, state = "queued", "lease expired; job taken back");
                        }
                    }
                    Err(e) => {
                        if !crate::logging::store_unavailable(&e) {
                            tracing::warn!(error = %e, "looking for expired leases failed; tried again later")
                        }
                    }
                }
                if claim_unsure && claiming.is_none() {
                    claim_unsure = !self.release_orphans(now).await;
                }
            }
            // Claim in batches into a local queue: one claim transaction then feeds many
            // workers, instead of one fsync per job as workers free up one by one. The
            // claim runs beside this loop, which goes on starting the jobs it has and
            // taking in ends: on PostgreSQL a claim is a few milliseconds of round trips
            // and a commit, in which workers would otherwise sit idle — so the next claim
            // starts while two rounds of work are still waiting here.
            if claiming.is_none()
                && claim_again
                && ready.len() < workers * 2
                && claim_retry_at.is_none_or(|t| Instant::now() >= t)
            {
                let (d, asked) = (self.clone(), workers * CLAIM_AHEAD - ready.len());
                claiming = Some((asked, tokio::spawn(async move { d.claim(asked).await })));
            }
            while inflight.len() < workers {
                let Some((job, lookup)) = ready.pop_front() else {
                    break;
                };
                if self.drop_if_lapsing(&job) {
                    continue;
                }
                if self.held_by_breaker(&job.source) {
                    // Claimed before its source's breaker opened: give it back unspent.
                    let (owner, now, id) = (me.owner.clone(), to_ms(me.clock.now()), job.id);
                    if let Err(e) = me.queue.release(job, owner, now).await {
                        tracing::warn!(job_id = id, error = %e, "releasing a job failed; its lease will expire");
                    }
                    if let Ok(mut running) = me.running.lock() {
                        running.remove(&id);
                    }
                    continue;
                }
                let d = self.clone();
                inflight.spawn(async move { d.run_job(job, lookup).await });
            }
            // With jobs waiting locally or a claim under way, a finishing one (or the
            // claim) wakes the loop: no store read.
            let wait = if ready.is_empty() && claiming.is_none() {
                self.next_wait().await
            } else {
                POLL
            };
            claim_again = true;
            tokio::select! {
                _ = &mut shutdown => break,
                Some(_) = inflight.join_next(), if !inflight.is_empty() => {}
                Some(got) = async { match claiming.as_mut() { Some((_, h)) => Some(h.await), None => None } }, if claiming.is_some() => {
                    let asked = claiming.take().map_or(0, |(a, _)| a);
                    match got {
                        Ok(Ok(claimed)) => {
                            // Fewer than asked: nothing more is due now; the next claim
                            // waits for a wake, an end or the timer.
                            claim_again = claimed.len() >= asked;
                            ready.extend(self.prefetch(claimed));
                        }
                        // The store may be back in a moment (a PostgreSQL failover): wait, retry.
                        Ok(Err(e)) => {
                            claim_unsure = true;
                            if !crate::logging::store_unavailable(&e) { tracing::error!(error = %e, "claiming jobs failed; tried again in a second"); }
                            claim_retry_at = Some(Instant::now() + Duration::from_secs(1));
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "the claim task ended abnormally; tried again in a second");
                            claim_retry_at = Some(Instant::now() + Duration::from_secs(1));
                        }
                    }
                }
                _ = me.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
            // Jobs end in batches (a group commit answers them together): one claim for
            // all their places, not one each.
            while inflight.try_join_next().is_some() {}
        }
        // A claim under way finishes first: what it took is in `running`, released below.
        if let Some((_, h)) = claiming.take() {
            let _ = h.await;
        }
        me.stopping.store(true, Ordering::SeqCst);
        tracing::info!(
            in_flight = inflight.len(),
            grace_s = self.config().agent.shutdown_grace.as_secs(),
            "stopping dispatch"
        );
        let grace = tokio::time::sleep(self.config().agent.shutdown_grace);
        tokio::pin!(grace);
        loop {
            tokio::select! {
                next = inflight.join_next() => if next.is_none() { break },
                _ = &mut grace => {
                    inflight.abort_all();
                    while inflight.join_next().await.is_some() {}
                    break;
                }
            }
        }
        // Ends handed over before the stop are written before anything is released.
        let (flushed, on_disk) = tokio::sync::oneshot::channel();
        if me.commits.send(Commit::Flush(flushed)).is_ok() {
            let _ = on_disk.await;
        }
        let left: Vec<Job> = me
            .running
            .lock()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default();
        for job in left {
            let now = to_ms(me.clock.now());
            let owner = me.owner.clone();
            let (id, rid, src) = (job.id, job.request_id.clone(), job.source.clone());
            me.queue.release(job, owner, now).await?;
            tracing::info!(job_id = id, request_id = %rid, source = %src, state = "queued", "released at shutdown");
        }
        if let Some(c) = committer {
            c.abort();
        }
        drop(heartbeat);
        Ok(())
    }

    fn held_by_breaker(&self, source: &str) -> bool {
        let now = self.inner.clock.now();
        self.inner
            .breakers
            .lock()
            .map(|b| {
                b.get(source)
                    .is_some_and(|b| matches!(b.state(now), BreakerState::Open { .. }))
            })
            .unwrap_or(false)
    }

    async fn next_wait(&self) -> Duration {
        let me = &self.inner;
        let due = me.queue.next_due().await.ok().flatten();
        let now = to_ms(me.clock.now());
        match due {
            Some(at) if at <= now => Duration::from_millis(10),
            Some(at) => Duration::from_millis((at - now) as u64).min(POLL),
            None => POLL,
        }
    }

    async fn run_job(self, job: Job, lookup: Option<Lookup>) {
        let id = job.id;
        self.inner.busy.fetch_add(1, Ordering::SeqCst);
        if let Some(mut lookup) = lookup {
            // Ends when the lookup does, or at once if its task is gone.
            let _ = tokio::time::timeout(OP_TIMEOUT, lookup.wait_for(|done| *done)).await;
        }
        let after = self.try_run_job(job).await;
        self.inner.busy.fetch_sub(1, Ordering::SeqCst);
        let forget = match after {
            Ok(After::Committing | After::Stopped) => false,
            Ok(After::Done) => true,
            Err(e) => {
                tracing::error!(job_id = id, error = %e, "job bookkeeping failed; the lease will expire and the job run again");
                true
            }
        };
        if forget && let Ok(mut running) = self.inner.running.lock() {
            running.remove(&id);
        }
    }

    async fn try_run_job(&self, job: Job) -> Result<After, StoreError> {
        let me = &self.inner;
        // One snapshot for the whole job: no clone of the source (settings, regexes) per job.
        let config = self.config();
        let Some(source) = config.sources.get(&job.source) else {
            let err = ConnectorError::permanent(
                None,
                format!("source `{}` is not configured", job.source),
            );
            return self.failed_attempt(&job, None, &err, Vec::new());
        };
        if source.kind == SourceKind::Manual {
            return self.to_manual(job, source).await.map(|_| After::Done);
        }
        let connectors = me.connectors.read().map(|c| c.clone()).unwrap_or_default();
        let Some(connector) = connectors.get(&job.source).cloned() else {
            let err = ConnectorError::permanent(
                None,
                format!("source `{}` has no connector", job.source),
            );
            return self.failed_attempt(&job, Some(source), &err, Vec::new());
        };
        let mut native = job.account.clone();
        let mut records: Vec<OpRecord> = Vec::new();
        // An ENABLE_ACCOUNT planned after a create is for an account this job made: one
        // the create found already existing is left as it is (enabled or not).
        let mut found_existing = false;
        for index in job.ops_done..job.ops.len() {
            if me.stopping.load(Ordering::SeqCst) {
                return Ok(After::Stopped);
            }
            let Some(op) = job.ops.get(index) else { break };
            if found_existing && *op == Operation::EnableAccount {
                records.push(OpRecord {
                    index,
                    outcome: "skipped",
                    native_id: None,
                    account: native.clone(),
                    detail: Some("the account existed before: left as it is".into()),
                    disabled: None,
                });
                continue;
            }
            let started = Instant::now();
            let result = match tokio::time::timeout(
                OP_TIMEOUT,
                apply(connector.as_ref(), op, &job.identity, native.as_deref()),
            )
            .await
            {
                Ok(r) => r,
                Err(_) => Err(ConnectorError::retryable(
                    Some("timeout".into()),
                    format!("no answer within {}s", OP_TIMEOUT.as_secs()),
                )),
            };
            let elapsed_ms = started.elapsed().as_millis() as u64;
            crate::metrics::call(&job.source, started.elapsed());
            match result {
                Ok(outcome) => {
                    if let Outcome::Correlated { native_id } = &outcome
                        && let Some(err) =
                            owner::taken(me.accounts.as_ref(), &job, native_id).await?
                    {
                        return self.failed_attempt(&job, Some(source), &err, records);
                    }
                    if let Some(n) = outcome.native_id() {
                        native = Some(n.to_string());
                    }
                    found_existing = matches!(outcome, Outcome::Correlated { .. });
                    if let Some(detail) = outcome.detail() {
                        if matches!(outcome, Outcome::Recreated { .. }) {
                            tracing::warn!(request_id = %job.request_id, job_id = job.id, source = %job.source,
                                identity = %job.identity_id, op = %op.kind(), outcome = outcome.as_str(), detail = %detail, "account was gone: created again");
                        } else {
                            tracing::info!(request_id = %job.request_id, job_id = job.id, source = %job.source,
                                identity = %job.identity_id, op = %op.kind(), outcome = outcome.as_str(), detail = %detail, "account created at another DN");
                        }
                    }
                    let mut closed = false;
                    self.breaker(&job.source, |b, _| closed = b.on_success());
                    if closed {
                        tracing::info!(source = %job.source, "breaker closed: the source answers again");
                    }
                    tracing::debug!(job_id = job.id, source = %job.source, op = %op.kind(), outcome = outcome.as_str(), elapsed_ms, "connector call");
                    records.push(OpRecord {
                        index,
                        outcome: outcome.as_str(),
                        native_id: outcome.native_id().map(str::to_string),
                        account: native.clone(),
                        detail: outcome.detail(),
                        // (An enable that made the account again enabled it too.)
                        disabled: (source.creates_disabled_for_good()
                            && *op != Operation::EnableAccount
                            && matches!(
                                outcome,
                                Outcome::Created { .. }
                                    | Outcome::CreatedElsewhere { .. }
                                    | Outcome::Recreated { .. }
                            ))
                        .then_some(true),
                    });
                }
                Err(err) => {
                    tracing::debug!(job_id = job.id, source = %job.source, op = %op.kind(), error = %err, elapsed_ms, "connector call failed");
                    return self.failed_attempt(&job, Some(source), &err, records);
                }
            }
        }
        let now = to_ms(me.clock.now());
        self.end(Finish {
            job,
            owner: me.owner.clone(),
            now,
            ops: records,
            ending: Ending::Succeeded,
        })
    }
}
