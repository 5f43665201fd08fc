//! `provd accounts reset-password` (DESIGN §24): a new delivered password for one
//! person's account, asked for as a request like any other, so that it is planned,
//! queued, retried and audited the same way (a RESET_PASSWORD job, or an owner's task
//! on a manual source).

use provd_connector_core::Operation;

use super::CliError;
use super::commands::{cli_intake, failed, invalid_request, open};
use crate::config::{Config, SourceKind};
use crate::model::{RequestType, Requester, ValidRequest};

pub(super) async fn reset_password(
    config: &Config,
    source: &str,
    identity: &str,
) -> Result<(), CliError> {
    let Some(s) = config.sources.get(source) else {
        return Err(CliError::Invalid(format!(
            "--source `{source}`: no such source in {}",
            config.path.display()
        )));
    };
    if !(s.creates_disabled() || s.kind == SourceKind::Manual) {
        return Err(CliError::Invalid(format!(
            "--source `{source}`: provd sets no passwords there (it needs directory = \"ad\" and [account.password], or a manual source)"
        )));
    }
    let store = open(config).await?;
    let Some(who) = crate::intake::Directory::load(config, &*store, vec![identity.to_string()])
        .await
        .map_err(failed)?
        .lookup(identity)
    else {
        return Err(CliError::Invalid(format!("`{identity}`: no such identity")));
    };
    let held = store
        .account_sources(vec![identity.to_string()])
        .await
        .map_err(failed)?;
    if !held.get(identity).is_some_and(|s| s.contains(source)) {
        return Err(CliError::Invalid(format!(
            "`{identity}` has no account on {source} that provd knows: nothing to reset"
        )));
    }
    let request = ValidRequest {
        request_type: RequestType::Grant,
        requested_for: vec![identity.to_string()],
        items: Vec::new(),
        client_metadata: Default::default(),
        account_ops: vec![(source.to_string(), Operation::ResetPassword)],
        repairs: Vec::new(),
    };
    let ids = std::collections::BTreeMap::from([(identity.to_string(), who)]);
    let from = Requester::cli(&super::user());
    let replay = cli_intake(config, &store)
        .submit_valid(request, ids, &from, None)
        .await
        .map_err(invalid_request)?;
    let a = replay.accepted();
    let jobs: Vec<String> = a.job_ids.iter().map(i64::to_string).collect();
    println!(
        "{identity} on {source}: a new password is asked for (request {}, job {})",
        a.request_id,
        jobs.join(", ")
    );
    Ok(())
}
