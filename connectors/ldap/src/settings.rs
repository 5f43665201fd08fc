//! The `type = "ldap"` part of a source file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LdapSettings {
    /// `ldap://host:port` (plain, or with `starttls = true`) or `ldaps://host:port`.
    pub url: String,
    /// Upgrade an `ldap://` connection with StartTLS before binding.
    #[serde(default)]
    pub starttls: bool,
    /// PEM file of the CA that signed the server's certificate (a private CA); without it
    /// the system's trust store is used.
    #[serde(default)]
    pub tls_ca_file: Option<String>,
    /// The name the server's certificate is checked against, when the URL names the
    /// server otherwise (an IP address, an alias); default: the URL's host.
    #[serde(default)]
    pub tls_server_name: Option<String>,
    /// `generic` (default) or `ad`: Active Directory's answers and account control
    /// (DESIGN §20).
    #[serde(default)]
    pub directory: Directory,
    /// The DN provd binds as.
    pub bind_dn: String,
    /// File holding the bind password (first line); or
    #[serde(default)]
    pub bind_password_file: Option<String>,
    /// the environment variable holding it.
    #[serde(default)]
    pub bind_password_env: Option<String>,
    /// Time to connect (and bind) before the attempt fails as retryable (default 5s).
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: String,
    /// Time one LDAP operation may take (default 30s).
    #[serde(default = "default_operation_timeout")]
    pub operation_timeout: String,
    /// Connections kept open to the server (default 4).
    #[serde(default = "default_pool_size")]
    pub pool_size: usize,
    /// Operations sent on one connection before the first answer is back (default 2;
    /// 1 = strictly one at a time, for a server that mishandles more).
    #[serde(default = "default_pipeline")]
    pub pipeline: usize,
    /// The Create Account specification.
    pub account: AccountSettings,
    /// How group entitlements (`attribute = "groups"`) are written.
    #[serde(default)]
    pub groups: GroupSettings,
}

fn default_connect_timeout() -> String {
    "5s".into()
}
fn default_operation_timeout() -> String {
    "30s".into()
}
fn default_pool_size() -> usize {
    4
}
fn default_pipeline() -> usize {
    2
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountSettings {
    /// DN template, e.g. `uid={id},ou=people,dc=example,dc=com`; values are RFC 4514-escaped.
    pub native_id: String,
    /// Attribute an existing account is found by under the DN's parent (e.g. `uid`); its
    /// value is the one `attributes` gives it.
    pub correlation: String,
    /// objectClass values of a new entry.
    pub object_classes: Vec<String>,
    /// Attribute templates of a new entry: `cn = "{firstName} {lastName}"`.
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    /// How to disable an account.
    #[serde(default)]
    pub disable: Option<DisableSettings>,
    /// Where the correlation search looks (default: the parent of the account's DN). Set
    /// it to the domain's root when accounts may already exist in other OUs.
    #[serde(default)]
    pub search_base: Option<String>,
    /// Where new accounts go, a DN template (`OU={department},OU=Staff,DC=example,DC=com`):
    /// the first RDN of `native_id` is put under it. An account moves when it renders
    /// differently after an identity change (DESIGN §24). Default: `native_id` as it is.
    #[serde(default)]
    pub ou: Option<String>,
    /// Active Directory only: give new accounts an initial password, then enable them.
    /// Without it accounts are created disabled.
    #[serde(default)]
    pub password: Option<PasswordSettings>,
}

/// Which directory's rules apply.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Directory {
    #[default]
    Generic,
    Ad,
}

/// `[account.password]`: the initial password of a new AD account.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PasswordSettings {
    /// `random`: a fresh password per account that meets AD's complexity rules.
    pub initial: String,
    /// The person must change it at first logon (`pwdLastSet = 0`; default true).
    #[serde(default = "default_true")]
    pub must_change: bool,
    /// A command (program and arguments; `{id}`-style placeholders filled from the
    /// identity) that gets the password and a newline on standard input and delivers it;
    /// exit 0 = delivered. Without it nobody learns the password (a helpdesk reset does).
    #[serde(default)]
    pub deliver_command: Option<Vec<String>>,
    /// Length of a random password (default 20, at least 14).
    #[serde(default = "default_password_length")]
    pub length: usize,
    /// What a rehire's enable does to the password the account had: `reset` (default: a
    /// new one is set and delivered first, RESET_PASSWORD) or `keep`.
    #[serde(default)]
    pub on_rehire: OnRehire,
}

