//! The serde shapes of the configuration files (DESIGN §5 contract). Every struct denies
//! unknown keys so that a typo is an error, not a silently ignored setting.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use super::duration::Dur;

/// `provd.toml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProvdFile {
    /// Paths, time zone and worker count.
    #[serde(default)]
    pub agent: AgentSection,
    /// The HTTP API.
    #[serde(default)]
    pub api: ApiSection,
    /// Logging.
    #[serde(default)]
    pub log: LogSection,
    /// Retry defaults for every source.
    #[serde(default)]
    pub retry: RetrySection,
    /// Governance services approved requests are pulled from.
    #[serde(default)]
    pub upstream: Vec<UpstreamSection>,
    /// Where the store is: absent, SQLite at `agent.state_dir/provd.db`.
    #[serde(default)]
    pub store: Option<StoreSection>,
    /// SailPoint event-trigger subscriptions (DESIGN §16).
    #[serde(default)]
    pub trigger: Vec<super::trigger::TriggerSection>,
    /// Mail to source owners (DESIGN §15); absent, no mail is sent.
    #[serde(default)]
    pub mail: Option<super::mail::MailSection>,
}

/// `[store]`: a PostgreSQL database shared by every agent of a site (DESIGN §12).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSection {
    /// `postgres://user@host:port/db[?sslmode=…]`; never with a password in it.
    pub postgres_url: String,
    /// File whose first line is the password (relative to provd.toml).
    #[serde(default)]
    pub password_file: Option<String>,
    /// Or the environment variable holding it.
    #[serde(default)]
    pub password_env: Option<String>,
    /// CA certificates (PEM) to trust for the server; the system's otherwise.
    #[serde(default)]
    pub tls_ca_file: Option<PathBuf>,
    /// Connections this agent keeps open.
    #[serde(default = "default_pool_size")]
    pub pool_size: usize,
}

fn default_pool_size() -> usize {
    8
}

/// `[[upstream]]`: an Okta-style governance service to pull approved requests from.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamSection {
    /// Unique name; requests pulled from it have origin `upstream:NAME`.
    pub name: String,
    /// The API dialect: `okta`.
    pub kind: String,
    /// The service's base URL.
    pub base_url: String,
    /// Time between polls (default 30s).
    #[serde(default = "default_poll")]
    pub poll_interval: Dur,
    /// identities.csv column matched with `requestedFor.externalId` (default `id`).
    #[serde(default = "default_identity_attribute")]
    pub identity_attribute: String,
    /// A static token (first line of the file), sent with `token_scheme`; or [oauth].
    #[serde(default)]
    pub token_file: Option<String>,
    /// `Bearer` (default) or `SSWS`.
    #[serde(default)]
    pub token_scheme: Option<String>,
    /// OAuth 2.0 client credentials, renewed before expiry and once on 401.
    #[serde(default)]
    pub oauth: Option<provd_connector_core::http::OAuthSettings>,
    /// Upstream catalog entry id (`requested.entryId`) → provd access item.
    #[serde(default)]
    pub items: std::collections::BTreeMap<String, UpstreamItem>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamItem {
    /// ROLE, ACCESS_PROFILE or ENTITLEMENT.
    #[serde(rename = "type")]
    pub ty: String,
    /// The item's id in the catalog.
    pub id: String,
}

