//! Lockout safety: at most two failed authentications with one secret.
//!
//! A directory locks an account after a few bad passwords (AD: often 5 in a window). A
//! connector that binds on every new connection and every breaker probe with a wrong
//! service password used to lock the service account in ~20 s. The gate lets the first
//! authentication with a secret not yet known to be good go alone (no concurrent binds),
//! lets one more try (a probe) at least [`PROBE_AFTER`] after a failure, and then refuses
//! to try that secret again: only a changed secret (the file was rewritten) or a reload
//! (a new connector, a new gate) opens it again.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::PathBuf;
use std::sync::Mutex as StdMutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use secrecy::{ExposeSecret, SecretString};
use tokio::sync::{Mutex, MutexGuard};

/// Failed authentications allowed with one unchanged secret: the first and one probe.
pub const MAX_FAILED: u32 = 2;

/// The probe comes no sooner than this after the first failure.
pub const PROBE_AFTER: Duration = Duration::from_secs(30);

/// A secret's fingerprint (never logged; compared in memory only).
pub fn fingerprint(secret: &SecretString) -> u64 {
    let mut h = DefaultHasher::new();
    secret.expose_secret().hash(&mut h);
    // 0 means "none verified".
    h.finish().max(1)
}

/// A credential, and where it came from: a file is read again after a failed
/// authentication, so that an operator who fixes the file is noticed without a reload.
pub struct Secret {
    file: Option<PathBuf>,
    current: StdMutex<SecretString>,
}

impl Secret {
    pub fn new(value: SecretString, file: Option<PathBuf>) -> Self {
        Self {
            file,
            current: StdMutex::new(value),
        }
    }

    pub fn get(&self) -> SecretString {
        self.current
            .lock()
            .map(|c| c.clone())
            .unwrap_or_else(|_| SecretString::from(String::new()))
    }

    /// Reads the file again (if there is one and it is readable) and returns the value.
    pub fn reread(&self) -> SecretString {
        if let Some(f) = &self.file
            && let Ok(text) = std::fs::read_to_string(f)
            && let Ok(mut c) = self.current.lock()
        {
            *c = SecretString::from(text.lines().next().unwrap_or("").to_string());
        }
        self.get()
    }
}

/// The current value, re-read first if `gate` has seen a failure.
pub fn current(secret: &Secret, gate: &CredentialGate) -> SecretString {
    if gate.has_failed() {
        secret.reread()
    } else {
        secret.get()
    }
}

#[derive(Debug, Clone)]
enum State {
    Unknown,
    Failed {
        fingerprint: u64,
        count: u32,
        at: Instant,
        /// What the target said the last time (AD's `data 775`: locked).
        last: String,
    },
}

/// One source's gate.
#[derive(Debug)]
pub struct CredentialGate {
    state: Mutex<State>,
    /// The fingerprint of the secret that last authenticated (0: none).
    verified: AtomicU64,
}

impl Default for CredentialGate {
    fn default() -> Self {
        Self {
            state: Mutex::new(State::Unknown),
            verified: AtomicU64::new(0),
        }
    }
}

/// Why the gate did not let an authentication through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub failures: u32,
    /// The target's answer to the last failed try.
    pub last: String,
    /// Whether it is only too soon for the probe (it will be allowed later).
    pub too_soon: bool,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.too_soon {
            write!(
                f,
                "not tried again yet: the credentials failed {} time(s) less than {}s ago ({})",
                self.failures,
                PROBE_AFTER.as_secs(),
                self.last
            )
        } else {
            write!(
                f,
                "not tried again: the credentials failed {} times ({}); waiting for the secret to change or a reload, so that no lockout threshold is reached",
                self.failures, self.last
            )
        }
    }
}

/// Permission to authenticate alone; say how it went with [`Attempt::succeeded`] or
/// [`Attempt::failed`]. Dropped without either (the connection broke first), nothing
/// is recorded.
pub struct Attempt<'a> {
    guard: MutexGuard<'a, State>,
    fingerprint: u64,
    verified: &'a AtomicU64,
}

