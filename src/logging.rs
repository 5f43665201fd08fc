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