/// `[account.password] on_rehire`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnRehire {
    #[default]
    Reset,
    Keep,
}

fn default_true() -> bool {
    true
}
fn default_password_length() -> usize {
    20
}

/// Disable by setting an attribute (`nsAccountLock = TRUE`, `pwdAccountLockedTime =
/// 000001010000Z`, AD `userAccountControl = 514`) or by moving the entry to another OU.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DisableSettings {
    /// Attribute to replace.
    #[serde(default)]
    pub attribute: Option<String>,
    /// Its value.
    #[serde(default)]
    pub value: Option<String>,
    /// DN of the container disabled accounts are moved to.
    #[serde(default)]
    pub move_to: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupSettings {
    /// `member` (groupOfNames, default), `uniqueMember` (groupOfUniqueNames) or
    /// `memberUid` (posixGroup: the account's correlation value, not its DN).
    #[serde(default = "default_member_attribute")]
    pub member_attribute: String,
    /// A DN kept in every group so that removing the last real member of a groupOfNames
    /// (which must have one) succeeds.
    #[serde(default)]
    pub placeholder_member: Option<String>,
    /// Changes of one group's members waiting at the same time are written in one modify
    /// of at most this many values (default 100; 1 = one member per modify).
    #[serde(default = "default_members_per_modify")]
    pub members_per_modify: usize,
}

impl Default for GroupSettings {
    fn default() -> Self {
        Self {
            member_attribute: default_member_attribute(),
            placeholder_member: None,
            members_per_modify: default_members_per_modify(),
        }
    }
}

fn default_members_per_modify() -> usize {
    100
}

fn default_member_attribute() -> String {
    "member".into()
}

