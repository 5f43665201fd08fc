//! Manual tasks on PostgreSQL (same rules as SQLite's `store/tasks.rs`).

use super::{Postgres, Tx};
use crate::store::jobs::JobState;
use crate::store::mail::MailMark;
use crate::store::roles::{Fut, OpenTasks, Tasks};
use crate::store::rules::manual::{self, Answer, TaskRow};
use crate::store::rules::operator::guarded;
use crate::store::rules::states::parse_stored;
use crate::store::tasks::{
    OPEN_TASK_CONFLICT, Overdue, Resolved, Task, TaskAnswer, TaskBrief, TaskFilter,
};
use crate::store::{Result, StoreError};

fn task(r: &tokio_postgres::Row) -> Task {
    Task {
        id: r.get(0),
        source: r.get(1),
        owner: r.get(2),
        identity_id: r.get(3),
        identity_name: r.get(4),
        operation: r.get(5),
        account: r.get(6),
        attribute: r.get(7),
        value: r.get(8),
        request_id: r.get(9),
        created_at: r.get(10),
        due_at: r.get(11),
        status: r.get(12),
        resolution: r.get(13),
        resolved_by: r.get(14),
        note: r.get(15),
        requester: r.get(16),
        ticket: r.get(17),
        remove_at: r.get(18),
        resolved_at: r.get(19),
        verified_at: r.get(20),
    }
}

pub(super) async fn resolve_in(tx: &Tx<'_>, a: &TaskAnswer, now: i64) -> Result<Resolved> {
    let (task, resolution, resolved_by, note) = (
        a.task,
        a.resolution.as_str(),
        a.resolved_by.as_str(),
        a.note.as_str(),
    );
    manual::task_status(resolution)?;
    // One lock order with cancel and the job's other writers: the job's row first, then
    // its task's. The job's row also keeps two answers to the last two tasks of one job
    // from both seeing the other still open when they count. (Task, then job: a cancel
    // holding the job and waiting for its tasks deadlocked with an answer.)
    let job = tx
        .query_opt("SELECT job_id FROM tasks WHERE id = $1", &[&task])
        .await?;
    if let Some(job) = job {
        let job: i64 = job.get(0);
        tx.execute("SELECT 1 FROM jobs WHERE id = $1 FOR UPDATE", &[&job])
            .await?;
    }
    let row = tx
        .query_opt(
            "SELECT status, job_id, request_id, source, identity_id FROM tasks WHERE id = $1 FOR UPDATE",
            &[&task],
        )
        .await?
        .map(|r| {
            Ok::<_, StoreError>(TaskRow {
                status: parse_stored(r.get(0), format_args!("T{task}"))?,
                job_id: r.get(1),
                request_id: r.get(2),
                source: r.get(3),
                identity: r.get(4),
            })
        })
        .transpose()?;
    let (status, data) = match manual::answer(task, row.as_ref(), resolution, resolved_by, note)? {
        Answer::AlreadySo => return Ok(Resolved::AlreadySo),
        Answer::Close { status, data } => (status, data),
    };
    let Some(row) = row else {
        return Err(StoreError::NotFound(format!("no task T{task}")));
    };
    let n = tx
        .execute(
            "UPDATE tasks SET status = $1, resolution = $2, resolved_by = $3, note = $4, resolved_at = $5
             WHERE id = $6 AND status = 'open'",
            &[&status.as_str(), &resolution, &resolved_by, &note, &now, &task],
        )
        .await?;
    guarded(n, || manual::answer_raced(task))?;
    let e = manual::task_resolved(&row, data, resolved_by);
    super::audit::append(tx, now, &e).await?;
    let job_id = row.job_id;
    let open: i64 = tx
        .query_one(
            "SELECT COUNT(*) FROM tasks WHERE job_id = $1 AND status = 'open'",
            &[&job_id],
        )
        .await?
        .get(0);
    let job_state = match manual::job_after_answer(task, status, open, resolved_by, note, now) {
        Some(v) => super::settle::finish_manual(tx, job_id, v, now, resolved_by).await?,
        None => JobState::Manual,
    };
    Ok(Resolved::Applied {
        job: job_id,
        job_state,
    })
}

