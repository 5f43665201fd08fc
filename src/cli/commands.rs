use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;

use super::{
    Cli, CliError, Command, IdentitiesCommand, JobsCommand, PolicyCommand, StoreCommand,
    TasksCommand,
};
use crate::clock::{Clock, SystemClock, rfc3339_ms, to_ms};
use crate::config::{self, Config};
use crate::intake::validate::MAX_BODY;
use crate::intake::{self, SubmitError};
use crate::store::jobs::{JobFilter, JobState, Retry};
use crate::store::tasks::TaskFilter;
use crate::store::{Stamp, Store, StoreError};

pub(super) fn failed(e: impl std::fmt::Display) -> CliError {
    CliError::Failed(e.to_string())
}

fn store_err(e: StoreError) -> CliError {
    match e {
        StoreError::NotFound(m) | StoreError::Conflict(m) => CliError::Invalid(m),
        other => failed(other),
    }
}

fn load(cli: &Cli) -> Result<Config, CliError> {
    let path = cli.config.clone().unwrap_or_else(config::default_path);
    Config::load(&path).map_err(|p| CliError::Invalid(format!("configuration has problems:\n{p}")))
}

pub(super) async fn open(config: &Config) -> Result<Store, CliError> {
    crate::store::open(config).await.map_err(failed)
}

/// Gives the connectors the store's credential gate memory: a command that connects
/// never binds with a secret the agent (or another command) saw fail twice.
pub(super) async fn remember_failures(
    config: &Config,
    store: &Store,
    connectors: &crate::connectors::Connectors,
) -> Result<(), CliError> {
    let memory = crate::gate_memory::StoreMemory::open(
        store.clone(),
        Arc::new(SystemClock),
        &config.agent.state_dir,
    )
    .await
    .map_err(failed)?;
    crate::connectors::remember_failures(connectors, &memory);
    Ok(())
}

/// The one way in, for a command's requests (submit, lifecycle changes of an import,
/// undoing withdrawn tasks): the store directly, the configuration as loaded.
pub(super) fn cli_intake(config: &Config, store: &Store) -> intake::Intake {
    intake::Intake::new(
        crate::config::Live::new(config.clone()),
        store.clone(),
        Arc::new(SystemClock),
    )
}

