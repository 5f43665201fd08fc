//! The PostgreSQL backend: one database shared by any number of agents (DESIGN §12).
//! PostgreSQL is the distributed engine; provd replicates nothing itself. A pool of
//! connections per agent (deadpool); TLS through rustls when the URL's `sslmode` asks
//! for it (or allows it); the password from a file or the environment, never in the URL.

mod accept;
mod accept_rows;
mod accounts;
mod admin;
mod audit;
mod cells;
mod evidence;
mod finish;
mod gates;
mod leader;
mod queue;
mod requests;
mod rows;
mod schedule;
mod schema;
mod settle;
mod states;
mod tasks;
mod triggers;
mod upstream;

use std::path::PathBuf;
use std::sync::Arc;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use secrecy::{ExposeSecret, SecretString};
use tokio_postgres::config::SslMode;

use super::{Result, StoreError};

/// A log filter directive for the agent's log: the client logs every statement with its
/// parameters at debug level (request bodies, identities); its warnings stay.
pub const QUIET_LOGS: &str = "tokio_postgres=info";

/// How to reach the database (`[store]` in provd.toml).
#[derive(Debug, Clone)]
pub struct Settings {
    /// `postgres://user@host:port/db[?sslmode=…]`, without a password.
    pub url: String,
    pub password: Option<SecretString>,
    /// CA certificates (PEM) to trust for the server's certificate; the system's trust
    /// store otherwise.
    pub tls_ca_file: Option<PathBuf>,
    pub pool_size: usize,
}

/// An error with its causes (`db error` alone hides the server's message, which is what an
/// operator needs: `password authentication failed for user "provd"`).
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}

/// Whether PostgreSQL is out of reach or out of service (connection lost or refused,
/// shutting down, starting up, out of disk or connections) rather than refusing a
/// statement.
fn unreachable(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    match e.code() {
        Some(code) => {
            let c = code.code();
            c.starts_with("08") || c.starts_with("53") || c.starts_with("57P")
        }
        // No SQLSTATE: the connection or its I/O failed, or (not that) a value could
        // not be converted.
        None => {
            let io = std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>());
            let text = e.to_string();
            io || text.starts_with("error connecting")
                || text.starts_with("error performing TLS handshake")
                || text.contains("connection closed")
                || text.starts_with("timeout")
        }
    }
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        let text = format!("postgres: {}", chain(&e));
        let contention = e
            .code()
            .is_some_and(|c| matches!(c.code(), "40P01" | "40001" | "55P03"));
        if unreachable(&e) {
            StoreError::Unavailable(text)
        } else if contention {
            StoreError::Contention(text)
        } else {
            StoreError::Backend(text.into())
        }
    }
}

/// How many times a transaction PostgreSQL failed to break a deadlock is run again.
const CONTENTION_TRIES: u32 = 5;

/// Runs `f` (one whole transaction) again when PostgreSQL failed it to break a deadlock
/// or a serialization conflict: nothing of it was written, so the whole of it is tried
/// afresh after a short, jittered pause. Counted in `/metrics`, never logged per job.
pub(super) async fn retrying<T, F, Fut>(f: F) -> Result<T>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let mut tries = 0;
    loop {
        match f().await {
            Err(StoreError::Contention(_)) if tries + 1 < CONTENTION_TRIES => {
                tries += 1;
                crate::metrics::store_contention();
                let pause = 5 * u64::from(tries) + fastrand::u64(0..20);
                tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
            }
            r => return r,
        }
    }
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        // No connection could be had: the server is down, refusing, or full.
        StoreError::Unavailable(format!("postgres: {}", chain(&e)))
    }
}

/// The transaction every multi-statement write runs in (deadpool's: it caches prepared
/// statements per connection).
pub(super) type Tx<'a> = deadpool_postgres::Transaction<'a>;

/// A group commit: runs `$body` (a future over the savepoint `$sp` and the item `$item`)
/// for each of `$items` inside transaction `$tx`, each in a savepoint of its own, so an
/// item that fails leaves nothing behind and the others are committed all the same; one
/// `Result` per item. (A macro: a closure cannot return a future borrowing its argument.)
macro_rules! each_in_savepoint {
    ($tx:expr, $items:expr, |$sp:ident, $item:ident| $body:expr) => {{
        let mut out = Vec::with_capacity($items.len());
        for $item in $items.iter() {
            let $sp = $tx.transaction().await?;
            match $body.await {
                Ok(r) => {
                    $sp.commit().await?;
                    out.push(Ok(r));
                }
                Err(e) => {
                    $sp.rollback().await?;
                    out.push(Err(e));
                }
            }
        }
        out
    }};
}
pub(super) use each_in_savepoint;