fn default_poll() -> Dur {
    Dur(std::time::Duration::from_secs(30))
}
fn default_identity_attribute() -> String {
    "id".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSection {
    /// Directory of `provd.db` (SQLite); created if missing.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// Every `*.toml` in it is one source.
    #[serde(default = "default_sources_dir")]
    pub sources_dir: PathBuf,
    /// Roles, access profiles and entitlements.
    #[serde(default = "default_catalog")]
    pub catalog: PathBuf,
    /// Identities known at start-up (CSV with an `id` column).
    #[serde(default = "default_identities")]
    pub identities: PathBuf,
    /// Optional: `*.json` requests dropped here are taken in.
    #[serde(default)]
    pub spool_dir: Option<PathBuf>,
    /// IANA zone for bare dates without `clientMetadata.timeZone`.
    #[serde(default = "default_time_zone")]
    pub time_zone: String,
    /// Jobs applied at the same time.
    #[serde(default = "default_workers")]
    pub workers: usize,
    /// On SIGTERM, how long in-flight connector calls may take to finish before their jobs
    /// are released (without spending an attempt).
    #[serde(default = "default_shutdown_grace")]
    pub shutdown_grace: Dur,
    /// How long a claimed job is leased to this agent before another may take it over.
    #[serde(default = "default_lease")]
    pub lease: Dur,
    /// How long the leader lease (singleton work: removeDates, upstream polls, reminders)
    /// lasts unrenewed: when the leader dies, another agent takes over within it.
    #[serde(default = "default_leader_lease")]
    pub leader_lease: Dur,
    /// The agent's name in logs, leases and metrics (default `HOSTNAME:PID`). Give every
    /// agent sharing a store its own.
    #[serde(default)]
    pub name: Option<String>,
    /// Optional: lifecycle states (DESIGN §13); none, and `lifecycleState` means nothing.
    #[serde(default)]
    pub lifecycle: Option<PathBuf>,
    /// Optional: the pre-approval policy (DESIGN §16); none, and every known item is
    /// approved.
    #[serde(default)]
    pub policy: Option<PathBuf>,
}

impl Default for AgentSection {
    fn default() -> Self {
        Self {
            state_dir: default_state_dir(),
            sources_dir: default_sources_dir(),
            catalog: default_catalog(),
            identities: default_identities(),
            spool_dir: None,
            time_zone: default_time_zone(),
            workers: default_workers(),
            shutdown_grace: default_shutdown_grace(),
            lease: default_lease(),
            leader_lease: default_leader_lease(),
            name: None,
            lifecycle: None,
            policy: None,
        }
    }
}

fn default_state_dir() -> PathBuf {
    PathBuf::from("../var")
}
fn default_sources_dir() -> PathBuf {
    PathBuf::from("sources")
}
fn default_catalog() -> PathBuf {
    PathBuf::from("catalog.toml")
}
fn default_identities() -> PathBuf {
    PathBuf::from("identities.csv")
}
fn default_time_zone() -> String {
    "UTC".into()
}
fn default_workers() -> usize {
    8
}
fn default_shutdown_grace() -> Dur {
    Dur(std::time::Duration::from_secs(30))
}
fn default_leader_lease() -> Dur {
    Dur(std::time::Duration::from_secs(15))
}
fn default_lease() -> Dur {
    Dur(std::time::Duration::from_secs(300))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiSection {
    /// Address the HTTP API listens on.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// One bearer token per line (`#` comments and blank lines ignored). Created with one
    /// random token (mode 0600) by `provd run` if it does not exist.
    #[serde(default = "default_tokens_file")]
    pub tokens_file: PathBuf,
    /// Connections served at once; more wait in the listen backlog. Keeps file
    /// descriptors for the store, the spool and the connectors (default 512).
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// A client that has not sent a request's headers within this time is disconnected
    /// (default 10s): idle, half-sent requests cannot hold connections for ever.
    #[serde(default = "default_header_read_timeout")]
    pub header_read_timeout: Dur,
    /// Connections one client address may hold at once; more are closed when accepted
    /// (default 64): one host cannot take every slot.
    #[serde(default = "default_max_connections_per_peer")]
    pub max_connections_per_peer: usize,
    /// A request's whole body must arrive within this time, or it is answered 408
    /// (default 30s): slow bodies cannot hold connections for ever.
    #[serde(default = "default_body_read_timeout")]
    pub body_read_timeout: Dur,
}

impl Default for ApiSection {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            tokens_file: default_tokens_file(),
            max_connections: default_max_connections(),
            header_read_timeout: default_header_read_timeout(),
            max_connections_per_peer: default_max_connections_per_peer(),
            body_read_timeout: default_body_read_timeout(),
        }
    }
}

fn default_max_connections() -> usize {
    512
}
fn default_header_read_timeout() -> Dur {
    Dur(std::time::Duration::from_secs(10))
}
fn default_max_connections_per_peer() -> usize {
    64
}
fn default_body_read_timeout() -> Dur {
    Dur(std::time::Duration::from_secs(30))
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8470))
}
fn default_tokens_file() -> PathBuf {
    PathBuf::from("api-tokens")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSection {
    /// `json`: always JSON lines; `text` (the default): text on a terminal, JSON otherwise.
    #[serde(default)]
    pub format: Option<LogFormat>,
    /// A tracing filter: `info`, `debug`, `provd=debug,info`.
    #[serde(default)]
    pub level: Option<String>,
}

/// `[retry]` in `provd.toml` (defaults) and in a source file (overrides).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrySection {
    /// First backoff interval (default 2s).
    pub initial: Option<Dur>,
    /// Growth factor between attempts (default 2.0).
    pub factor: Option<f64>,
    /// Cap on one interval (default 10m).
    pub max_interval: Option<Dur>,
    /// Attempts before the job fails (default 10).
    pub max_attempts: Option<u32>,
    /// Time from the first attempt after which the job fails (default 24h).
    pub max_elapsed: Option<Dur>,
    /// Consecutive retryable failures that open the source's breaker (default 5).
    pub breaker_failures: Option<u32>,
    /// How long an open breaker waits before probing the source again (default 30s).
    pub breaker_cooldown: Option<Dur>,
    /// Regexes: an error message matching one is retryable (sources only).
    #[serde(default)]
    pub retryable_errors: Vec<String>,
}

/// The keys every source file has; the rest belongs to its connector.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceCommon {
    /// Unique source id, referenced by catalog entitlements.
    pub id: String,
    /// `ldap`, `scim`, `rest` or `manual`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Who owns the source: manual tasks are assigned to them.
    pub owner: String,
    /// Retry overrides.
    #[serde(default)]
    pub retry: Option<RetrySection>,
    /// A direct source: read back every account provd manages this often and report
    /// drift (DESIGN §17); none, and only `provd reconcile` does.
    #[serde(default)]
    pub reconcile_every: Option<Dur>,
    /// What a reconcile does about the source's own groups (DESIGN §21).
    #[serde(default)]
    pub reconcile: Option<ReconcileSection>,
}