/// Reads a request body from FILE or `-`, refusing more than 1 MiB without reading it all.
fn read_body(file: &str) -> Result<Vec<u8>, CliError> {
    let mut buf = Vec::new();
    let reader: Box<dyn Read> = if file == "-" {
        Box::new(std::io::stdin())
    } else {
        Box::new(std::fs::File::open(file).map_err(|e| CliError::Invalid(format!("{file}: {e}")))?)
    };
    reader
        .take(MAX_BODY as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(|e| CliError::Invalid(format!("{file}: {e}")))?;
    if buf.len() > MAX_BODY {
        return Err(CliError::Invalid(format!(
            "body: larger than {MAX_BODY} bytes (1 MiB)"
        )));
    }
    Ok(buf)
}

pub(super) fn print_json(v: &impl serde::Serialize) -> Result<(), CliError> {
    let text = serde_json::to_string_pretty(v).map_err(failed)?;
    println!("{text}");
    Ok(())
}

pub(super) fn invalid_request(e: SubmitError) -> CliError {
    match e {
        SubmitError::Invalid(inv) => {
            let lines: Vec<String> = inv
                .0
                .iter()
                .map(|f| format!("invalid request: {f}"))
                .collect();
            CliError::Invalid(lines.join("\n"))
        }
        e @ SubmitError::KeyReused { .. } => CliError::Invalid(e.to_string()),
        e @ SubmitError::Internal(_) => failed(e),
        SubmitError::Store(e) => failed(e),
    }
}

pub fn execute(cli: Cli) -> Result<(), CliError> {
    let clock = SystemClock;
    match &cli.command {
        Command::Run { new_store } => {
            let config = load(&cli)?;
            crate::logging::init(config.log.format, &config.log.level);
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .map_err(failed)?;
            rt.block_on(crate::daemon::run(
                config,
                Arc::new(SystemClock),
                *new_store,
                crate::daemon::signals(),
            ))
            .map_err(|e| match e {
                crate::daemon::DaemonError::StoreChanged(m) => CliError::Invalid(m),
                e => failed(e),
            })
        }
        Command::Check { connect } => check(&cli, *connect),
        // Every other command is a short conversation with the store (async): one
        // current-thread runtime for it.
        _ => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(failed)?
            .block_on(command(&cli, &clock)),
    }
}

async fn command(cli: &Cli, clock: &SystemClock) -> Result<(), CliError> {
    match &cli.command {
        Command::Run { .. } | Command::Check { .. } => Ok(()),
        Command::Submit { file } => {
            let body = read_body(file)?;
            let config = load(cli)?;
            let store = open(&config).await?;
            let replay = cli_intake(&config, &store)
                .submit(&body, &crate::model::Requester::cli(&super::user()), None)
                .await
                .map_err(invalid_request)?;
            print_json(&replay.accepted().response)
        }
        Command::Plan {
            identities: Some(path),
            ..
        } => super::identities::preview(&load(cli)?, path).await,
        Command::Plan { file, .. } => {
            let body = read_body(file.as_deref().unwrap_or("-"))?;
            let config = load(cli)?;
            let store = open(&config).await?;
            let plan = intake::dry_run(&config, &store, clock.now(), &body)
                .await
                .map_err(invalid_request)?;
            print_plan(&plan);
            Ok(())
        }
        Command::Status { request_id } => super::audit::status(&load(cli)?, request_id).await,
        Command::Accounts(super::AccountsCommand::ResetPassword { source, identity }) => {
            super::accounts::reset_password(&load(cli)?, source, identity).await
        }
        Command::Accounts(cmd) => super::evidence::accounts(&load(cli)?, cmd).await,
        Command::Reconcile {
            source,
            fix,
            format,
        } => super::evidence::reconcile(&load(cli)?, source, *fix, format).await,
        Command::Drift { source, format } => {
            super::evidence::drift(&load(cli)?, source.as_deref(), format).await
        }
        Command::Policy(PolicyCommand::Check { file, trigger }) => {
            let config = load(cli)?;
            let store = open(&config).await?;
            let body = read_body(file)?;
            super::policy::check(&config, &store, &body, trigger.as_deref()).await
        }
        Command::Jobs(cmd) => jobs(cli, cmd, clock).await,
        Command::Tasks(cmd) => tasks(cli, cmd, clock).await,
        Command::Sources(super::SourcesCommand::Unblock { name }) => {
            super::sources::unblock(&load(cli)?, name, clock).await
        }
        Command::Identities(IdentitiesCommand::Import { file, confirm }) => {
            super::identities::import(&load(cli)?, file, *confirm, clock).await
        }
        Command::Store(StoreCommand::Check) => {
            let config = load(cli)?;
            let store = open(&config).await?;
            let (found, known) = store.schema_version().await.map_err(failed)?;
            println!("store: {}", store.location());
            println!("schema version: {found} (this provd knows {known})");
            let integrity = store.quick_check().await;
            match &integrity {
                Ok(()) => println!("integrity: ok"),
                Err(e) => println!("integrity: {e}"),
            }
            for (table, n) in store.row_counts().await.map_err(failed)? {
                println!("{table}: {n} rows");
            }
            integrity.map_err(failed)
        }
        Command::Store(StoreCommand::Migrate { to, password_file }) => {
            migrate(cli, to, password_file.as_deref()).await
        }
        Command::Tokens(cmd) => super::audit::tokens(&load(cli)?, cmd),
        Command::Access(cmd) => super::audit::access(&load(cli)?, cmd, clock).await,
        Command::Audit { .. } => super::audit::audit(&load(cli)?, &cli.command).await,
    }
}

fn check(cli: &Cli, connect: bool) -> Result<(), CliError> {
    let config = load(cli)?;
    let problems = config.check_secrets();
    if !problems.is_empty() {
        let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
        return Err(CliError::Invalid(format!(
            "configuration has problems:\n{}",
            lines.join("\n")
        )));
    }
    let connectors = crate::connectors::build(&config).map_err(|p| {
        CliError::Invalid(
            p.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n"),
        )
    })?;
    if connect {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(failed)?;
        let mut bad = Vec::new();
        rt.block_on(async {
            let store = open(&config).await?;
            remember_failures(&config, &store, &connectors).await?;
            for (id, c) in &connectors {
                match c.check().await {
                    Ok(()) => println!("{id}: connected"),
                    Err(e) => bad.push(format!("{id}: {e}")),
                }
            }
            Ok::<_, CliError>(())
        })?;
        if !bad.is_empty() {
            return Err(failed(bad.join("\n")));
        }
    }
    println!(
        "{}: ok ({} sources, {} entitlements, {} identities)",
        config.path.display(),
        config.sources.len(),
        config.catalog.entitlement_count(),
        config.identities.len()
    );
    Ok(())
}

pub(super) fn print_plan(plan: &crate::plan::Plan) {
    use super::text::safe;
    for item in &plan.items {
        let what = match &item.existing {
            Some((_, req)) => {
                format!("already held or pending (request {req}): not provisioned again")
            }
            None => format!(
                "{} entitlement(s), {} job(s)",
                item.entitlements.len(),
                item.jobs.len()
            ),
        };
        println!(
            "{} {} {} ({}): {what}",
            safe(&item.identity),
            item.item.ty.as_str(),
            safe(&item.item.id),
            safe(&item.name)
        );
    }
    // Planned jobs have no ids yet: numbering them would read like job ids that
    // `provd jobs show` could not find.
    for job in &plan.jobs {
        let when = job
            .not_before
            .map(|t| format!(" not before {t}"))
            .unwrap_or_default();
        println!(
            "- a {} job for {} on {}{when}:",
            job.kind.as_str(),
            safe(&job.identity),
            safe(&job.source),
        );
        for op in &job.ops {
            match op.entitlement() {
                Some(e) => println!(
                    "    {} {}={}",
                    op.kind(),
                    safe(&e.attribute),
                    safe(&e.value)
                ),
                None => match op {
                    provd_connector_core::Operation::UpdateAccount { attributes } => {
                        let set: Vec<String> = attributes
                            .iter()
                            .map(|(k, v)| format!("{}={}", safe(k), safe(v)))
                            .collect();
                        println!("    {} {}", op.kind(), set.join(" "))
                    }
                    _ => println!("    {}", op.kind()),
                },
            }
        }
    }
    if plan.jobs.is_empty() {
        println!("no operations");
    }
}

async fn jobs(cli: &Cli, cmd: &JobsCommand, clock: &SystemClock) -> Result<(), CliError> {
    let config = load(cli)?;
    let store = open(&config).await?;
    let now = to_ms(clock.now());
    match cmd {
        JobsCommand::List { state, source } => {
            let state = match state {
                Some(s) => Some(JobState::parse(s).ok_or_else(|| {
                    CliError::Invalid(format!("--state: `{s}` is not one of queued, running, retrying, manual, succeeded, failed, canceled"))
                })?),
                None => None,
            };
            let list = store
                .jobs(JobFilter {
                    state,
                    source: source.clone(),
                    ..Default::default()
                })
                .await
                .map_err(failed)?;
            let mut t = super::text::Table::new(&[
                "ID",
                "STATE",
                "SOURCE",
                "IDENTITY",
                "KIND",
                "ATTEMPT",
                "NEXT ATTEMPT",
                "REQUEST",
            ])
            .right(0)
            .right(5);
            for j in list {
                t.row(vec![
                    j.id.to_string(),
                    j.state.as_str().to_string(),
                    j.source,
                    j.identity_id,
                    j.kind,
                    format!("{}/{}", j.attempt, j.max_attempts),
                    j.next_attempt_at.map(rfc3339_ms).unwrap_or_default(),
                    j.request_id,
                ]);
            }
            print!("{}", t.render());
            Ok(())
        }
        JobsCommand::Show { id } => {
            let j = store
                .job(*id)
                .await
                .map_err(failed)?
                .ok_or_else(|| CliError::Invalid(format!("no job {id}")))?;
            // A job's events are bounded by its attempts and operations: one page.
            let q = crate::store::audit::AuditQuery {
                job: Some(j.id),
                limit: 100_000,
                ..Default::default()
            };
            let events: Vec<serde_json::Value> = store
                .audit(q)
                .await
                .map_err(failed)?
                .iter()
                .map(|e| {
                    serde_json::json!({ "at": rfc3339_ms(e.at), "kind": e.kind,
                        "actor": e.actor, "data": e.data })
                })
                .collect();
            print_json(&serde_json::json!({
                "id": j.id, "requestId": j.request_id, "identity": j.identity_id, "source": j.source, "kind": j.kind,
                "state": j.state, "attempt": j.attempt, "maxAttempts": j.max_attempts,
                "nextAttemptAt": j.next_attempt_at.map(rfc3339_ms), "operations": j.ops, "opsDone": j.ops_done,
                "leaseOwner": j.lease_owner, "leaseExpiresAt": j.lease_expires_at.map(rfc3339_ms),
                "errors": j.errors, "created": rfc3339_ms(j.created_at), "finalized": j.finalized_at.map(rfc3339_ms),
                "events": events,
            }))
        }
        JobsCommand::Retry { id } => {
            let job = store
                .job(*id)
                .await
                .map_err(failed)?
                .ok_or_else(|| CliError::Invalid(format!("no job {id}")))?;
            let max = config
                .sources
                .get(&job.source)
                .map_or(10, |s| s.retry.max_attempts);
            // The identity as it is now: an import since the failure may have fixed it.
            let current =
                crate::intake::Directory::load(&config, &*store, vec![job.identity_id.clone()])
                    .await
                    .map_err(failed)?
                    .lookup(&job.identity_id);
            let j = store
                .retry_job(
                    *id,
                    Retry {
                        max_attempts: max,
                        identity: current,
                    },
                    Stamp::new(super::actor(), now),
                )
                .await
                .map_err(store_err)?;
            println!(
                "job {} is {} again ({} attempts at most)",
                j.id,
                j.state.as_str(),
                j.max_attempts
            );
            Ok(())
        }
        JobsCommand::Cancel { id, reason } => {
            store
                .cancel_job(*id, reason.clone(), Stamp::new(super::actor(), now))
                .await
                .map_err(store_err)?;
            println!("job {id} canceled");
            Ok(())
        }
    }
}

/// `tasks list --unverified`: the DONE tasks of sources with an `[export]` that no export
/// has shown within its `verify_within`.
async fn unverified_tasks(
    config: &Config,
    store: &Store,
    filter: TaskFilter,
    now: i64,
) -> Result<Vec<crate::store::tasks::Task>, CliError> {
    let mut out = Vec::new();
    for f in crate::evidence::unverified_filters(config, &filter, now) {
        out.extend(store.tasks(f).await.map_err(failed)?);
    }
    Ok(out)
}

fn open_only(status: &str) -> Result<bool, CliError> {
    match status {
        "open" => Ok(true),
        "all" => Ok(false),
        other => Err(CliError::Invalid(format!(
            "--status: must be open or all, not `{other}`"
        ))),
    }
}

async fn tasks(cli: &Cli, cmd: &TasksCommand, clock: &SystemClock) -> Result<(), CliError> {
    let config = load(cli)?;
    let store = open(&config).await?;
    match cmd {
        TasksCommand::Export {
            source,
            owner,
            status,
            out,
            excel,
            format,
        } => {
            let xlsx = match format.as_str() {
                "csv" => false,
                "xlsx" => true,
                other => {
                    return Err(CliError::Invalid(format!(
                        "--format: must be csv or xlsx, not `{other}`"
                    )));
                }
            };
            if let Some(s) = source
                && !config.sources.contains_key(s)
            {
                return Err(CliError::Invalid(format!("--source: no source `{s}`")));
            }
            let filter = TaskFilter {
                source: source.clone(),
                owner: owner.clone(),
                open_only: open_only(status)?,
                ..Default::default()
            };
            let tasks = store.tasks(filter).await.map_err(failed)?;
            if xlsx {
                let bytes =
                    crate::tasks::xlsx_out::write(&tasks, &config.catalog, &config.agent.time_zone)
                        .map_err(failed)?;
                match out {
                    None => std::io::stdout().lock().write_all(&bytes).map_err(failed),
                    Some(path) => write_atomically(path, |f| f.write_all(&bytes).map_err(failed)),
                }?;
                if let Some(path) = out {
                    eprintln!("{} task(s) written to {}", tasks.len(), path.display());
                }
                return Ok(());
            }
            let rows = crate::tasks::row::rows(&tasks);
            match out {
                None => crate::tasks::csv_out::write(std::io::stdout().lock(), &rows, *excel)
                    .map_err(failed),
                Some(path) => write_atomically(path, |f| {
                    crate::tasks::csv_out::write(f, &rows, *excel).map_err(failed)
                }),
            }?;
            if let Some(path) = out {
                eprintln!("{} task(s) written to {}", rows.len(), path.display());
            }
            Ok(())
        }
        TasksCommand::List {
            source,
            owner,
            status,
            unverified,
        } => {
            let filter = TaskFilter {
                source: source.clone(),
                owner: owner.clone(),
                open_only: open_only(status)? && !unverified,
                ..Default::default()
            };
            let now = to_ms(clock.now());
            let rows = if *unverified {
                unverified_tasks(&config, &store, filter, now).await?
            } else {
                store.tasks(filter).await.map_err(failed)?
            };
            let mut table = super::text::Table::new(&[
                "TASK",
                "SOURCE",
                "STATUS",
                "OPERATION",
                "IDENTITY",
                "VALUE",
                "OWNER",
                "DUE",
            ]);
            for (task, t) in rows.iter().zip(crate::tasks::row::rows(&rows)) {
                let due = match task.due_at {
                    Some(at)
                        if task.status == crate::store::rules::TaskStatus::Open && at <= now =>
                    {
                        format!("{} OVERDUE", t.due_at)
                    }
                    _ => t.due_at,
                };
                table.row(vec![
                    t.task_id,
                    t.source,
                    t.status,
                    t.operation,
                    t.identity_name,
                    t.value,
                    t.owner,
                    due,
                ]);
            }
            print!("{}", table.render());
            Ok(())
        }
        TasksCommand::Import { file, source } => {
            super::task_import::run(&config, &store, file, source.as_deref()).await
        }
        TasksCommand::Send { owner } => {
            super::task_send::run(&config, &store, owner.as_deref()).await
        }
    }
}

async fn migrate(cli: &Cli, to: &str, password_file: Option<&Path>) -> Result<(), CliError> {
    let config = load(cli)?;
    if config.store.is_some() {
        return Err(CliError::Invalid(
            "[store] already names a PostgreSQL database; migrate copies the SQLite store of agent.state_dir: run it with the configuration that uses SQLite".into(),
        ));
    }
    let dir = &config.agent.state_dir;
    let db = crate::store::sqlite_path(dir);
    if !db.exists() {
        return Err(CliError::Invalid(format!(
            "no SQLite store at {}",
            db.display()
        )));
    }
    // The agent holds this lock while it runs: a store being written is not copied.
    let lock_path = dir.join("provd.lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| failed(format!("{}: {e}", lock_path.display())))?;
    if lock.try_lock().is_err() {
        return Err(CliError::Invalid(format!(
            "the agent is running (it holds {}); stop it first",
            lock_path.display()
        )));
    }
    let password = password_file
        .map(|f| {
            let f = f.display().to_string();
            provd_connector_core::http::read_secret(Path::new("."), Some(&f), None, "password")
                .map_err(|(k, m)| CliError::Invalid(format!("--{}: {m}", k.replace('_', "-"))))
        })
        .transpose()?;
    let from = crate::store::sqlite::Sqlite::open_file(&db).map_err(failed)?;
    let settings = crate::store::postgres::Settings {
        url: to.to_string(),
        password,
        tls_ca_file: None,
        pool_size: 2,
    };
    let counts = crate::store::migrate::sqlite_to_postgres(&from, &settings)
        .await
        .map_err(|e| CliError::Invalid(format!("migration failed: {e}")))?;
    for (table, n) in &counts {
        println!("{table}: {n} rows copied and verified");
    }
    println!(
        "done: set [store] postgres_url = \"{to}\" (with password_file or password_env) in provd.toml, then start the agent"
    );
    drop(lock);
    Ok(())
}

/// Writes to a temporary file beside `path` and renames it, so a reader never sees half a file.
fn write_atomically(
    path: &Path,
    f: impl FnOnce(&mut std::fs::File) -> Result<(), CliError>,
) -> Result<(), CliError> {
    let tmp = path.with_extension("tmp~");
    let mut file = std::fs::File::create(&tmp)
        .map_err(|e| CliError::Invalid(format!("{}: {e}", tmp.display())))?;
    f(&mut file)?;
    file.flush().and_then(|_| file.sync_all()).map_err(failed)?;
    std::fs::rename(&tmp, path).map_err(|e| failed(format!("{}: {e}", path.display())))
}
