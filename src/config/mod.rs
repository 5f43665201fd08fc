//! Loading and checking the configuration (DESIGN §5 contract): `provd.toml` with
//! `PROVD_SECTION__KEY` environment overrides, `sources/*.toml`, `catalog.toml` and
//! `identities.csv`. Relative paths resolve against the directory of the file naming them.
//!
//! Loading collects every problem it can find (each with its file and key) instead of
//! stopping at the first, so that `provd check` shows them all at once.

pub mod catalog;
pub mod duration;
pub mod files;
pub mod identities;
pub mod lifecycle;
mod locate;
mod problem;
pub use problem::{Problem, Problems, place};
pub mod mail;
pub mod policy;
mod retry;
pub(crate) mod sources;
pub mod trigger;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use provd_connector_core::Identity;

pub use catalog::{Catalog, ItemType};
pub use files::LogFormat;
pub use sources::{Source, SourceKind, max_drop};

use crate::model::{BreakerPolicy, RetryPolicy};
use files::{CatalogFile, ProvdFile};

/// The agent's settings, with paths resolved.
#[derive(Debug, Clone)]
pub struct Agent {
    pub state_dir: PathBuf,
    pub spool_dir: Option<PathBuf>,
    pub time_zone: jiff::tz::TimeZone,
    pub time_zone_name: String,
    pub workers: usize,
    pub shutdown_grace: Duration,
    pub lease: Duration,
    pub leader_lease: Duration,
    /// `agent.name`, or `HOSTNAME:PID`.
    pub name: String,
}

/// `HOSTNAME:PID`: what an agent is called when `agent.name` is not set.
pub fn default_agent_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into());
    format!("{host}:{}", std::process::id())
}

#[derive(Debug, Clone)]
pub struct Api {
    pub listen: SocketAddr,
    pub tokens_file: PathBuf,
    pub max_connections: usize,
    pub header_read_timeout: std::time::Duration,
    pub max_connections_per_peer: usize,
    pub body_read_timeout: std::time::Duration,
}

#[derive(Debug, Clone)]
pub struct Log {
    pub format: Option<LogFormat>,
    pub level: String,
}

/// Everything provd runs on.
#[derive(Debug, Clone)]
pub struct Config {
    pub path: PathBuf,
    pub agent: Agent,
    pub api: Api,
    pub log: Log,
    pub sources: BTreeMap<String, Source>,
    pub catalog: Catalog,
    /// Identities from `identities.csv` (the store's imported identities take precedence).
    pub identities: BTreeMap<String, Identity>,
    pub catalog_path: PathBuf,
    pub identities_path: PathBuf,
    /// What some sources' settings change in planning.
    pub rules: SourceRules,
    /// Governance services to pull approved requests from.
    pub upstreams: Vec<files::UpstreamSection>,
    /// `[store]`: a shared PostgreSQL database; None for the embedded SQLite store.
    pub store: Option<PgStore>,
    /// Lifecycle states (`agent.lifecycle`); empty when not configured.
    pub lifecycle: lifecycle::Lifecycle,
    /// `[mail]`: how owners are mailed; None, and they are not.
    pub mail: Option<mail::Mail>,
    /// `[[trigger]]`: SailPoint event-trigger subscriptions, by name.
    pub triggers: BTreeMap<String, trigger::Trigger>,
    /// The pre-approval policy (`agent.policy`); the default approves known items.
    pub policy: policy::Policy,
}

/// A PostgreSQL store as configured (the password read, never logged: `SecretString`).
#[derive(Debug, Clone)]
pub struct PgStore {
    pub url: String,
    pub password: Option<secrecy::SecretString>,
    pub tls_ca_file: Option<PathBuf>,
    pub pool_size: usize,
}

/// Checks `[store]` and reads its password; problems name the key.
fn pg_store(base: &Path, s: &files::StoreSection) -> Result<PgStore, (String, String)> {
    let url = s.postgres_url.trim();
    let rest = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))
        .ok_or_else(|| {
            (
                "store.postgres_url".to_string(),
                "must start with postgres://".to_string(),
            )
        })?;
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    if authority
        .rsplit_once('@')
        .is_some_and(|(user, _)| user.contains(':'))
        || url.contains("password=")
    {
        return Err((
            "store.postgres_url".into(),
            "must not hold a password; give store.password_file or store.password_env".into(),
        ));
    }
    let password = match (&s.password_file, &s.password_env) {
        (None, None) => None,
        (file, env) => Some(
            provd_connector_core::http::read_secret(
                base,
                file.as_deref(),
                env.as_deref(),
                "password",
            )
            .map_err(|(k, m)| (format!("store.{k}"), m))?,
        ),
    };
    if s.pool_size == 0 {
        return Err(("store.pool_size".into(), "must be at least 1".into()));
    }
    Ok(PgStore {
        url: url.to_string(),
        password,
        tls_ca_file: s.tls_ca_file.as_ref().map(|p| resolve(base, p)),
        pool_size: s.pool_size,
    })
}

