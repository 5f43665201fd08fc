//! The role traits over SQLite: each call runs its blocking query method on tokio's
//! blocking pool, so that a commit's fsync never stalls the runtime's workers.

use std::collections::BTreeMap;

use jiff::Timestamp;
use provd_connector_core::Identity;

use super::Sqlite;
use crate::model::Snapshot;
use crate::store::accept::{Accepted, Context, Replay};
use crate::store::audit::{AccessQuery, AuditQuery, Holding, RemovalRow};
use crate::store::events::StoredEvent;
use crate::store::evidence::{SeenRow, SnapshotMeta};
use crate::store::jobs::{Finish, Job, JobFilter, JobState, Moved};
use crate::store::mail::MailMark;
use crate::store::roles::{
    Accept, Accounts, Admin, Audit, BoxFuture, Claim, Evidence, JobOutcome, Leader, Leadership,
    OpenTasks, Queue, Requests, Schedule, Tasks, Triggers, Upstream,
};
use crate::store::schedule::{Assignment, Fired, Planned, Removal};
use crate::store::status::{StatusQuery, StatusRow};
use crate::store::tasks::{Overdue, Resolved, Task, TaskAnswer, TaskBrief, TaskFilter};
use crate::store::triggers::{Answer, Invocation};
use crate::store::upstream::{Health, Pulled, Unwritten};
use crate::store::{Result, StoreError};

/// Runs `$body` with `$s` (a clone of the backend) on the blocking pool.
macro_rules! blocking {
    ($self:ident, |$s:ident| $body:expr) => {{
        let $s = $self.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || $body)
                .await
                .map_err(|e| StoreError::Backend(format!("store task failed: {e}").into()))?
        })
    }};
}

impl Queue for Sqlite {
    fn job(&self, id: i64) -> BoxFuture<Result<Option<Job>>> {
        blocking!(self, |s| s.job(id))
    }
    fn jobs(&self, filter: JobFilter) -> BoxFuture<Result<Vec<Job>>> {
        blocking!(self, |s| s.jobs(&filter))
    }
    fn claim(&self, c: Claim) -> BoxFuture<Result<Vec<Job>>> {
        blocking!(self, |s| s.claim(
            &c.owner,
            c.limit,
            c.now,
            c.lease_until,
            &c.skip_sources,
            c.only_source.as_deref()
        ))
    }
    fn next_due(&self) -> BoxFuture<Result<Option<i64>>> {
        blocking!(self, |s| s.next_due())
    }
    fn finish_all(&self, items: Vec<Finish>) -> BoxFuture<Result<Vec<Result<()>>>> {
        blocking!(self, |s| s.finish_all(&items))
    }
    fn renew(
        &self,
        owner: String,
        jobs: Vec<(i64, i64)>,
        until: i64,
    ) -> BoxFuture<Result<Vec<i64>>> {
        blocking!(self, |s| s.renew(&owner, &jobs, until))
    }
    fn release(&self, job: Job, owner: String, now: i64) -> BoxFuture<Result<()>> {
        blocking!(self, |s| s.release(&job, &owner, now))
    }
    fn expire_leases(
        &self,
        now: i64,
        all_but: Option<String>,
        by: String,
    ) -> BoxFuture<Result<Vec<Moved>>> {
        blocking!(self, |s| s.expire_leases(now, all_but.as_deref(), &by))
    }
    /// Alone on its file, start-up takes back every foreign lease anyway.
    fn reclaim(&self, _name: String, me: String, now: i64) -> BoxFuture<Result<Vec<Moved>>> {
        blocking!(self, |s| s.expire_leases(now, Some(&me), &me))
    }
    fn job_counts(&self) -> BoxFuture<Result<Vec<(String, JobState, i64)>>> {
        blocking!(self, |s| s.job_counts())
    }
    fn cancel_job(
        &self,
        id: i64,
        now: i64,
        reason: String,
        actor: String,
    ) -> BoxFuture<Result<Job>> {
        blocking!(self, |s| s.cancel_job(id, now, &reason, &actor))
    }
    fn cancel_request(
        &self,
        request_id: String,
        now: i64,
        comment: String,
        actor: String,
    ) -> BoxFuture<Result<usize>> {
        blocking!(self, |s| s.cancel_request(
            &request_id,
            now,
            &comment,
            &actor
        ))
    }
    fn retry_job(
        &self,
        id: i64,
        now: i64,
        max_attempts: u32,
        identity: Option<Identity>,
        actor: String,
    ) -> BoxFuture<Result<Job>> {
        blocking!(self, |s| s.retry_job(
            id,
            now,
            max_attempts,
            identity.as_ref(),
            &actor
        ))
    }
}

