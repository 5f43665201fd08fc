use std::future::Future;
use std::pin::Pin;

use std::sync::Arc;

use crate::gate::GateMemory;
use crate::{ConnectorError, Entitlement, Identity, Operation, Outcome};

/// A boxed future, so that connectors can be held as `Arc<dyn Connector>`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A target system provd provisions: one async method per operation kind.
///
/// `native_id` is the account's id on the target when provd knows it (it created or
/// correlated the account before); `None` asks the connector to derive it from its
/// Create Account specification or find it by correlation.
///
/// Every method is idempotent: adding what is there, removing what is not, creating an
/// account that exists and correlates all succeed (as [`Outcome::Unchanged`] or
/// [`Outcome::Correlated`]).
pub trait Connector: Send + Sync {
    fn create_account<'a>(
        &'a self,
        identity: &'a Identity,
    ) -> BoxFuture<'a, Result<Outcome, ConnectorError>>;

    fn add_entitlement<'a>(
        &'a self,
        identity: &'a Identity,
        native_id: Option<&'a str>,
        entitlement: &'a Entitlement,
    ) -> BoxFuture<'a, Result<Outcome, ConnectorError>>;

    fn remove_entitlement<'a>(
        &'a self,
        identity: &'a Identity,
        native_id: Option<&'a str>,
        entitlement: &'a Entitlement,
    ) -> BoxFuture<'a, Result<Outcome, ConnectorError>>;

    fn disable_account<'a>(
        &'a self,
        identity: &'a Identity,
        native_id: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Outcome, ConnectorError>>;

    fn delete_account<'a>(
        &'a self,
        identity: &'a Identity,
        native_id: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Outcome, ConnectorError>>;

    /// Makes the account usable (see [`Operation::EnableAccount`]). Connectors that never
    /// create accounts disabled need not implement it.
    fn enable_account<'a>(
        &'a self,
        identity: &'a Identity,
        native_id: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Outcome, ConnectorError>> {
        let _ = (identity, native_id);
        unsupported("enable accounts")
    }

    /// Gives the account a new delivered password (see [`Operation::ResetPassword`]).
    /// Connectors that manage no passwords need not implement it.
    fn reset_password<'a>(
        &'a self,
        identity: &'a Identity,
        native_id: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Outcome, ConnectorError>> {
        let _ = (identity, native_id);
        unsupported("reset passwords")
    }

    /// Sets account attributes (attribute sync, DESIGN §13); an empty value clears one.
    fn update_account<'a>(
        &'a self,
        identity: &'a Identity,
        native_id: Option<&'a str>,
        attributes: &'a std::collections::BTreeMap<String, String>,
    ) -> BoxFuture<'a, Result<Outcome, ConnectorError>> {
        let _ = (identity, native_id, attributes);
        unsupported("update accounts")
    }

    /// Reads back what the source holds for an account (DESIGN §17): None when there is
    /// no such account; else which of `candidates` (the catalog's values on this source)
    /// it has, and whether it is disabled (None: the source cannot tell).
    fn read_account<'a>(
        &'a self,
        identity: &'a Identity,
        native_id: Option<&'a str>,
        candidates: &'a [Entitlement],
    ) -> BoxFuture<'a, Result<Option<ReadBack>, ConnectorError>> {
        let _ = (identity, native_id, candidates);
        unsupported("read accounts back")
    }

    /// The members of a group-like `entitlement` that are none of `managed` (the accounts
    /// provd manages on the source, with their identities), as the source names them:
    /// someone provd does not manage in a group it does (DESIGN §21, `unmanaged_member`).
    /// Members are compared as the source compares them. None: this source cannot list
    /// members, or the value is not a group (not judged).
    fn unmanaged_members<'a>(
        &'a self,
        entitlement: &'a Entitlement,
        managed: &'a [(Identity, String)],
    ) -> BoxFuture<'a, Result<Option<Vec<String>>, ConnectorError>> {
        let _ = (entitlement, managed);
        Box::pin(async { Ok(None) })
    }

    /// Takes `member` (as [`Connector::unmanaged_members`] named it) out of the group
    /// `entitlement`: `provd reconcile --fix` where the source says `unmanaged_members =
    /// "remove"`.
    fn remove_member<'a>(
        &'a self,
        entitlement: &'a Entitlement,
        member: &'a str,
    ) -> BoxFuture<'a, Result<Outcome, ConnectorError>> {
        let _ = (entitlement, member);
        unsupported("remove group members")
    }

    /// Connects and authenticates, for `provd check --connect`.
    fn check(&self) -> BoxFuture<'_, Result<(), ConnectorError>>;

    /// Keeps the credential gate's failures in `memory` under `source`, so that they
    /// outlive this connector (a restart, a reload, `provd check --connect`). Connectors
    /// without a secret need not implement it.
    fn remember_failures(&self, memory: Arc<dyn GateMemory>, source: &str) {
        let _ = (memory, source);
    }

    /// Accounts about to be created: a connector may look up in one round trip what
    /// `create_account` would correlate each with, so that the creates that follow skip
    /// their own lookups. Only an optimisation: errors are the creates' to report, and
    /// the default does nothing (every create looks for itself).
    fn prefetch(&self, identities: Vec<Identity>) -> BoxFuture<'_, ()> {
        let _ = identities;
        Box::pin(async {})
    }
}

/// What an operation kind a connector does not implement answers: permanent, naming it.
fn unsupported<'a, T: Send + 'a>(what: &'static str) -> BoxFuture<'a, Result<T, ConnectorError>> {
    Box::pin(async move {
        Err(ConnectorError::permanent(
            Some("unsupported".into()),
            format!("this source's connector cannot {what}"),
        ))
    })
}

/// An account as read back from its source.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadBack {
    /// The candidates the account has.
    pub values: Vec<Entitlement>,
    pub disabled: Option<bool>,
    /// Candidate groups the account is in only through nesting, each with the group it is
    /// a direct member of on the way (DESIGN §24: read, never written).
    pub nested: Vec<(Entitlement, String)>,
}

/// Hands one operation to the method of its kind.
pub async fn apply(
    connector: &dyn Connector,
    op: &Operation,
    identity: &Identity,
    native_id: Option<&str>,
) -> Result<Outcome, ConnectorError> {
    match op {
        Operation::CreateAccount => connector.create_account(identity).await,
        Operation::AddEntitlement(e) => connector.add_entitlement(identity, native_id, e).await,
        Operation::RemoveEntitlement(e) => {
            connector.remove_entitlement(identity, native_id, e).await
        }
        Operation::DisableAccount => connector.disable_account(identity, native_id).await,
        Operation::DeleteAccount => connector.delete_account(identity, native_id).await,
        Operation::EnableAccount => connector.enable_account(identity, native_id).await,
        Operation::UpdateAccount { attributes } => {
            connector
                .update_account(identity, native_id, attributes)
                .await
        }
        Operation::ResetPassword => connector.reset_password(identity, native_id).await,
    }
}
