//! The `provd` command line (DESIGN §9 contract). Every command but `run` works on the
//! store directly, whether or not the daemon is running.
//! Exit codes: 0 success, 2 invalid input or usage, 1 anything else.

mod accounts;
mod audit;
mod commands;
mod evidence;
mod identities;
mod policy;
mod sources;
mod task_import;
mod task_send;
pub mod text;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

pub use commands::execute;

#[derive(Debug, Parser)]
#[command(name = "provd", version, about = "On-premises provisioning agent")]
pub struct Cli {
    /// Configuration file [default: $PROVD_CONFIG, else /etc/provd/provd.toml if it
    /// exists, else ./config/provd.toml]
    #[arg(long, global = true, env = "PROVD_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent: API, spool folder, dispatch.
    Run {
        /// Go on with the store found even though it is not the one the state
        /// directory's marker names (it was deleted or replaced since the last start).
        #[arg(long)]
        new_store: bool,
    },
    /// Validate the configuration; with --connect, also reach every direct source.
    Check {
        #[arg(long)]
        connect: bool,
    },
    /// Submit an access request (JSON) from FILE, or from standard input with `-`.
    Submit { file: String },
    /// Print the operations a request would cause, changing nothing; with --identities,
    /// what importing those identities would do (lifecycle changes).
    Plan {
        #[arg(required_unless_present = "identities")]
        file: Option<String>,
        /// A CSV or JSON-lines identities file, as for `identities import`.
        #[arg(long, conflicts_with = "file")]
        identities: Option<PathBuf>,
    },
    /// Show the status of an access request.
    Status { request_id: String },
    /// Provisioning jobs.
    #[command(subcommand)]
    Jobs(JobsCommand),
    /// Manual tasks of flat-file sources.
    #[command(subcommand)]
    Tasks(TasksCommand),
    /// Identities.
    #[command(subcommand)]
    Identities(IdentitiesCommand),
    /// Direct sources' state kept by the agent.
    #[command(subcommand)]
    Sources(SourcesCommand),
    /// The store itself.
    #[command(subcommand)]
    Store(StoreCommand),
    /// API tokens (named, stored hashed in api.tokens_file; SIGHUP makes the agent
    /// read the file again).
    #[command(subcommand)]
    Tokens(TokensCommand),
    /// A manual source's account export: evidence of what was really done (DESIGN §17).
    #[command(subcommand)]
    Accounts(AccountsCommand),
    /// Access the latest evidence disagrees with: missing (granted, not there) and
    /// unexpected (there, granted by nothing).
    Drift {
        #[arg(long)]
        source: Option<String>,
        /// table, json or csv
        #[arg(long, default_value = "table")]
        format: String,
    },
    /// Read back every account provd manages on a direct source (LDAP, SCIM) and report
    /// drift; --fix plans repair jobs for missing access through the normal queue.
    Reconcile {
        #[arg(long)]
        source: String,
        #[arg(long)]
        fix: bool,
        /// table, json or csv (the drift)
        #[arg(long, default_value = "table")]
        format: String,
    },
    /// The pre-approval policy (agent.policy) SailPoint's triggers are answered with.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// What identities hold now, and the removals removeDates caused.
    #[command(subcommand)]
    Access(AccessCommand),
    /// The audit trail: events with their actor, oldest first.
    Audit {
        #[arg(long)]
        identity: Option<String>,
        /// An access request id.
        #[arg(long)]
        request: Option<String>,
        #[arg(long)]
        source: Option<String>,
        /// A job id.
        #[arg(long)]
        job: Option<i64>,
        /// Event kinds, comma-separated (job_succeeded,job_failed,…).
        #[arg(long)]
        kind: Option<String>,
        /// Events at or after: RFC 3339, or a date (start of that day, agent.time_zone).
        #[arg(long)]
        since: Option<String>,
        /// Events before: RFC 3339, or a date.
        #[arg(long)]
        until: Option<String>,
        /// json or csv
        #[arg(long, default_value = "json")]
        format: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokensCommand {
    /// Create a token called NAME: printed once, stored only as its SHA-256 hash.
    Add {
        name: String,
        /// What it may reach: intake, status, audit, tasks, identities, trigger:NAME
        /// (comma-separated); without it, every scope.
        #[arg(long, value_delimiter = ',')]
        scope: Vec<String>,
    },
    /// The names of the tokens and their scopes (never a token).
    List,
    /// Remove the token called NAME (`api`: every bare token line).
    Revoke { name: String },
}

#[derive(Debug, Subcommand)]
pub enum AccessCommand {
    /// What each identity holds now: item, source, values, state, since, until,
    /// granting request and requester.
    List {
        #[arg(long)]
        identity: Option<String>,
        #[arg(long)]
        source: Option<String>,
        /// A catalog item's id (role, access profile or entitlement).
        #[arg(long)]
        item: Option<String>,
        /// table, json or csv
        #[arg(long, default_value = "table")]
        format: String,
    },
    /// Removals caused by removeDates: due, fired, done and how late.
    Removals {
        /// Due at or after: RFC 3339, or a date.
        #[arg(long)]
        since: Option<String>,
        /// Due before: RFC 3339, or a date.
        #[arg(long)]
        until: Option<String>,
        /// table, json or csv
        #[arg(long, default_value = "table")]
        format: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// List jobs, oldest first.
    List {
        /// queued, running, retrying, manual, succeeded, failed or canceled
        #[arg(long)]
        state: Option<String>,
        #[arg(long)]
        source: Option<String>,
    },
    /// Show one job with its attempts and audit events.
    Show { id: i64 },
    /// Run a failed job again with a fresh attempt budget, or a retrying one now.
    Retry { id: i64 },
    /// Cancel a job that has not been applied yet.
    Cancel {
        id: i64,
        #[arg(long, default_value = "canceled by an operator")]
        reason: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum TasksCommand {
    /// Write the tasks as CSV for the source owner.
    Export {
        #[arg(long)]
        source: Option<String>,
        #[arg(long)]
        owner: Option<String>,
        /// open (default) or all
        #[arg(long, default_value = "open")]
        status: String,
        /// Write here instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Start with a UTF-8 byte order mark, for Excel (CSV).
        #[arg(long)]
        excel: bool,
        /// csv (default) or xlsx: a workbook with a sheet per source, the columns to fill
        /// first, a DONE/FAILED drop-down and an instructions sheet.
        #[arg(long, default_value = "csv")]
        format: String,
    },
    /// List tasks on the terminal (with when each is due, and which are overdue).
    List {
        #[arg(long)]
        source: Option<String>,
        /// Only this owner's tasks.
        #[arg(long)]
        owner: Option<String>,
        /// open (default) or all
        #[arg(long, default_value = "open")]
        status: String,
        /// Only DONE tasks no account export has shown within their source's
        /// export.verify_within (DESIGN §17).
        #[arg(long)]
        unverified: bool,
    },
    /// Mail every open task to its owner now (the workbook attached), as the daily digest
    /// does; needs [mail] in provd.toml.
    Send {
        /// Only this owner.
        #[arg(long)]
        owner: Option<String>,
    },
    /// Apply an edited task CSV.
    Import {
        file: PathBuf,
        /// The source the file answers for: rows of any other source are refused. Needed
        /// when the file has no `source` column and names tasks of several sources.
        #[arg(long)]
        source: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum AccountsCommand {
    /// Import a full export of the source's accounts (CSV or xlsx, as [export] describes
    /// it): verifies the tasks whose effect it shows, reports drift, and plans repairs
    /// for missing access. Refused if older than the last import, or more than
    /// export.max_drop shorter, unless --force.
    Import {
        #[arg(long)]
        source: String,
        file: PathBuf,
        /// When the export was taken: RFC 3339 or a date (default: now).
        #[arg(long)]
        as_of: Option<String>,
        #[arg(long)]
        force: bool,
    },
    /// Give IDENTITY's account on the source a new password, delivered and to be changed
    /// at the next logon (AD with [account.password]; on a manual source, a task for its
    /// owner). Queued as a request; prints its id and job.
    ResetPassword {
        #[arg(long)]
        source: String,
        identity: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Decide an "Access Request Submitted" body (FILE, or `-` for standard input) as
    /// the agent would, against the store as it is now; prints the answer and the rule.
    Check {
        file: String,
        /// The [[trigger]] whose item mapping and identity attribute apply (default: the
        /// only one, else ids as they are).
        #[arg(long)]
        trigger: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Verify the schema version and the database's integrity (SQLite's quick_check), and
    /// count the rows of every table; exit 1 if anything is wrong.
    Check,
    /// Copy the SQLite store (agent.state_dir) into an empty PostgreSQL database,
    /// everything including the audit trail, and verify the row counts. Stop the agent
    /// first; then point `[store]` at the database.
    Migrate {
        /// postgres://user@host:port/db[?sslmode=…] (no password in it)
        #[arg(long)]
        to: String,
        /// File whose first line is the database password.
        #[arg(long)]
        password_file: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum IdentitiesCommand {
    /// Add or update identities from a CSV file (header with `id`) or JSON lines. A
    /// changed `lifecycleState` is planned as its state says (lifecycle.toml).
    Import {
        file: PathBuf,
        /// Go ahead with a change that disables or deletes more accounts than
        /// lifecycle max_changes.
        #[arg(long)]
        confirm: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum SourcesCommand {
    /// Let the agent try a source's credentials again after they failed twice (DESIGN
    /// §24): for when the password was fixed on the target, not in provd's file.
    Unblock { name: String },
}

/// A failed command; the variant decides the exit code.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad input or usage: exit 2.
    #[error("{0}")]
    Invalid(String),
    /// Anything else: exit 1.
    #[error("{0}")]
    Failed(String),
}

impl CliError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Invalid(_) => 2,
            CliError::Failed(_) => 1,
        }
    }
}

/// Who runs the command, for the audit trail (`cli:USER`, DESIGN §14): the user sudo was
/// run by when there is one (root acting for someone is that someone), else `$USER`.
pub(crate) fn user() -> String {
    ["SUDO_USER", "USER", "LOGNAME"]
        .iter()
        .filter_map(|v| std::env::var(v).ok())
        .find(|u| !u.trim().is_empty())
        .unwrap_or_else(account_name)
}

/// The name of the account the process runs as (no `$USER`: cron, systemd-run), else its
/// uid.
fn account_name() -> String {
    // SAFETY: getuid cannot fail; getpwuid_r writes only into the buffers given, with
    // their lengths, and `found` points into `pw` (or is null) when it returns.
    let uid = unsafe { libc::getuid() };
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 4096];
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    let rc = unsafe { libc::getpwuid_r(uid, &mut pw, buf.as_mut_ptr(), buf.len(), &mut found) };
    if rc == 0 && !found.is_null() && !pw.pw_name.is_null() {
        // SAFETY: pw_name is a NUL-terminated string inside `buf`, alive here.
        let name = unsafe { std::ffi::CStr::from_ptr(pw.pw_name) };
        if let Ok(n) = name.to_str()
            && !n.is_empty()
        {
            return n.to_string();
        }
    }
    format!("uid{uid}")
}

/// The actor of this command in the audit trail.
pub(crate) fn actor() -> String {
    crate::model::cli_actor(&user())
}
