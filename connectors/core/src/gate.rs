//! Lockout safety: at most two failed authentications with one secret.
//!
//! A directory locks an account after a few bad passwords (AD: often 5 in a window). A
//! connector that binds on every new connection and every breaker probe with a wrong
//! service password used to lock the service account in ~20 s. The gate lets the first
//! authentication with a secret not yet known to be good go alone (no concurrent binds),
//! lets one more try (a probe) at least [`PROBE_AFTER`] after a failure, and then refuses
//! to try that secret again: only a changed secret (the file was rewritten) or a reload
//! (a new connector, a new gate) opens it again.
//!
//! A process's memory ends with it, and restarting is an operator's first remedy: three
//! restarts spent three more binds and locked the account (issue 34). A gate given a
//! [`GateMemory`] (the store, DESIGN §24) decides from what every process recorded, and
//! only a changed secret or `provd sources unblock` opens it again.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex, OnceLock};
use std::time::{Duration, Instant};

use secrecy::{ExposeSecret, SecretString};
use tokio::sync::{Mutex, MutexGuard};

use crate::connector::BoxFuture;

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

/// Where failed authentications are remembered beyond one process: every agent sharing
/// it, and every start of one, sees the same count.
pub trait GateMemory: Send + Sync {
    /// The secret's keyed fingerprint: the same in every process sharing the memory,
    /// useless to guess the secret from without the key.
    fn fingerprint(&self, secret: &SecretString) -> u64;
    /// May `source` try the secret `fingerprint` now? Decided by [`admit`] on the record;
    /// a probe is claimed (its time written) so that no other process probes with it. A
    /// memory that cannot be read refuses, as too soon: no try goes uncounted.
    fn admit<'a>(&'a self, source: &'a str, fingerprint: u64)
    -> BoxFuture<'a, Result<(), Refused>>;
    /// A try failed with `answer` (the target's code and text, scrubbed).
    fn failed<'a>(
        &'a self,
        source: &'a str,
        fingerprint: u64,
        answer: &'a str,
    ) -> BoxFuture<'a, ()>;
    /// The secret authenticated: the record is cleared.
    fn succeeded<'a>(&'a self, source: &'a str) -> BoxFuture<'a, ()>;
}

/// What a memory holds for a source: the last secret that failed, and how often.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remembered {
    pub fingerprint: u64,
    pub failures: u32,
    /// When it last failed, or a probe of it was claimed (ms since the epoch).
    pub at_ms: i64,
    pub last: String,
}

/// What a memory's record says of a try with one secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admit {
    /// Not known to fail: go ahead, nothing to write.
    Go,
    /// It failed once, long enough ago: go ahead, after writing `at_ms` = now.
    Probe,
    Refuse(Refused),
}

/// The gate's rule over a remembered record, the same for every memory.
pub fn admit(record: Option<&Remembered>, fingerprint: u64, now_ms: i64) -> Admit {
    let Some(r) = record.filter(|r| r.fingerprint == fingerprint) else {
        return Admit::Go;
    };
    let refused = |too_soon| {
        Admit::Refuse(Refused {
            failures: r.failures,
            last: r.last.clone(),
            too_soon,
        })
    };
    if r.failures >= MAX_FAILED {
        refused(false)
    } else if now_ms.saturating_sub(r.at_ms) < PROBE_AFTER.as_millis() as i64 {
        refused(true)
    } else {
        Admit::Probe
    }
}

/// The record after a try with `fingerprint` failed.
pub fn after_failure(
    record: Option<&Remembered>,
    fingerprint: u64,
    now_ms: i64,
    answer: &str,
) -> Remembered {
    let before = record
        .filter(|r| r.fingerprint == fingerprint)
        .map_or(0, |r| r.failures);
    Remembered {
        fingerprint,
        failures: before + 1,
        at_ms: now_ms,
        last: answer.to_string(),
    }
}

/// A memory and the source it keeps a gate's record under.
type Memory = (Arc<dyn GateMemory>, String);

/// One source's gate.
pub struct CredentialGate {
    state: Mutex<State>,
    /// The fingerprint of the secret that last authenticated (0: none).
    verified: AtomicU64,
    memory: OnceLock<Memory>,
}

impl std::fmt::Debug for CredentialGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialGate")
            .field("remembered", &self.memory.get().map(|m| &m.1))
            .finish_non_exhaustive()
    }
}

