//! The simulated world: its people, catalog and targets, the events of a history, and the
//! invariants checked at each quiet point.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::{Value, json};

use crate::flow::custom_env;
use crate::harness::{Env, wait};
use crate::httpservers::Scim;
use crate::slapd::{PASSWORD, Slapd};

const TOKEN: &str = "scim-T0ken-sim-1";
const PEOPLE: usize = 6;
/// Requestable items: entitlements on the three targets, a profile over two, a role
/// over all.
const ITEMS: [(&str, &str); 6] = [
    ("ENTITLEMENT", "ent-vpn"),
    ("ENTITLEMENT", "ent-git"),
    ("ENTITLEMENT", "ent-eng"),
    ("ENTITLEMENT", "ent-hq"),
    ("ACCESS_PROFILE", "ap-dev"),
    ("ROLE", "role-staff"),
];
/// Each LDAP group entitlement and its group's DN.
const GROUPS: [(&str, &str); 2] = [
    ("ent-vpn", "cn=vpn,ou=groups,dc=example,dc=com"),
    ("ent-git", "cn=git,ou=groups,dc=example,dc=com"),
];

const CATALOG: &str = r#"
[[entitlement]]
id = "ent-vpn"
source = "corp"
attribute = "groups"
value = "cn=vpn,ou=groups,dc=example,dc=com"
[[entitlement]]
id = "ent-git"
source = "corp"
attribute = "groups"
value = "cn=git,ou=groups,dc=example,dc=com"
[[entitlement]]
id = "ent-eng"
source = "saas"
attribute = "groups"
value = "engineers"
[[entitlement]]
id = "ent-hq"
source = "badges"
attribute = "zones"
value = "HQ"
[[access_profile]]
id = "ap-dev"
entitlements = ["ent-vpn", "ent-eng"]
[[role]]
id = "role-staff"
access_profiles = ["ap-dev"]
entitlements = ["ent-git", "ent-hq"]
"#;

const LIFECYCLE: &str = r#"
max_changes = 1000
[[state]]
name = "active"
[[state.account]]
action = "ENABLE"
sources = "all"
[[state]]
name = "leaver"
requestable = false
[[state.account]]
action = "DISABLE"
sources = "all"
"#;

/// Drift found (and repaired) across runs: shows the drift check is exercised.
pub static REPAIRED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Manual tasks the owner did and the export verified, across runs.
pub static ANSWERED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// One step of a history.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Grant(usize, &'static str),
    Revoke(usize, &'static str),
    Leave(usize),
    Rehire(usize),
    /// An administrator removes the person from an LDAP group by hand (when a member).
    HandRemove(usize, &'static str),
    /// The (first) agent is killed with -9 mid-work and started again.
    Kill,
    /// The person's e-mail changes (the badge system is keyed by it and syncs it).
    Move(usize),
    /// Wait for every job to end, then check the invariants.
    Quiet,
}

/// xorshift64*: a history is a function of its seed alone.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) as usize % n
    }
}

/// The history of `seed`: `n` events, ending in a quiet point. `movers`: e-mail changes
/// too (a flag, so that the histories of the seeds that found earlier bugs stay as they
/// were).
pub fn history(seed: u64, n: usize, movers: bool) -> Vec<Event> {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut out: Vec<Event> = (0..n.saturating_sub(1))
        .map(|_| {
            let who = rng.below(PEOPLE);
            let item = ITEMS[rng.below(ITEMS.len())].1;
            match rng.below(15) {
                0..=4 => Event::Grant(who, item),
                5..=6 => Event::Revoke(who, item),
                7 => Event::Leave(who),
                8 => Event::Rehire(who),
                9 => Event::HandRemove(who, GROUPS[rng.below(GROUPS.len())].0),
                10 => Event::Kill,
                11 if movers => Event::Move(who),
                _ => Event::Quiet,
            }
        })
        .collect();
    out.push(Event::Quiet);
    out
}

