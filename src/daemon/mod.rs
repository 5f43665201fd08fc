//! `provd run`: the store, the API, the spool watcher and dispatch, started in that order
//! and stopped in the reverse; READY=1 goes to systemd only once all of them are up.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, watch};

pub mod follow;
pub mod leader;
pub mod maintain;
pub mod marker;
pub mod watchdog;

use crate::api::{self, AppState};
use crate::clock::SharedClock;
use crate::config::Config;
use crate::dispatch::Dispatcher;
use crate::intake::Intake;
use crate::intake::spool::{self, Taken};
use crate::store::{Stamp, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("another provd is already running on {0} (its lock file is held)")]
    Locked(PathBuf),
    #[error("cannot lock {path}: {source}")]
    Lock {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Tokens(#[from] api::auth::TokenError),
    #[error("api.listen {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("{0}")]
    Config(String),
    /// The store is not the one the state directory's marker names: exit 2.
    #[error("{0}")]
    StoreChanged(String),
    #[error("API server: {0}")]
    Serve(std::io::Error),
}

/// How often the spool folder is looked at.
const SPOOL_POLL: Duration = Duration::from_millis(500);

/// The lease owner: the agent's name and this run of it, so that leases of an earlier run
/// under the same name are never mistaken for this one's.
fn lease_owner(name: &str) -> String {
    format!("{name}#{:08x}", fastrand::u32(..))
}

/// Runs the agent until `shutdown` completes.
pub async fn run(
    config: Config,
    clock: SharedClock,
    new_store: bool,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DaemonError> {
    let path = config.path.clone();
    let current = crate::config::Live::new(config);
    let config = current.get();
    let state_dir = config.agent.state_dir.clone();
    std::fs::create_dir_all(&state_dir).map_err(|source| DaemonError::Lock {
        path: state_dir.clone(),
        source,
    })?;
    // One agent per state directory: holding this lock is what lets start-up take back
    // every lease left by a previous (dead) agent at once.
    let lock_path = state_dir.join("provd.lock");
    let lock_file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|source| DaemonError::Lock {
            path: lock_path.clone(),
            source,
        })?;
    match lock_file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => return Err(DaemonError::Locked(state_dir)),
        Err(std::fs::TryLockError::Error(source)) => {
            return Err(DaemonError::Lock {
                path: lock_path,
                source,
            });
        }
    }

    let store = crate::store::open(&config).await?;
    // A damaged store is refused before anything is dispatched from it.
    store.quick_check().await?;
    // So is a store deleted or replaced since the last start (DESIGN §25).
    let found = marker::Marker {
        location: store.location(),
        store_id: store.store_id().await?,
    };
    let known = marker::read(&state_dir).map_err(DaemonError::StoreChanged)?;
    marker::verdict(known.as_ref(), &found, new_store).map_err(DaemonError::StoreChanged)?;
    if known.as_ref() != Some(&found) {
        marker::write(&state_dir, &found).map_err(|source| DaemonError::Lock {
            path: marker::path(&state_dir),
            source,
        })?;
    }
    let owner = lease_owner(&config.agent.name);
    let now = crate::clock::to_ms(clock.now());
    // Alone on its store (SQLite's lock file), the agent knows every lease left is a dead
    // agent's; sharing one, only expired leases are taken back.
    let all_but = store.exclusive().then(|| owner.clone());
    tracing::info!(store = %store.location(), agent = %config.agent.name, "store open");
    let mut moved = store.expire_leases(now, all_but, owner.clone()).await?;
    // Its own former runs (same agent.name) are dead too, whatever their leases say.
    moved.extend(
        store
            .reclaim(config.agent.name.clone(), owner.clone(), now)
            .await?,
    );
    for m in moved {
        tracing::warn!(job_id = m.job_id, request_id = %m.request_id, source = %m.source, identity = %m.identity_id,
            state = "queued", "job left running by a previous agent taken back");
    }
    let (tokens, created) = api::auth::load_or_create(&config.api.tokens_file)?;
    let keyring = api::auth::Keyring::new(tokens);
    if created {
        tracing::warn!(path = %config.api.tokens_file.display(), "no API token file; created one with a random token");
    }
    let connectors = crate::connectors::build(&config).map_err(|p| {
        DaemonError::Config(
            p.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n"),
        )
    })?;
    let gate_memory =
        crate::gate_memory::StoreMemory::open(store.clone(), clock.clone(), &state_dir)
            .await
            .map_err(DaemonError::Config)?;
    crate::connectors::remember_failures(&connectors, &gate_memory);

    let wake = Arc::new(Notify::new());
    let schedule_wake = Arc::new(Notify::new());
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };

    let listener = tokio::net::TcpListener::bind(config.api.listen)
        .await
        .map_err(|source| DaemonError::Listen {
            addr: config.api.listen,
            source,
        })?;
    let local = listener.local_addr().map_err(DaemonError::Serve)?;
    let intake = Intake::new(current.clone(), store.clone(), clock.clone())
        .waking(wake.clone())
        .waking_on_removals(schedule_wake.clone());
    // identities.csv against the store: rows it has never seen become the base of later
    // edits, rows edited while the agent was stopped are applied now (issue 33).
    let by = Stamp::new(crate::model::agent_actor(&config.agent.name), now);
    match file_changes(&config, None, &store, &intake, by).await {
        Err(crate::lifecycle::apply::ApplyError::Store(e)) => return Err(e.into()),
        Err(e) => {
            tracing::error!(error = %e, "identities.csv: changes not applied (import the identities with `provd identities import --confirm` to let a held change through)")
        }
        Ok(()) => {}
    }
    // SailPoint triggers: their ASYNC secrets are sealed under a key beside the store.
    let triggers = if config.triggers.is_empty() {
        None
    } else {
        let key = crate::config::trigger::key_path(&state_dir);
        let sealer = crate::triggers::seal::Sealer::load_or_create(&key)
            .map_err(|e| DaemonError::Config(e.to_string()))?;
        Some(crate::triggers::Triggers {
            store: store.clone(),
            live: current.clone(),
            clock: clock.clone(),
            intake: intake.clone(),
            sealer: Arc::new(sealer),
            agent: crate::model::agent_actor(&config.agent.name),
        })
    };
    let app = api::router(AppState {
        intake: intake.clone(),
        store: store.clone(),
        live: current.clone(),
        clock: clock.clone(),
        tokens: keyring.clone(),
        triggers: triggers.clone(),
    });
    let api_stop = stopped();
    let limits = api::serve::Limits {
        max_connections: config.api.max_connections,
        max_connections_per_peer: config.api.max_connections_per_peer,
        header_read_timeout: config.api.header_read_timeout,
    };
    let api_task = tokio::spawn(api::serve::serve(listener, app, limits, api_stop));

    let spool_task = config
        .agent
        .spool_dir
        .clone()
        .map(|dir| tokio::spawn(watch_spool(intake.clone(), dir, stopped())));

    let (leading, leader_task) = leader::start(
        store.clone(),
        config.agent.name.clone(),
        config.agent.leader_lease,
        clock.clone(),
        stopped(),
    );
    let dispatcher = Dispatcher::new(
        store.clone(),
        current.clone(),
        connectors.clone(),
        clock.clone(),
        owner.clone(),
        wake.clone(),
    );
    let live = watchdog::Liveness::new();
    let dispatcher = dispatcher.with_liveness(live.clone());
    let dispatch_task = tokio::spawn(dispatcher.clone().run(stopped()));
    let scheduler = crate::schedule::Scheduler {
        removals: store.as_schedule(),
        accounts: store.as_accounts(),
        live: current.clone(),
        clock: clock.clone(),
        wake: schedule_wake.clone(),
        dispatch: wake.clone(),
        liveness: Some(live.clone()),
        leading: leading.clone(),
    };
    let schedule_task = tokio::spawn(scheduler.run(stopped()));
    let upstream_tasks = {
        let s = stopped.clone();
        let stop_fn =
            move || -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> { Box::pin(s()) };
        crate::upstream::start(&current, &store, &clock, &intake, &leading, stop_fn)
            .map_err(DaemonError::Config)?
    };
    let remind_task = tokio::spawn(crate::tasks::remind::run(
        store.clone(),
        current.clone(),
        clock.clone(),
        leading.clone(),
        stopped(),
    ));
    let callback_task = triggers.map(|t| {
        tokio::spawn(crate::triggers::callback::run(
            t,
            leading.clone(),
            stopped(),
        ))
    });
    // Scheduled read-backs use the connectors of the start (a reload's new ones reach
    // dispatch; a changed reconcile_every needs a restart).
    let reconcile_task = tokio::spawn(crate::evidence::reconcile::run(
        crate::evidence::reconcile::Scheduled {
            store: store.clone(),
            live: current.clone(),
            connectors: connectors.clone(),
            intake: intake.clone(),
            clock: clock.clone(),
            leading: leading.clone(),
            agent: crate::model::agent_actor(&config.agent.name),
        },
        stopped(),
    ));
    let restore_task = tokio::spawn(crate::evidence::restore::run(
        crate::evidence::restore::Restorer {
            store: store.clone(),
            live: current.clone(),
            intake: intake.clone(),
            clock: clock.clone(),
            leading: leading.clone(),
        },
        stopped(),
    ));
    let mail_task = tokio::spawn(crate::mail::run(
        store.as_tasks(),
        current.clone(),
        clock.clone(),
        leading.clone(),
        stopped(),
    ));

    tracing::info!(listen = %local, state_dir = %state_dir.display(), agent = %config.agent.name, lease_owner = %owner, sources = config.sources.len(),
        workers = config.agent.workers, "provd ready");
    notify(&[sd_notify::NotifyState::Ready]);
    let watchdog_task = tokio::spawn(watchdog::run(live.clone(), store.clone(), stopped()));
    let follow_task = tokio::spawn(follow::run(store.clone(), stopped()));
    let maintain_task = tokio::spawn(maintain::run(store.clone(), leading.clone(), stopped()));

    let reload_task = tokio::spawn(reloads(
        path,
        current.clone(),
        Reloadable {
            dispatcher,
            store: store.clone(),
            keyring,
            intake: intake.clone(),
            clock: clock.clone(),
            gate_memory,
        },
        stopped(),
    ));

    shutdown.await;
    tracing::info!("shutting down");
    notify(&[sd_notify::NotifyState::Stopping]);
    let _ = stop_tx.send(true);
    let _ = remind_task.await;
    let _ = maintain_task.await;
    let _ = mail_task.await;
    let _ = reconcile_task.await;
    let _ = restore_task.await;
    if let Some(t) = callback_task {
        let _ = t.await;
    }
    let _ = reload_task.await;
    let _ = watchdog_task.await;
    let _ = follow_task.await;
    for t in upstream_tasks {
        let _ = t.await;
    }
    match schedule_task.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!(error = %e, "scheduler stopped with an error"),
        Err(e) => tracing::error!(error = %e, "scheduler task failed"),
    }
    match dispatch_task.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!(error = %e, "dispatch stopped with an error"),
        Err(e) => tracing::error!(error = %e, "dispatch task failed"),
    }
    if let Some(t) = spool_task {
        let _ = t.await;
    }
    if let Err(e) = api_task.await {
        tracing::error!(error = %e, "API task failed");
    }
    // Last: singleton work has stopped, so the lease is given up for another agent.
    let _ = leader_task.await;
    drop(lock_file);
    tracing::info!("stopped");
    Ok(())
}

