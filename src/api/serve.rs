//! The API's accept loop. axum's own `serve` has neither a cap on connections nor a
//! timeout for a request's headers, so 1,100 idle half-sent requests once held every
//! slot and every spare file descriptor (the spool could not open files). Here a
//! connection needs a permit to be accepted (the rest wait in the kernel's backlog,
//! costing no descriptor), and hyper drops a client that has not sent its headers in time.
//! One address may hold only so many of the permits: 2,000 idle clients reconnecting from
//! one host once left real clients waiting (7 of 11 requests failed in 40 s).

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// How the API protects itself from slow or numerous clients (`[api]` keys).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    /// Connections one peer address may hold at once; more are closed at accept.
    pub max_connections_per_peer: usize,
    pub header_read_timeout: Duration,
}

/// Connections open per peer address.
#[derive(Default)]
struct Peers(Mutex<HashMap<IpAddr, usize>>);

/// One connection counted against its peer until it ends.
struct PeerSlot {
    peers: Arc<Peers>,
    ip: IpAddr,
}

impl Peers {
    /// A slot for `ip`, unless it holds `max` already.
    fn take(self: &Arc<Self>, ip: IpAddr, max: usize) -> Option<PeerSlot> {
        let mut m = self.0.lock().ok()?;
        let n = m.entry(ip).or_default();
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(PeerSlot {
            peers: self.clone(),
            ip,
        })
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        if let Ok(mut m) = self.peers.0.lock()
            && let Some(n) = m.get_mut(&self.ip)
        {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

/// How long open connections get to finish their requests at shutdown.
const DRAIN: Duration = Duration::from_secs(5);

/// Serves `app` on `listener` until `stop` resolves, then lets open requests finish
/// (at most [`DRAIN`]).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    stop: impl Future<Output = ()>,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let peers = Arc::new(Peers::default());
    let mut refused = crate::logging::Throttle::default();
    let graceful = GracefulShutdown::new();
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    tokio::pin!(stop);
    let mut warned_full = false;
    loop {
        let permit = match permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                if !warned_full {
                    tracing::warn!(
                        max_connections = limits.max_connections,
                        "API at its connection limit; new connections wait"
                    );
                    warned_full = true;
                }
                tokio::select! {
                    p = permits.clone().acquire_owned() => match p {
                        Ok(p) => p,
                        Err(_) => break,
                    },
                    () = &mut stop => break,
                }
            }
        };
        if permits.available_permits() > limits.max_connections / 2 {
            warned_full = false;
        }
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(accepted) => accepted,
                Err(e) => {
                    // EMFILE and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "API accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let Some(slot) = peers.take(peer.ip(), limits.max_connections_per_peer) else {
            // Closed at once: one host cannot take the slots everyone else needs.
            let now = jiff::Timestamp::now().as_millisecond();
            if let Some(unlogged) = refused.note(now) {
                tracing::warn!(peer = %peer.ip(), max_connections_per_peer = limits.max_connections_per_peer,
                    unlogged_since_last = unlogged, "API connection refused: too many from one address");
            }
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let conn =
            http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone()));
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "API connection ended with an error");
            }
            drop(slot);
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("API connections still open after the drain period; closing them");
    }
}
