//! A small pool of bound connections per source: no socket per job, and a dropped
//! connection is replaced on the next use.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ldap3::{Ldap, LdapConnAsync, LdapConnSettings};
use provd_connector_core::ConnectorError;
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::{from_ldap, from_result};

pub struct Pool {
    url: String,
    settings: LdapConnSettings,
    bind_dn: String,
    password: SecretString,
    connect_timeout: Duration,
    idle: Mutex<Vec<Ldap>>,
    slots: Arc<Semaphore>,
}

/// A connection on loan; give it back with [`Conn::release`] when it is still good.
pub struct Conn {
    pub ldap: Ldap,
    pub reused: bool,
    _permit: OwnedSemaphorePermit,
}

impl Pool {
    pub fn new(
        url: String,
        settings: LdapConnSettings,
        bind_dn: String,
        password: SecretString,
        connect_timeout: Duration,
        size: usize,
    ) -> Self {
        Self {
            url,
            settings,
            bind_dn,
            password,
            connect_timeout,
            idle: Mutex::new(Vec::new()),
            slots: Arc::new(Semaphore::new(size.max(1))),
        }
    }

    /// A bound connection: an idle one if there is one, else a new one.
    pub async fn get(&self) -> Result<Conn, ConnectorError> {
        let permit = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| ConnectorError::permanent(None, "connection pool closed"))?;
        loop {
            let next = self.idle.lock().ok().and_then(|mut v| v.pop());
            match next {
                Some(mut ldap) => {
                    if !ldap.is_closed() {
                        return Ok(Conn {
                            ldap,
                            reused: true,
                            _permit: permit,
                        });
                    }
                }
                None => break,
            }
        }
        let ldap = self.connect().await?;
        Ok(Conn {
            ldap,
            reused: false,
            _permit: permit,
        })
    }

    /// Puts a healthy connection back for the next operation.
    pub fn release(&self, conn: Conn) {
        if let Ok(mut idle) = self.idle.lock() {
            idle.push(conn.ldap);
        }
    }

    /// Drops every idle connection (after the server went away).
    pub fn clear(&self) {
        if let Ok(mut idle) = self.idle.lock() {
            idle.clear();
        }
    }

    async fn connect(&self) -> Result<Ldap, ConnectorError> {
        let settings = self.settings.clone().set_conn_timeout(self.connect_timeout);
        let (conn, mut ldap) = LdapConnAsync::with_settings(settings, &self.url)
            .await
            .map_err(|e| from_ldap("connect", e))?;
        tokio::spawn(async move {
            if let Err(e) = conn.drive().await {
                tracing::debug!(error = %e, "LDAP connection closed");
            }
        });
        let bound = tokio::time::timeout(
            self.connect_timeout,
            ldap.simple_bind(&self.bind_dn, self.password.expose_secret()),
        )
        .await
        .map_err(|_| ConnectorError::retryable(Some("timeout".into()), "bind: no answer in time"))?
        .map_err(|e| from_ldap("bind", e))?;
        if bound.rc != 0 {
            return Err(from_result("bind", &bound));
        }
        Ok(ldap)
    }
}