/// `[reconcile]` of a direct source.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReconcileSection {
    /// Members provd does not manage in a group it does: `report` them as drift (the
    /// default), or also `remove` them when `provd reconcile --fix` runs.
    #[serde(default)]
    pub unmanaged_members: UnmanagedMembers,
}

/// What `provd reconcile --fix` does with an unmanaged member of a managed group.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnmanagedMembers {
    /// Reported as drift; never touched (the safe default: provd does not own the group
    /// alone).
    #[default]
    Report,
    /// Reported, and removed by `--fix`.
    Remove,
}

/// The connector part of a `type = "manual"` source.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManualSettings {
    /// Optional account naming: `native_id` is the account column of the task CSV.
    #[serde(default)]
    pub account: Option<ManualAccount>,
    /// Tasks open longer than this are reported to operators (e.g. `3d`); also the
    /// task's `due_at`.
    #[serde(default)]
    pub remind_after: Option<Dur>,
    /// When an identity's last entitlement here is removed: `remove_entitlement` (a
    /// REMOVE_ENTITLEMENT task, the default) or `disable_account` (one DISABLE_ACCOUNT task).
    #[serde(default)]
    pub on_last_removal: OnLastRemoval,
    /// The source's own account export, which `provd accounts import` reads as evidence
    /// (DESIGN §17).
    #[serde(default)]
    pub export: Option<ExportSettings>,
}

/// `[export]` of a manual source: how to read its account export.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportSettings {
    /// The column holding each account's key, matched with the account's native id (the
    /// task's `account`).
    pub key: String,
    /// One column listing the entitlement values each account has.
    #[serde(default)]
    pub entitlements: Option<ExportColumn>,
    /// Or, per account attribute (`groups`), the column holding its values (`;` apart).
    #[serde(default)]
    pub attributes: std::collections::BTreeMap<String, String>,
    /// The column telling disabled accounts apart (what DISABLE/ENABLE tasks show as).
    #[serde(default)]
    pub status: Option<ExportStatus>,
    /// A DONE task the exports have not shown within this long is unverified (default 7d).
    #[serde(default = "default_verify_within")]
    pub verify_within: Dur,
    /// An export with this much fewer rows than the last is refused without --force
    /// (default "20%").
    #[serde(default = "default_max_drop")]
    pub max_drop: String,
}

fn default_verify_within() -> Dur {
    Dur(std::time::Duration::from_secs(7 * 86_400))
}
fn default_max_drop() -> String {
    "20%".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportColumn {
    /// The column's header.
    pub column: String,
    /// Between values in one cell (default `;`).
    #[serde(default = "default_separator")]
    pub separator: String,
}

fn default_separator() -> String {
    ";".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportStatus {
    /// The column's header.
    pub column: String,
    /// Values (compared without case) that mean the account is disabled.
    pub disabled: Vec<String>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnLastRemoval {
    #[default]
    RemoveEntitlement,
    DisableAccount,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManualAccount {
    /// Template of the account name on the source, e.g. `"{email}"`.
    pub native_id: Option<String>,
}

/// `catalog.toml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogFile {
    #[serde(default)]
    pub entitlement: Vec<EntitlementDef>,
    #[serde(default)]
    pub access_profile: Vec<AccessProfileDef>,
    #[serde(default)]
    pub role: Vec<RoleDef>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntitlementDef {
    /// Unique entitlement id (what requests name).
    pub id: String,
    /// Display name (defaults to the value).
    #[serde(default)]
    pub name: Option<String>,
    /// What the item gives, in words its owners and approvers read (DESIGN §15).
    #[serde(default)]
    pub description: Option<String>,
    /// Source id the entitlement lives on.
    pub source: String,
    /// Account attribute (`groups` for memberships).
    pub attribute: String,
    /// The value: an LDAP group DN, a SCIM group, a REST role.
    pub value: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessProfileDef {
    /// Unique access profile id.
    pub id: String,
    /// Display name (defaults to the id).
    #[serde(default)]
    pub name: Option<String>,
    /// What the item gives, in words its owners and approvers read (DESIGN §15).
    #[serde(default)]
    pub description: Option<String>,
    /// Entitlement ids it bundles.
    pub entitlements: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleDef {
    /// Unique role id.
    pub id: String,
    /// Display name (defaults to the id).
    #[serde(default)]
    pub name: Option<String>,
    /// What the item gives, in words its owners and approvers read (DESIGN §15).
    #[serde(default)]
    pub description: Option<String>,
    /// Access profile ids it grants.
    #[serde(default)]
    pub access_profiles: Vec<String>,
    /// Entitlement ids it grants directly.
    #[serde(default)]
    pub entitlements: Vec<String>,
}
