use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The person an operation is for, with the attributes templates are filled from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// The identity's id (`identities.csv` column `id`); templates see it as `{id}`.
    pub id: String,
    /// Every other column: `firstName`, `lastName`, `email`, `lifecycleState`, ...
    pub attributes: BTreeMap<String, String>,
}

impl Identity {
    /// The value a template placeholder names: `id` or an attribute.
    pub fn get(&self, name: &str) -> Option<&str> {
        if name == "id" {
            Some(&self.id)
        } else {
            self.attributes.get(name).map(String::as_str)
        }
    }

    /// A name a person recognises: `displayName`, else `firstName lastName`, else the id.
    pub fn display_name(&self) -> String {
        if let Some(d) = self.attributes.get("displayName").filter(|d| !d.is_empty()) {
            return d.clone();
        }
        let parts: Vec<&str> = ["firstName", "lastName"]
            .iter()
            .filter_map(|k| self.attributes.get(*k).map(String::as_str))
            .filter(|v| !v.is_empty())
            .collect();
        if parts.is_empty() {
            self.id.clone()
        } else {
            parts.join(" ")
        }
    }
}

/// One value of an account attribute that grants access: an LDAP group DN, a SCIM group,
/// a REST role.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Entitlement {
    /// The account attribute it lives in (`groups` for group memberships).
    pub attribute: String,
    /// The value itself.
    pub value: String,
}

/// The UPDATE_ACCOUNT key that says an account's place (its DN on LDAP: the `native_id`
/// and `[account] ou` templates) renders differently now: the connector moves or renames
/// it (DESIGN §24). Its value is the new rendering, unescaped: for reading, not writing.
pub const PLACEMENT: &str = "dn";

/// What provd asks of a target. Names are the CSV contract's `operation` column.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Operation {
    CreateAccount,
    AddEntitlement(Entitlement),
    RemoveEntitlement(Entitlement),
    DisableAccount,
    DeleteAccount,
    /// Make the account usable. Planned right after a create on sources that create
    /// accounts disabled (Active Directory with `[account.password]`: set a fresh initial
    /// password, deliver it, then enable); skipped when the create found an existing
    /// account, which is left as it is. Also a rehire's (DESIGN §13).
    EnableAccount,
    /// Attribute sync (DESIGN §13): set these account attributes to these values; an
    /// empty value clears the attribute.
    UpdateAccount {
        attributes: std::collections::BTreeMap<String, String>,
    },
    /// A new password for an existing account, delivered as a new account's is, to be
    /// changed at the next logon (DESIGN §24): a rehire's, or an operator's `provd
    /// accounts reset-password`. Needs `[account.password]` (AD) or a source owner.
    ResetPassword,
}

/// The kind of an [`Operation`], without its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    CreateAccount,
    AddEntitlement,
    RemoveEntitlement,
    DisableAccount,
    DeleteAccount,
    EnableAccount,
    UpdateAccount,
    ResetPassword,
}

impl OpKind {
    /// The contract name (`CREATE_ACCOUNT`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            OpKind::CreateAccount => "CREATE_ACCOUNT",
            OpKind::AddEntitlement => "ADD_ENTITLEMENT",
            OpKind::RemoveEntitlement => "REMOVE_ENTITLEMENT",
            OpKind::DisableAccount => "DISABLE_ACCOUNT",
            OpKind::DeleteAccount => "DELETE_ACCOUNT",
            OpKind::EnableAccount => "ENABLE_ACCOUNT",
            OpKind::UpdateAccount => "UPDATE_ACCOUNT",
            OpKind::ResetPassword => "RESET_PASSWORD",
        }
    }
}

impl std::fmt::Display for OpKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Operation {
    pub fn kind(&self) -> OpKind {
        match self {
            Operation::CreateAccount => OpKind::CreateAccount,
            Operation::AddEntitlement(_) => OpKind::AddEntitlement,
            Operation::RemoveEntitlement(_) => OpKind::RemoveEntitlement,
            Operation::DisableAccount => OpKind::DisableAccount,
            Operation::DeleteAccount => OpKind::DeleteAccount,
            Operation::EnableAccount => OpKind::EnableAccount,
            Operation::UpdateAccount { .. } => OpKind::UpdateAccount,
            Operation::ResetPassword => OpKind::ResetPassword,
        }
    }

