//! Group commit, generically: callers hand items one by one to a worker task that takes
//! everything waiting as one batch (one transaction, one fsync) and answers each caller
//! once the batch is done. It never waits for company: a lone item goes at once, and
//! items that arrive while a batch is being written form the next one, so under load
//! batches grow by themselves exactly as fast as the store can take them (DESIGN §18).
//!
//! Used for accepting requests (`intake`) and for opening manual tasks (`dispatch`).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// What a batch does: one answer per item, in the items' order.
pub trait Work: Send + Sync + 'static {
    type Item: Send + 'static;
    type Out: Send + 'static;
    fn run(&self, items: Vec<Self::Item>) -> BoxFuture<Vec<Self::Out>>;
}

type Pending<W> = (<W as Work>::Item, oneshot::Sender<<W as Work>::Out>);

/// The way to the worker. The task is started on first use, on that caller's runtime, and
/// again if that runtime has gone (a CLI command's, a test's).
pub struct Batcher<W: Work> {
    work: Arc<W>,
    /// At most this many items in one batch: a batch's items all wait for its end, so an
    /// unbounded batch would make the first of them wait for the last.
    max: usize,
    /// At most this many batches under way at once. Two let the next batch be written
    /// while the last one is still being synced to disk.
    depth: usize,
    worker: Mutex<Option<mpsc::UnboundedSender<Pending<W>>>>,
}

/// The worker went away before answering (its runtime shut down mid-batch): the item may
/// or may not have been written.
#[derive(Debug, thiserror::Error)]
#[error("the batch worker stopped before answering")]
pub struct Stopped;

impl<W: Work> Batcher<W> {
    pub fn new(work: W, max: usize, depth: usize) -> Self {
        Self {
            work: Arc::new(work),
            max: max.max(1),
            depth: depth.max(1),
            worker: Mutex::new(None),
        }
    }

    /// Runs `item` in the next batch; its answer once that batch is done.
    pub async fn call(&self, item: W::Item) -> Result<W::Out, Stopped> {
        let (answer, answered) = oneshot::channel();
        let mut pending = (item, answer);
        for _ in 0..2 {
            match self.sender().send(pending) {
                Ok(()) => break,
                // A worker whose runtime has shut down hands the item back: start another.
                Err(mpsc::error::SendError(p)) => {
                    pending = p;
                    if let Ok(mut w) = self.worker.lock() {
                        *w = None;
                    }
                }
            }
        }
        answered.await.map_err(|_| Stopped)
    }

    fn sender(&self) -> mpsc::UnboundedSender<Pending<W>> {
        // A poisoned lock only means another caller panicked while holding it; the
        // sender inside is still good.
        let mut w = self.worker.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = w.as_ref().filter(|s| !s.is_closed()) {
            return s.clone();
        }
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(self.work.clone(), self.max, self.depth, rx));
        *w = Some(tx.clone());
        tx
    }
}

/// Runs batches until every sender is gone, at most `depth` at a time.
async fn run<W: Work>(
    work: Arc<W>,
    max: usize,
    depth: usize,
    mut queue: mpsc::UnboundedReceiver<Pending<W>>,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(depth));
    loop {
        // A slot first: while all are taken, items keep arriving and the batch grows.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let Some(first) = queue.recv().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < max {
            match queue.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let work = work.clone();
        tokio::spawn(async move {
            let (items, answers): (Vec<W::Item>, Vec<_>) = batch.into_iter().unzip();
            let outs = work.run(items).await;
            for (answer, out) in answers.into_iter().zip(outs) {
                // A caller that went away (a client disconnected) is written all the same.
                let _ = answer.send(out);
            }
            drop(slot);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Doubles each item; records batch sizes; holds each batch until released.
    struct Double {
        sizes: Arc<Mutex<Vec<usize>>>,
        gate: Arc<tokio::sync::Semaphore>,
        runs: Arc<AtomicUsize>,
    }

    impl Work for Double {
        type Item = u32;
        type Out = u32;
        fn run(&self, items: Vec<u32>) -> BoxFuture<Vec<u32>> {
            let (sizes, gate, runs) = (self.sizes.clone(), self.gate.clone(), self.runs.clone());
            Box::pin(async move {
                runs.fetch_add(1, Ordering::SeqCst);
                if let Ok(p) = gate.acquire().await {
                    p.forget();
                }
                sizes.lock().unwrap().push(items.len());
                items.into_iter().map(|i| i * 2).collect()
            })
        }
    }

    #[tokio::test]
    async fn items_that_wait_behind_a_batch_go_together_and_each_gets_its_answer() {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let runs = Arc::new(AtomicUsize::new(0));
        let b = Arc::new(Batcher::new(
            Double {
                sizes: sizes.clone(),
                gate: gate.clone(),
                runs: runs.clone(),
            },
            3,
            1,
        ));
        let first = tokio::spawn({
            let b = b.clone();
            async move { b.call(1).await.unwrap() }
        });
        // The first batch (item 1 alone) is running; five more arrive behind it.
        while runs.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        let rest: Vec<_> = (2..=6)
            .map(|i| {
                let b = b.clone();
                tokio::spawn(async move { b.call(i).await.unwrap() })
            })
            .collect();
        for _ in 0..5 {
            tokio::task::yield_now().await;
        }
        gate.add_permits(10);
        assert_eq!(first.await.unwrap(), 2);
        let mut got = Vec::new();
        for r in rest {
            got.push(r.await.unwrap());
        }
        assert_eq!(got, [4, 6, 8, 10, 12]);
        // At most `max` per batch, and the five waiting ones did not go one by one.
        let sizes = sizes.lock().unwrap().clone();
        assert_eq!(sizes.iter().sum::<usize>(), 6);
        assert!(sizes.iter().all(|&s| s <= 3), "{sizes:?}");
        assert!(sizes.len() <= 3, "{sizes:?}");
    }

    #[test]
    fn a_worker_whose_runtime_ended_is_replaced() {
        let b = Batcher::new(
            Double {
                sizes: Arc::default(),
                gate: Arc::new(tokio::sync::Semaphore::new(100)),
                runs: Arc::default(),
            },
            8,
            2,
        );
        for i in 0..2 {
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            assert_eq!(rt.block_on(b.call(i)).unwrap(), i * 2);
        }
    }
}