fn notify(states: &[sd_notify::NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::debug!(error = %e, "sd_notify failed");
    }
}

async fn watch_spool(intake: Intake, dir: PathBuf, stop: impl Future<Output = ()>) {
    tokio::pin!(stop);
    // Files already reported as not taken or as incomplete: one line each, not one a pass.
    let mut reported = std::collections::HashSet::new();
    loop {
        reported.retain(|p: &PathBuf| p.exists());
        let (i, d) = (intake.clone(), dir.clone());
        match tokio::task::spawn_blocking(move || spool::scan(&i, &d)).await {
            Ok(Ok(taken)) => {
                for t in taken {
                    match t {
                        Taken::Accepted {
                            file,
                            request_id,
                            replayed,
                        } => {
                            // The intake logged the acceptance; this says which file it was.
                            tracing::info!(request_id = %request_id, origin = "spool", file = %file.display(), replayed, "spool file taken");
                        }
                        Taken::Rejected { file, reason } => {
                            tracing::warn!(origin = "spool", file = %file.display(), error = %reason, "request refused");
                        }
                        Taken::Ignored { file } => {
                            if reported.insert(file.clone()) {
                                tracing::warn!(origin = "spool", file = %file.display(),
                                    "file not taken: only *.json files are requests (rename it to end in .json)");
                            }
                        }
                        Taken::Incomplete { file } => {
                            if reported.insert(file.clone()) {
                                tracing::info!(origin = "spool", file = %file.display(),
                                    "file ends before its JSON does; waiting for the writer to finish");
                            }
                        }
                    }
                }
            }
            Ok(Err(e)) => tracing::error!(error = %e, dir = %dir.display(), "spool scan failed"),
            Err(e) => tracing::error!(error = %e, "spool task failed"),
        }
        tokio::select! {
            _ = &mut stop => return,
            _ = tokio::time::sleep(SPOOL_POLL) => {}
        }
    }
}