/// Source settings that change what a request plans to.
#[derive(Debug, Clone, Default)]
pub struct SourceRules {
    /// Sources whose last entitlement's removal disables the account instead (manual
    /// `on_last_removal = "disable_account"`).
    pub disable_on_last: BTreeSet<String>,
    /// Sources that create accounts disabled and make them usable in a second step
    /// (`ENABLE_ACCOUNT`): Active Directory with `[account.password]`.
    pub enable_after_create: BTreeSet<String>,
    /// Sources where a rehire's ENABLE_ACCOUNT is preceded by a RESET_PASSWORD
    /// (`[account.password] on_rehire = "reset"`, the default).
    pub reset_on_rehire: BTreeSet<String>,
}

/// Where the configuration is: `--config`, else `$PROVD_CONFIG` (clap handles both), else
/// `/etc/provd/provd.toml` if it exists, else `./config/provd.toml`.
pub fn default_path() -> PathBuf {
    let etc = PathBuf::from("/etc/provd/provd.toml");
    if etc.exists() {
        etc
    } else {
        PathBuf::from("config/provd.toml")
    }
}

fn resolve(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        normalize(p)
    } else {
        normalize(&base.join(p))
    }
}

/// `config/../var` → `var`, so that logs and messages name paths as a person would. A
/// `..` is folded only when what it undoes is not a symbolic link: through a link, `..`
/// leads to the link target's parent, and folding would change the meaning.
pub fn normalize(p: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    // How many trailing components of `out` are real names that a `..` may undo.
    let mut names = 0usize;
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                let is_link =
                    std::fs::symlink_metadata(&out).is_ok_and(|m| m.file_type().is_symlink());
                if names > 0 && !is_link {
                    out.pop();
                    names -= 1;
                } else if out.has_root() && names == 0 {
                    // `/..` is `/`.
                } else {
                    out.push("..");
                }
            }
            Component::Normal(n) => {
                out.push(n);
                names += 1;
            }
            other => {
                out.push(other.as_os_str());
                names = 0;
            }
        }
    }
    if out.as_os_str().is_empty() {
        out.push(".");
    }
    out
}

/// `PROVD_AGENT__WORKERS=4` → `agent.workers`. Only variables with a `__` after the
/// section are taken, so that `PROVD_CONFIG` (the path) is not mistaken for a key.
fn env_overrides() -> std::collections::HashMap<String, String> {
    std::env::vars()
        .filter(|(k, _)| {
            k.strip_prefix("PROVD_")
                .is_some_and(|rest| rest.contains("__") && !rest.starts_with('_'))
        })
        .collect()
}

fn read_provd_toml(path: &Path) -> Result<ProvdFile, Problem> {
    let problem = |key: &str, message: String| Problem {
        at: None,
        file: path.to_path_buf(),
        key: key.to_string(),
        message,
    };
    // Read it ourselves first: toml's errors carry line and column, the config crate's
    // do not.
    let text =
        std::fs::read_to_string(path).map_err(|e| problem("", format!("cannot read: {e}")))?;
    toml::from_str::<ProvdFile>(&text)
        .map_err(|e| problem("", e.to_string().trim().to_string()))?;
    let built = config::Config::builder()
        .add_source(config::File::from_str(&text, config::FileFormat::Toml))
        .add_source(
            config::Environment::with_prefix("PROVD")
                .prefix_separator("_")
                .separator("__")
                .try_parsing(true)
                .source(Some(env_overrides())),
        )
        .build()
        .map_err(|e| problem("", e.to_string()))?;
    built
        .try_deserialize::<ProvdFile>()
        .map_err(|e| problem("", format!("{e} (after PROVD_* environment overrides)")))
}

impl Config {
    /// Loads and cross-checks everything, or returns every problem found, each with its
    /// line and column where it has one.
    pub fn load(path: &Path) -> Result<Config, Problems> {
        Self::load_unplaced(path).map_err(|mut found| {
            place(&mut found.0);
            found
        })
    }