fn item_type(id: &str) -> &'static str {
    ITEMS
        .iter()
        .find(|(_, i)| *i == id)
        .map_or("ENTITLEMENT", |(t, _)| t)
}

fn person(i: usize) -> String {
    format!("p{i}")
}

/// Runs `events` in a fresh world; the first broken invariant, if any.
pub async fn run(events: &[Event]) -> Result<(), String> {
    let slapd = Slapd::start().await;
    let scim = Scim::start(TOKEN).await;
    scim.group("engineers").await;
    let env = world(&slapd, &scim);
    let mut first = env.start().await;
    // On PostgreSQL (PROVD_TEST_STORE=postgres) two agents share the store and the work;
    // identity changes go to each in turn.
    let second = match env.pg {
        Some(_) => {
            let vars = [
                ("PROVD_AGENT__NAME", "agent-2".to_string()),
                ("PROVD_AGENT__STATE_DIR", "state-2".to_string()),
                ("PROVD_AGENT__SPOOL_DIR", "spool-2".to_string()),
            ];
            Some(crate::harness::Agent::start_on(&env, crate::harness::free_port(), &vars).await)
        }
        None => None,
    };
    let mut leavers: BTreeSet<usize> = BTreeSet::new();
    let mut owner = Owner::default();
    let mut moves: BTreeMap<usize, u32> = BTreeMap::new();
    for (step, e) in events.iter().enumerate() {
        let at = |m: String| format!("step {step} ({e:?}): {m}");
        match e {
            Event::Grant(p, item) | Event::Revoke(p, item) => {
                if leavers.contains(p) && matches!(e, Event::Grant(..)) {
                    continue; // refused at the door; the model says so
                }
                let kind = if matches!(e, Event::Grant(..)) {
                    "GRANT_ACCESS"
                } else {
                    "REVOKE_ACCESS"
                };
                let body = json!({ "requestedFor": [person(*p)], "requestType": kind,
                    "requestedItems": [{ "type": item_type(item), "id": item, "comment": "sim" }] });
                let out = env.cli_with(&["submit", "-"], Some(body.to_string().as_bytes()));
                if !out.status.success() {
                    return Err(at(String::from_utf8_lossy(&out.stderr).into_owned()));
                }
            }
            Event::Leave(p) | Event::Rehire(p) | Event::Move(p) => {
                let agent = match &second {
                    Some(s) if step % 2 == 1 => s,
                    _ => &first,
                };
                let state = match e {
                    Event::Leave(_) => "leaver",
                    Event::Rehire(_) => "active",
                    _ if leavers.contains(p) => "leaver",
                    _ => "active",
                };
                if matches!(e, Event::Move(_)) {
                    *moves.entry(*p).or_default() += 1;
                }
                let email = match moves.get(p) {
                    Some(n) if *n > 0 => format!("p{p}.{n}@example.com"),
                    _ => format!("p{p}@example.com"),
                };
                let body = json!({ "firstName": "P", "lastName": p.to_string(),
                    "email": email, "lifecycleState": state });
                let r = agent
                    .http
                    .put(format!("{}/identities/v1/{}", agent.base, person(*p)))
                    .bearer_auth(env.token())
                    .header("Provd-Confirm", "true")
                    .body(body.to_string())
                    .send()
                    .await
                    .map_err(|x| at(x.to_string()))?;
                if r.status() != 200 {
                    return Err(at(format!("PUT answered {}", r.status())));
                }
                if state == "leaver" {
                    leavers.insert(*p);
                } else {
                    leavers.remove(p);
                }
            }
            Event::HandRemove(p, ent) => {
                // Out of band, between provd's own changes.
                settle(&env, &mut owner).await.map_err(at)?;
                let dn = GROUPS
                    .iter()
                    .find(|(e, _)| e == ent)
                    .map_or("", |(_, d)| *d);
                let member = format!("uid={},ou=people,dc=example,dc=com", person(*p));
                if slapd.values(dn, "member").await.contains(&member) {
                    slapd.ldapadd(&format!(
                        "dn: {dn}\nchangetype: modify\ndelete: member\nmember: {member}\n"
                    ));
                }
            }
            Event::Kill => {
                first.signal_and_wait("KILL", 10).await;
                first = env.start().await;
            }
            Event::Quiet => check(&env, &slapd, &scim, &leavers, &mut owner)
                .await
                .map_err(at)?,
        }
    }
    Ok(())
}

