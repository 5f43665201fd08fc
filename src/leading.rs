//! Whether this agent leads the work that must happen once (DESIGN §12). The election
//! runs in the daemon (`daemon/leader.rs`); the singleton loops (scheduler, upstream
//! pollers, reminders) only wait on this handle, so they need nothing from above them.

use tokio::sync::watch;

/// Whether this agent leads: singleton loops wait on it.
#[derive(Clone)]
pub struct Leading {
    rx: watch::Receiver<bool>,
    /// For [`Leading::always`]: the sender is kept so the channel never closes.
    _always: Option<std::sync::Arc<watch::Sender<bool>>>,
}

impl Leading {
    /// Always leading: a single agent, or a test.
    pub fn always() -> Self {
        let (tx, rx) = watch::channel(true);
        Self {
            rx,
            _always: Some(std::sync::Arc::new(tx)),
        }
    }

    pub fn now(&self) -> bool {
        *self.rx.borrow()
    }

    /// Returns once this agent leads (at once if it does).
    pub async fn wait(&mut self) {
        // A closed channel means the election stopped (shutdown): stay out.
        if self.rx.wait_for(|l| *l).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

impl From<watch::Receiver<bool>> for Leading {
    fn from(rx: watch::Receiver<bool>) -> Self {
        Self { rx, _always: None }
    }
}
