//! The credential gate's memory kept in the store (DESIGN §24): every connector's gate
//! decides from what every start of every agent recorded, so restarts and `provd check
//! --connect` never add binds with a secret that failed twice.
//!
//! Fingerprints are HMAC-SHA-256 under a key: the store's readable text never holds
//! something a service password can be checked against without the key. The key is the
//! shared store's (PostgreSQL: every agent computes the same fingerprint) or a file in
//! the state directory (SQLite: one agent).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hmac::{KeyInit, Mac};
use provd_connector_core::BoxFuture;
use provd_connector_core::gate::{Admit, GateMemory, Refused};
use secrecy::{ExposeSecret, SecretString};

use crate::clock::Clock;
use crate::store::Store;

/// The key file in the state directory (SQLite stores).
pub const KEY_FILE: &str = "gate.key";

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// The store-backed memory every connector's gate is given.
pub struct StoreMemory {
    store: Store,
    clock: Arc<dyn Clock>,
    key: Vec<u8>,
}

impl StoreMemory {
    /// The memory of `store`, its key read (or made) from the store or `state_dir`.
    pub async fn open(
        store: Store,
        clock: Arc<dyn Clock>,
        state_dir: &Path,
    ) -> Result<Arc<dyn GateMemory>, String> {
        let candidate = fresh_key()?;
        let key = match store
            .gate_key(candidate)
            .await
            .map_err(|e| format!("the credential gate's key: {e}"))?
        {
            Some(k) => k,
            None => file_key(&state_dir.join(KEY_FILE))?,
        };
        Ok(Arc::new(StoreMemory { store, clock, key }))
    }

    fn now(&self) -> i64 {
        self.clock.now().as_millisecond()
    }
}

fn fresh_key() -> Result<Vec<u8>, String> {
    let mut k = vec![0u8; 32];
    getrandom::fill(&mut k).map_err(|e| format!("no random key for the credential gate: {e}"))?;
    Ok(k)
}

/// Reads the key file, or makes it (owner-only) when there is none.
fn file_key(path: &PathBuf) -> Result<Vec<u8>, String> {
    let shown = path.display();
    if let Ok(k) = std::fs::read(path) {
        return if k.len() >= 16 {
            Ok(k)
        } else {
            Err(format!(
                "{shown}: too short for a key; delete it to have a new one made"
            ))
        };
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let key = fresh_key()?;
    // Made by `sudo provd check --connect`, the key is still the agent's to read.
    let owner = crate::ownership::of(path);
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(mut f) => {
            f.write_all(&key)
                .and_then(|()| f.sync_all())
                .and_then(|()| crate::ownership::hand_over(path, owner))
                .map_err(|e| format!("{shown}: {e}"))?;
            Ok(key)
        }
        // Another process made it first: its key is the one.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            std::fs::read(path).map_err(|e| format!("{shown}: {e}"))
        }
        Err(e) => Err(format!("{shown}: {e}")),
    }
}

impl GateMemory for StoreMemory {
    fn fingerprint(&self, secret: &SecretString) -> u64 {
        let Ok(mut mac) = HmacSha256::new_from_slice(&self.key) else {
            return provd_connector_core::gate::fingerprint(secret);
        };
        mac.update(secret.expose_secret().as_bytes());
        let out = mac.finalize().into_bytes();
        let mut first = [0u8; 8];
        first.copy_from_slice(&out[..8]);
        u64::from_be_bytes(first)
    }

    fn admit<'a>(
        &'a self,
        source: &'a str,
        fingerprint: u64,
    ) -> BoxFuture<'a, Result<(), Refused>> {
        Box::pin(async move {
            match self
                .store
                .gate_admit(source.to_string(), fingerprint, self.now())
                .await
            {
                Ok(Admit::Go | Admit::Probe) => Ok(()),
                Ok(Admit::Refuse(r)) => Err(r),
                Err(e) => {
                    tracing::warn!(source, error = %e, "credential gate's memory unreadable: not trying");
                    Err(Refused {
                        failures: 0,
                        last: format!("the credential gate's memory could not be read: {e}"),
                        too_soon: true,
                    })
                }
            }
        })
    }

    fn failed<'a>(
        &'a self,
        source: &'a str,
        fingerprint: u64,
        answer: &'a str,
    ) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let now = self.now();
            if let Err(e) = self
                .store
                .gate_failed(source.to_string(), fingerprint, now, answer.to_string())
                .await
            {
                tracing::warn!(source, error = %e, "failed authentication not recorded");
            }
        })
    }

    fn succeeded<'a>(&'a self, source: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            if let Err(e) = self.store.gate_clear(source.to_string(), None).await {
                tracing::warn!(source, error = %e, "credential gate's record not cleared");
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_file_is_made_once_and_kept_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state").join(KEY_FILE);
        let k = file_key(&path).unwrap();
        assert_eq!(k.len(), 32);
        assert_eq!(file_key(&path).unwrap(), k);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "{mode:o}");
        std::fs::write(&path, b"short").unwrap();
        assert!(file_key(&path).unwrap_err().contains("too short"));
    }
}