    fn load_unplaced(path: &Path) -> Result<Config, Problems> {
        let mut problems = Vec::new();
        let file = read_provd_toml(path).map_err(|p| Problems(vec![p]))?;
        let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        let at = |key: &str, message: String| Problem {
            at: None,
            file: path.to_path_buf(),
            key: key.to_string(),
            message,
        };

        let time_zone = match jiff::tz::TimeZone::get(&file.agent.time_zone) {
            Ok(tz) => tz,
            Err(e) => {
                problems.push(at(
                    "agent.time_zone",
                    format!("unknown IANA time zone: {e}"),
                ));
                jiff::tz::TimeZone::UTC
            }
        };
        if file.agent.workers == 0 {
            problems.push(at("agent.workers", "must be at least 1".into()));
        }
        let defaults = match retry::retry_policy(&RetryPolicy::default(), &file.retry) {
            Ok(p) => p,
            Err((key, msg)) => {
                problems.push(at(&format!("retry.{key}"), msg));
                RetryPolicy::default()
            }
        };
        if !file.retry.retryable_errors.is_empty() {
            problems.push(at(
                "retry.retryable_errors",
                "belongs in a source file's [retry] section".into(),
            ));
        }
        let breaker = retry::breaker_policy(&BreakerPolicy::default(), &file.retry);

        let sources_dir = resolve(&base, &file.agent.sources_dir);
        let (sources, broken_sources) =
            sources::load_dir(&sources_dir, &defaults, &breaker, &mut problems);

        let catalog_path = resolve(&base, &file.agent.catalog);
        // A source whose own file has problems still counts as configured here: its
        // problems are reported once, not again by every item naming it (issue 35).
        let mut source_ids: BTreeSet<String> = sources.keys().cloned().collect();
        source_ids.extend(broken_sources);
        let catalog = match std::fs::read_to_string(&catalog_path) {
            Err(e) => {
                problems.push(Problem {
                    at: None,
                    file: catalog_path.clone(),
                    key: String::new(),
                    message: format!("cannot read: {e}"),
                });
                Catalog::default()
            }
            Ok(text) => match toml::from_str::<CatalogFile>(&text) {
                Err(e) => {
                    problems.push(Problem {
                        at: None,
                        file: catalog_path.clone(),
                        key: String::new(),
                        message: e.to_string().trim().to_string(),
                    });
                    Catalog::default()
                }
                Ok(cf) => {
                    let (cat, found) = Catalog::build(cf, &source_ids);
                    problems.extend(found.into_iter().map(|(key, message)| Problem {
                        at: None,
                        file: catalog_path.clone(),
                        key,
                        message,
                    }));
                    cat
                }
            },
        };

        let mail = file.mail.as_ref().and_then(|m| {
            mail::build(&base, m, &defaults)
                .map_err(|(key, message)| problems.push(at(&key, message)))
                .ok()
        });
        if mail.is_some() {
            // Mail goes to the owner: one that is not an address would never hear of its tasks.
            for s in sources.values().filter(|s| s.manual.is_some()) {
                if !mail::is_address(&s.owner) {
                    problems.push(Problem { at: None,
                        file: s.file.clone(),
                        key: "owner".into(),
                        message: format!(
                            "`{}` is not a mail address, and [mail] sends this source's tasks to its owner",
                            s.owner
                        ),
                    });
                }
            }
        }

        let lifecycle = match &file.agent.lifecycle {
            None => lifecycle::Lifecycle::default(),
            Some(p) => load_lifecycle(&resolve(&base, p), &catalog, &source_ids, &mut problems),
        };

        let policy = match &file.agent.policy {
            None => policy::Policy::default(),
            Some(p) => load_policy(&resolve(&base, p), &catalog, &lifecycle, &mut problems),
        };
        let mut triggers = BTreeMap::new();
        for (i, t) in file.trigger.iter().enumerate() {
            match trigger::build(&base, t) {
                Err((key, message)) => problems.push(at(&format!("trigger[{i}].{key}"), message)),
                Ok(t) => {
                    if triggers.contains_key(&t.name) {
                        problems.push(at(
                            &format!("trigger[{i}].name"),
                            format!("`{}` names two triggers", t.name),
                        ));
                    }
                    triggers.insert(t.name.clone(), t);
                }
            }
        }

        let identities_path = resolve(&base, &file.agent.identities);
        let identities = match std::fs::File::open(&identities_path) {
            Err(e) => {
                problems.push(Problem {
                    at: None,
                    file: identities_path.clone(),
                    key: String::new(),
                    message: format!("cannot read: {e}"),
                });
                BTreeMap::new()
            }
            Ok(f) => {
                let (ids, found) = identities::parse_csv(std::io::BufReader::new(f));
                problems.extend(found.into_iter().map(|(key, message)| Problem {
                    at: None,
                    file: identities_path.clone(),
                    key,
                    message,
                }));
                ids
            }
        };

        for identity in identities.values() {
            if let Err(message) = lifecycle.check_state(&identity.attributes) {
                problems.push(Problem {
                    at: None,
                    file: identities_path.clone(),
                    key: format!("identity `{}`", identity.id),
                    message,
                });
            }
        }
        if !problems.is_empty() {
            return Err(Problems(problems));
        }
        let mut names = BTreeSet::new();
        for (i, u) in file.upstream.iter().enumerate() {
            if u.kind != "okta" {
                problems.push(at(
                    &format!("upstream[{i}].kind"),
                    format!("`{}` is not a supported kind (okta)", u.kind),
                ));
            }
            if !names.insert(u.name.clone()) {
                problems.push(at(
                    &format!("upstream[{i}].name"),
                    format!("duplicate upstream name `{}`", u.name),
                ));
            }
            if u.oauth.is_some() == u.token_file.is_some() {
                problems.push(at(
                    &format!("upstream[{i}]"),
                    "set either token_file or [upstream.oauth]".into(),
                ));
            }
            for (entry, item) in &u.items {
                match ItemType::parse(&item.ty) {
                    None => problems.push(at(
                        &format!("upstream[{i}].items.{entry}.type"),
                        format!("`{}` is not ROLE, ACCESS_PROFILE or ENTITLEMENT", item.ty),
                    )),
                    Some(ty) if !catalog.contains(ty, &item.id) => problems.push(at(
                        &format!("upstream[{i}].items.{entry}.id"),
                        format!("no {} `{}` in the catalog", item.ty, item.id),
                    )),
                    Some(_) => {}
                }
            }
        }
        let store = match file.store.as_ref().map(|s| pg_store(&base, s)).transpose() {
            Ok(s) => s,
            Err((key, message)) => {
                problems.push(at(&key, message));
                None
            }
        };
        if !problems.is_empty() {
            return Err(Problems(problems));
        }
        let disable_on_last = sources
            .values()
            .filter(|s| {
                s.manual
                    .as_ref()
                    .is_some_and(|m| m.on_last_removal == files::OnLastRemoval::DisableAccount)
            })
            .map(|s| s.id.clone())
            .collect();
        let enable_after_create = sources
            .values()
            .filter(|s| s.creates_disabled())
            .map(|s| s.id.clone())
            .collect();
        let reset_on_rehire = sources
            .values()
            .filter(|s| s.resets_on_rehire())
            .map(|s| s.id.clone())
            .collect();
        Ok(Config {
            rules: SourceRules {
                disable_on_last,
                enable_after_create,
                reset_on_rehire,
            },
            upstreams: file.upstream.clone(),
            store,
            lifecycle,
            mail,
            triggers,
            policy,
            path: path.to_path_buf(),
            agent: Agent {
                state_dir: resolve(&base, &file.agent.state_dir),
                spool_dir: file.agent.spool_dir.as_ref().map(|p| resolve(&base, p)),
                time_zone,
                time_zone_name: file.agent.time_zone.clone(),
                workers: file.agent.workers,
                shutdown_grace: file.agent.shutdown_grace.0,
                lease: file.agent.lease.0,
                leader_lease: file.agent.leader_lease.0.max(Duration::from_secs(1)),
                name: file
                    .agent
                    .name
                    .clone()
                    .filter(|n| !n.trim().is_empty())
                    .unwrap_or_else(default_agent_name),
            },
            api: Api {
                listen: file.api.listen,
                tokens_file: resolve(&base, &file.api.tokens_file),
                max_connections: file.api.max_connections.max(1),
                header_read_timeout: file.api.header_read_timeout.0,
                max_connections_per_peer: file.api.max_connections_per_peer.max(1),
                body_read_timeout: file.api.body_read_timeout.0,
            },
            log: Log {
                format: file.log.format,
                level: file.log.level.unwrap_or_else(|| "info".into()),
            },
            sources,
            catalog,
            identities,
            catalog_path,
            identities_path,
        })
    }

