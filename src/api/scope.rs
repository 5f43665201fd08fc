//! Token scopes (DESIGN §25): what a token may reach. A trigger's token is handed to a
//! cloud service; it must open that trigger's endpoints and nothing else. A token file
//! line without `scopes=` (and a bare token) keeps every scope, so files written before
//! scopes existed go on working.

use std::collections::BTreeSet;
use std::fmt;

/// One part of the API a token may be allowed.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    /// `POST /access-requests/v1`, `…/cancel`.
    Intake,
    /// `GET /access-request-status/v1`, the detail of `/readyz`.
    Status,
    /// `/audit/v1`, `/access/v1`.
    Audit,
    /// `/tasks/v1`, the workbook.
    Tasks,
    /// `PUT /identities/v1/{id}`.
    Identities,
    /// The endpoints of the trigger of that name.
    Trigger(String),
}

impl Scope {
    /// Parses one scope as written in the file or on the command line.
    pub fn parse(s: &str) -> Result<Self, String> {
        Ok(match s {
            "intake" => Self::Intake,
            "status" => Self::Status,
            "audit" => Self::Audit,
            "tasks" => Self::Tasks,
            "identities" => Self::Identities,
            _ => match s.strip_prefix("trigger:") {
                Some(name)
                    if !name.is_empty()
                        && name
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')) =>
                {
                    Self::Trigger(name.to_string())
                }
                _ => {
                    return Err(format!(
                        "unknown scope `{}`: use intake, status, audit, tasks, identities or trigger:NAME",
                        s.escape_debug()
                    ));
                }
            },
        })
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Intake => f.write_str("intake"),
            Self::Status => f.write_str("status"),
            Self::Audit => f.write_str("audit"),
            Self::Tasks => f.write_str("tasks"),
            Self::Identities => f.write_str("identities"),
            Self::Trigger(n) => write!(f, "trigger:{n}"),
        }
    }
}

/// A token's scopes: every scope (a line written without `scopes=`) or a set.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Scopes {
    #[default]
    All,
    Only(BTreeSet<Scope>),
}

impl Scopes {
    /// `intake,status,trigger:sp`: at least one, each known.
    pub fn parse_list(list: &str) -> Result<Self, String> {
        let mut set = BTreeSet::new();
        for part in list.split(',').map(str::trim) {
            set.insert(Scope::parse(part)?);
        }
        if set.is_empty() {
            return Err("name at least one scope".into());
        }
        Ok(Self::Only(set))
    }

    pub fn allows(&self, needed: &Scope) -> bool {
        match self {
            Self::All => true,
            Self::Only(set) => set.contains(needed),
        }
    }

    /// The `scopes=` word of a token line (None: every scope, nothing written).
    pub fn file_word(&self) -> Option<String> {
        match self {
            Self::All => None,
            Self::Only(_) => Some(format!("scopes={self}")),
        }
    }
}

impl fmt::Display for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::All => f.write_str("all"),
            Self::Only(set) => {
                let names: Vec<String> = set.iter().map(ToString::to_string).collect();
                f.write_str(&names.join(","))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_parse_and_allow_only_what_they_name() {
        let s = Scopes::parse_list("intake, trigger:sp").unwrap();
        assert!(s.allows(&Scope::Intake));
        assert!(s.allows(&Scope::Trigger("sp".into())));
        assert!(!s.allows(&Scope::Trigger("sp2".into())));
        assert!(!s.allows(&Scope::Audit));
        assert_eq!(s.to_string(), "intake,trigger:sp");
        assert_eq!(s.file_word().as_deref(), Some("scopes=intake,trigger:sp"));
        assert!(Scopes::All.allows(&Scope::Identities));
        assert_eq!(Scopes::All.file_word(), None);
        assert!(
            Scopes::parse_list("intake,admin")
                .unwrap_err()
                .contains("`admin`")
        );
        assert!(Scopes::parse_list("").is_err());
        assert!(Scopes::parse_list("trigger:").is_err());
        assert!(Scopes::parse_list("trigger:a b").is_err());
    }
}
