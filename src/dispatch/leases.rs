//! What the dispatcher does about its leases besides renewing them (`heartbeat`): it
//! never starts a job whose lease is about to lapse, and gives back the jobs a claim
//! took whose answer never arrived (issue 31).

use std::collections::BTreeSet;

use super::Dispatcher;
use crate::clock::to_ms;
use crate::store::jobs::Job;

impl Dispatcher {
    /// Gives back, unspent, the running jobs leased to this agent that it does not hold:
    /// a claim whose answer was lost took them. Without this they wait out the whole
    /// lease (5 minutes by default) after a database restart. Whether it got through.
    pub(super) async fn release_orphans(&self, now: i64) -> bool {
        let me = &self.inner;
        let running = match me
            .queue
            .jobs(crate::store::jobs::JobFilter {
                state: Some(crate::store::jobs::JobState::Running),
                ..Default::default()
            })
            .await
        {
            Ok(j) => j,
            Err(_) => return false,
        };
        let held: BTreeSet<i64> = match me.running.lock() {
            Ok(r) => r.keys().copied().collect(),
            Err(_) => return false,
        };
        let orphans = running.into_iter().filter(|j| {
            j.lease_owner.as_deref() == Some(me.owner.as_str()) && !held.contains(&j.id)
        });
        for j in orphans {
            let id = j.id;
            if let Err(e) = me.queue.release(j, me.owner.clone(), now).await {
                tracing::warn!(job_id = id, error = %e, "giving back a job an unanswered claim took failed; its lease will expire");
                return false;
            }
            tracing::info!(job_id = id, "job an unanswered claim took given back");
        }
        true
    }

    /// Claimed, then not renewed in time (the store was away): another agent may take
    /// `job` back any moment, so running it here could run it twice. It is forgotten
    /// here (true), and the lease sweep puts it back in the queue.
    pub(super) fn drop_if_lapsing(&self, job: &Job) -> bool {
        let Some(lapsing) = self.lease_lapsing(job) else {
            return false;
        };
        tracing::warn!(job_id = job.id, source = %job.source, lease_expires_at = lapsing,
            "job's lease ran out before it started; left for the lease sweep");
        if let Ok(mut running) = self.inner.running.lock() {
            running.remove(&job.id);
        }
        true
    }

    /// The lease's end when it is too near to start `job` (a fifth of a lease left, or
    /// less), as the last claim or renewal left it.
    fn lease_lapsing(&self, job: &Job) -> Option<i64> {
        let me = &self.inner;
        let until = me
            .running
            .lock()
            .ok()
            .and_then(|r| r.get(&job.id).and_then(|j| j.lease_expires_at))
            .or(job.lease_expires_at)?;
        let margin = (self.config().agent.lease / 5).as_millis() as i64;
        (to_ms(me.clock.now()) + margin >= until).then_some(until)
    }
}