    /// Checks that go beyond parsing: secret files readable, secret variables set.
    /// Connecting to the sources is `provd check --connect`, done by the caller.
    pub fn check_secrets(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        for source in self.sources.values() {
            problems.extend(source.check_secrets());
        }
        if self.api.tokens_file.exists() {
            let path = &self.api.tokens_file;
            let read = provd_connector_core::http::check_trusted(path)
                .and_then(|()| {
                    std::fs::read_to_string(path)
                        .map_err(|e| format!("cannot read {}: {e}", path.display()))
                })
                .and_then(|text| bare_tokens_private(path, &text));
            if let Err(message) = read {
                problems.push(Problem {
                    at: None,
                    file: self.path.clone(),
                    key: "api.tokens_file".into(),
                    message,
                });
            }
        }
        place(&mut problems);
        problems
    }
}

#[cfg(test)]
mod tests;

/// The configuration in force, replaced as a whole on reload (SIGHUP). Readers take a
/// snapshot (`get`) and keep using it for the work at hand, so a job or a request in
/// flight finishes on the configuration it started with.
#[derive(Debug)]
pub struct Live(std::sync::RwLock<std::sync::Arc<Config>>);

impl Live {
    pub fn new(config: Config) -> std::sync::Arc<Self> {
        std::sync::Arc::new(Self(std::sync::RwLock::new(std::sync::Arc::new(config))))
    }

