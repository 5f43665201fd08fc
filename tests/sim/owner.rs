//! The manual source's owner in the simulation: does what each task asks on the badge
//! system (a model of it), answers DONE, and hands in exports (I6).

use std::collections::{BTreeMap, BTreeSet};

use provd::store::rules::TaskStatus;
use provd::store::tasks::{Task, TaskFilter};

use crate::harness::{Env, wait};
use crate::world::ANSWERED;

/// The manual source's owner: does what each open task asks on the badge system (this
/// model of it), answers DONE, and exports the accounts as they really are.
#[derive(Default)]
pub struct Owner {
    /// Account key -> (zones, disabled).
    accounts: BTreeMap<String, (BTreeSet<String>, bool)>,
    /// Whose account each is: the owner knows people, whatever key a task names.
    of: BTreeMap<String, String>,
    /// Away since the task with this id: the tasks after it are answered on return.
    pub away: Option<i64>,
    /// The next task is answered FAILED (and the operator retries its job).
    pub fail_next: bool,
    /// Failed jobs provd would not retry: what they granted is no longer wanted.
    pub moot: BTreeSet<i64>,
    /// Failed jobs the operator is to retry once a later job of their lane has ended
    /// (provd refuses to run two jobs of a lane at once, or an add before a removal of
    /// its value that waits to run).
    pub to_retry: BTreeSet<i64>,
    /// Tasks sent before going away, already worked on: answered on return too.
    pub late: BTreeSet<i64>,
    /// Late answers to withdrawn tasks were given: until provd's undo tasks are done, an
    /// export shows their effect as unexpected.
    undoing: bool,
    /// Keys of accounts made for withdrawn grants, answered late: not the person's account
    /// in provd's eyes, so a later CREATE under the person's key makes another.
    stale: BTreeSet<String>,
}

impl Owner {
    pub fn apply(&mut self, t: &provd::store::tasks::Task) {
        let key = self
            .of
            .get(&t.identity_id)
            .cloned()
            .unwrap_or_else(|| t.account.clone());
        match t.operation.as_str() {
            // The key the task names: a person whose account is under a key that is no
            // longer theirs (made late for a withdrawn grant before they moved) gets a
            // second account, as the owner was asked — provd must not ask that of a
            // mover otherwise (I6), and the old one is removed by hand.
            "CREATE_ACCOUNT"
                if self
                    .of
                    .get(&t.identity_id)
                    .is_some_and(|k| *k != t.account && self.stale.contains(k)) =>
            {
                self.accounts.entry(t.account.clone()).or_default();
                self.of.insert(t.identity_id.clone(), t.account.clone());
            }
            "CREATE_ACCOUNT" => {
                self.accounts.entry(key.clone()).or_default();
                self.of.insert(t.identity_id.clone(), key);
            }
            "UPDATE_ACCOUNT" => {
                // `email=NEW`: the account is renamed to its new key.
                if let Some(new) = t.value.split("; ").find_map(|kv| kv.strip_prefix("email="))
                    && let Some(a) = self.accounts.remove(&key)
                {
                    self.accounts.insert(new.to_string(), a);
                    self.of.insert(t.identity_id.clone(), new.to_string());
                }
            }
            // Asked to add to an account the person does not have yet (its create failed
            // or was withdrawn, and provd handed the account to this grant), the owner
            // makes it: it is the person's.
            "ADD_ENTITLEMENT" => {
                self.accounts
                    .entry(key.clone())
                    .or_default()
                    .0
                    .insert(t.value.clone());
                self.of.entry(t.identity_id.clone()).or_insert(key);
            }
            "REMOVE_ENTITLEMENT" => {
                if let Some(a) = self.accounts.get_mut(&key) {
                    a.0.remove(&t.value);
                }
            }
            "DISABLE_ACCOUNT" | "ENABLE_ACCOUNT" => {
                if let Some(a) = self.accounts.get_mut(&key) {
                    a.1 = t.operation == "DISABLE_ACCOUNT";
                }
            }
            "DELETE_ACCOUNT" => {
                self.accounts.remove(&key);
                self.of.remove(&t.identity_id);
            }
            _ => {}
        }
    }

