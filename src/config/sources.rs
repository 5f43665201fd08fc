//! `sources/*.toml`: one file per source. The common keys (`id`, `type`, `owner`,
//! `[retry]`) are read here; the rest of the file belongs to the source's connector and is
//! kept as a table for it to read (so that adding a connector does not touch this file).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use regex::Regex;

use super::Problem;
use super::files::{ManualSettings, SourceCommon};
use super::retry::{breaker_policy, retry_policy};
use crate::model::{BreakerPolicy, RetryPolicy};

/// The kinds of source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    Ldap,
    Scim,
    Rest,
    Manual,
}

impl SourceKind {
    fn parse(s: &str) -> Option<Self> {
        match s {
            "ldap" => Some(Self::Ldap),
            "scim" => Some(Self::Scim),
            "rest" => Some(Self::Rest),
            "manual" => Some(Self::Manual),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ldap => "ldap",
            Self::Scim => "scim",
            Self::Rest => "rest",
            Self::Manual => "manual",
        }
    }
}

/// One configured source.
#[derive(Debug, Clone)]
pub struct Source {
    pub id: String,
    pub kind: SourceKind,
    pub owner: String,
    /// The file it came from; its directory anchors relative paths in `settings`.
    pub file: PathBuf,
    pub retry: RetryPolicy,
    pub breaker: BreakerPolicy,
    /// Messages matching one of these are retryable (DESIGN §6 rule 1).
    pub retryable_errors: Vec<Regex>,
    /// Everything but the common keys, for the connector.
    pub settings: toml::Table,
    /// Parsed settings of a manual source.
    pub manual: Option<ManualSettings>,
    /// Attribute sync: account attribute -> template, re-rendered when the identity
    /// changes (`[account] sync`).
    pub sync: BTreeMap<String, String>,
    /// How often the agent reconciles this (direct) source (DESIGN §17).
    pub reconcile_every: Option<std::time::Duration>,
    /// What `provd reconcile --fix` does with unmanaged members (DESIGN §21).
    pub unmanaged_members: super::files::UnmanagedMembers,
}

impl Source {
    /// A path from the source's settings, resolved against the source file's directory.
    pub fn path(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.file.parent().unwrap_or(Path::new(".")).join(p)
        }
    }

    /// Does its connector create accounts disabled, to be enabled by a second operation?
    /// (An LDAP source with `directory = "ad"` and `[account.password]`.)
    pub fn creates_disabled(&self) -> bool {
        self.kind == SourceKind::Ldap
            && self.settings.get("directory").and_then(|v| v.as_str()) == Some("ad")
            && self
                .settings
                .get("account")
                .and_then(|a| a.get("password"))
                .is_some()
    }

    /// Does its connector create accounts disabled and leave them so? (An LDAP source with
    /// `directory = "ad"` and no `[account.password]`: nobody could log on to them.)
    pub fn creates_disabled_for_good(&self) -> bool {
        self.kind == SourceKind::Ldap
            && self.settings.get("directory").and_then(|v| v.as_str()) == Some("ad")
            && !self.creates_disabled()
    }

    /// Does a rehire's enable give the account a new delivered password first
    /// (`[account.password] on_rehire`, default `reset`)?
    pub fn resets_on_rehire(&self) -> bool {
        self.creates_disabled()
            && self
                .settings
                .get("account")
                .and_then(|a| a.get("password"))
                .and_then(|p| p.get("on_rehire"))
                .and_then(|v| v.as_str())
                != Some("keep")
    }

    /// Every `*_file` key must name a readable file and every `*_env` key a set variable.
    /// The contents are never read into an error message.
    pub fn check_secrets(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        walk(&self.settings, "", &mut |key, value| {
            let Some(text) = value.as_str() else { return };
            if key.ends_with("_file") {
                let path = self.path(text);
                if let Err(e) = std::fs::File::open(&path) {
                    out.push(Problem {
                        at: None,
                        file: self.file.clone(),
                        key: key.to_string(),
                        message: format!("cannot read {}: {e}", path.display()),
                    });
                }
            } else if key.ends_with("_env") && std::env::var_os(text).is_none() {
                out.push(Problem {
                    at: None,
                    file: self.file.clone(),
                    key: key.to_string(),
                    message: format!("environment variable {text} is not set"),
                });
            }
        });
        out
    }
}

fn walk(table: &toml::Table, prefix: &str, f: &mut dyn FnMut(&str, &toml::Value)) {
    for (k, v) in table {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            toml::Value::Table(t) => walk(t, &key, f),
            other => f(&key, other),
        }
    }
}

const COMMON_KEYS: [&str; 6] = [
    "id",
    "type",
    "owner",
    "retry",
    "reconcile_every",
    "reconcile",
];