pub(super) type Param<'a> = &'a (dyn tokio_postgres::types::ToSql + Sync);

/// Executes a hot statement, prepared once per connection: an unprepared one costs a
/// second round trip every time.
pub(super) async fn exec(tx: &Tx<'_>, sql: &str, params: &[Param<'_>]) -> Result<u64> {
    let st = tx.prepare_cached(sql).await?;
    Ok(tx.execute(&st, params).await?)
}

/// Queries with a statement prepared once per connection.
pub(super) async fn query(
    tx: &Tx<'_>,
    sql: &str,
    params: &[Param<'_>],
) -> Result<Vec<tokio_postgres::Row>> {
    let st = tx.prepare_cached(sql).await?;
    Ok(tx.query(&st, params).await?)
}

/// A parameter with its type, for a statement sent without a prepare step.
pub(super) type Typed<'a> = (Param<'a>, tokio_postgres::types::Type);

/// The rows of a statement planned for these arguments at each call (unnamed, in one
/// round trip), for a read whose good plan depends on how large its table is now: a plan
/// cached per connection was made once, maybe while the table was nearly empty, and a
/// scan that was cheap then costs milliseconds a call once the table holds thousands of
/// rows. Planning again costs tens of microseconds.
pub(super) async fn query_planned(
    tx: &Tx<'_>,
    sql: &str,
    params: &[Typed<'_>],
) -> Result<Vec<tokio_postgres::Row>> {
    Ok(tx.query_typed(sql, params).await?)
}

/// At most one row, of a statement prepared once per connection.
pub(super) async fn query_opt(
    tx: &Tx<'_>,
    sql: &str,
    params: &[Param<'_>],
) -> Result<Option<tokio_postgres::Row>> {
    let st = tx.prepare_cached(sql).await?;
    Ok(tx.query_opt(&st, params).await?)
}

fn config_error(what: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(format!("postgres: {what}").into())
}

#[derive(Clone)]
pub struct Postgres {
    pool: Pool,
    location: String,
    /// The leader lease this handle holds (holder, epoch), set by `lead`: singleton
    /// writes are made only while the lease row still says so.
    fence: Arc<std::sync::Mutex<Option<(String, i64)>>>,
}

impl std::fmt::Debug for Postgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Postgres")
            .field("location", &self.location)
            .finish()
    }
}

impl Postgres {
    /// Connects and brings the schema to this build's version (one agent at a time:
    /// migrations run under an advisory lock).
    pub async fn connect(s: &Settings) -> Result<Postgres> {
        let mut pg: tokio_postgres::Config = s
            .url
            .parse()
            .map_err(|e| config_error(format!("postgres_url: {e}")))?;
        if pg.get_password().is_some() {
            return Err(config_error(
                "postgres_url: must not hold a password; give password_file or password_env",
            ));
        }
        if let Some(p) = &s.password {
            pg.password(p.expose_secret());
        }
        pg.application_name("provd");
        // provd's statements are small and many: JIT-compiling one whose plan was costed
        // on missing statistics once took 187 of a settle's 211 ms.
        let options = match pg.get_options() {
            Some(o) if !o.is_empty() => format!("{o} -c jit=off"),
            _ => "-c jit=off".to_string(),
        };
        pg.options(&options);
        let location = location(&pg);
        let mgr_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let mgr = if pg.get_ssl_mode() == SslMode::Disable {
            Manager::from_config(pg, tokio_postgres::NoTls, mgr_config)
        } else {
            let tls = tokio_postgres_rustls::MakeRustlsConnect::new(tls_config(
                s.tls_ca_file.as_deref(),
            )?);
            Manager::from_config(pg, tls, mgr_config)
        };
        let pool = Pool::builder(mgr)
            .max_size(s.pool_size.max(1))
            .build()
            .map_err(config_error)?;
        let me = Postgres {
            pool,
            location,
            fence: Arc::new(std::sync::Mutex::new(None)),
        };
        me.migrate().await?;
        Ok(me)
    }

