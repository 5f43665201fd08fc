//! A small pool of bound connections per source: no socket per job, and a dropped
//! connection is replaced on the next use.
//!
//! LDAP lets a client send several operations on one connection before the first answer
//! comes back (RFC 4511 §3.1, message ids); each connection carries up to `pipeline` at
//! once, so the server always has the next operation waiting while provd records the
//! last — a connection used strictly one operation at a time sits idle for a round trip
//! and provd's own bookkeeping after every answer.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ldap3::{Ldap, LdapConnAsync, LdapConnSettings};
use provd_connector_core::ConnectorError;
use provd_connector_core::gate::{CredentialGate, Secret};
use provd_connector_core::redact::Redactor;
use secrecy::ExposeSecret;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::{from_ldap, from_result};

pub struct Pool {
    url: String,
    settings: LdapConnSettings,
    bind_dn: String,
    secret: Secret,
    /// At most two failed binds with one password (see `provd_connector_core::gate`).
    gate: CredentialGate,
    /// The connector's redactor: a password re-read from its file is added to it.
    redactor: Arc<Redactor>,
    connect_timeout: Duration,
    /// One entry per connection; `None` until (re)connected. The async lock makes one
    /// task connect while the others sharing that connection wait for it.
    conns: Vec<tokio::sync::Mutex<Option<Ldap>>>,
    /// Free lanes: `pool_size × pipeline` of them, lane `k` on connection `k % pool_size`.
    free: Mutex<Vec<usize>>,
    slots: Arc<Semaphore>,
}

/// An operation lane on loan; give it back with [`Pool::release`] when it is still good.
pub struct Conn {
    pub ldap: Ldap,
    pub reused: bool,
    lane: usize,
    _permit: OwnedSemaphorePermit,
}

/// Who the pool binds as.
pub struct Bind {
    pub dn: String,
    pub secret: Secret,
    /// The connector's redactor: a password re-read from its file is added to it.
    pub redactor: Arc<Redactor>,
}

impl Pool {
    pub fn new(
        url: String,
        settings: LdapConnSettings,
        bind: Bind,
        connect_timeout: Duration,
        size: usize,
        pipeline: usize,
    ) -> Self {
        let size = size.max(1);
        let lanes = size * pipeline.max(1);
        Self {
            url,
            settings,
            bind_dn: bind.dn,
            secret: bind.secret,
            gate: CredentialGate::default(),
            redactor: bind.redactor,
            connect_timeout,
            conns: (0..size).map(|_| tokio::sync::Mutex::new(None)).collect(),
            // Popped from the end: the first lanes taken are on different connections.
            free: Mutex::new((0..lanes).collect()),
            slots: Arc::new(Semaphore::new(lanes)),
        }
    }

    /// Keeps the bind gate's failures in `memory` (see `Connector::remember_failures`).
    pub fn remember_failures(
        &self,
        memory: std::sync::Arc<dyn provd_connector_core::gate::GateMemory>,
        source: &str,
    ) {
        self.gate.remember(memory, source);
    }

    /// A lane on a bound connection: an open one if there is one, else a new one.
    pub async fn get(&self) -> Result<Conn, ConnectorError> {
        let permit = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| ConnectorError::permanent(None, "connection pool closed"))?;
        let lane = self
            .free
            .lock()
            .ok()
            .and_then(|mut f| f.pop())
            .ok_or_else(|| {
                ConnectorError::permanent(None, "connection pool lost track of its lanes")
            })?;
        let result = self.connection(lane % self.conns.len()).await;
        match result {
            Ok((ldap, reused)) => Ok(Conn {
                ldap,
                reused,
                lane,
                _permit: permit,
            }),
            Err(e) => {
                self.give_back(lane);
                Err(e)
            }
        }
    }

    async fn connection(&self, index: usize) -> Result<(Ldap, bool), ConnectorError> {
        let Some(slot) = self.conns.get(index) else {
            return Err(ConnectorError::permanent(None, "no such connection"));
        };
        let mut slot = slot.lock().await;
        if let Some(ldap) = slot.as_mut()
            && !ldap.is_closed()
        {
            return Ok((ldap.clone(), true));
        }
        let ldap = self.connect().await?;
        *slot = Some(ldap.clone());
        Ok((ldap, false))
    }

    fn give_back(&self, lane: usize) {
        if let Ok(mut free) = self.free.lock() {
            free.push(lane);
        }
    }

    /// Gives a lane back for the next operation.
    pub fn release(&self, conn: Conn) {
        self.give_back(conn.lane);
    }

    /// Forgets the lane's connection (it failed; the next use connects anew) and gives
    /// the lane back. Operations in flight on it fail on their own and come here too.
    pub fn clear(&self, conn: Conn) {
        if let Some(slot) = self.conns.get(conn.lane % self.conns.len())
            && let Ok(mut s) = slot.try_lock()
        {
            *s = None;
        }
        self.give_back(conn.lane);
    }

    async fn connect(&self) -> Result<Ldap, ConnectorError> {
        let reread = self.gate.has_failed();
        let password = provd_connector_core::gate::current(&self.secret, &self.gate);
        if reread {
            self.redactor.add_issued(&password);
        }
        let fp = self.gate.fingerprint(&password);
        // Not verified yet: this bind goes alone; refused: no bind at all.
        let attempt = self
            .gate
            .enter(fp, Instant::now())
            .await
            .map_err(|refused| {
                ConnectorError::permanent(Some("49".into()), format!("bind: {refused}"))
                    .auth_failure()
            })?;
        let settings = self.settings.clone().set_conn_timeout(self.connect_timeout);
        let (conn, mut ldap) = LdapConnAsync::with_settings(settings, &self.url)
            .await
            .map_err(|e| {
                let peer = provd_connector_core::redact::safe_url(&self.url);
                from_ldap(&format!("connect to {peer}"), e)
            })?;
        tokio::spawn(async move {
            if let Err(e) = conn.drive().await {
                tracing::debug!(error = %e, "LDAP connection closed");
            }
        });
        let bound = tokio::time::timeout(
            self.connect_timeout,
            ldap.simple_bind(&self.bind_dn, password.expose_secret()),
        )
        .await
        .map_err(|_| ConnectorError::retryable(Some("timeout".into()), "bind: no answer in time"))?
        .map_err(|e| from_ldap("bind", e))?;
        match bound.rc {
            0 => {
                if let Some(a) = attempt {
                    a.succeeded().await;
                }
                Ok(ldap)
            }
            49 => {
                let e = from_result("bind", &bound);
                // Kept in the store: scrubbed like any answer that leaves the connector.
                let answer = self
                    .redactor
                    .redact(&format!("{} {}", bound.rc, bound.text));
                match attempt {
                    Some(a) => a.failed(Instant::now(), &answer).await,
                    None => {
                        self.gate
                            .failed_unguarded(fp, Instant::now(), &answer)
                            .await
                    }
                }
                // The code only: the server's text goes out through the connector, scrubbed.
                tracing::warn!(bind_dn = %self.bind_dn, code = bound.rc, locked = bound.text.contains("data 775"), "LDAP bind refused");
                Err(e)
            }
            _ => Err(from_result("bind", &bound)),
        }
    }
}