    /// The entitlement the operation touches, if it touches one.
    pub fn entitlement(&self) -> Option<&Entitlement> {
        match self {
            Operation::AddEntitlement(e) | Operation::RemoveEntitlement(e) => Some(e),
            _ => None,
        }
    }
}

/// What applying an operation did. Every operation is idempotent, so "it was already so"
/// is a success, reported apart so that the audit log can tell the two apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A new account was created with this native id (DN, SCIM id, REST id).
    Created { native_id: String },
    /// The account already existed and was linked by its correlation attribute.
    Correlated { native_id: String },
    /// The account now lives under a new native id (an LDAP entry moved to another OU).
    Moved { native_id: String },
    /// A new account was created, but not at the native id the template gave: that one
    /// belongs to another account (two people named Ada Lovelace), so the identity's id
    /// was added to it. Recorded in the audit trail with both.
    CreatedElsewhere { native_id: String, taken: String },
    /// The account was gone (deleted out of band, DESIGN §17): it was created again, at
    /// this native id, before the change was made.
    Recreated { native_id: String },
    /// The change was made.
    Applied,
    /// Nothing to do: the target was already in the wanted state.
    Unchanged,
}

impl Outcome {
    pub fn native_id(&self) -> Option<&str> {
        match self {
            Outcome::Created { native_id }
            | Outcome::Correlated { native_id }
            | Outcome::Moved { native_id }
            | Outcome::CreatedElsewhere { native_id, .. }
            | Outcome::Recreated { native_id } => Some(native_id),
            _ => None,
        }
    }

    /// What a change reports when the account had to be created again first (DESIGN
    /// §17): `Recreated` at its new native id, unless the change says more itself.
    pub fn after_recreate(self, native_id: String) -> Outcome {
        match self {
            Outcome::Applied | Outcome::Unchanged => Outcome::Recreated { native_id },
            other => other,
        }
    }

    /// What the audit trail should say beyond the outcome word.
    pub fn detail(&self) -> Option<String> {
        match self {
            Outcome::CreatedElsewhere { native_id, taken } => Some(format!(
                "{taken} belongs to another account; created {native_id} instead"
            )),
            Outcome::Recreated { native_id } => Some(format!(
                "the account was gone (deleted out of band); {native_id} was created again first"
            )),
            _ => None,
        }
    }

    /// A short word for logs and the audit trail.
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Created { .. } => "created",
            Outcome::Correlated { .. } => "correlated",
            Outcome::Moved { .. } => "moved",
            Outcome::CreatedElsewhere { .. } => "created_elsewhere",
            Outcome::Recreated { .. } => "recreated",
            Outcome::Applied => "applied",
            Outcome::Unchanged => "unchanged",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_serialise_with_contract_names() {
        let op = Operation::AddEntitlement(Entitlement {
            attribute: "groups".into(),
            value: "cn=vpn".into(),
        });
        let json = serde_json::to_string(&op).unwrap();
        assert_eq!(
            json,
            r#"{"op":"ADD_ENTITLEMENT","attribute":"groups","value":"cn=vpn"}"#
        );
        let back: Operation = serde_json::from_str(&json).unwrap();
        assert_eq!(back, op);
        assert_eq!(
            serde_json::to_string(&Operation::CreateAccount).unwrap(),
            r#"{"op":"CREATE_ACCOUNT"}"#
        );
        assert_eq!(op.kind().as_str(), "ADD_ENTITLEMENT");
        assert_eq!(OpKind::DisableAccount.to_string(), "DISABLE_ACCOUNT");
    }

    #[test]
    fn display_name_prefers_display_then_first_last_then_id() {
        let mut id = Identity {
            id: "u1".into(),
            attributes: BTreeMap::new(),
        };
        assert_eq!(id.display_name(), "u1");
        id.attributes.insert("firstName".into(), "Ada".into());
        id.attributes.insert("lastName".into(), "Lovelace".into());
        assert_eq!(id.display_name(), "Ada Lovelace");
        id.attributes
            .insert("displayName".into(), "Countess".into());
        assert_eq!(id.display_name(), "Countess");
        assert_eq!(id.get("id"), Some("u1"));
        assert_eq!(id.get("firstName"), Some("Ada"));
        assert_eq!(id.get("nope"), None);
    }
}