    pub fn export(&self) -> String {
        let mut text = String::from("email,zones,state\r\n");
        for (key, (zones, disabled)) in &self.accounts {
            let zones: Vec<&str> = zones.iter().map(String::as_str).collect();
            let state = if *disabled { "disabled" } else { "active" };
            text.push_str(&format!("{key},{},{state}\r\n", zones.join(";")));
        }
        text
    }

    /// Who holds `value` on the badge system, by identity.
    pub fn holders(&self, value: &str) -> BTreeSet<String> {
        self.of
            .iter()
            .filter(|(_, key)| {
                self.accounts
                    .get(*key)
                    .is_some_and(|(z, _)| z.contains(value))
            })
            .map(|(who, _)| who.clone())
            .collect()
    }

    pub fn account_of(&self, who: &str) -> Option<&(BTreeSet<String>, bool)> {
        self.accounts.get(self.of.get(who)?)
    }

    /// Goes away: the tasks sent from now on wait for [`Owner::come_back`].
    pub async fn go_away(&mut self, env: &Env) -> Result<(), String> {
        if self.away.is_none() {
            let all = wait(env.store().tasks(TaskFilter::default())).map_err(|e| e.to_string())?;
            self.away = Some(all.iter().map(|t| t.id).max().unwrap_or(0));
        }
        Ok(())
    }

    /// Back: does every task sent while away — those provd withdrew meanwhile too, as
    /// an owner working from the mail would — and answers them DONE through `tasks
    /// import`, late. A withdrawn one provd undoes with a task of its own (DESIGN §15);
    /// what it says cannot be undone that way the owner undoes by hand.
    pub async fn come_back(&mut self, env: &Env) -> Result<(), String> {
        let Some(since) = self.away.take() else {
            return Ok(());
        };
        let sent: Vec<Task> = wait(env.store().tasks(TaskFilter::default()))
            .map_err(|e| e.to_string())?
            .into_iter()
            .filter(|t| t.id > since || self.late.contains(&t.id))
            .filter(|t| matches!(t.status, TaskStatus::Open | TaskStatus::Canceled))
            .collect();
        self.late.clear();
        if sent.is_empty() {
            return Ok(());
        }
        ANSWERED.fetch_add(sent.len(), std::sync::atomic::Ordering::Relaxed);
        let mut csv = String::from("task_id,resolution\n");
        for t in &sent {
            if t.status == TaskStatus::Canceled && t.operation == "CREATE_ACCOUNT" {
                self.stale.insert(t.account.clone());
            }
            self.apply(t);
            csv.push_str(&format!("{},DONE\n", t.id));
        }
        let file = env.path().join("late-answers.csv");
        std::fs::write(&file, csv).map_err(|e| e.to_string())?;
        let out = env.cli(&["tasks", "import", file.to_str().unwrap_or("")]);
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        for t in sent.iter().filter(|t| t.status == TaskStatus::Canceled) {
            crate::world::LATE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if said.contains(&format!(
                "T{} ({}) was done after provd had withdrawn it; provd cannot undo",
                t.id, t.operation
            )) {
                self.undo_by_hand(t);
            } else if !said.contains(&format!(
                "T{} was done after provd had withdrawn it: undo requested",
                t.id
            )) && !said.lines().any(|l| {
                l.contains(&format!(
                    "T{} ({}) was done after provd had withdrawn it; ",
                    t.id, t.operation
                )) && l.ends_with("wanted: nothing to undo")
            }) {
                return Err(format!(
                    "late answer to withdrawn T{} {}: {said}",
                    t.id, t.operation
                ));
            }
        }
        self.undoing = true;
        hand_in(env, self, false).await.map(|_| ())
    }

    /// What provd cannot undo of a withdrawn task, the owner undoes by hand.
    fn undo_by_hand(&mut self, t: &Task) {
        if t.operation == "CREATE_ACCOUNT" {
            self.accounts.remove(&t.account);
            if self.of.get(&t.identity_id) == Some(&t.account) {
                self.of.remove(&t.identity_id);
            }
        }
    }
}