impl Tasks for Postgres {
    fn open_tasks_all(&self, batch: Vec<OpenTasks>) -> Fut<Vec<Result<()>>> {
        let me = self.clone();
        Box::pin(async move {
            let mut c = me.client().await?;
            let mut tx = c.transaction().await?;
            let out = super::each_in_savepoint!(tx, batch, |sp, o| open_in(&sp, o));
            tx.commit().await?;
            Ok(out)
        })
    }

    fn tasks(&self, f: TaskFilter) -> Fut<Vec<Task>> {
        let me = self.clone();
        Box::pin(async move {
            let c = me.client().await?;
            let rows = c
                .query(
                    "SELECT id, source, owner, identity_id, identity_name, operation, account, attribute, value, request_id,
                            created_at, due_at, status, resolution, resolved_by, note,
                            (SELECT COALESCE(r.requester, r.origin) FROM requests r WHERE r.id = tasks.request_id),
                            (SELECT ri.client_metadata::jsonb ->> 'ticket' FROM item_jobs ij JOIN request_items ri ON ri.id = ij.item_id
                              WHERE ij.job_id = tasks.job_id AND ri.client_metadata::jsonb ? 'ticket' LIMIT 1),
                            (SELECT a.remove_at FROM item_jobs ij JOIN request_items ri ON ri.id = ij.item_id
                              JOIN assignments a ON a.id = ri.assignment_id
                              WHERE ij.job_id = tasks.job_id AND a.remove_at IS NOT NULL LIMIT 1),
                            resolved_at, verified_at
                     FROM tasks WHERE ($1::TEXT IS NULL OR source = $1) AND ($2::TEXT IS NULL OR owner = $2)
                       AND (NOT $3 OR status = 'open') AND ($4::BIGINT IS NULL OR id = $4)
                       AND ($5::BIGINT IS NULL OR (status = 'done' AND verified_at IS NULL AND resolved_at <= $5))
                     ORDER BY created_at, id",
                    &[&f.source, &f.owner, &f.open_only, &f.id, &f.unverified_before],
                )
                .await?;
            Ok(rows.iter().map(task).collect())
        })
    }

    fn open_task_count(&self) -> Fut<i64> {
        let me = self.clone();
        Box::pin(async move {
            let c = me.client().await?;
            Ok(
                c.query_one("SELECT COUNT(*) FROM tasks WHERE status = 'open'", &[])
                    .await?
                    .get(0),
            )
        })
    }

    fn resolve_tasks(&self, rows: Vec<TaskAnswer>, now: i64) -> Fut<Vec<Result<Resolved>>> {
        let me = self.clone();
        Box::pin(async move {
            let mut out = Vec::with_capacity(rows.len());
            let mut c = me.client().await?;
            for chunk in rows.chunks(1000) {
                let mut tx = c.transaction().await?;
                for a in chunk {
                    // A row that cannot apply is answered in its place; the others go on.
                    let sp = tx.savepoint("answer").await?;
                    match resolve_in(&sp, a, now).await {
                        Ok(done) => {
                            sp.commit().await?;
                            out.push(Ok(done));
                        }
                        Err(e @ (StoreError::Conflict(_) | StoreError::NotFound(_))) => {
                            sp.rollback().await?;
                            out.push(Err(e));
                        }
                        Err(e) => return Err(e),
                    }
                }
                tx.commit().await?;
            }
            Ok(out)
        })
    }

    fn task_brief(&self, task: i64) -> Fut<Option<TaskBrief>> {
        let me = self.clone();
        Box::pin(async move {
            let c = me.client().await?;
            let row = c
                .query_opt("SELECT source, owner FROM tasks WHERE id = $1", &[&task])
                .await?;
            Ok(row.map(|r| TaskBrief {
                source: r.get(0),
                owner: r.get(1),
            }))
        })
    }

