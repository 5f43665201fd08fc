//! Jobs on manual sources, handed to their owners as tasks. A manual job needs no
//! connector call, so under load hundreds are ready at once: their tasks are opened in
//! batches (one transaction for all jobs waiting, see [`crate::batch`]), not one
//! transaction a job.

use super::Dispatcher;
use crate::batch::{Batcher, BoxFuture, Work};
use crate::clock::to_ms;
use std::sync::Arc;

use crate::store::roles::{OpenTasks, Tasks};
use crate::store::{Job, StoreError};

/// At most this many jobs' tasks in one transaction.
const MAX_BATCH: usize = 256;

pub(super) type Opener = Batcher<Opening>;

/// `writers`: how many write transactions the store runs at once (one batch each).
pub(super) fn opener(store: Arc<dyn Tasks>, writers: usize) -> Opener {
    Batcher::new(Opening { store }, MAX_BATCH, writers)
}

pub(super) struct Opening {
    store: Arc<dyn Tasks>,
}

impl Work for Opening {
    type Item = OpenTasks;
    type Out = Result<(), StoreError>;

    fn run(&self, items: Vec<OpenTasks>) -> BoxFuture<Vec<Self::Out>> {
        let store = self.store.clone();
        Box::pin(async move {
            let n = items.len();
            match store.open_tasks_all(items).await {
                Ok(outs) => outs,
                Err(e) => e.for_each_of(n).into_iter().map(Err).collect(),
            }
        })
    }
}

impl Dispatcher {
    pub(super) async fn to_manual(
        &self,
        job: Job,
        source: &crate::config::Source,
    ) -> Result<(), StoreError> {
        let me = &self.inner;
        let now = me.clock.now();
        let tasks = crate::tasks::for_job(&job, source, job.account.as_deref(), now);
        let count = tasks.len();
        let open = OpenTasks {
            job: job.clone(),
            owner: me.owner.clone(),
            tasks,
            now: to_ms(now),
        };
        me.opener
            .call(open)
            .await
            .map_err(|e| StoreError::Backend(e.to_string().into()))??;
        crate::metrics::attempt(&job.source, "manual");
        tracing::info!(request_id = %job.request_id, job_id = job.id, source = %job.source, identity = %job.identity_id,
            state = "manual", attempt = job.attempt, tasks = count, owner = %source.owner, actor = %crate::model::agent_actor(&me.owner), "job waits on manual tasks");
        Ok(())
    }
}
