//! An account belongs to at most one identity (issue 33, finding 10): a create that
//! meets an existing account links it only when no one else holds it. Two people whose
//! keys meet — `sAMAccountName` built from names, or identity ids that differ only in
//! letter case, which a directory compares as one — must never share an account: the
//! second one's grants would land on the first, and the second's leaver disable them.

use provd_connector_core::ConnectorError;

use crate::store::roles::Accounts;
use crate::store::{Job, StoreError};

/// Why the job must not link `native_id` (already another identity's account), if so.
pub async fn taken(
    accounts: &dyn Accounts,
    job: &Job,
    native_id: &str,
) -> Result<Option<ConnectorError>, StoreError> {
    let owners = accounts
        .account_owners(job.source.clone(), native_id.to_string())
        .await?;
    Ok(refusal(&owners, &job.identity_id, &job.source, native_id))
}

/// The refusal when someone other than `identity` holds the account.
fn refusal(
    owners: &[String],
    identity: &str,
    source: &str,
    native_id: &str,
) -> Option<ConnectorError> {
    let other = owners.iter().find(|o| *o != identity)?;
    Some(ConnectorError::permanent(
        Some("account_taken".into()),
        format!(
            "the account {native_id} on {source} is {other}'s: it is not linked to {identity} as well (their keys meet on the source; give one of them another key)"
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_another_identitys_account_is_refused() {
        let e = refusal(&["ada".into()], "ADA", "corp", "uid=ada").unwrap();
        assert!(
            e.message.contains("is ada's") && e.message.contains("to ADA"),
            "{}",
            e.message
        );
        assert!(refusal(&["ADA".into()], "ADA", "corp", "uid=ADA").is_none());
        assert!(refusal(&[], "ADA", "corp", "uid=ADA").is_none());
    }
}