fn world(slapd: &Slapd, scim: &Scim) -> Env {
    let corp = format!(
        "id = \"corp\"\ntype = \"ldap\"\nowner = \"dir@example.com\"\nurl = \"{}\"\n\
         bind_dn = \"cn=admin,dc=example,dc=com\"\nbind_password_file = \"../ldap-password\"\n\
         [account]\nnative_id = \"uid={{id}},ou=people,dc=example,dc=com\"\ncorrelation = \"uid\"\n\
         object_classes = [\"inetOrgPerson\"]\n[account.attributes]\nuid = \"{{id}}\"\n\
         cn = \"{{firstName}} {{lastName}}\"\nsn = \"{{lastName}}\"\n\
         [account.disable]\nattribute = \"employeeType\"\nvalue = \"disabled\"\n",
        slapd.url()
    );
    let saas = format!(
        "id = \"saas\"\ntype = \"scim\"\nowner = \"saas@example.com\"\nbase_url = \"{}\"\n\
         token_file = \"../scim-token\"\n[account]\ncorrelation = \"userName\"\n\
         [account.attributes]\nuserName = \"{{id}}\"\ndisplayName = \"{{firstName}} {{lastName}}\"\n",
        scim.base()
    );
    // A manual source: its owner answers tasks and exports the accounts (see `Owner`).
    let badges = "id = \"badges\"\ntype = \"manual\"\nowner = \"facilities@example.com\"\n\
         [account]\nnative_id = \"{email}\"\nsync = [\"email\"]\n\
         [export]\nkey = \"email\"\nentitlements = { column = \"zones\" }\n\
         status = { column = \"state\", disabled = [\"disabled\"] }\n"
        .to_string();
    let env = custom_env(
        &[
            ("corp.toml", corp),
            ("saas.toml", saas),
            ("badges.toml", badges),
        ],
        CATALOG,
    );
    let d = env.path();
    std::fs::write(d.join("ldap-password"), format!("{PASSWORD}\n")).unwrap();
    std::fs::write(d.join("scim-token"), format!("{TOKEN}\n")).unwrap();
    std::fs::write(d.join("lifecycle.toml"), LIFECYCLE).unwrap();
    let conf = std::fs::read_to_string(d.join("provd.toml")).unwrap();
    std::fs::write(
        d.join("provd.toml"),
        conf.replace("[agent]\n", "[agent]\nlifecycle = \"lifecycle.toml\"\n"),
    )
    .unwrap();
    let mut ids = String::from("id,firstName,lastName,email,lifecycleState\n");
    for p in 0..PEOPLE {
        ids.push_str(&format!("p{p},P,{p},p{p}@example.com,active\n"));
    }
    std::fs::write(d.join("identities.csv"), ids).unwrap();
    env
}

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
    fn apply(&mut self, t: &provd::store::tasks::Task) {
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

    fn export(&self) -> String {
        let mut text = String::from("email,zones,state\r\n");
        for (key, (zones, disabled)) in &self.accounts {
            let zones: Vec<&str> = zones.iter().map(String::as_str).collect();
            let state = if *disabled { "disabled" } else { "active" };
            text.push_str(&format!("{key},{},{state}\r\n", zones.join(";")));
        }
        text
    }

    /// Who holds `value` on the badge system, by identity.
    fn holders(&self, value: &str) -> BTreeSet<String> {
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

    fn account_of(&self, who: &str) -> Option<&(BTreeSet<String>, bool)> {
        self.accounts.get(self.of.get(who)?)
    }
}

/// The owner answers every open task, then hands in an export: it must verify every
/// task just done and show no drift (I6).
async fn answer(env: &Env, owner: &mut Owner) -> Result<bool, String> {
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

/// Waits until no job is queued, running or retrying, the owner answering tasks meanwhile.
async fn settle(env: &Env, owner: &mut Owner) -> Result<(), String> {
    let store = env.store();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let answered = answer(env, owner).await?;
        let counts = wait(store.job_counts()).map_err(|e| e.to_string())?;
        let busy: i64 = counts
            .iter()
            .filter(|(_, s, _)| matches!(s.as_str(), "queued" | "running" | "retrying"))
            .map(|(_, _, n)| n)
            .sum();
        // A manual job may have opened its tasks after `answer` looked: quiet only when
        // nothing is busy and no task is open, read in that order.
        if busy == 0 && !answered && wait(store.open_task_count()).map_err(|e| e.to_string())? == 0
        {
            break;
        }
        if std::time::Instant::now() > deadline {
            return Err(format!("{busy} jobs still busy after 60 s"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// Who is in each LDAP group entitlement's group on slapd, by identity.
async fn ldap_members(slapd: &Slapd) -> BTreeMap<&'static str, BTreeSet<String>> {
    let mut out = BTreeMap::new();
    for (ent, dn) in GROUPS {
        let have: BTreeSet<String> = slapd
            .values(dn, "member")
            .await
            .into_iter()
            .filter_map(|m| {
                m.strip_prefix("uid=")
                    .and_then(|r| r.split(',').next())
                    .map(str::to_string)
            })
            .collect();
        out.insert(ent, have);
    }
    out
}

/// I1 (drift): a read-back of corp reports exactly where slapd and provd differ (the
/// hand-made changes, nothing else); `--fix` then repairs what is missing.
async fn drift_is_the_difference(
    env: &Env,
    slapd: &Slapd,
    owner: &mut Owner,
) -> Result<(), String> {
    let members = ldap_members(slapd).await;
    let mut differ: BTreeSet<(String, String, String)> = BTreeSet::new();
    for (ent, dn) in GROUPS {
        let said = holders(env, ent)?;
        for who in said.difference(&members[ent]) {
            differ.insert(("missing".into(), who.clone(), dn.to_string()));
        }
        for who in members[ent].difference(&said) {
            differ.insert(("unexpected".into(), who.clone(), dn.to_string()));
        }
    }
    let out = env.cli(&["reconcile", "--source", "corp", "--format", "json"]);
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let rows: Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
    let reported: BTreeSet<(String, String, String)> = rows
        .as_array()
        .map(|a| {
            a.iter()
                .map(|d| {
                    let s = |k: &str| d[k].as_str().unwrap_or("").to_string();
                    (s("kind"), s("identity"), s("value"))
                })
                .collect()
        })
        .unwrap_or_default();
    if reported != differ {
        return Err(format!(
            "I1 drift: reconcile reports {reported:?}, the targets differ by {differ:?}"
        ));
    }
    if !differ.is_empty() {
        REPAIRED.fetch_add(differ.len(), std::sync::atomic::Ordering::Relaxed);
        let out = env.cli(&["reconcile", "--source", "corp", "--fix"]);
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        settle(env, owner).await?;
    }
    Ok(())
}

/// Waits for every job to end, then checks the invariants against the targets.
async fn check(
    env: &Env,
    slapd: &Slapd,
    scim: &Scim,
    leavers: &BTreeSet<usize>,
    owner: &mut Owner,
) -> Result<(), String> {
    settle(env, owner).await?;
    drift_is_the_difference(env, slapd, owner).await?;
    let hq = holders(env, "ent-hq")?;
    if hq != owner.holders("HQ") {
        return Err(format!(
            "I5 ent-hq: the badge system has {:?}, provd says {hq:?}",
            owner.holders("HQ")
        ));
    }
    let store = env.store();
    let failed = wait(store.jobs(provd::store::jobs::JobFilter {
        state: Some(provd::store::JobState::Failed),
        ..Default::default()
    }))
    .map_err(|e| e.to_string())?;
    if let Some(j) = failed.first() {
        return Err(format!(
            "job {} on {} for {} (request {}, ops {:?}) failed: {:?}",
            j.id, j.source, j.identity_id, j.request_id, j.ops, j.errors
        ));
    }
    // I5: who has each entitlement, as provd says and as each target says.
    let members = ldap_members(slapd).await;
    for (ent, _) in GROUPS {
        let have = &members[ent];
        let said = holders(env, ent)?;
        if *have != said {
            return Err(format!("I5 {ent}: slapd has {have:?}, provd says {said:?}"));
        }
    }
    let eng = scim
        .get("/Groups?filter=displayName%20eq%20%22engineers%22")
        .await;
    let members: Vec<String> = eng["Resources"][0]["members"]
        .as_array()
        .map(|m| {
            m.iter()
                .filter_map(|x| x["value"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let mut users: BTreeMap<String, Value> = BTreeMap::new();
    for u in scim.get("/Users").await["Resources"]
        .as_array()
        .cloned()
        .unwrap_or_default()
    {
        users.insert(u["id"].as_str().unwrap_or("").to_string(), u);
    }
    let have: BTreeSet<String> = members
        .iter()
        .filter_map(|id| {
            users
                .get(id)
                .and_then(|u| u["userName"].as_str())
                .map(str::to_string)
        })
        .collect();
    let said = holders(env, "ent-eng")?;
    if have != said {
        return Err(format!(
            "I5 ent-eng: SCIM has {have:?}, provd says {said:?}"
        ));
    }
    // I1 (status) and I2, per person and target.
    for p in 0..PEOPLE {
        let who = person(p);
        let leaver = leavers.contains(&p);
        let dn = format!("uid={who},ou=people,dc=example,dc=com");
        let filter = format!("(uid={who})");
        if !slapd
            .search("ou=people,dc=example,dc=com", &filter)
            .await
            .is_empty()
        {
            let disabled = slapd
                .values(&dn, "employeeType")
                .await
                .iter()
                .any(|v| v == "disabled");
            if disabled != leaver {
                return Err(format!(
                    "I1 {who} on corp: disabled {disabled}, leaver {leaver}"
                ));
            }
        }
        if let Some((_, disabled)) = owner.account_of(&who)
            && *disabled != leaver
        {
            return Err(format!(
                "I1 {who} on badges: disabled {disabled}, leaver {leaver}"
            ));
        }
        if let Some(u) = users.values().find(|u| u["userName"] == who.as_str()) {
            let active = u["active"].as_bool().unwrap_or(true);
            if active == leaver {
                return Err(format!(
                    "I1 {who} on saas: active {active}, leaver {leaver}"
                ));
            }
        }
        for source in ["corp", "saas"] {
            let Some(native) =
                wait(store.native_id(who.clone(), source.into())).map_err(|e| e.to_string())?
            else {
                continue;
            };
            let owners = wait(store.account_owners(source.into(), native.clone()))
                .map_err(|e| e.to_string())?;
            if owners != [who.clone()] {
                return Err(format!("I2 {native} on {source}: linked to {owners:?}"));
            }
        }
    }
    Ok(())
}

/// Who provd says holds `item` (active), from `provd access list --item`.
fn holders(env: &Env, item: &str) -> Result<BTreeSet<String>, String> {
    let out = env.cli(&["access", "list", "--item", item, "--format", "json"]);
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let rows: Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
    Ok(rows
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|r| r["state"] == "active")
                .filter_map(|r| r["identity"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default())
}