/// Completes on SIGTERM or SIGINT (SIGHUP is handled by the running agent: reload).
pub async fn signals() {
    use futures_util::StreamExt;
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = match signal_hook_tokio::Signals::new([SIGTERM, SIGINT]) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot install signal handlers; stop with SIGKILL");
            return std::future::pending().await;
        }
    };
    if let Some(sig) = signals.next().await {
        tracing::info!(signal = sig, "stop signal received");
    }
}

/// SIGHUP: reload sources, catalog and identities (the whole configuration file set) as
/// one. An invalid new set is refused with a log line naming every problem, and the old
/// one keeps serving. Jobs already running finish on the connector they started with.
/// Settings that need a restart (listen address, state directory, upstreams) are reported.
/// The API tokens file is read again too, on its own: a bad tokens file keeps the old
/// tokens, whatever the configuration does.
async fn reloads(
    path: PathBuf,
    current: Arc<crate::config::Live>,
    what: Reloadable,
    stop: impl Future<Output = ()>,
) {
    use futures_util::StreamExt;
    let mut hups = match signal_hook_tokio::Signals::new([signal_hook::consts::SIGHUP]) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGHUP; reload by restarting");
            return;
        }
    };
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => return,
            Some(_) = hups.next() => {
                reload(&path, &current, &what).await;
                reload_tokens(&current.get().api.tokens_file, &what.keyring).await;
                notify(&[sd_notify::NotifyState::Ready]);
            }
        }
    }
}

