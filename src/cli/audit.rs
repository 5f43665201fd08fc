//! The auditor's commands (DESIGN §14): `tokens add|list|revoke`, `access list`,
//! `access removals`, `audit`. They read the store directly, agent running or not.

use std::io::Write;

use secrecy::ExposeSecret;

use super::commands::{failed, open, print_json};
use super::{AccessCommand, CliError, Command, TokensCommand};
use crate::api::token_file::{self, TokenError};
use crate::audit::{Format, access, table, trail, write_csv};
use crate::clock::rfc3339_ms;
use crate::clock::{Clock, SystemClock, to_ms};
use crate::config::Config;
use crate::store::audit::{AccessQuery, AuditQuery};
use crate::store::jobs::JobFilter;
use crate::store::status::StatusQuery;
use crate::store::upstream::Pulled;
use crate::tasks::csv_out::escape_cell;

fn token_err(e: TokenError) -> CliError {
    match e {
        TokenError::Usage(m) => CliError::Invalid(m),
        TokenError::Invalid { .. } | TokenError::Empty { .. } => CliError::Invalid(e.to_string()),
        TokenError::Io { .. } => failed(e),
    }
}

pub(super) fn tokens(config: &Config, cmd: &TokensCommand) -> Result<(), CliError> {
    let path = &config.api.tokens_file;
    match cmd {
        TokensCommand::Add { name, scope } => {
            let scopes = if scope.is_empty() {
                crate::api::auth::Scopes::All
            } else {
                crate::api::auth::Scopes::parse_list(&scope.join(","))
                    .map_err(|e| CliError::Invalid(format!("--scope: {e}")))?
            };
            let token = token_file::add(path, name, &scopes).map_err(token_err)?;
            // The token itself goes to standard output alone (for scripts); the advice
            // to standard error.
            println!("{}", token.expose_secret());
            eprintln!(
                "token `{name}` added to {}; it is shown this once. A running agent accepts it after `systemctl reload provd` (SIGHUP).",
                path.display()
            );
            Ok(())
        }
        TokensCommand::List => {
            for (name, hashed, scopes) in token_file::list(path).map_err(token_err)? {
                let kind = if hashed { "sha256" } else { "plain" };
                let scopes = match scopes {
                    crate::api::auth::Scopes::All => "all (no scopes= set)".to_string(),
                    s => s.to_string(),
                };
                println!("{name}\t{kind}\t{scopes}");
            }
            Ok(())
        }
        TokensCommand::Revoke { name } => {
            let n = token_file::revoke(path, name).map_err(token_err)?;
            eprintln!(
                "token `{name}` revoked ({n} line(s) removed from {}); a running agent refuses it after `systemctl reload provd` (SIGHUP).",
                path.display()
            );
            Ok(())
        }
    }
}

pub(super) fn format(text: &str, allowed: &[Format]) -> Result<Format, CliError> {
    Format::parse(text, allowed).map_err(CliError::Invalid)
}

pub(super) fn csv_out(
    header: &[&str],
    rows: impl IntoIterator<Item = Vec<String>>,
) -> Result<(), CliError> {
    let stdout = std::io::stdout();
    write_csv(stdout.lock(), header, rows).map_err(failed)
}

pub(super) async fn access(
    config: &Config,
    cmd: &AccessCommand,
    clock: &SystemClock,
) -> Result<(), CliError> {
    const ALL: [Format; 3] = [Format::Table, Format::Json, Format::Csv];
    match cmd {
        AccessCommand::List {
            identity,
            source,
            item,
            format: f,
        } => {
            let f = format(f, &ALL)?;
            let store = open(config).await?;
            let holdings = store
                .holdings(AccessQuery {
                    identity: identity.clone(),
                    ..Default::default()
                })
                .await
                .map_err(failed)?;
            let evidence = access::evidence(&store, &holdings).await.map_err(failed)?;
            let rows = access::rows(
                &holdings,
                &evidence,
                source.as_deref(),
                item.as_deref(),
                &config.catalog,
            );
            match f {
                Format::Json => print_json(&rows.iter().map(access::to_json).collect::<Vec<_>>()),
                Format::Csv => csv_out(&access::COLUMNS, rows.iter().map(access::cells)),
                Format::Table => {
                    let cells: Vec<Vec<String>> = rows.iter().map(access::cells).collect();
                    print!("{}", table(&access::COLUMNS, &cells));
                    Ok(())
                }
            }
        }
        AccessCommand::Removals {
            since,
            until,
            format: f,
        } => {
            let f = format(f, &ALL)?;
            let zone = &config.agent.time_zone;
            let at = |name: &str, v: &Option<String>, default: i64| -> Result<i64, CliError> {
                match v {
                    None => Ok(default),
                    Some(t) => crate::intake::dates::resolve(t, zone)
                        .map(to_ms)
                        .map_err(|e| CliError::Invalid(format!("--{name}: {e}"))),
                }
            };
            let since = at("since", since, 0)?;
            // Removals can only have fired up to now: "until" defaults past it.
            let until = at("until", until, to_ms(clock.now()) + 1)?;
            let store = open(config).await?;
            let rows = store
                .removals(since, until, usize::MAX >> 1)
                .await
                .map_err(failed)?;
            match f {
                Format::Json => {
                    print_json(&rows.iter().map(access::removal_json).collect::<Vec<_>>())
                }
                Format::Csv => csv_out(
                    &access::REMOVAL_COLUMNS,
                    rows.iter().map(access::removal_cells),
                ),
                Format::Table => {
                    let cells: Vec<Vec<String>> = rows.iter().map(access::removal_cells).collect();
                    print!("{}", table(&access::REMOVAL_COLUMNS, &cells));
                    Ok(())
                }
            }
        }
    }
}

