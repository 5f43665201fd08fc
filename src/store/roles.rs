//! The store's boundary: small async role traits, one per kind of work that stands on the
//! store, exchanging plain row types. Every backend implements all of them (see
//! [`Backend`]); callers hold a [`super::Store`], a `dyn Backend`, whose methods need no
//! import.
//!
//! Methods take their arguments owned and return `'static` futures: a backend may run the
//! call on another thread (SQLite's blocking pool) or on the runtime (PostgreSQL), and a
//! caller may spawn it. A unit that must be atomic (accepting a request with its plan,
//! planning fired removals, a group of attempt ends, an import of task answers) is one
//! method, so that no caller ever holds a transaction open across an await.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;

use jiff::Timestamp;
use provd_connector_core::Identity;
use provd_connector_core::gate::{Admit, Remembered};

use super::accept::{Accepted, Context, Replay, Submission};
use super::audit::{AccessQuery, AuditQuery, EventWindow, Holding, RemovalRow};
use super::events::StoredEvent;
use super::evidence::{SeenRow, SnapshotMeta};
use super::jobs::{AttemptError, Ending, Finish, Job, JobFilter, JobState, Moved, OpRecord, Retry};
use super::mail::MailMark;
use super::schedule::{Assignment, Fired, Planned, Removal};
use super::status::{StatusQuery, StatusRow};
use super::tasks::{NewTask, Overdue, Resolved, Task, TaskAnswer, TaskBrief, TaskFilter};
use super::triggers::{Answer, CallbackEnd, Invocation, TriggerEvent};
use super::upstream::{Health, Outcome, Pulled, Unwritten};
use super::{Result, StoreError};
use crate::model::{Snapshot, ValidRequest};

/// A store call in flight.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;
/// A store call in flight and what it answers.
pub type Fut<T> = BoxFuture<Result<T>>;

/// Who writes and when: the audit trail's actor (DESIGN §14) and the clock's reading
/// (ms). Every write an operator, agent or stage answers for carries one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp {
    pub actor: String,
    pub now: i64,
}

impl Stamp {
    pub fn new(actor: impl Into<String>, now: i64) -> Self {
        Stamp {
            actor: actor.into(),
            now,
        }
    }
}

/// What a claim asks for.
#[derive(Debug, Clone, Default)]
pub struct Claim {
    /// The lease owner written on the claimed jobs.
    pub owner: String,
    pub limit: usize,
    pub now: i64,
    pub lease_until: i64,
    /// Sources whose breaker is open: their jobs wait where they are.
    pub skip_sources: Vec<String>,
    /// Claim for this source only (a source's own lane of workers).
    pub only_source: Option<String>,
}

/// Provisioning jobs: claiming in due order under the lane rule, leases, and the end of
/// every attempt, guarded so that an agent that lost a job's lease writes nothing.
pub trait Queue: Send + Sync {
    fn job(&self, id: i64) -> Fut<Option<Job>>;
    fn jobs(&self, filter: JobFilter) -> Fut<Vec<Job>>;
    fn claim(&self, claim: Claim) -> Fut<Vec<Job>>;
    /// When the next queued or retrying job becomes due (ms), if any.
    fn next_due(&self) -> Fut<Option<i64>>;
    /// Group commit of attempt ends: one transaction, each end guarded on its own.
    fn finish_all(&self, items: Vec<Finish>) -> Fut<Vec<Result<()>>>;
    /// Extends the leases of running jobs (id, epoch) still held by `owner` to `until`;
    /// returns the ids no longer held (taken back, or ended elsewhere).
    fn renew(&self, owner: String, jobs: Vec<(i64, i64)>, until: i64) -> Fut<Vec<i64>>;
    /// Gives a running job back without spending its attempt.
    fn release(&self, job: Job, owner: String, now: i64) -> Fut<()>;
    /// Takes back leases that ran out (or, with `all_but`, every lease not held by it);
    /// `by`: the lease owner doing it (the audit trail's actor).
    fn expire_leases(&self, now: i64, all_but: Option<String>, by: String) -> Fut<Vec<Moved>>;
    /// Takes back at once the leases of earlier runs of agent `name` (owners `name#…`
    /// other than `me`): an agent that starts again under its name knows its former self
    /// is dead. (Names are unique per agent: DESIGN §12.)
    fn reclaim(&self, name: String, me: String, now: i64) -> Fut<Vec<Moved>>;
    /// (source, state, count) over all jobs.
    fn job_counts(&self) -> Fut<Vec<(String, JobState, i64)>>;
    /// `actor`: who cancels (DESIGN §14), as in the rest of these.
    fn cancel_job(&self, id: i64, reason: String, by: Stamp) -> Fut<Job>;
    fn cancel_request(&self, request_id: String, comment: String, by: Stamp) -> Fut<usize>;
    fn retry_job(&self, id: i64, retry: Retry, by: Stamp) -> Fut<Job>;