    pub fn get(&self) -> std::sync::Arc<Config> {
        match self.0.read() {
            Ok(c) => c.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    pub fn set(&self, config: Config) {
        match self.0.write() {
            Ok(mut c) => *c = std::sync::Arc::new(config),
            Err(p) => *p.into_inner() = std::sync::Arc::new(config),
        }
    }
}

/// Reads and checks `policy.toml`; its problems name the file and key.
fn load_policy(
    path: &Path,
    catalog: &Catalog,
    lifecycle: &lifecycle::Lifecycle,
    problems: &mut Vec<Problem>,
) -> policy::Policy {
    let problem = |key: String, message: String| Problem {
        at: None,
        file: path.to_path_buf(),
        key,
        message,
    };
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            problems.push(problem(String::new(), format!("cannot read: {e}")));
            return policy::Policy::default();
        }
    };
    match toml::from_str::<policy::PolicyFile>(&text) {
        Err(e) => {
            problems.push(problem(String::new(), e.to_string().trim().to_string()));
            policy::Policy::default()
        }
        Ok(f) => {
            let states = lifecycle.states.keys().cloned().collect();
            let (p, found) = policy::build(f, catalog, &states);
            problems.extend(found.into_iter().map(|(k, m)| problem(k, m)));
            p
        }
    }
}

/// Reads and checks `lifecycle.toml`; its problems name the file and key.
fn load_lifecycle(
    path: &Path,
    catalog: &Catalog,
    sources: &BTreeSet<String>,
    problems: &mut Vec<Problem>,
) -> lifecycle::Lifecycle {
    let mut problem = |key: String, message: String| {
        problems.push(Problem {
            at: None,
            file: path.to_path_buf(),
            key,
            message,
        })
    };
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            problem(String::new(), format!("cannot read: {e}"));
            return lifecycle::Lifecycle::default();
        }
    };
    match toml::from_str::<lifecycle::LifecycleFile>(&text) {
        Err(e) => {
            problem(String::new(), e.to_string().trim().to_string());
            lifecycle::Lifecycle::default()
        }
        Ok(f) => {
            let (l, found) = lifecycle::build(f, catalog, sources);
            for (key, message) in found {
                problem(key, message);
            }
            l
        }
    }
}

/// A tokens file with bare tokens (a line of one word) must be readable by its owner
/// alone: the line is the token. The agent's own loader says the same at start.
/// Whether a tokens file's text holds a bare token (a line of one word), which must stay
/// readable by its owner alone.
pub fn holds_bare_tokens(text: &str) -> bool {
    text.lines()
        .map(str::trim)
        .any(|l| !l.is_empty() && !l.starts_with('#') && l.split_whitespace().count() == 1)
}

fn bare_tokens_private(path: &std::path::Path, text: &str) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let bare = holds_bare_tokens(text);
    let mode = std::fs::metadata(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?
        .permissions()
        .mode();
    if bare && mode & 0o077 != 0 {
        return Err(format!(
            "{} holds bare tokens but others can read it (mode {:o}); chmod 600 it, or replace them with `provd tokens add`",
            path.display(),
            mode & 0o777
        ));
    }
    Ok(())
}
