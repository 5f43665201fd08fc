//! systemd's watchdog: `WATCHDOG=1` is sent at half of `WATCHDOG_USEC`, but only while the
//! dispatcher and scheduler loops are actually turning — each beats on every pass, and a
//! loop that has not beaten for a while (stuck on a lock, a hung call) stops the pings, so
//! systemd restarts the agent. Every ping also carries a `STATUS=` line with the queue.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::store::Store;
use crate::store::jobs::JobState;

/// The last beat of each loop, in ms since `start`.
pub struct Liveness {
    start: Instant,
    dispatch: AtomicU64,
    schedule: AtomicU64,
}

impl Liveness {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            start: Instant::now(),
            dispatch: AtomicU64::new(0),
            schedule: AtomicU64::new(0),
        })
    }

    fn now(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    pub fn beat_dispatch(&self) {
        self.dispatch.store(self.now(), Ordering::Relaxed);
    }

    pub fn beat_schedule(&self) {
        self.schedule.store(self.now(), Ordering::Relaxed);
    }

    /// Have both loops beaten within `within`?
    pub fn alive(&self, within: Duration) -> bool {
        let now = self.now();
        let ok = |t: &AtomicU64| {
            now.saturating_sub(t.load(Ordering::Relaxed)) <= within.as_millis() as u64
        };
        ok(&self.dispatch) && ok(&self.schedule)
    }
}

/// The `STATUS=` text: what an operator sees in `systemctl status provd`.
async fn status(store: &Store) -> String {
    let counts = store.job_counts().await.unwrap_or_default();
    let n = |states: &[JobState]| {
        counts
            .iter()
            .filter(|(_, s, _)| states.contains(s))
            .map(|(_, _, n)| n)
            .sum::<i64>()
    };
    format!(
        "queue depth {}, running {}, waiting on manual tasks {}",
        n(&[JobState::Queued, JobState::Retrying]),
        n(&[JobState::Running]),
        n(&[JobState::Manual])
    )
}

/// Pings the watchdog (if systemd asked for one) and updates STATUS= until `stop`.
pub async fn run(live: Arc<Liveness>, store: Store, stop: impl Future<Output = ()>) {
    tokio::pin!(stop);
    let watchdog = sd_notify::watchdog_enabled();
    let every = watchdog.map_or(Duration::from_secs(5), |w| w / 2);
    // Both loops beat at least every second when idle; allow a few missed passes.
    let stale = watchdog.map_or(Duration::from_secs(10), |w| {
        (w / 2).max(Duration::from_secs(3))
    });
    let mut warned = false;
    loop {
        let text = status(&store).await;
        let alive = live.alive(stale);
        let mut states = vec![sd_notify::NotifyState::Status(&text)];
        if watchdog.is_some() && alive {
            states.push(sd_notify::NotifyState::Watchdog);
        }
        if !alive && !warned {
            tracing::error!(
                stale_ms = stale.as_millis() as u64,
                "a core loop has stopped turning: watchdog pings withheld"
            );
        }
        warned = !alive;
        let _ = sd_notify::notify(&states);
        tokio::select! {
            _ = &mut stop => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}