impl Requests for Sqlite {
    fn by_idempotency_key(&self, key: String) -> BoxFuture<Result<Option<Accepted>>> {
        blocking!(self, |s| s.by_idempotency_key(&key))
    }
    fn accept_all(&self, batch: Vec<Accept>) -> BoxFuture<Result<Vec<Result<Replay>>>> {
        blocking!(self, |s| s.accept_all(&batch))
    }
    fn snapshot(&self, identities: Vec<String>) -> BoxFuture<Result<Snapshot>> {
        blocking!(self, |s| s.snapshot(&identities))
    }
    fn status(&self, q: StatusQuery) -> BoxFuture<Result<Vec<StatusRow>>> {
        blocking!(self, |s| s.status(&q))
    }
    fn request_origin(&self, id: String) -> BoxFuture<Result<Option<String>>> {
        blocking!(self, |s| s.request_origin(&id))
    }
    fn request_exists(&self, id: String) -> BoxFuture<Result<bool>> {
        blocking!(self, |s| s.request_exists(&id))
    }
}

impl Schedule for Sqlite {
    fn assignments(&self, identity: Option<String>) -> BoxFuture<Result<Vec<Assignment>>> {
        blocking!(self, |s| s.assignments(identity.as_deref()))
    }
    fn next_removal(&self) -> BoxFuture<Result<Option<i64>>> {
        blocking!(self, |s| s.next_removal())
    }
    fn fire(&self, now: i64, limit: usize) -> BoxFuture<Result<Vec<Fired>>> {
        blocking!(self, |s| s.fire(now, limit))
    }
    fn unplanned(&self, limit: usize) -> BoxFuture<Result<Vec<Fired>>> {
        blocking!(self, |s| s.unplanned(limit))
    }
    fn plan_fired(
        &self,
        removals: Vec<Removal>,
        ctx: Context,
        now: Timestamp,
    ) -> BoxFuture<Result<Vec<Planned>>> {
        blocking!(self, |s| s.plan_fired(&removals, &ctx, now))
    }
}

impl Accounts for Sqlite {
    fn identities(&self, ids: Vec<String>) -> BoxFuture<Result<BTreeMap<String, Identity>>> {
        blocking!(self, |s| {
            let mut out = BTreeMap::new();
            for id in ids {
                if let Some(found) = s.identity(&id)? {
                    out.insert(id, found);
                }
            }
            Ok(out)
        })
    }
    fn identity_ids(&self) -> BoxFuture<Result<Vec<String>>> {
        blocking!(self, |s| s.identity_ids())
    }
    fn import_identities(
        &self,
        identities: Vec<Identity>,
        now: i64,
        actor: String,
    ) -> BoxFuture<Result<usize>> {
        blocking!(self, |s| s.import_identities(&identities, now, &actor))
    }
    fn identity_by_attribute(
        &self,
        attr: String,
        value: String,
    ) -> BoxFuture<Result<Option<String>>> {
        blocking!(self, |s| s.identity_by_attribute(&attr, &value))
    }
    fn native_id(&self, identity: String, source: String) -> BoxFuture<Result<Option<String>>> {
        blocking!(self, |s| s.native_id(&identity, &source))
    }
}

impl Tasks for Sqlite {
    fn open_tasks_all(&self, batch: Vec<OpenTasks>) -> BoxFuture<Result<Vec<Result<()>>>> {
        blocking!(self, |s| s.open_tasks_all(&batch))
    }
    fn tasks(&self, filter: TaskFilter) -> BoxFuture<Result<Vec<Task>>> {
        blocking!(self, |s| s.tasks(&filter))
    }
    fn open_task_count(&self) -> BoxFuture<Result<i64>> {
        blocking!(self, |s| s.open_task_count())
    }
    fn resolve_tasks(
        &self,
        rows: Vec<TaskAnswer>,
        now: i64,
    ) -> BoxFuture<Result<Vec<Result<Resolved>>>> {
        blocking!(self, |s| s.resolve_tasks(&rows, now))
    }
    fn task_brief(&self, task: i64) -> BoxFuture<Result<Option<TaskBrief>>> {
        blocking!(self, |s| s.task_brief(task))
    }
    fn overdue_tasks(&self, source: String, older_than: i64) -> BoxFuture<Result<Vec<Overdue>>> {
        blocking!(self, |s| s.overdue_tasks(&source, older_than))
    }
    fn mail_marks(&self) -> BoxFuture<Result<Vec<MailMark>>> {
        blocking!(self, |s| s.mail_marks())
    }
    fn set_mail_mark(&self, mark: MailMark, now: i64) -> BoxFuture<Result<()>> {
        blocking!(self, |s| s.set_mail_mark(&mark, now))
    }
}

