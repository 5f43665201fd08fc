//! Builds the connector of every direct source. Adding a connector type means an arm in
//! `validate` and `build_one` here and a crate under `connectors/`; the dispatcher only
//! sees `dyn Connector`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use provd_connector_core::Connector;
use provd_connector_core::gate::GateMemory;

use crate::config::{Config, Problem, SourceKind};

pub type Connectors = BTreeMap<String, Arc<dyn Connector>>;

type Problems = Vec<(String, String)>;

/// Checks a direct source's connector settings without reading secrets or connecting.
pub fn validate(kind: SourceKind, table: &toml::Table, base: &Path) -> Result<(), Problems> {
    match kind {
        SourceKind::Ldap => provd_connector_ldap::parse(table, base).map(|_| ()),
        SourceKind::Scim => provd_connector_scim::parse(table).map(|_| ()),
        SourceKind::Rest => provd_connector_rest::parse(table).map(|_| ()),
        SourceKind::Manual => Ok(()),
    }
}

fn build_one(
    id: &str,
    kind: SourceKind,
    table: &toml::Table,
    base: &Path,
) -> Result<Option<Arc<dyn Connector>>, Problems> {
    Ok(match kind {
        SourceKind::Manual => None,
        SourceKind::Ldap => Some(Arc::new(
            provd_connector_ldap::LdapConnector::build(table, base)?.with_source(id),
        )),
        SourceKind::Scim => Some(Arc::new(provd_connector_scim::ScimConnector::build(
            table, base,
        )?)),
        SourceKind::Rest => Some(Arc::new(provd_connector_rest::RestConnector::build(
            table, base,
        )?)),
    })
}

/// Gives every connector's credential gate the store's memory (DESIGN §24).
pub fn remember_failures(connectors: &Connectors, memory: &Arc<dyn GateMemory>) {
    for (id, c) in connectors {
        c.remember_failures(memory.clone(), id);
    }
}

/// One connector per direct source; manual sources have none (their operations become
/// tasks). Secrets are read here.
pub fn build(config: &Config) -> Result<Connectors, Vec<Problem>> {
    let mut out = Connectors::new();
    let mut problems = Vec::new();
    for source in config.sources.values() {
        let base = source.file.parent().unwrap_or(Path::new("."));
        match build_one(&source.id, source.kind, &source.settings, base) {
            Ok(Some(c)) => {
                out.insert(source.id.clone(), c);
            }
            Ok(None) => {}
            Err(found) => problems.extend(found.into_iter().map(|(key, message)| Problem {
                at: None,
                file: source.file.clone(),
                key,
                message,
            })),
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        crate::config::place(&mut problems);
        Err(problems)
    }
}
