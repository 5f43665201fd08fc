//! Group commit of attempts' ends. Workers hand how an attempt ended to one committer and
//! go on with the next job; the committer writes everything waiting in ONE transaction
//! (one fsync), then logs each end and lets go of the job.
//!
//! Handing off before the write is durable is safe: until the end is committed the job
//! stays `running` and leased, so nothing else in its lane can start, and if the agent
//! dies first the job is taken back and run again (every operation is idempotent).
//! What is promised durable — an accepted request — is written elsewhere, at once.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::clock::rfc3339_ms;
use crate::store::jobs::{Ending, Finish};
use crate::store::roles::Queue;
use crate::store::{Job, StoreError};

/// At most this many ends in one transaction.
const MAX_BATCH: usize = 512;
/// How long the committer waits for more ends while connector calls are still running:
/// fewer, larger transactions cost the directory's own disk less than one fsync a job.
/// (A lone job's end may wait it out too: its worker counts as running until just after
/// the hand-off. 25 ms on a job's visible end is the price of not tracking that exactly.)
const WINDOW: Duration = Duration::from_millis(25);

pub enum Commit {
    End(Box<Finish>),
    /// Answered once everything sent before it is on disk (shutdown).
    Flush(oneshot::Sender<()>),
}

/// The committer's view of the dispatcher: who is still running, and whom to forget.
pub struct Shared<'a> {
    pub store: &'a dyn Queue,
    /// Connector calls in progress: while there are none, waiting for more ends is pointless.
    pub busy: &'a AtomicUsize,
    pub running: &'a Mutex<BTreeMap<i64, Job>>,
}

/// Commits ends in batches until the channel closes.
pub async fn run(shared: Shared<'_>, mut queue: mpsc::UnboundedReceiver<Commit>) {
    while let Some(first) = queue.recv().await {
        let mut ends: Vec<Finish> = Vec::new();
        let mut flushes = Vec::new();
        let take = |c: Commit, ends: &mut Vec<Finish>, flushes: &mut Vec<_>| match c {
            Commit::End(f) => ends.push(*f),
            Commit::Flush(tx) => flushes.push(tx),
        };
        take(first, &mut ends, &mut flushes);
        let deadline = tokio::time::Instant::now() + WINDOW;
        while ends.len() < MAX_BATCH && flushes.is_empty() {
            let next = match queue.try_recv() {
                Ok(c) => Some(c),
                Err(_) if shared.busy.load(Ordering::SeqCst) == 0 => None,
                Err(_) => tokio::time::timeout_at(deadline, queue.recv())
                    .await
                    .ok()
                    .flatten(),
            };
            match next {
                Some(c) => take(c, &mut ends, &mut flushes),
                None => break,
            }
        }
        if !ends.is_empty() {
            commit(&shared, ends).await;
        }
        for f in flushes {
            let _ = f.send(());
        }
    }
}

async fn commit(shared: &Shared<'_>, ends: Vec<Finish>) {
    let count = ends.len();
    let all = shared.store.finish_all(ends.clone()).await;
    let results: Vec<Result<(), (bool, String)>> = match all {
        Ok(rs) => rs
            .into_iter()
            .map(|r| r.map_err(|e| (matches!(e, StoreError::LeaseLost { .. }), e.to_string())))
            .collect(),
        Err(e) => vec![Err((false, e.to_string())); count],
    };
    if let Ok(mut running) = shared.running.lock() {
        for f in &ends {
            running.remove(&f.job.id);
        }
    }
    for (f, r) in ends.iter().zip(results) {
        match r {
            Ok(()) => log_end(f),
            // Another agent holds the job now; its outcome is the one that counts.
            Err((true, e)) => {
                crate::metrics::lease_lost();
                tracing::warn!(job_id = f.job.id, request_id = %f.job.request_id, source = %f.job.source,
                    epoch = f.job.lease_epoch, error = %e, "lease lost: this attempt's outcome is dropped")
            }
            Err((false, e)) => tracing::error!(job_id = f.job.id, error = %e,
                "job bookkeeping failed; the lease will expire and the job run again"),
        }
    }
}

/// The log line (and, for a success, the metric) of an end once it is on disk.
fn log_end(f: &Finish) {
    let j = &f.job;
    let actor = crate::model::agent_actor(&f.owner);
    match &f.ending {
        Ending::Succeeded => {
            crate::metrics::attempt(&j.source, "succeeded");
            tracing::info!(request_id = %j.request_id, job_id = j.id, source = %j.source,
            identity = %j.identity_id, state = "succeeded", attempt = j.attempt, actor = %actor, "job succeeded")
        }
        Ending::Retry { at, error } => {
            tracing::warn!(request_id = %j.request_id, job_id = j.id, source = %j.source,
            identity = %j.identity_id, state = "retrying", attempt = j.attempt, actor = %actor, next_attempt_at = %rfc3339_ms(*at),
            error_class = %error.class, error = %error.message, "job will be retried")
        }
        Ending::Released { error } => {
            tracing::warn!(request_id = %j.request_id, job_id = j.id, source = %j.source,
            identity = %j.identity_id, state = "queued", attempt = j.attempt.saturating_sub(1), actor = %actor, error_class = %error.class,
            error = %error.message, "job put back: the source refused provd's credentials (no attempt spent)")
        }
        Ending::Failed { error, reason } => {
            tracing::warn!(request_id = %j.request_id, job_id = j.id, source = %j.source,
            identity = %j.identity_id, state = "failed", attempt = j.attempt, actor = %actor, error_class = %error.class,
            error = %error.message, reason = %reason, "job failed")
        }
    }
}