impl Evidence for Sqlite {
    fn managed_accounts(&self, source: String) -> BoxFuture<Result<Vec<(String, String)>>> {
        blocking!(self, |s| s.managed_accounts(&source))
    }
    fn last_snapshot(&self, source: String) -> BoxFuture<Result<Option<SnapshotMeta>>> {
        blocking!(self, |s| s.last_snapshot(&source))
    }
    fn seen_accounts(&self, source: String) -> BoxFuture<Result<Vec<SeenRow>>> {
        blocking!(self, |s| s.seen_accounts(&source))
    }
    fn record_snapshot(
        &self,
        meta: SnapshotMeta,
        rows: Vec<SeenRow>,
        verify: Vec<i64>,
        now: i64,
    ) -> BoxFuture<Result<i64>> {
        blocking!(self, |s| s.record_snapshot(&meta, &rows, &verify, now))
    }
}

impl Triggers for Sqlite {
    fn record_invocation(
        &self,
        inv: Invocation,
        actor: String,
    ) -> BoxFuture<Result<(Invocation, bool)>> {
        blocking!(self, |s| s.record_invocation(&inv, &actor))
    }
    fn invocation(&self, id: String) -> BoxFuture<Result<Option<Invocation>>> {
        blocking!(self, |s| s.invocation(&id))
    }
    fn due_invocations(&self, now: i64, limit: usize) -> BoxFuture<Result<Vec<Invocation>>> {
        blocking!(self, |s| s.due_invocations(now, limit))
    }
    fn answer_invocation(
        &self,
        inv: Invocation,
        answer: Answer,
        actor: String,
        now: i64,
    ) -> BoxFuture<Result<()>> {
        blocking!(self, |s| s.answer_invocation(&inv, &answer, &actor, now))
    }
    fn retry_invocation(&self, id: String, next_at: i64, error: String) -> BoxFuture<Result<()>> {
        blocking!(self, |s| s.retry_invocation(&id, next_at, &error))
    }
    fn finish_invocation(
        &self,
        inv: Invocation,
        state: &'static str,
        error: Option<String>,
        actor: String,
        now: i64,
    ) -> BoxFuture<Result<()>> {
        blocking!(self, |s| s.finish_invocation(
            &inv,
            state,
            error.as_deref(),
            &actor,
            now
        ))
    }
    fn trigger_event(
        &self,
        kind: &'static str,
        identity: Option<String>,
        data: serde_json::Value,
        actor: String,
        now: i64,
    ) -> BoxFuture<Result<()>> {
        blocking!(self, |s| s.trigger_event(
            kind,
            identity.as_deref(),
            &data,
            &actor,
            now
        ))
    }
}

impl Upstream for Sqlite {
    fn upstream_cursor(&self, name: String) -> BoxFuture<Result<Option<String>>> {
        blocking!(self, |s| s.upstream_cursor(&name))
    }
    fn set_upstream_cursor(&self, name: String, cursor: String, now: i64) -> BoxFuture<Result<()>> {
        blocking!(self, |s| s.set_upstream_cursor(&name, &cursor, now))
    }
    fn set_upstream_health(
        &self,
        name: String,
        healthy: bool,
        error: Option<String>,
        now: i64,
    ) -> BoxFuture<Result<()>> {
        blocking!(self, |s| s.set_upstream_health(
            &name,
            healthy,
            error.as_deref(),
            now
        ))
    }
    fn upstream_health(&self) -> BoxFuture<Result<Vec<Health>>> {
        blocking!(self, |s| s.upstream_health())
    }
    fn upstream_seen(&self, name: String, id: String) -> BoxFuture<Result<bool>> {
        blocking!(self, |s| s.upstream_seen(&name, &id))
    }
    fn record_upstream(
        &self,
        name: String,
        id: String,
        request_id: Option<String>,
        reason: Option<String>,
        now: i64,
    ) -> BoxFuture<Result<()>> {
        blocking!(self, |s| s.record_upstream(
            &name,
            &id,
            request_id.as_deref(),
            reason.as_deref(),
            now
        ))
    }
    fn unwritten(&self, name: String) -> BoxFuture<Result<Vec<Unwritten>>> {
        blocking!(self, |s| s.unwritten(&name))
    }
    fn mark_written(
        &self,
        name: String,
        id: String,
        message: String,
        now: i64,
    ) -> BoxFuture<Result<()>> {
        blocking!(self, |s| s.mark_written(&name, &id, &message, now))
    }
    fn upstream_request(&self, id: String) -> BoxFuture<Result<Option<Pulled>>> {
        blocking!(self, |s| s.upstream_request(&id))
    }
    fn request_jobs(&self, request_id: String) -> BoxFuture<Result<Vec<JobOutcome>>> {
        blocking!(self, |s| s.request_jobs(&request_id))
    }
}

