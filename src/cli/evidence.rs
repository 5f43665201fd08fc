//! Evidence commands (DESIGN §17): `accounts import` and `drift`.

use super::audit::{csv_out, format};
use super::commands::{cli_intake, failed, open, print_json};
use super::{AccountsCommand, CliError};
use crate::audit::{Format, table};
use crate::clock::{Clock, SystemClock};
use crate::config::Config;
use crate::evidence::EvidenceError;
use crate::evidence::check::Drift;

const COLUMNS: [&str; 6] = [
    "source",
    "kind",
    "identity",
    "account",
    "attribute",
    "value",
];

fn cells(d: &Drift) -> Vec<String> {
    vec![
        d.source.clone(),
        d.kind.to_string(),
        d.identity.clone().unwrap_or_default(),
        d.account.clone(),
        d.attribute.clone(),
        d.value.clone(),
    ]
}

fn print(drift: &[Drift], f: Format) -> Result<(), CliError> {
    match f {
        Format::Json => print_json(&drift),
        Format::Csv => csv_out(&COLUMNS, drift.iter().map(cells)),
        Format::Table => {
            let rows: Vec<Vec<String>> = drift.iter().map(cells).collect();
            print!("{}", table(&COLUMNS, &rows));
            Ok(())
        }
    }
}

pub(super) async fn accounts(config: &Config, cmd: &AccountsCommand) -> Result<(), CliError> {
    let AccountsCommand::Import {
        source,
        file,
        as_of,
        force,
    } = cmd
    else {
        return Err(CliError::Invalid("not an import".into()));
    };
    let bytes =
        std::fs::read(file).map_err(|e| CliError::Invalid(format!("{}: {e}", file.display())))?;
    let now = SystemClock.now();
    let as_of = match as_of {
        None => now,
        Some(t) => crate::intake::dates::resolve(t, &config.agent.time_zone)
            .map_err(|e| CliError::Invalid(format!("--as-of: {e}")))?,
    };
    let store = open(config).await?;
    let intake = cli_intake(config, &store);
    let actor = crate::model::Requester::cli(&super::user()).name;
    let file_in = crate::evidence::ExportFile {
        source,
        bytes: &bytes,
        as_of,
        force: *force,
        actor: &actor,
    };
    let done = crate::evidence::import(&store, config, &intake, file_in, now)
        .await
        .map_err(|e| match e {
            EvidenceError::Invalid(m) => CliError::Invalid(format!("{}: {m}", file.display())),
            EvidenceError::Refused(m) => {
                CliError::Invalid(format!("{}: refused: {m}", file.display()))
            }
            EvidenceError::Store(e) => failed(e),
        })?;
    println!(
        "import #{} of {source}: {} account(s) read ({}), {} task(s) verified{}",
        done.snapshot,
        done.rows,
        done.read_as,
        done.verified.len(),
        if done.verified.is_empty() {
            String::new()
        } else {
            format!(
                ": {}",
                done.verified
                    .iter()
                    .map(|t| format!("T{t}"))
                    .collect::<Vec<_>>()
                    .join(",")
            )
        }
    );
    println!(
        "drift: {}; {} repair request(s) made",
        crate::evidence::check::summary(&done.drift),
        done.repairs.len()
    );
    if !done.drift.is_empty() {
        print(&done.drift, Format::Table)?;
    }
    Ok(())
}

pub(super) async fn drift(config: &Config, source: Option<&str>, f: &str) -> Result<(), CliError> {
    let f = format(f, &[Format::Table, Format::Json, Format::Csv])?;
    if let Some(s) = source
        && !config.sources.contains_key(s)
    {
        return Err(CliError::Invalid(format!("--source: no source `{s}`")));
    }
    let store = open(config).await?;
    let drift = crate::evidence::drift(&store, config, source)
        .await
        .map_err(failed)?;
    print(&drift, f)
}

pub(super) async fn reconcile(
    config: &Config,
    source: &str,
    fix: bool,
    f: &str,
) -> Result<(), CliError> {
    let f = format(f, &[Format::Table, Format::Json, Format::Csv])?;
    let connectors = crate::connectors::build(config).map_err(|p| {
        CliError::Invalid(
            p.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n"),
        )
    })?;
    let connector = connectors.get(source).cloned().ok_or_else(|| {
        CliError::Invalid(format!(
            "--source: `{source}` is not a direct source (LDAP, SCIM or REST); a manual source's evidence is `provd accounts import`"
        ))
    })?;
    let store = open(config).await?;
    super::commands::remember_failures(config, &store, &connectors).await?;
    let intake = cli_intake(config, &store);
    let actor = crate::model::Requester::cli(&super::user()).name;
    let ctx = crate::evidence::reconcile::Ctx {
        store: &store,
        config,
        intake: &intake,
        connector,
        actor: &actor,
    };
    let done = crate::evidence::reconcile::reconcile(&ctx, source, fix, SystemClock.now())
        .await
        .map_err(|e| match e {
            EvidenceError::Store(e) => failed(e),
            e => CliError::Failed(e.to_string()),
        })?;
    eprintln!(
        "read-back #{} of {source}: {} account(s) in {} ms, {} gone; drift: {}; {} repair request(s) made, {} unmanaged member(s) removed",
        done.snapshot,
        done.accounts,
        done.elapsed.as_millis(),
        done.gone,
        crate::evidence::check::summary(&done.drift),
        done.repairs.len(),
        done.removed
    );
    print(&done.drift, f)
}
