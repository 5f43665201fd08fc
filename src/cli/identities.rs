//! `provd identities import FILE [--confirm]`: identities added or updated all or nothing,
//! and the lifecycle changes they bring planned first (DESIGN §13).

use std::collections::BTreeMap;
use std::path::Path;

use provd_connector_core::Identity;

use super::CliError;
use super::commands::{failed, open};
use crate::clock::{Clock, SystemClock, to_ms};
use crate::config::{self, Config};
use crate::lifecycle::apply::{ApplyError, apply};
use crate::store::Stamp;

/// Reads an identities file (CSV with an `id` column, or JSON lines); all or nothing.
fn read(config: &Config, file: &Path) -> Result<Vec<Identity>, CliError> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| CliError::Invalid(format!("{}: {e}", file.display())))?;
    let (ids, mut problems) = if text
        .trim_start_matches('\u{feff}')
        .trim_start()
        .starts_with('{')
    {
        parse_json_lines(&text)
    } else {
        let (m, p) = config::identities::parse_csv(text.as_bytes());
        (m.into_values().collect(), p)
    };
    for identity in &ids {
        if let Err(e) = crate::model::ident::check_identity_id(&identity.id) {
            problems.push(("id".into(), e));
        } else if let Err(e) = config.lifecycle.check_state(&identity.attributes) {
            problems.push((format!("identity `{}`", identity.id), e));
        }
    }
    if !problems.is_empty() {
        let lines: Vec<String> = problems
            .iter()
            .map(|(k, m)| format!("{}: {k}: {m}", file.display()))
            .collect();
        return Err(CliError::Invalid(format!(
            "nothing imported:\n{}",
            lines.join("\n")
        )));
    }
    Ok(ids)
}

/// `provd plan --identities FILE`: the lifecycle changes and the operations per source
/// an import of FILE would cause; nothing is changed.
pub(super) async fn preview(config: &Config, file: &Path) -> Result<(), CliError> {
    let ids = read(config, file)?;
    let store = open(config).await?;
    let changes = crate::lifecycle::apply::plan(config, &*store, &ids, &config.identities)
        .await
        .map_err(failed)?;
    if changes.is_empty() {
        println!("no lifecycle change");
    }
    for c in &changes {
        println!("{}", describe(c));
        let snapshot = store
            .snapshot(vec![c.identity.clone()])
            .await
            .map_err(failed)?;
        for request in c.requests(None) {
            let plan = crate::plan::plan(&request, &config.catalog, &snapshot, &config.rules);
            super::commands::print_plan(&plan);
        }
    }
    let accounts: usize = changes.iter().map(crate::lifecycle::Change::removals).sum();
    if accounts > config.lifecycle.max_changes {
        println!(
            "an import of this file would be held: {accounts} accounts disabled or deleted, more than max_changes ({}); it needs --confirm",
            config.lifecycle.max_changes
        );
    }
    Ok(())
}

fn describe(c: &crate::lifecycle::Change) -> String {
    format!(
        "{}: {} -> {}: {} revoked, {} granted, {} account operations",
        c.identity,
        c.from.as_deref().unwrap_or("(none)"),
        c.to.as_deref().unwrap_or("(none)"),
        c.revoke.len(),
        c.grant.len(),
        c.accounts.len()
    )
}

pub(super) async fn import(
    config: &Config,
    file: &Path,
    confirm: bool,
    clock: &SystemClock,
) -> Result<(), CliError> {
    let ids = read(config, file)?;
    let store = open(config).await?;
    let intake = super::commands::cli_intake(config, &store);
    let by = Stamp::new(super::actor(), to_ms(clock.now()));
    // identities.csv's rows first: an edited row of it imported here is diffed against the
    // row as applied, not against the edited file (issue 33).
    crate::lifecycle::apply::seed(config, &*store, by.clone())
        .await
        .map_err(failed)?;
    let n = ids.len();
    let applied = match apply(config, &*store, &intake, ids, false, by, confirm).await {
        Ok(a) => a,
        Err(e @ ApplyError::Held { .. }) => {
            return Err(CliError::Invalid(format!(
                "{e} (provd identities import --confirm)"
            )));
        }
        Err(e) => return Err(failed(e)),
    };
    println!("{n} identities imported");
    for c in &applied.changes {
        println!("{}", describe(c));
    }
    Ok(())
}

/// One JSON object per line: `{"id": "...", "firstName": "...", ...}`; values must be strings.
fn parse_json_lines(text: &str) -> (Vec<Identity>, Vec<(String, String)>) {
    let mut out: BTreeMap<String, Identity> = BTreeMap::new();
    let mut problems = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim().trim_start_matches('\u{feff}');
        let key = format!("line {}", i + 1);
        if line.is_empty() {
            continue;
        }
        let obj: serde_json::Map<String, serde_json::Value> = match serde_json::from_str(line) {
            Ok(o) => o,
            Err(e) => {
                problems.push((key, format!("not a JSON object: {e}")));
                continue;
            }
        };
        let mut attributes = BTreeMap::new();
        let mut id = None;
        for (k, v) in obj {
            let Some(s) = v.as_str() else {
                problems.push((key.clone(), format!("`{k}` must be a string")));
                continue;
            };
            if k == "id" {
                id = Some(s.to_string());
            } else if !s.is_empty() {
                attributes.insert(k, s.to_string());
            }
        }
        match id.filter(|i| !i.trim().is_empty()) {
            None => problems.push((key, "no `id`".into())),
            Some(id) if out.contains_key(&id) => {
                problems.push((key, format!("duplicate identity id `{id}`")))
            }
            Some(id) => {
                out.insert(id.clone(), Identity { id, attributes });
            }
        }
    }
    (out.into_values().collect(), problems)
}