impl Attempt<'_> {
    pub fn succeeded(mut self) {
        *self.guard = State::Unknown;
        self.verified.store(self.fingerprint, Ordering::SeqCst);
    }

    pub fn failed(mut self, now: Instant, answer: &str) {
        let count = match &*self.guard {
            State::Failed {
                fingerprint, count, ..
            } if *fingerprint == self.fingerprint => count + 1,
            _ => 1,
        };
        *self.guard = State::Failed {
            fingerprint: self.fingerprint,
            count,
            at: now,
            last: answer.to_string(),
        };
        self.verified.store(0, Ordering::SeqCst);
    }
}

impl CredentialGate {
    /// Before authenticating with the secret `fingerprint`: `Ok(None)` when that secret is
    /// known good (go ahead, concurrently), `Ok(Some(attempt))` to go ahead alone and
    /// report, `Err` not to try.
    pub async fn enter(
        &self,
        fingerprint: u64,
        now: Instant,
    ) -> Result<Option<Attempt<'_>>, Refused> {
        if self.verified.load(Ordering::SeqCst) == fingerprint {
            return Ok(None);
        }
        let guard = self.state.lock().await;
        // Another task may have verified it while this one waited.
        if self.verified.load(Ordering::SeqCst) == fingerprint {
            return Ok(None);
        }
        if let State::Failed {
            fingerprint: failed,
            count,
            at,
            last,
        } = &*guard
            && *failed == fingerprint
        {
            if *count >= MAX_FAILED {
                return Err(Refused {
                    failures: *count,
                    last: last.clone(),
                    too_soon: false,
                });
            }
            if now.duration_since(*at) < PROBE_AFTER {
                return Err(Refused {
                    failures: *count,
                    last: last.clone(),
                    too_soon: true,
                });
            }
        }
        Ok(Some(Attempt {
            guard,
            fingerprint,
            verified: &self.verified,
        }))
    }

    /// Has a try failed since the last success? (Then a secret file is worth re-reading.)
    pub fn has_failed(&self) -> bool {
        self.state
            .try_lock()
            .map(|s| matches!(*s, State::Failed { .. }))
            .unwrap_or(true)
    }

    /// A secret that was known good failed outside an [`Attempt`] (a request on an open
    /// connection): from now on tries go through the gate again.
    pub async fn failed_unguarded(&self, fingerprint: u64, now: Instant, answer: &str) {
        let guard = self.state.lock().await;
        Attempt {
            guard,
            fingerprint,
            verified: &self.verified,
        }
        .failed(now, answer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn two_failures_with_one_secret_then_none_until_it_changes() {
        let g = CredentialGate::default();
        let t0 = Instant::now();
        let bad = fingerprint(&SecretString::from("wrong"));
        g.enter(bad, t0)
            .await
            .unwrap()
            .unwrap()
            .failed(t0, "49 data 52e");
        // Too soon for the probe.
        let e = g
            .enter(bad, t0 + Duration::from_secs(1))
            .await
            .err()
            .unwrap();
        assert!(e.too_soon);
        let later = t0 + PROBE_AFTER;
        g.enter(bad, later)
            .await
            .unwrap()
            .unwrap()
            .failed(later, "49 data 52e");
        // However long it waits: no third try with that secret.
        let e = g
            .enter(bad, later + Duration::from_secs(86_400))
            .await
            .err()
            .unwrap();
        assert_eq!((e.failures, e.too_soon), (2, false));
        assert!(e.to_string().contains("data 52e"));
        // A changed secret goes through, alone, and once good, concurrently.
        let good = fingerprint(&SecretString::from("right"));
        g.enter(good, later).await.unwrap().unwrap().succeeded();
        assert!(g.enter(good, later).await.unwrap().is_none());
        assert!(!g.has_failed());
    }

    #[tokio::test]
    async fn the_first_try_is_alone() {
        let g = std::sync::Arc::new(CredentialGate::default());
        let fp = fingerprint(&SecretString::from("s"));
        let first = g.enter(fp, Instant::now()).await.unwrap().unwrap();
        let g2 = g.clone();
        let second =
            tokio::spawn(async move { g2.enter(fp, Instant::now()).await.map(|a| a.is_none()) });
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
        assert!(
            !second.is_finished(),
            "a second bind waits for the first's answer"
        );
        first.succeeded();
        assert_eq!(
            second.await.unwrap(),
            Ok(true),
            "then goes ahead without the gate"
        );
    }
}