/// Problems with the settings, each with its key.
pub fn validate(s: &LdapSettings, base: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if let Err(e) = provd_connector_core::url_check::check_url(
        &s.url,
        &["ldap", "ldaps"],
        provd_connector_core::url_check::Query::Refused,
    ) {
        out.push(("url".into(), e));
    }
    if s.starttls && s.url.starts_with("ldaps://") {
        out.push((
            "starttls".into(),
            "StartTLS is for ldap:// URLs; ldaps:// is already TLS".into(),
        ));
    }
    match (&s.bind_password_file, &s.bind_password_env) {
        (None, None) => out.push((
            "bind_password_file".into(),
            "set bind_password_file or bind_password_env".into(),
        )),
        (Some(_), Some(_)) => out.push((
            "bind_password_env".into(),
            "set only one of bind_password_file and bind_password_env".into(),
        )),
        _ => {}
    }
    for (key, v) in [
        ("connect_timeout", &s.connect_timeout),
        ("operation_timeout", &s.operation_timeout),
    ] {
        if let Err(e) = parse_duration(v) {
            out.push((key.into(), e));
        }
    }
    if s.pool_size == 0 {
        out.push(("pool_size".into(), "must be at least 1".into()));
    }
    if s.groups.members_per_modify == 0 {
        out.push((
            "groups.members_per_modify".into(),
            "must be at least 1".into(),
        ));
    }
    if s.pipeline == 0 {
        out.push(("pipeline".into(), "must be at least 1".into()));
    }
    if let Err(e) = provd_connector_core::template::placeholders(&s.account.native_id) {
        out.push(("account.native_id".into(), e.to_string()));
    }
    if let Some(Err(e)) = s
        .account
        .ou
        .as_deref()
        .map(provd_connector_core::template::placeholders)
    {
        out.push(("account.ou".into(), e.to_string()));
    }
    for (k, t) in &s.account.attributes {
        if let Err(e) = provd_connector_core::template::placeholders(t) {
            out.push((format!("account.attributes.{k}"), e.to_string()));
        }
    }
    if provd_connector_core::template::is_unique(&s.account.native_id).unwrap_or(false) {
        out.push((
            "account.native_id".into(),
            "unique(…) is for [account.attributes]; a DN taken by a namesake already gets the identity's id beside it".into(),
        ));
    }
    if let Some(t) = s.account.attributes.get(&s.account.correlation)
        && provd_connector_core::template::is_unique(t).unwrap_or(false)
    {
        out.push((
            "account.correlation".into(),
            format!(
                "`{}` is made with unique(…), so a namesake's account would be taken for this identity's; correlate by an attribute that names one person (e.g. employeeID = \"{{id}}\")",
                s.account.correlation
            ),
        ));
    }
    if !s.account.attributes.contains_key(&s.account.correlation) {
        out.push((
            "account.correlation".into(),
            format!(
                "`{}` must also be one of [account.attributes] (its value is what is searched for)",
                s.account.correlation
            ),
        ));
    }
    if s.account.object_classes.is_empty() {
        out.push((
            "account.object_classes".into(),
            "must name at least one objectClass".into(),
        ));
    }
    if let Some(d) = &s.account.disable {
        let attr = d.attribute.is_some() && d.value.is_some();
        if attr == d.move_to.is_some() {
            out.push((
                "account.disable".into(),
                "set either attribute + value, or move_to".into(),
            ));
        }
    }
    if !["member", "uniqueMember", "memberUid"].contains(&s.groups.member_attribute.as_str()) {
        out.push((
            "groups.member_attribute".into(),
            "must be member, uniqueMember or memberUid".into(),
        ));
    }
    if s.directory == Directory::Ad {
        // The service account's password crosses the wire at every bind, with or without
        // initial passwords to set: a lax DC would take it in clear (issue 34).
        if !(s.url.starts_with("ldaps://") || s.starttls) {
            out.push((
                "url".into(),
                "directory = \"ad\" binds with the service account's password: use an ldaps:// url or starttls = true".into(),
            ));
        }
        if s.account.disable.is_some() {
            out.push((
                "account.disable".into(),
                "not with directory = \"ad\": provd disables and enables AD accounts by their ACCOUNTDISABLE bit".into(),
            ));
        }
        if let Some(k) = s
            .account
            .attributes
            .keys()
            .find(|k| k.eq_ignore_ascii_case("userAccountControl"))
        {
            out.push((
                format!("account.attributes.{k}"),
                "not with directory = \"ad\": provd creates the account disabled and enables it itself".into(),
            ));
        }
    }
    if let Some(p) = &s.account.password {
        if s.directory != Directory::Ad {
            out.push((
                "account.password".into(),
                "initial passwords are set the Active Directory way: needs directory = \"ad\""
                    .into(),
            ));
        }
        if p.initial != "random" {
            out.push((
                "account.password.initial".into(),
                format!("`{}`: the only kind is \"random\"", p.initial),
            ));
        }
        if p.length < 14 || p.length > 128 {
            out.push((
                "account.password.length".into(),
                "must be from 14 to 128".into(),
            ));
        }
        if p.deliver_command.as_ref().is_some_and(|c| c.is_empty()) {
            out.push((
                "account.password.deliver_command".into(),
                "names no program".into(),
            ));
        }
    }
    if let Some(ca) = &s.tls_ca_file
        && std::fs::File::open(resolve(base, ca)).is_err()
    {
        out.push((
            "tls_ca_file".into(),
            format!("cannot read {}", resolve(base, ca).display()),
        ));
    }
    out
}