    /// One attempt that did everything it had to.
    fn succeed(&self, job: Job, owner: String, now: i64, ops: Vec<OpRecord>) -> Fut<()> {
        one(self.finish_all(vec![Finish {
            job,
            owner,
            now,
            ops,
            ending: Ending::Succeeded,
        }]))
    }

    /// One failed attempt: `retry_at` Some → `retrying`, None → `failed`.
    fn fail_attempt(
        &self,
        job: Job,
        owner: String,
        now: i64,
        error: AttemptError,
        retry_at: Option<i64>,
    ) -> Fut<()> {
        let ending = match retry_at {
            Some(at) => Ending::Retry { at, error },
            None => Ending::Failed {
                error,
                reason: String::new(),
            },
        };
        one(self.finish_all(vec![Finish {
            job,
            owner,
            now,
            ops: Vec::new(),
            ending,
        }]))
    }
}

fn one(all: Fut<Vec<Result<()>>>) -> Fut<()> {
    Box::pin(async move { all.await?.pop().unwrap_or(Ok(())) })
}

/// Requests: accepting one (snapshot, decision and writes in one transaction), replays by
/// idempotency key, and what the status surfaces read back.
pub trait Requests: Send + Sync {
    fn by_idempotency_key(&self, key: String) -> Fut<Option<Accepted>>;
    /// Stores valid requests, each decided by its `ctx.decide` against what its identities
    /// hold at that moment (after the requests before it in the batch), in one transaction;
    /// with its idempotency key already stored, a request's first answer instead. `Err`:
    /// nothing stored; an inner `Err`: that request not stored, the others stored.
    fn accept_all(&self, batch: Vec<Accept>) -> Fut<Vec<Result<Replay>>>;
    /// One request: [`Requests::accept_all`] of one.
    fn accept(&self, request: Accept) -> Fut<Replay> {
        let all = self.accept_all(vec![request]);
        Box::pin(async move {
            all.await?
                .pop()
                .unwrap_or_else(|| Err(StoreError::Backend("the store answered nothing".into())))
        })
    }
    /// What the identities hold now (for `provd plan`).
    fn snapshot(&self, identities: Vec<String>) -> Fut<Snapshot>;
    fn status(&self, q: StatusQuery) -> Fut<Vec<StatusRow>>;
    fn request_origin(&self, id: String) -> Fut<Option<String>>;
    fn request_exists(&self, id: String) -> Fut<bool>;
}

/// A claimed manual job to turn into open tasks.
#[derive(Debug, Clone)]
pub struct OpenTasks {
    pub job: Job,
    /// The agent holding the job's lease.
    pub owner: String,
    pub tasks: Vec<NewTask>,
    pub now: i64,
}

/// A request to store, with what deciding it needs.
pub struct Accept {
    pub request: ValidRequest,
    /// The body as received (kept for replays and audits).
    pub body: String,
    /// Who asked, and through which channel.
    pub requester: crate::model::Requester,
    pub idempotency_key: Option<String>,
    pub ctx: Context,
    pub now: Timestamp,
}

impl Accept {
    pub fn submission(&self) -> Submission<'_> {
        Submission {
            request: &self.request,
            body: &self.body,
            requester: &self.requester,
            idempotency_key: self.idempotency_key.as_deref(),
            ctx: &self.ctx,
            now: self.now,
            include: None,
        }
    }
}

/// Time-bound access: removeDates that come due, and the revokes they become.
pub trait Schedule: Send + Sync {
    /// Every assignment of `identity` (all when None), oldest first.
    fn assignments(&self, identity: Option<String>) -> Fut<Vec<Assignment>>;
    /// When the next removeDate is due (ms), if any.
    fn next_removal(&self) -> Fut<Option<i64>>;
    /// Phase 1: records up to `limit` due removals as fired.
    fn fire(&self, now: i64, limit: usize) -> Fut<Vec<Fired>>;
    /// Fired removals whose revoke is not planned yet (after a crash between the phases).
    fn unplanned(&self, limit: usize) -> Fut<Vec<Fired>>;
    /// Phase 2: plans each removal's revoke, in one transaction.
    fn plan_fired(&self, due: Vec<Removal>, ctx: Context, now: Timestamp) -> Fut<Vec<Planned>>;
}

