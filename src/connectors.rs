//! Builds the connector of every direct source. Adding a connector type means one arm
//! here and a crate under `connectors/`; the dispatcher only sees `dyn Connector`.

use std::collections::BTreeMap;
use std::sync::Arc;

use provd_connector_core::Connector;

use crate::config::{Config, Problem, SourceKind};

pub type Connectors = BTreeMap<String, Arc<dyn Connector>>;

/// One connector per direct source; manual sources have none (their operations become
/// tasks).
pub fn build(config: &Config) -> Result<Connectors, Vec<Problem>> {
    let mut out = Connectors::new();
    let mut problems = Vec::new();
    for source in config.sources.values() {
        match source.kind {
            SourceKind::Manual => {}
            SourceKind::Ldap => {
                let base = source.file.parent().unwrap_or(std::path::Path::new("."));
                match provd_connector_ldap::LdapConnector::build(&source.settings, base) {
                    Ok(c) => {
                        out.insert(source.id.clone(), Arc::new(c));
                    }
                    Err(found) => {
                        problems.extend(found.into_iter().map(|(key, message)| Problem {
                            file: source.file.clone(),
                            key,
                            message,
                        }))
                    }
                }
            }
            other => problems.push(Problem {
                file: source.file.clone(),
                key: "type".into(),
                message: format!(
                    "the `{}` connector is not part of this build yet",
                    other.as_str()
                ),
            }),
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}
