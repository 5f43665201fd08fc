//! The manual source's owner in the simulation: does what each task asks on the badge
//! system (a model of it), answers DONE, and hands in exports (I6).

use std::collections::{BTreeMap, BTreeSet};

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
}

impl Owner {
    pub fn apply(&mut self, t: &provd::store::tasks::Task) {
        let key = self
            .of
            .get(&t.identity_id)
            .cloned()
            .unwrap_or_else(|| t.account.clone());
        match t.operation.as_str() {
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
            "ADD_ENTITLEMENT" => {
                self.accounts
                    .entry(key)
                    .or_default()
                    .0
                    .insert(t.value.clone());
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
    if open.is_empty() {
        return Ok(false);
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
    if !out.status.success() || !said.contains("drift: 0 missing, 0 unexpected") {
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
    Ok(true)
}