/// Identities imported into the store and the accounts provd made for them.
pub trait Accounts: Send + Sync {
    /// One identity: [`Accounts::identities`] of one.
    fn identity(&self, id: String) -> Fut<Option<Identity>> {
        let all = self.identities(vec![id.clone()]);
        Box::pin(async move { Ok(all.await?.remove(&id)) })
    }
    /// The imported identities among `ids`.
    fn identities(&self, ids: Vec<String>) -> Fut<BTreeMap<String, Identity>>;
    fn identity_ids(&self) -> Fut<Vec<String>>;
    /// Stores identities as applied, all or nothing. `from_file`: they are rows of
    /// identities.csv as the agent applied them (the base its next edit is diffed
    /// against); false: imported or changed through the API, CLI or an upstream.
    fn import_identities(&self, ids: Vec<Identity>, from_file: bool, by: Stamp) -> Fut<usize>;
    /// The stored identities that are identities.csv's rows as last applied.
    fn file_identities(&self) -> Fut<BTreeMap<String, Identity>>;
    /// The identities whose account on `source` is `native_id`, compared as directories
    /// compare names (without regard to letter case).
    fn account_owners(&self, source: String, native_id: String) -> Fut<Vec<String>>;
    /// Per identity among `ids`, the sources it has an account on (made or being made).
    fn account_sources(&self, ids: Vec<String>) -> Fut<BTreeMap<String, BTreeSet<String>>>;
    /// The identity whose attribute `attr` is `value` (upstream correlation).
    fn identity_by_attribute(&self, attr: String, value: String) -> Fut<Option<String>>;
    /// The account's native id on a source, if provd knows it.
    fn native_id(&self, identity: String, source: String) -> Fut<Option<String>>;
}

/// Manual tasks for flat-file sources.
pub trait Tasks: Send + Sync {
    /// Turns claimed manual jobs into open tasks (each job then waits for its answers), in
    /// one transaction; an inner `Err` (the job's lease lost): nothing of that job written.
    fn open_tasks_all(&self, batch: Vec<OpenTasks>) -> Fut<Vec<Result<()>>>;
    /// One job: [`Tasks::open_tasks_all`] of one.
    fn open_tasks(&self, job: Job, owner: String, tasks: Vec<NewTask>, now: i64) -> Fut<()> {
        let all = self.open_tasks_all(vec![OpenTasks {
            job,
            owner,
            tasks,
            now,
        }]);
        Box::pin(async move { all.await?.pop().unwrap_or(Ok(())) })
    }
    fn tasks(&self, filter: TaskFilter) -> Fut<Vec<Task>>;
    fn open_task_count(&self) -> Fut<i64>;
    /// One answer: [`Tasks::resolve_tasks`] of one, its outcome the call's.
    fn resolve_task(
        &self,
        task: i64,
        resolution: String,
        resolved_by: String,
        note: String,
        now: i64,
    ) -> Fut<Resolved> {
        let answer = TaskAnswer {
            task,
            resolution,
            resolved_by,
            note,
        };
        let all = self.resolve_tasks(vec![answer], now);
        Box::pin(async move {
            all.await?
                .pop()
                .unwrap_or_else(|| Err(StoreError::Backend("the store answered nothing".into())))
        })
    }
    /// An imported file's answers, in one transaction; each row's own outcome.
    fn resolve_tasks(&self, rows: Vec<TaskAnswer>, now: i64) -> Fut<Vec<Result<Resolved>>>;
    fn task_brief(&self, task: i64) -> Fut<Option<TaskBrief>>;
    /// Open tasks of `source` created before `older_than` (ms).
    fn overdue_tasks(&self, source: String, older_than: i64) -> Fut<Vec<Overdue>>;
    /// What each owner was last mailed.
    fn mail_marks(&self) -> Fut<Vec<MailMark>>;
    fn set_mail_mark(&self, mark: MailMark, now: i64) -> Fut<()>;
}

/// (state, source, last error) of one job of a request.
pub type JobOutcome = (JobState, String, Option<String>);

