//! `[[trigger]]` in `provd.toml` (DESIGN §16): SailPoint event-trigger subscriptions provd
//! answers at `/triggers/v1/{name}/…`, and how SailPoint authenticates to them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

use super::duration::Dur;
use super::files::UpstreamItem;

/// `[[trigger]]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriggerSection {
    /// Unique name: the URL's `/triggers/v1/{name}/…`, and requests it makes come from
    /// `trigger:NAME`.
    pub name: String,
    /// The service: `sailpoint`.
    pub kind: String,
    /// BEARER_TOKEN auth: the name of the provd API token (`provd tokens add NAME`) the
    /// subscription sends. Give this or `basic_user`, not both.
    #[serde(default)]
    pub bearer: Option<String>,
    /// BASIC_AUTH: the user name the subscription sends ...
    #[serde(default)]
    pub basic_user: Option<String>,
    /// ... and the file whose first line is its password (relative to provd.toml).
    #[serde(default)]
    pub basic_password_file: Option<String>,
    /// identities.csv column matched with `requestedFor.id` (default `id`).
    #[serde(default = "default_identity_attribute")]
    pub identity_attribute: String,
    /// How long an ASYNC answer is tried after the invocation arrived (default 1h, as
    /// the subscription's `responseDeadline`); after it, the invocation is expired.
    #[serde(default = "default_deadline")]
    pub response_deadline: Dur,
    /// SailPoint item id → provd catalog item; an id not listed is the catalog item of the
    /// same id and the type SailPoint sends.
    #[serde(default)]
    pub items: BTreeMap<String, UpstreamItem>,
}

fn default_identity_attribute() -> String {
    "id".into()
}
fn default_deadline() -> Dur {
    Dur(Duration::from_secs(3600))
}

/// How a subscription proves itself.
#[derive(Debug, Clone)]
pub enum TriggerAuth {
    /// `Authorization: Bearer T` where T is the provd API token of this name.
    Bearer(String),
    /// `Authorization: Basic …` with this user and password.
    Basic {
        user: String,
        password: SecretString,
    },
}

/// `[[trigger]]`, checked, its password read.
#[derive(Debug, Clone)]
pub struct Trigger {
    pub name: String,
    pub auth: TriggerAuth,
    pub identity_attribute: String,
    pub response_deadline: Duration,
    pub items: BTreeMap<String, UpstreamItem>,
}

/// Where the key sealing stored callback secrets lives: the state directory, beside the
/// store (agents sharing a PostgreSQL store need the same file).
pub const KEY_FILE: &str = "trigger-secrets.key";

/// The key file of a state directory.
pub fn key_path(state_dir: &Path) -> PathBuf {
    state_dir.join(KEY_FILE)
}

/// Checks one `[[trigger]]`; errors as (key, message), the key under `trigger[N]`.
pub fn build(base: &Path, s: &TriggerSection) -> Result<Trigger, (String, String)> {
    let name_ok = !s.name.is_empty()
        && s.name.len() <= 64
        && s.name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'));
    if !name_ok {
        return Err((
            "name".into(),
            "use 1-64 letters, digits, `-` or `_` (it is part of the URL)".into(),
        ));
    }
    if s.kind != "sailpoint" {
        return Err((
            "kind".into(),
            format!("`{}`: only `sailpoint` is known", s.kind),
        ));
    }
    let auth = match (&s.bearer, &s.basic_user, &s.basic_password_file) {
        (Some(token), None, None) if token.trim().is_empty() => {
            return Err(("bearer".into(), "names no token".into()));
        }
        (Some(token), None, None) => TriggerAuth::Bearer(token.clone()),
        (None, Some(user), Some(file)) => TriggerAuth::Basic {
            user: user.clone(),
            password: provd_connector_core::http::read_secret(base, Some(file), None, "password")
                .map_err(|(_, m)| ("basic_password_file".to_string(), m))?,
        },
        (None, Some(_), None) => {
            return Err((
                "basic_password_file".into(),
                "basic_user needs basic_password_file".into(),
            ));
        }
        (None, None, Some(_)) => {
            return Err((
                "basic_user".into(),
                "basic_password_file needs basic_user".into(),
            ));
        }
        (None, None, None) => {
            return Err((
                "bearer".into(),
                "give bearer (a provd API token name) or basic_user and basic_password_file".into(),
            ));
        }
        (Some(_), _, _) => {
            return Err((
                "bearer".into(),
                "give bearer or basic_user, not both".into(),
            ));
        }
    };
    for (id, item) in &s.items {
        if crate::model::ItemType::parse(&item.ty).is_none() {
            return Err((
                format!("items.{id}.type"),
                "must be ROLE, ACCESS_PROFILE or ENTITLEMENT".into(),
            ));
        }
    }
    Ok(Trigger {
        name: s.name.clone(),
        auth,
        identity_attribute: s.identity_attribute.clone(),
        response_deadline: s.response_deadline.0,
        items: s.items.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(text: &str) -> TriggerSection {
        toml::from_str(&format!("name = \"sp\"\nkind = \"sailpoint\"\n{text}")).unwrap()
    }

    #[test]
    fn one_way_to_authenticate() {
        let t = build(Path::new("."), &section("bearer = \"sailpoint-trigger\"")).unwrap();
        assert!(matches!(t.auth, TriggerAuth::Bearer(ref n) if n == "sailpoint-trigger"));
        assert_eq!(t.response_deadline, Duration::from_secs(3600));
        assert_eq!(build(Path::new("."), &section("")).unwrap_err().0, "bearer");
        assert_eq!(
            build(Path::new("."), &section("basic_user = \"sp\""))
                .unwrap_err()
                .0,
            "basic_password_file"
        );
        let e = build(
            Path::new("."),
            &section("bearer = \"x\"\nbasic_user = \"sp\"\nbasic_password_file = \"f\""),
        )
        .unwrap_err();
        assert!(e.1.contains("not both"), "{e:?}");
    }

    #[test]
    fn names_kinds_and_items_are_checked() {
        let mut s = section("bearer = \"t\"");
        s.name = "a/b".into();
        assert_eq!(build(Path::new("."), &s).unwrap_err().0, "name");
        let mut s = section("bearer = \"t\"");
        s.kind = "okta".into();
        assert_eq!(build(Path::new("."), &s).unwrap_err().0, "kind");
        let s = section("bearer = \"t\"\n[items.abc]\ntype = \"GROUP\"\nid = \"x\"");
        assert_eq!(build(Path::new("."), &s).unwrap_err().0, "items.abc.type");
    }
}