    fn overdue_tasks(&self, source: String, older_than: i64) -> Fut<Vec<Overdue>> {
        let me = self.clone();
        Box::pin(async move {
            let c = me.client().await?;
            let rows = c
                .query(
                    "SELECT owner, COUNT(*), MIN(created_at), array_agg(id ORDER BY created_at, id) FROM tasks
                     WHERE status = 'open' AND source = $1 AND created_at <= $2 GROUP BY owner ORDER BY owner",
                    &[&source, &older_than],
                )
                .await?;
            Ok(rows
                .iter()
                .map(|r| Overdue {
                    source: source.clone(),
                    owner: r.get(0),
                    count: r.get(1),
                    oldest_created: r.get(2),
                    tasks: r.get(3),
                })
                .collect())
        })
    }

    fn mail_marks(&self) -> Fut<Vec<MailMark>> {
        let me = self.clone();
        Box::pin(async move {
            let c = me.client().await?;
            let rows = c
                .query(
                    "SELECT owner, announced_through, announced_at, digest_on FROM mail_state ORDER BY owner",
                    &[],
                )
                .await?;
            Ok(rows
                .iter()
                .map(|r| MailMark {
                    owner: r.get(0),
                    announced_through: r.get(1),
                    announced_at: r.get(2),
                    digest_on: r.get(3),
                })
                .collect())
        })
    }

    fn set_mail_mark(&self, m: MailMark, now: i64) -> Fut<()> {
        let me = self.clone();
        Box::pin(async move {
            let c = me.client().await?;
            c.execute(
                "INSERT INTO mail_state (owner, announced_through, announced_at, digest_on, updated_at)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (owner) DO UPDATE SET announced_through = $2, announced_at = $3, digest_on = $4, updated_at = $5",
                &[&m.owner, &m.announced_through, &m.announced_at, &m.digest_on, &now],
            )
            .await?;
            Ok(())
        })
    }
}

/// Moves one claimed manual job to `manual` and opens its tasks (inside the caller's
/// transaction), guarded on the job's lease.
async fn open_in(tx: &Tx<'_>, o: &OpenTasks) -> Result<()> {
    let (job, owner, tasks, now) = (&o.job, &o.owner, &o.tasks, o.now);
    let n = tx
        .execute(
            "UPDATE jobs SET state = 'manual', lease_owner = NULL, lease_expires_at = NULL, updated_at = $1
             WHERE id = $2 AND state = 'running' AND lease_owner = $3 AND lease_epoch = $4",
            &[&now, &job.id, &owner, &job.lease_epoch],
        )
        .await?;
    if n == 0 {
        return Err(StoreError::Conflict(format!(
            "job {} is no longer leased to this agent",
            job.id
        )));
    }
    let mut opened: Vec<i64> = Vec::new();
    for t in tasks {
        let row = tx
            .query_opt(
                &format!("INSERT INTO tasks (job_id, op_index, source, owner, identity_id, identity_name, operation,
                    account, attribute, value, request_id, created_at, due_at, status, renamed_to)
                 VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,'open',$14) {OPEN_TASK_CONFLICT}"),
                &[
                    &job.id,
                    &(t.op_index as i64),
                    &job.source,
                    &t.owner,
                    &job.identity_id,
                    &t.identity_name,
                    &t.operation,
                    &t.account,
                    &t.attribute,
                    &t.value,
                    &job.request_id,
                    &now,
                    &t.due_at,
                    &t.renamed_to,
                ],
            )
            .await?;
        opened.extend(row.map(|r| r.get::<_, i64>(0)));
    }
    let actor = crate::model::agent_actor(owner);
    let owner = tasks.first().map(|t| t.owner.as_str());
    super::audit::append(tx, now, &manual::tasks_opened(job, &opened, owner, &actor)).await?;
    Ok(())
}