/// Upstream governance services: checkpoints, what was pulled, what was written back.
pub trait Upstream: Send + Sync {
    fn upstream_cursor(&self, name: String) -> Fut<Option<String>>;
    fn set_upstream_cursor(&self, name: String, cursor: String, now: i64) -> Fut<()>;
    /// `error`: why the last poll failed; None: it succeeded (the upstream is healthy).
    fn set_upstream_health(&self, name: String, error: Option<String>, now: i64) -> Fut<()>;
    fn upstream_health(&self) -> Fut<Vec<Health>>;
    fn upstream_seen(&self, name: String, id: String) -> Fut<bool>;
    /// Records a pulled request and what became of it.
    fn record_upstream(&self, name: String, id: String, outcome: Outcome, now: i64) -> Fut<()>;
    /// Pulled requests with an outcome not written back yet.
    fn unwritten(&self, name: String) -> Fut<Vec<Unwritten>>;
    fn mark_written(&self, name: String, id: String, message: String, now: i64) -> Fut<()>;
    fn upstream_request(&self, id: String) -> Fut<Option<Pulled>>;
    /// (state, source, last error) of each job of a request.
    fn request_jobs(&self, request_id: String) -> Fut<Vec<JobOutcome>>;
}

/// The audit log: append-only events, read in id order; and what auditors ask of the
/// store (DESIGN §14).
pub trait Audit: Send + Sync {
    /// Assignments held, pending or being removed, by identity then age.
    fn holdings(&self, q: AccessQuery) -> Fut<Vec<Holding>>;
    /// Removals caused by removeDates due in [since, until), oldest first.
    fn removals(&self, since: i64, until: i64, limit: usize) -> Fut<Vec<RemovalRow>>;
    /// A page of events matching `q`, in id order after `q.after`.
    fn audit(&self, q: AuditQuery) -> Fut<Vec<StoredEvent>>;
    fn last_event_id(&self) -> Fut<i64>;
    /// Records a note (an identity's change, an unmanaged member removed); returns the
    /// event's id, the `cause` an identity change's requests carry.
    fn note(&self, note: super::rules::events::Note, by: Stamp) -> Fut<i64>;
    /// Up to `limit` events after `after`, oldest first.
    fn events_after(&self, after: i64, limit: usize) -> Fut<Vec<StoredEvent>> {
        self.events_between(EventWindow {
            after,
            upto: i64::MAX,
            not_by: None,
            limit,
        })
    }
    /// Events in (after, upto], leaving out those written by `not_by`.
    fn events_between(&self, window: EventWindow) -> Fut<Vec<StoredEvent>>;
}

/// Who holds a duty's leader lease.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Leader {
    pub holder: String,
    pub epoch: i64,
    pub expires_at: i64,
}

/// The duty every singleton task (firing removeDates and startDates, upstream polls,
/// overdue reminders) runs under.
pub const SINGLETON: &str = "singleton";

/// Leadership: one agent at a time does the work that must happen once. The lease row
/// fences its writes: the store refuses singleton writes (firing, planning removals,
/// upstream checkpoints) from a handle whose epoch is no longer the leader's.
pub trait Leadership: Send + Sync {
    /// Takes `duty` for `holder` until `until` when it is free, expired or already its
    /// own, and returns the epoch held (a new one when taken over); None when another
    /// agent holds it. This handle's singleton writes are fenced by that epoch.
    fn lead(&self, duty: String, holder: String, now: i64, until: i64) -> Fut<Option<i64>>;
    /// Gives the lease up (shutdown) so that another agent takes over at once.
    fn resign(&self, duty: String, holder: String) -> Fut<()>;
    fn leader(&self, duty: String) -> Fut<Option<Leader>>;
    /// Records that agent `name` is alive at `now`.
    fn seen(&self, name: String, now: i64) -> Fut<()>;
    /// Agents seen at or after `since`.
    fn agents(&self, since: i64) -> Fut<Vec<String>>;
}

/// The store itself: versions, health and integrity.
pub trait Admin: Send + Sync {
    /// (version on the store, newest this build knows).
    fn schema_version(&self) -> Fut<(i64, i64)>;
    /// Rows per table, for `provd store check` and a migration's verification.
    fn row_counts(&self) -> Fut<BTreeMap<&'static str, i64>>;
    fn ping(&self) -> Fut<()>;
    /// Does the store still take a committed write?
    fn probe_write(&self, now: i64) -> Fut<()>;
    /// Is there room for the store to grow?
    fn check_free_space(&self) -> Fut<()>;
    /// The backend's integrity check, run before the agent starts.
    fn quick_check(&self) -> Fut<()>;
    /// The store's own identity, drawn when it was created: a store deleted or replaced
    /// between two starts has another one.
    fn store_id(&self) -> Fut<String>;
    /// Refreshes the planner's statistics of provd's tables that changed by more than
    /// `share` of their rows since they were last analyzed; returns their names. The
    /// leader runs it: plans costed on stale statistics once stalled a whole backlog.
    fn analyze_stale(&self, share: f64) -> Fut<Vec<String>>;
    /// Is this agent the store's only user (SQLite, guarded by the state directory's
    /// lock)? Then start-up may take back every lease at once.
    fn exclusive(&self) -> bool;
    /// Where the store is, for people (a path or a URL without credentials).
    fn location(&self) -> String;
    /// How many write transactions can make progress at once: 1 on SQLite (one writer),
    /// the pool's size on PostgreSQL. Group commits keep that many groups under way.
    fn writers(&self) -> usize;
}