async fn reload(path: &std::path::Path, current: &crate::config::Live, what: &Reloadable) {
    let (dispatcher, store) = (&what.dispatcher, &what.store);
    notify(&[sd_notify::NotifyState::Reloading]);
    tracing::info!(config = %path.display(), "SIGHUP: reloading the configuration");
    let p = path.to_path_buf();
    let loaded = tokio::task::spawn_blocking(move || {
        let config = Config::load(&p).map_err(|e| e.to_string())?;
        let connectors = crate::connectors::build(&config).map_err(|e| {
            e.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        })?;
        Ok::<_, String>((config, connectors))
    })
    .await
    .map_err(|e| e.to_string())
    .and_then(|r| r);
    match loaded {
        Ok((config, connectors)) => {
            let old = current.get();
            if old.api.listen != config.api.listen
                || old.agent.state_dir != config.agent.state_dir
                || old.upstreams.len() != config.upstreams.len()
            {
                tracing::warn!(
                    "api.listen, agent.state_dir and [[upstream]] changes take effect at the next restart"
                );
            }
            // Identities known to the agent: identities.csv and those imported into the
            // store (which win where both have an id).
            let imported = store.identity_ids().await.unwrap_or_default();
            let from_file = config.identities.len();
            let identities = from_file
                + imported
                    .iter()
                    .filter(|id| !config.identities.contains_key(*id))
                    .count();
            // identities.csv's lifecycle changes are planned before the new file is in
            // force; a mass change holds the whole reload.
            let by = Stamp::new(
                crate::model::agent_actor(&config.agent.name),
                crate::clock::to_ms(what.clock.now()),
            );
            if let Err(e) = file_changes(&config, Some(&old), &what.store, &what.intake, by).await {
                tracing::error!(error = %e, "new configuration refused; the previous one stays in force (import the identities with `provd identities import --confirm` to let a held change through)");
                return;
            }
            let (sources, entitlements) =
                (config.sources.len(), config.catalog.entitlement_count());
            current.set(config);
            crate::connectors::remember_failures(&connectors, &what.gate_memory);
            dispatcher.set_connectors(connectors);
            tracing::info!(
                sources,
                entitlements,
                identities,
                identities_file = from_file,
                identities_imported = imported.len(),
                "configuration reloaded"
            );
        }
        Err(problems) => {
            tracing::error!(problems = %problems, "new configuration refused; the previous one stays in force");
        }
    }
}