    pub(super) async fn client(&self) -> Result<Object> {
        Ok(self.pool.get().await?)
    }

    async fn migrate(&self) -> Result<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await?;
        // Any constant: agents starting together migrate one after the other.
        tx.execute("SELECT pg_advisory_xact_lock(7342001)", &[])
            .await?;
        // Created only when missing: IF NOT EXISTS would log a NOTICE at every start.
        let exists: Option<String> = tx
            .query_one("SELECT to_regclass('provd_schema')::TEXT", &[])
            .await?
            .get(0);
        if exists.is_none() {
            tx.batch_execute("CREATE TABLE provd_schema (version BIGINT NOT NULL)")
                .await?;
        }
        let found: Option<i64> = tx
            .query_opt("SELECT version FROM provd_schema", &[])
            .await?
            .map(|r| r.get(0));
        let version = found.unwrap_or(0);
        let known = schema::MIGRATIONS.len() as i64;
        if version > known {
            return Err(StoreError::TooNew {
                found: version,
                known,
            });
        }
        let migrated = version < known;
        for sql in schema::MIGRATIONS.iter().skip(version as usize) {
            tx.batch_execute(sql).await?;
        }
        if found.is_none() {
            tx.execute("INSERT INTO provd_schema (version) VALUES ($1)", &[&known])
                .await?;
        } else {
            tx.execute("UPDATE provd_schema SET version = $1", &[&known])
                .await?;
        }
        tx.commit().await?;
        if migrated {
            // New tables and indexes start without statistics: plans made on none have
            // been off by orders of magnitude (issue 31).
            self.analyze(&crate::store::TABLES).await?;
        }
        Ok(())
    }

    /// ANALYZE the named tables, one statement each (never inside a transaction).
    pub(super) async fn analyze(&self, tables: &[&str]) -> Result<()> {
        let c = self.client().await?;
        for t in tables {
            // The names come from provd's own list, never from outside.
            c.batch_execute(&format!("ANALYZE {t}")).await?;
        }
        Ok(())
    }
}

/// `postgres://user@host:port/db`, for logs and `store check`: never the password.
fn location(pg: &tokio_postgres::Config) -> String {
    let host = match pg.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => "localhost".into(),
    };
    let port = pg.get_ports().first().copied().unwrap_or(5432);
    format!(
        "postgres://{}@{host}:{port}/{}",
        pg.get_user().unwrap_or(""),
        pg.get_dbname().unwrap_or("")
    )
}

fn tls_config(ca_file: Option<&std::path::Path>) -> Result<rustls::ClientConfig> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| config_error(format!("tls_ca_file {}: {e}", path.display())))?;
            for cert in certs {
                let cert =
                    cert.map_err(|e| config_error(format!("tls_ca_file {}: {e}", path.display())))?;
                roots
                    .add(cert)
                    .map_err(|e| config_error(format!("tls_ca_file {}: {e}", path.display())))?;
            }
        }
        None => {
            // The system's trust store, as the LDAP connector uses; unreadable
            // certificates are skipped (the server's must still verify).
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(config_error)?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

#[cfg(test)]
mod contention_tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test]
    async fn a_transaction_failed_by_a_deadlock_is_run_again_whole() {
        let calls = AtomicU32::new(0);
        let out = retrying(|| async {
            match calls.fetch_add(1, Ordering::SeqCst) {
                0 | 1 => Err(StoreError::Contention("deadlock detected".into())),
                _ => Ok(7),
            }
        })
        .await;
        assert_eq!(out.ok(), Some(7));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        // Other errors are not retried; contention gives up after a few tries.
        calls.store(0, Ordering::SeqCst);
        let out: Result<()> = retrying(|| async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(StoreError::Contention("deadlock detected".into()))
        })
        .await;
        assert!(matches!(out, Err(StoreError::Contention(_))));
        assert_eq!(calls.load(Ordering::SeqCst), CONTENTION_TRIES);
        calls.store(0, Ordering::SeqCst);
        let out: Result<()> = retrying(|| async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(StoreError::Conflict("no".into()))
        })
        .await;
        assert!(out.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
