//! Logs go to stderr as key/value fields: text on a terminal, one JSON object per line
//! otherwise (journald, files) or always with `log.format = "json"`.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

pub fn init(format: Option<LogFormat>, level: &str) {
    let filter = EnvFilter::try_from_env("PROVD_LOG").unwrap_or_else(|_| EnvFilter::new(level));
    // The store's database client logs every statement with its parameters at debug
    // level: request bodies and identities, never for the agent's own log.
    let filter = match crate::store::postgres::QUIET_LOGS.parse() {
        Ok(d) => filter.add_directive(d),
        Err(_) => filter,
    };
    // DESIGN §9: text when stderr is a terminal, JSON otherwise or with format = "json".
    // "text" (or unset) therefore still gives JSON lines under systemd or in a file.
    let json = format == Some(LogFormat::Json) || !std::io::stderr().is_terminal();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init()
    } else {
        builder.try_init()
    };
}

/// One line per this many milliseconds at most for an unavailable store.
const STORE_DOWN_LOG_EVERY_MS: i64 = 10_000;

static STORE_DOWN: std::sync::Mutex<Throttle> =
    std::sync::Mutex::new(Throttle::new(STORE_DOWN_LOG_EVERY_MS));

/// Logs an unavailable store at most once per 10 s for the whole agent, with how many
/// failures went unlogged since: PostgreSQL down would otherwise log ~10 lines a second
/// from every loop. Returns false, logging nothing, when `e` is another kind of error
/// (the caller logs that as before).
pub fn store_unavailable(e: &crate::store::StoreError) -> bool {
    if !e.is_unavailable() {
        return false;
    }
    throttled_store_error(e);
    true
}

/// The throttled line itself.
pub fn throttled_store_error(e: &crate::store::StoreError) {
    let now = jiff::Timestamp::now().as_millisecond();
    let logged = STORE_DOWN.lock().ok().and_then(|mut l| l.note(now));
    if let Some(unlogged) = logged {
        tracing::error!(error = %e, unlogged_since_last = unlogged, "the store is unavailable");
    }
}

/// At most one log line per period for a failure that repeats (refused tokens, a store
/// that is down), counting the ones left out.
#[derive(Debug)]
pub struct Throttle {
    every_ms: i64,
    last_ms: Option<i64>,
    suppressed: u64,
}

impl Default for Throttle {
    fn default() -> Self {
        Self::new(STORE_DOWN_LOG_EVERY_MS)
    }
}

impl Throttle {
    pub const fn new(every_ms: i64) -> Self {
        Self {
            every_ms,
            last_ms: None,
            suppressed: 0,
        }
    }

    /// A failure at `now_ms`: `Some(n)` when it should be logged, `n` being how many were
    /// left unlogged since the last line.
    pub fn note(&mut self, now_ms: i64) -> Option<u64> {
        match self.last_ms {
            Some(last) if now_ms - last < self.every_ms => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last_ms = Some(now_ms);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}