impl Default for CredentialGate {
    fn default() -> Self {
        Self {
            state: Mutex::new(State::Unknown),
            verified: AtomicU64::new(0),
            memory: OnceLock::new(),
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
        if self.failures == 0 {
            write!(f, "not tried: {}", self.last)
        } else if self.too_soon {
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
    memory: Option<&'a Memory>,
}

impl Attempt<'_> {
    pub async fn succeeded(mut self) {
        *self.guard = State::Unknown;
        self.verified.store(self.fingerprint, Ordering::SeqCst);
        if let Some((m, source)) = self.memory {
            m.succeeded(source).await;
        }
    }

    pub async fn failed(mut self, now: Instant, answer: &str) {
        if let Some((m, source)) = self.memory {
            m.failed(source, self.fingerprint, answer).await;
        }
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
    /// Keeps this gate's record in `memory` under `source` (once; later calls are
    /// ignored: a reload builds a new gate).
    pub fn remember(&self, memory: Arc<dyn GateMemory>, source: &str) {
        let _ = self.memory.set((memory, source.to_string()));
    }

    /// The fingerprint the gate knows `secret` by: the memory's keyed one when there is
    /// a memory.
    pub fn fingerprint(&self, secret: &SecretString) -> u64 {
        match self.memory.get() {
            Some((m, _)) => m.fingerprint(secret).max(1),
            None => fingerprint(secret),
        }
    }

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
        let memory = self.memory.get();
        if let Some((m, source)) = memory {
            // The memory decides (an operator's unblock clears it, not this process's
            // count); the lock held keeps this process's tries one at a time.
            m.admit(source, fingerprint).await?;
            return Ok(Some(Attempt {
                guard,
                fingerprint,
                verified: &self.verified,
                memory,
            }));
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
            memory: None,
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
            memory: self.memory.get(),
        }
        .failed(now, answer)
        .await;
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
            .failed(t0, "49 data 52e")
            .await;
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
            .failed(later, "49 data 52e")
            .await;
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
        g.enter(good, later)
            .await
            .unwrap()
            .unwrap()
            .succeeded()
            .await;
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
        first.succeeded().await;
        assert_eq!(
            second.await.unwrap(),
            Ok(true),
            "then goes ahead without the gate"
        );
    }

    #[test]
    fn a_remembered_secret_gets_one_probe_after_a_while_then_none() {
        let r1 = after_failure(None, 7, 1_000, "49 data 52e");
        assert_eq!((r1.failures, r1.at_ms), (1, 1_000));
        let soon = admit(Some(&r1), 7, 1_000 + 29_999);
        assert!(matches!(
            soon,
            Admit::Refuse(Refused { too_soon: true, .. })
        ));
        assert_eq!(admit(Some(&r1), 7, 31_000), Admit::Probe);
        let r2 = after_failure(Some(&r1), 7, 31_000, "49 data 52e");
        assert_eq!(r2.failures, 2);
        let never = admit(Some(&r2), 7, i64::MAX);
        assert!(matches!(
            never,
            Admit::Refuse(Refused {
                failures: 2,
                too_soon: false,
                ..
            })
        ));
        // Another secret is not the one that failed: it goes, and counts afresh.
        assert_eq!(admit(Some(&r2), 8, 31_001), Admit::Go);
        assert_eq!(after_failure(Some(&r2), 8, 31_001, "x").failures, 1);
        assert_eq!(admit(None, 7, 0), Admit::Go);
    }

    /// A memory in a map, as the store keeps it: shared by gates, outliving each.
    #[derive(Default)]
    struct Shared(StdMutex<Option<Remembered>>, std::sync::atomic::AtomicI64);

    impl GateMemory for Shared {
        fn fingerprint(&self, secret: &SecretString) -> u64 {
            fingerprint(secret)
        }
        fn admit<'a>(&'a self, _: &'a str, fp: u64) -> BoxFuture<'a, Result<(), Refused>> {
            let now = self.1.load(Ordering::SeqCst);
            let mut r = self.0.lock().unwrap();
            let out = match admit(r.as_ref(), fp, now) {
                Admit::Go => Ok(()),
                Admit::Probe => {
                    if let Some(r) = r.as_mut() {
                        r.at_ms = now;
                    }
                    Ok(())
                }
                Admit::Refuse(e) => Err(e),
            };
            Box::pin(async move { out })
        }
        fn failed<'a>(&'a self, _: &'a str, fp: u64, answer: &'a str) -> BoxFuture<'a, ()> {
            let now = self.1.load(Ordering::SeqCst);
            let mut r = self.0.lock().unwrap();
            *r = Some(after_failure(r.as_ref(), fp, now, answer));
            Box::pin(async {})
        }
        fn succeeded<'a>(&'a self, _: &'a str) -> BoxFuture<'a, ()> {
            *self.0.lock().unwrap() = None;
            Box::pin(async {})
        }
    }

    #[tokio::test]
    async fn a_new_gate_on_the_same_memory_does_not_try_again() {
        let memory = Arc::new(Shared::default());
        let bad = fingerprint(&SecretString::from("wrong"));
        let mut at = 0;
        for start in 0..4 {
            // A restart: a new gate, the same memory.
            let g = CredentialGate::default();
            g.remember(memory.clone(), "ad");
            at += PROBE_AFTER.as_millis() as i64;
            memory.1.store(at, Ordering::SeqCst);
            match g.enter(bad, Instant::now()).await {
                Ok(a) => a.unwrap().failed(Instant::now(), "49 data 52e").await,
                Err(e) => assert!(start >= 2 && !e.too_soon, "start {start}: {e}"),
            }
        }
        assert_eq!(memory.0.lock().unwrap().as_ref().unwrap().failures, 2);
        // The operator unblocks (the memory is cleared): one more try.
        *memory.0.lock().unwrap() = None;
        let g = CredentialGate::default();
        g.remember(memory.clone(), "ad");
        assert!(g.enter(bad, Instant::now()).await.unwrap().is_some());
    }
}