/// An "unknown field" error lists only the keys of the part of the file that refused it
/// (the connector's own); a source file also takes the common keys and, for HTTP
/// sources, the shared connection keys. The hint names them all.
fn with_valid_keys(msg: &str, kind: SourceKind) -> String {
    if !msg.contains("unknown field") {
        return msg.to_string();
    }
    let mut keys: Vec<String> = COMMON_KEYS.iter().map(|k| k.to_string()).collect();
    if matches!(kind, SourceKind::Scim | SourceKind::Rest) {
        keys.extend(
            provd_connector_core::http::HTTP_KEYS
                .iter()
                .map(|k| k.to_string()),
        );
    }
    if let Some((_, listed)) = msg.split_once("expected one of ") {
        let listed = listed.lines().next().unwrap_or("");
        keys.extend(
            listed
                .split(',')
                .map(|k| k.trim().trim_matches('`').to_string())
                .filter(|k| !k.is_empty()),
        );
    } else if let Some((_, one)) = msg.split_once("expected `") {
        keys.extend(one.split('`').next().map(str::to_string));
    }
    let mut seen = std::collections::BTreeSet::new();
    keys.retain(|k| seen.insert(k.clone()));
    format!(
        "{msg}\nvalid keys in a {} source file: {}",
        kind.as_str(),
        keys.join(", ")
    )
}

/// Reads every `*.toml` in `dir` (sorted by name), reporting problems per file and key.
/// Also returns the ids the files that did not load name (or their file stems, where
/// not even the id can be read), so that what names those sources is not reported again.
pub fn load_dir(
    dir: &Path,
    retry_defaults: &RetryPolicy,
    breaker_defaults: &BreakerPolicy,
    problems: &mut Vec<Problem>,
) -> (BTreeMap<String, Source>, BTreeSet<String>) {
    let mut out: BTreeMap<String, Source> = BTreeMap::new();
    let mut broken = BTreeSet::new();
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect(),
        Err(e) => {
            problems.push(Problem {
                at: None,
                file: dir.to_path_buf(),
                key: String::new(),
                message: format!("cannot read the sources directory: {e}"),
            });
            return (out, broken);
        }
    };
    files.sort();
    for file in files {
        let Some(source) = load_one(&file, retry_defaults, breaker_defaults, problems) else {
            broken.insert(named_id(&file));
            continue;
        };
        {
            if let Some(first) = out.get(&source.id) {
                problems.push(Problem {
                    at: None,
                    file: file.clone(),
                    key: "id".into(),
                    message: format!(
                        "duplicate source id `{}` (also in {})",
                        source.id,
                        first.file.display()
                    ),
                });
                continue;
            }
            out.insert(source.id.clone(), source);
        }
    }
    (out, broken)
}

/// The id a source file gives, read as leniently as possible: its `id = "…"` line even
/// when the rest does not parse, else the file's stem.
fn named_id(file: &Path) -> String {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    let given = text.lines().find_map(|l| {
        let (key, value) = l.split_once('=')?;
        (key.trim() == "id").then(|| value.trim().trim_matches(['"', '\'']).to_string())
    });
    given.filter(|id| !id.is_empty()).unwrap_or_else(|| {
        file.file_stem()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned()
    })
}