/// Prints every matching event, page by page (the store is read in pages of the API's
/// largest size; the output is one JSON array or one CSV).
pub(super) async fn audit(config: &Config, cmd: &Command) -> Result<(), CliError> {
    let Command::Audit {
        identity,
        request,
        source,
        job,
        kind,
        since,
        until,
        format: f,
    } = cmd
    else {
        return Ok(());
    };
    let f = format(f, &[Format::Json, Format::Csv])?;
    let filters = trail::Filters {
        identity: identity.clone(),
        request: request.clone(),
        source: source.clone(),
        job: job.map(|j| j.to_string()),
        kind: kind.clone(),
        since: since.clone(),
        until: until.clone(),
        after: None,
        limit: Some(trail::MAX_LIMIT.to_string()),
    };
    let mut q = trail::query(&filters, &config.agent.time_zone).map_err(|p| {
        CliError::Invalid(
            p.iter()
                .map(|m| format!("--{m}"))
                .collect::<Vec<_>>()
                .join("\n"),
        )
    })?;
    let store = open(config).await?;
    let mut csv = (f == Format::Csv).then(|| csv::Writer::from_writer(std::io::stdout()));
    let mut json = (f == Format::Json).then(|| std::io::stdout().lock());
    if let Some(w) = csv.as_mut() {
        w.write_record(trail::COLUMNS).map_err(failed)?;
    }
    if let Some(out) = json.as_mut() {
        writeln!(out, "[").map_err(failed)?;
    }
    let mut first = true;
    loop {
        let page = store.audit(q.clone()).await.map_err(failed)?;
        for e in &page {
            if let Some(w) = csv.as_mut() {
                let cells = trail::cells(e);
                w.write_record(cells.iter().map(|c| escape_cell(c).into_owned()))
                    .map_err(failed)?;
            }
            if let Some(out) = json.as_mut() {
                let sep = if first { "" } else { ",\n" };
                write!(out, "{sep}  {}", trail::to_json(e)).map_err(failed)?;
            }
            first = false;
        }
        match trail::next(&page, q.limit) {
            Some(after) => q.after = after,
            None => break,
        }
    }
    if let Some(w) = csv.as_mut() {
        w.flush().map_err(failed)?;
    }
    if let Some(out) = json.as_mut() {
        writeln!(out, "{}]", if first { "" } else { "\n" }).map_err(failed)?;
    }
    Ok(())
}

/// `provd status REQUEST`: the request's items (DESIGN §9); an upstream request's id shows
/// what became of it; a request with no item (a lifecycle change's account operations)
/// shows one item per job.
pub(super) async fn status(config: &Config, request_id: &str) -> Result<(), CliError> {
    let store = open(config).await?;
    let status_of = |rid: String| StatusQuery {
        request_id: Some(rid),
        requested_for: None,
        limit: 10_000,
        offset: 0,
    };
    if !store
        .request_exists(request_id.to_string())
        .await
        .map_err(failed)?
    {
        // An upstream request id: show what became of it.
        return match store
            .upstream_request(request_id.to_string())
            .await
            .map_err(failed)?
        {
            Some(Pulled {
                request_id: Some(rid),
                ..
            }) => print_json(&crate::wire::status_items(
                &store.status(status_of(rid)).await.map_err(failed)?,
                &config.catalog,
            )),
            Some(Pulled {
                upstream,
                reason,
                received_at,
                ..
            }) => print_json(&serde_json::json!([{
                "id": request_id, "upstream": upstream, "state": "PROVISIONING_FAILED",
                "created": rfc3339_ms(received_at),
                "errorMessages": [[{ "locale": "en-US", "localeOrigin": "DEFAULT",
                    "text": format!("rejected: {}", reason.unwrap_or_default()) }]],
            }])),
            None => Err(CliError::Invalid(format!(
                "no access request `{request_id}`"
            ))),
        };
    }
    let mut rows = store
        .status(status_of(request_id.to_string()))
        .await
        .map_err(failed)?;
    if rows.is_empty() {
        let jobs = store
            .jobs(JobFilter {
                request_id: Some(request_id.to_string()),
                ..Default::default()
            })
            .await
            .map_err(failed)?;
        let accepted = store
            .audit(AuditQuery {
                request: Some(request_id.to_string()),
                kinds: vec!["request_accepted".into()],
                limit: 1,
                ..Default::default()
            })
            .await
            .map_err(failed)?;
        rows = crate::wire::account_rows(accepted.first(), &jobs);
    }
    print_json(&crate::wire::status_items(&rows, &config.catalog))
}