/// What a SIGHUP replaces besides the configuration.
struct Reloadable {
    dispatcher: Dispatcher,
    store: Store,
    keyring: Arc<api::auth::Keyring>,
    /// Where identities.csv's lifecycle changes go.
    intake: Intake,
    clock: SharedClock,
    /// Every connector's gate is given it, the reloaded ones too.
    gate_memory: Arc<dyn provd_connector_core::gate::GateMemory>,
}

/// identities.csv's rows applied against the store (`before`: the file as it was, at a
/// reload); a held mass change is logged and waits for `identities import --confirm`.
async fn file_changes(
    config: &Config,
    before: Option<&Config>,
    store: &Store,
    intake: &Intake,
    by: Stamp,
) -> Result<(), crate::lifecycle::apply::ApplyError> {
    let applied = crate::lifecycle::apply::file(config, before, &**store, intake, by).await?;
    if !applied.changes.is_empty() {
        tracing::info!(
            identities = applied.changes.len(),
            requests = applied.requests,
            "identities.csv: lifecycle changes planned"
        );
    }
    Ok(())
}

/// Reads the tokens file again: added tokens work and revoked ones stop working at once.
async fn reload_tokens(path: &std::path::Path, keyring: &api::auth::Keyring) {
    let p = path.to_path_buf();
    let loaded = tokio::task::spawn_blocking(move || api::token_file::load(&p))
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r.map_err(|e| e.to_string()));
    match loaded {
        Ok(tokens) if !tokens.0.is_empty() => {
            let names: Vec<&str> = tokens.0.iter().map(|t| t.name.as_str()).collect();
            tracing::info!(tokens = names.len(), names = %names.join(","), "API tokens reloaded");
            keyring.set(tokens);
        }
        Ok(_) => {
            tracing::error!(path = %path.display(), "the API tokens file holds no token; the previous tokens stay in force")
        }
        Err(e) => {
            tracing::error!(error = %e, "API tokens file refused; the previous tokens stay in force")
        }
    }
}