pub fn resolve(base: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

pub use provd_connector_core::duration::parse as parse_duration;

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(extra: &str) -> Vec<(String, String)> {
        let text = format!(
            "url = \"ldap://h:389\"\nbind_dn = \"cn=a\"\nbind_password_env = \"X\"\n{extra}\n[account]\nnative_id = \"uid={{id}},dc=x\"\ncorrelation = \"uid\"\nobject_classes = [\"inetOrgPerson\"]\n[account.attributes]\nuid = \"{{id}}\"\n"
        );
        let s: LdapSettings = toml::from_str(&text).unwrap();
        validate(&s, Path::new("."))
    }

    #[test]
    fn a_minimal_source_is_valid() {
        assert!(parse("").is_empty(), "{:?}", parse(""));
    }

    #[test]
    fn problems_name_their_keys() {
        let keys = |extra: &str| parse(extra).into_iter().map(|(k, _)| k).collect::<Vec<_>>();
        assert_eq!(keys("bind_password_file = \"f\""), ["bind_password_env"]);
        assert_eq!(keys("pool_size = 0"), ["pool_size"]);
        assert_eq!(keys("connect_timeout = \"soon\""), ["connect_timeout"]);
        assert_eq!(
            keys("tls_ca_file = \"/nonexistent/ca.pem\""),
            ["tls_ca_file"]
        );
        assert_eq!(
            keys("[groups]\nmember_attribute = \"members\""),
            ["groups.member_attribute"]
        );
    }

    /// Issue 34, item 6: a name-based key with `unique(…)` must not be what accounts are
    /// correlated by, or the second Ada Lovelace would be linked to the first's account.
    #[test]
    fn a_unique_value_is_never_the_correlation_key() {
        let with = |corr: &str| {
            let text = format!(
                "url = \"ldap://h:389\"\nbind_dn = \"cn=a\"\nbind_password_env = \"X\"\n[account]\nnative_id = \"uid={{id}},dc=x\"\ncorrelation = \"{corr}\"\nobject_classes = [\"inetOrgPerson\"]\n[account.attributes]\nuid = \"{{unique(lower(ascii(firstName)), 8)}}\"\nemployeeNumber = \"{{id}}\"\n"
            );
            let s: LdapSettings = toml::from_str(&text).unwrap();
            validate(&s, Path::new("."))
        };
        let refused = with("uid");
        assert_eq!(refused.len(), 1, "{refused:?}");
        assert_eq!(refused[0].0, "account.correlation");
        assert!(refused[0].1.contains("employeeID"), "{refused:?}");
        assert!(with("employeeNumber").is_empty());
    }

    #[test]
    fn ad_sources_leave_account_control_to_provd() {
        let text = "url = \"ldap://h:389\"\ndirectory = \"ad\"\nbind_dn = \"cn=a\"\nbind_password_env = \"X\"\n[account]\nnative_id = \"CN={id},DC=x\"\ncorrelation = \"sAMAccountName\"\nobject_classes = [\"user\"]\n[account.attributes]\nsAMAccountName = \"{id}\"\nuserAccountControl = \"514\"\n[account.disable]\nattribute = \"userAccountControl\"\nvalue = \"514\"\n[account.password]\ninitial = \"random\"\nlength = 8\n";
        let s: LdapSettings = toml::from_str(text).unwrap();
        let keys: Vec<String> = validate(&s, Path::new("."))
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(
            keys,
            [
                "url",
                "account.disable",
                "account.attributes.userAccountControl",
                "account.password.length",
            ]
        );
    }

    /// Issue 34: an AD source on plain ldap:// was accepted when it set no initial
    /// passwords, and its service password then crossed the wire in clear.
    #[test]
    fn an_ad_source_without_tls_is_refused_even_without_passwords_to_set() {
        let ad = |url: &str, extra: &str| {
            let text = format!(
                "url = \"{url}\"\ndirectory = \"ad\"\nbind_dn = \"cn=a\"\nbind_password_env = \"X\"\n{extra}\n[account]\nnative_id = \"CN={{id}},DC=x\"\ncorrelation = \"sAMAccountName\"\nobject_classes = [\"user\"]\n[account.attributes]\nsAMAccountName = \"{{id}}\"\n"
            );
            let s: LdapSettings = toml::from_str(&text).unwrap();
            validate(&s, Path::new("."))
        };
        let plain = ad("ldap://dc:389", "");
        assert_eq!(plain.len(), 1, "{plain:?}");
        assert_eq!(plain[0].0, "url");
        assert!(
            plain[0].1.contains("ldaps:// url or starttls = true"),
            "{plain:?}"
        );
        assert!(ad("ldaps://dc", "").is_empty());
        assert!(ad("ldap://dc:389", "starttls = true").is_empty());
    }
}