/// SailPoint trigger invocations and their callbacks (DESIGN §16).
pub trait Triggers: Send + Sync {
    /// Stores a new invocation (with its answer's audit event, when decided), or returns
    /// the one stored before under the same id.
    /// The second value: whether this call stored it (false: it was there before).
    fn record_invocation(&self, inv: Invocation, actor: String) -> Fut<(Invocation, bool)>;
    fn invocation(&self, id: String) -> Fut<Option<Invocation>>;
    /// Callbacks due at `now`, oldest first.
    fn due_invocations(&self, now: i64, limit: usize) -> Fut<Vec<Invocation>>;
    /// The answer of an invocation decided after it was stored.
    fn answer_invocation(&self, inv: Invocation, answer: Answer, by: Stamp) -> Fut<()>;
    fn retry_invocation(&self, id: String, next_at: i64, error: String) -> Fut<()>;
    /// `delivered` or `expired`, with its audit event; the sealed secret is dropped.
    fn finish_invocation(&self, inv: Invocation, end: CallbackEnd, by: Stamp) -> Fut<()>;
    /// An audit event of a trigger's own.
    fn trigger_event(&self, entry: TriggerEvent, by: Stamp) -> Fut<()>;
}

/// Evidence (DESIGN §17): account exports and read-backs, and what they showed.
pub trait Evidence: Send + Sync {
    /// (identity, native id) of every account provd knows on `source`.
    fn managed_accounts(&self, source: String) -> Fut<Vec<(String, String)>>;
    fn last_snapshot(&self, source: String) -> Fut<Option<SnapshotMeta>>;
    fn seen_accounts(&self, source: String) -> Fut<Vec<SeenRow>>;
    /// Stores a snapshot taken at `meta.taken_at` (replacing the source's seen accounts)
    /// and verifies the manual `tasks` against it, in one transaction; returns its id.
    fn record_snapshot(&self, meta: SnapshotMeta, rows: Vec<SeenRow>, tasks: Vec<i64>) -> Fut<i64>;
}

/// The credential gate's memory (DESIGN §24): per source, the last secret (by keyed
/// fingerprint) that failed to authenticate, how often, and the target's answer. Every
/// agent of the store and every start of one sees it; `gate::admit` is its rule.
pub trait Gates: Send + Sync {
    /// Decides a try with `fingerprint` on `source` at `now` by `gate::admit`, writing a
    /// claimed probe's time in the same transaction.
    fn gate_admit(&self, source: String, fingerprint: u64, now: i64) -> Fut<Admit>;
    /// Records a failed try (`gate::after_failure`).
    fn gate_failed(&self, source: String, fingerprint: u64, now: i64, answer: String) -> Fut<()>;
    /// Forgets the source's record (a good secret; `by` an operator's unblock, with its
    /// `source_unblocked` audit event when there was a record); whether there was one.
    fn gate_clear(&self, source: String, by: Option<Stamp>) -> Fut<bool>;
    /// The source's record, if any.
    fn gate_record(&self, source: String) -> Fut<Option<Remembered>>;
    /// The fingerprints' key for every agent of a shared store: `candidate` is stored
    /// unless a key is there, and the stored one returned. None: the store is one
    /// agent's (SQLite), whose key is a file in its state directory.
    fn gate_key(&self, candidate: Vec<u8>) -> Fut<Option<Vec<u8>>>;
}

/// Everything a store backend is.
pub trait Backend:
    Queue
    + Requests
    + Schedule
    + Accounts
    + Tasks
    + Upstream
    + Triggers
    + Evidence
    + Audit
    + Leadership
    + Admin
    + Gates
{
}

impl<T> Backend for T where
    T: Queue
        + Requests
        + Schedule
        + Accounts
        + Tasks
        + Upstream
        + Triggers
        + Evidence
        + Audit
        + Leadership
        + Admin
        + Gates
{
}