impl Audit for Sqlite {
    fn holdings(&self, q: AccessQuery) -> BoxFuture<Result<Vec<Holding>>> {
        blocking!(self, |s| s.holdings(&q))
    }
    fn removals(&self, since: i64, until: i64, limit: usize) -> BoxFuture<Result<Vec<RemovalRow>>> {
        blocking!(self, |s| s.removals(since, until, limit))
    }
    fn audit(&self, q: AuditQuery) -> BoxFuture<Result<Vec<StoredEvent>>> {
        blocking!(self, |s| s.audit(&q))
    }
    fn last_event_id(&self) -> BoxFuture<Result<i64>> {
        blocking!(self, |s| s.last_event_id())
    }
    fn events_after(&self, after: i64, limit: usize) -> BoxFuture<Result<Vec<StoredEvent>>> {
        blocking!(self, |s| s.events_after(after, limit))
    }
    fn events_between(
        &self,
        after: i64,
        upto: i64,
        not_by: Option<String>,
        limit: usize,
    ) -> BoxFuture<Result<Vec<StoredEvent>>> {
        blocking!(self, |s| s.events_between(
            after,
            upto,
            not_by.as_deref(),
            limit
        ))
    }
}

/// Alone on its file (the state directory's lock), an SQLite agent always leads: its
/// lease is granted at once and never taken over.
impl Leadership for Sqlite {
    fn lead(
        &self,
        _duty: String,
        holder: String,
        _now: i64,
        until: i64,
    ) -> BoxFuture<Result<Option<i64>>> {
        if let Ok(mut l) = self.leader.lock() {
            *l = Some(Leader {
                holder,
                epoch: 1,
                expires_at: until,
            });
        }
        Box::pin(async { Ok(Some(1)) })
    }
    fn resign(&self, _duty: String, _holder: String) -> BoxFuture<Result<()>> {
        if let Ok(mut l) = self.leader.lock() {
            *l = None;
        }
        Box::pin(async { Ok(()) })
    }
    fn leader(&self, _duty: String) -> BoxFuture<Result<Option<Leader>>> {
        let l = self.leader.lock().ok().and_then(|l| l.clone());
        Box::pin(async move { Ok(l) })
    }
    fn seen(&self, _name: String, _now: i64) -> BoxFuture<Result<()>> {
        Box::pin(async { Ok(()) })
    }
    fn agents(&self, since: i64) -> BoxFuture<Result<Vec<String>>> {
        // The only agent is the one leading; counted while its lease is recent.
        let l = self.leader.lock().ok().and_then(|l| l.clone());
        Box::pin(async move {
            Ok(l.filter(|l| l.expires_at >= since)
                .map(|l| vec![l.holder])
                .unwrap_or_default())
        })
    }
}

impl Admin for Sqlite {
    fn schema_version(&self) -> BoxFuture<Result<(i64, i64)>> {
        blocking!(self, |s| s.schema_version())
    }
    fn row_counts(&self) -> BoxFuture<Result<BTreeMap<&'static str, i64>>> {
        blocking!(self, |s| s.row_counts())
    }
    fn ping(&self) -> BoxFuture<Result<()>> {
        blocking!(self, |s| s.ping())
    }
    fn probe_write(&self, now: i64) -> BoxFuture<Result<()>> {
        blocking!(self, |s| s.probe_write(now))
    }
    fn check_free_space(&self) -> BoxFuture<Result<()>> {
        blocking!(self, |s| s.check_free_space())
    }
    fn quick_check(&self) -> BoxFuture<Result<()>> {
        blocking!(self, |s| s.quick_check())
    }
    fn analyze_stale(&self, _share: f64) -> BoxFuture<Result<Vec<String>>> {
        // SQLite's plans do not hinge on gathered statistics the way PostgreSQL's do
        // (and the hot statements pin theirs, see `open_existing`).
        Box::pin(async { Ok(Vec::new()) })
    }
    fn store_id(&self) -> BoxFuture<Result<String>> {
        blocking!(self, |s| s.with(|c| Ok(c.query_row(
            crate::store::STORE_ID_SQL,
            [],
            |r| r.get(0)
        )?)))
    }
    fn exclusive(&self) -> bool {
        true
    }

    fn location(&self) -> String {
        self.path().display().to_string()
    }
    fn writers(&self) -> usize {
        1
    }
}