/// The operator retries the failed jobs waiting for it; true when one was retried or
/// still waits (a later job of its lane is out).
fn retry(env: &Env, owner: &mut Owner) -> Result<bool, String> {
    let waiting = !owner.to_retry.is_empty();
    for id in std::mem::take(&mut owner.to_retry) {
        let out = env.cli(&["jobs", "retry", &id.to_string()]);
        let said = String::from_utf8_lossy(&out.stderr);
        if said.contains(" is moot: ") {
            owner.moot.insert(id);
        } else if said.contains(" once it has ended") {
            owner.to_retry.insert(id);
        } else if !out.status.success() {
            return Err(format!("retrying job {id}: {said}"));
        }
    }
    Ok(waiting)
}

/// The owner answers every open task, then hands in an export: it must verify every
/// task just done and show no drift (I6).
pub async fn answer(env: &Env, owner: &mut Owner) -> Result<bool, String> {
    let store = env.store();
    let open = wait(store.tasks(provd::store::tasks::TaskFilter {
        open_only: true,
        ..Default::default()
    }))
    .map_err(|e| e.to_string())?;
    let retried = retry(env, owner)?;
    if open.is_empty() {
        return Ok(retried);
    }
    if owner.away.is_some() {
        return Ok(retried);
    }
    if std::mem::take(&mut owner.fail_next) {
        // The first open task is answered FAILED (nothing done); the operator retries its
        // job, which sends the task again.
        let t = &open[0];
        let now = jiff::Timestamp::now().as_millisecond();
        wait(store.resolve_task(
            t.id,
            "FAILED".into(),
            "facilities@example.com".into(),
            "cannot".into(),
            now,
        ))
        .map_err(|e| format!("answering T{} FAILED: {e}", t.id))?;
        let failed = wait(store.jobs(provd::store::jobs::JobFilter {
            state: Some(provd::store::JobState::Failed),
            source: Some("badges".into()),
            ..Default::default()
        }))
        .map_err(|e| e.to_string())?;
        owner.to_retry.extend(
            failed
                .into_iter()
                .map(|j| j.id)
                .filter(|id| !owner.moot.contains(id)),
        );
        retry(env, owner)?;
        return Ok(true);
    }
    ANSWERED.fetch_add(open.len(), std::sync::atomic::Ordering::Relaxed);
    for t in &open {
        owner.apply(t);
        let now = jiff::Timestamp::now().as_millisecond();
        wait(store.resolve_task(
            t.id,
            "DONE".into(),
            "facilities@example.com".into(),
            String::new(),
            now,
        ))
        .map_err(|e| format!("answering T{}: {e}", t.id))?;
    }
    let clean = hand_in(env, owner, !owner.undoing).await?;
    owner.undoing &= !clean;
    Ok(true)
}

/// The owner hands in an export of the badge system: it must verify every task done so
/// far and, when `clean` (every task answered in time), show no drift (I6). After late
/// answers to withdrawn tasks their effect shows as unexpected until provd's undo ends.
/// Whether the export showed no drift.
async fn hand_in(env: &Env, owner: &Owner, clean: bool) -> Result<bool, String> {
    let store = env.store();
    let file = env.path().join("badges-export.csv");
    std::fs::write(&file, owner.export()).map_err(|e| e.to_string())?;
    let out = env.cli(&[
        "accounts",
        "import",
        "--source",
        "badges",
        "--force",
        file.to_str().unwrap_or(""),
    ]);
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    let no_drift = said.contains("drift: 0 missing, 0 unexpected");
    if !out.status.success() || (clean && !no_drift) {
        return Err(format!(
            "I6: the owner's export after doing every task: {said}{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let unverified: Vec<String> = wait(store.tasks(provd::store::tasks::TaskFilter::default()))
        .map_err(|e| e.to_string())?
        .into_iter()
        // An export shows no UPDATE_ACCOUNT (DESIGN §17: it carries no attribute columns
        // here), so those are not asked of it.
        .filter(|t| t.status == provd::store::rules::TaskStatus::Done && t.verified_at.is_none())
        .filter(|t| t.operation != "UPDATE_ACCOUNT")
        .map(|t| format!("T{} {} {} {}", t.id, t.operation, t.account, t.value))
        .collect();
    if !unverified.is_empty() {
        return Err(format!(
            "I6: done tasks the export does not verify: {unverified:?}\n{said}"
        ));
    }
    Ok(no_drift)
}