fn load_one(
    file: &Path,
    retry_defaults: &RetryPolicy,
    breaker_defaults: &BreakerPolicy,
    problems: &mut Vec<Problem>,
) -> Option<Source> {
    let mut problem = |key: &str, message: String| {
        problems.push(Problem {
            at: None,
            file: file.to_path_buf(),
            key: key.to_string(),
            message,
        })
    };
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => {
            problem("", format!("cannot read: {e}"));
            return None;
        }
    };
    let mut table: toml::Table = match toml::from_str(&text) {
        Ok(t) => t,
        Err(e) => {
            problem("", e.to_string().trim().to_string());
            return None;
        }
    };
    let mut common = toml::Table::new();
    for key in COMMON_KEYS {
        if let Some(v) = table.remove(key) {
            common.insert(key.to_string(), v);
        }
    }
    let common: SourceCommon = match toml::Value::Table(common).try_into() {
        Ok(c) => c,
        Err(e) => {
            problem("", e.to_string().trim().to_string());
            return None;
        }
    };
    let mut ok = true;
    if common.id.trim().is_empty() {
        problem("id", "empty source id".into());
        ok = false;
    }
    let Some(kind) = SourceKind::parse(&common.kind) else {
        problem(
            "type",
            format!(
                "unknown source type `{}` (ldap, scim, rest or manual)",
                common.kind
            ),
        );
        return None;
    };
    let section = common.retry.clone().unwrap_or_default();
    let retry = match retry_policy(retry_defaults, &section) {
        Ok(r) => r,
        Err((key, msg)) => {
            problem(&format!("retry.{key}"), msg);
            ok = false;
            retry_defaults.clone()
        }
    };
    let mut retryable_errors = Vec::new();
    for (i, re) in section.retryable_errors.iter().enumerate() {
        match Regex::new(re) {
            Ok(r) => retryable_errors.push(r),
            Err(e) => {
                problem(
                    &format!("retry.retryable_errors[{i}]"),
                    format!("invalid regex: {e}"),
                );
                ok = false;
            }
        }
    }
    let mut sync = match take_sync(&mut table) {
        Ok(s) => s,
        Err((key, message)) => {
            problem(&key, message);
            ok = false;
            BTreeMap::new()
        }
    };
    if kind == SourceKind::Ldap
        && let Some(place) = placement(&table)
    {
        sync.insert(provd_connector_core::operation::PLACEMENT.into(), place);
    }
    if kind == SourceKind::Manual && common.reconcile.is_some() {
        problem(
            "reconcile",
            "a manual source has no groups provd reads back; its evidence is `provd accounts import`".into(),
        );
        ok = false;
    }
    if kind == SourceKind::Manual && common.reconcile_every.is_some() {
        problem(
            "reconcile_every",
            "a manual source cannot be read back; its evidence is `provd accounts import` (its [export])".into(),
        );
        ok = false;
    }
    let manual = match kind {
        SourceKind::Manual => {
            match toml::Value::Table(table.clone()).try_into::<ManualSettings>() {
                Ok(m) => {
                    if let Some(t) = m.account.as_ref().and_then(|a| a.native_id.as_deref())
                        && let Err(e) = provd_connector_core::template::placeholders(t)
                    {
                        problem("account.native_id", e.to_string());
                        ok = false;
                    }
                    if let Some(e) = &m.export {
                        for (key, message) in check_export(e) {
                            problem(&key, message);
                            ok = false;
                        }
                    }
                    Some(m)
                }
                Err(e) => {
                    problem("", with_valid_keys(e.to_string().trim(), kind));
                    return None;
                }
            }
        }
        SourceKind::Ldap | SourceKind::Scim | SourceKind::Rest => {
            let base = file.parent().unwrap_or(Path::new("."));
            if let Err(found) = crate::connectors::validate(kind, &table, base) {
                for (key, msg) in found {
                    problem(&key, with_valid_keys(&msg, kind));
                }
                ok = false;
            }
            None
        }
    };
    if !ok {
        return None;
    }
    Some(Source {
        id: common.id,
        kind,
        owner: common.owner,
        reconcile_every: common.reconcile_every.map(|d| d.0),
        unmanaged_members: common
            .reconcile
            .map(|r| r.unmanaged_members)
            .unwrap_or_default(),
        file: file.to_path_buf(),
        breaker: breaker_policy(breaker_defaults, &section),
        retry,
        retryable_errors,
        settings: table,
        manual,
        sync,
    })
}

/// `[export]`: one way to read entitlements, a share for `max_drop`.
fn check_export(e: &super::files::ExportSettings) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if e.key.trim().is_empty() {
        out.push(("export.key".into(), "names no column".into()));
    }
    if e.entitlements.is_some() && !e.attributes.is_empty() {
        out.push((
            "export.attributes".into(),
            "give export.entitlements or export.attributes, not both".into(),
        ));
    }
    if let Err(m) = max_drop(&e.max_drop) {
        out.push(("export.max_drop".into(), m));
    }
    out
}

/// `"20%"` as 0.2.
pub fn max_drop(text: &str) -> Result<f64, String> {
    text.trim()
        .strip_suffix('%')
        .and_then(|n| n.trim().parse::<f64>().ok())
        .filter(|n| (0.0..=100.0).contains(n))
        .map(|n| n / 100.0)
        .ok_or_else(|| format!("`{text}`: a share like \"20%\""))
}

/// An LDAP account's place as one template (its `native_id`, and `[account] ou` where
/// set): when it renders differently after an identity change, attribute sync's
/// UPDATE_ACCOUNT carries it and the connector moves or renames the entry (DESIGN §24).
fn placement(table: &toml::Table) -> Option<String> {
    let account = table.get("account")?.as_table()?;
    let dn = account.get("native_id")?.as_str()?;
    Some(match account.get("ou").and_then(toml::Value::as_str) {
        Some(ou) => format!("{dn};{ou}"),
        None => dn.to_string(),
    })
}

/// `[account] sync = ["mail", "cn"]` (DESIGN §13), taken out of the connector's settings:
/// each name with its template, the one `[account.attributes]` gives it, else the
/// identity attribute of that name (`{mail}`).
fn take_sync(table: &mut toml::Table) -> Result<BTreeMap<String, String>, (String, String)> {
    let Some(toml::Value::Table(account)) = table.get_mut("account") else {
        return Ok(BTreeMap::new());
    };
    let Some(list) = account.remove("sync") else {
        return Ok(BTreeMap::new());
    };
    let key = "account.sync".to_string();
    let names: Vec<String> = list
        .try_into()
        .map_err(|_| (key.clone(), "must be a list of attribute names".to_string()))?;
    let attributes = account.get("attributes").and_then(toml::Value::as_table);
    let mut out = BTreeMap::new();
    for name in names {
        let template = match attributes.and_then(|a| a.get(&name)) {
            Some(toml::Value::String(t)) => t.clone(),
            Some(_) => return Err((key, format!("`{name}`: its template is not a string"))),
            None => format!("{{{name}}}"),
        };
        provd_connector_core::template::placeholders(&template)
            .map_err(|e| (key.clone(), format!("`{name}`: {e}")))?;
        out.insert(name, template);
    }
    Ok(out)
}
