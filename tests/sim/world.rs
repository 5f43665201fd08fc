//! The simulated world: its people, catalog and targets, the events of a history, and the
//! invariants checked at each quiet point.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::{Value, json};

use crate::flow::custom_env;
use crate::harness::{Env, wait};
use crate::httpservers::Scim;
use crate::owner::{Owner, answer};
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
    /// An administrator deletes the person's LDAP entry by hand (when there is one).
    HandDelete(usize),
    /// An administrator enables a leaver's LDAP entry again by hand.
    HandEnable(usize),
    /// A grant with a removeDate this many seconds ahead (I3).
    GrantUntil(usize, &'static str, u64),
    /// slapd stops, and starts again at the next quiet point or hand-made change.
    Down,
    /// Wait for every job to end, then check the invariants.
    Quiet,
}

/// Which kinds of events a history draws beyond grants, revokes, leavers, rehires,
/// hand-made removals and kills. Flags, so that the histories of the seeds that found
/// earlier bugs stay as they were.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Mix {
    /// E-mail changes on the manual source keyed by e-mail (`--movers`).
    pub movers: bool,
    /// Hand-made deletes and enables on slapd, and slapd down a while (`--outside`).
    pub outside: bool,
    /// Grants with removeDates (`--dates`).
    pub dates: bool,
}

impl Mix {
    pub const NONE: Mix = Mix {
        movers: false,
        outside: false,
        dates: false,
    };
    pub const MOVERS: Mix = Mix {
        movers: true,
        ..Mix::NONE
    };
    pub const ALL: Mix = Mix {
        movers: true,
        outside: true,
        dates: true,
    };
}

/// What the history did that provd is not told of, and what it must have undone.
#[derive(Default)]
pub struct Model {
    pub leavers: BTreeSet<usize>,
    /// Leavers whose entry an administrator enabled again (drift until a rehire).
    pub enabled: BTreeSet<usize>,
    /// Grants due to end: their assignment's request id -> removeDate (ms). A later grant
    /// of the same item replaces the date, or clears it when it has none (DESIGN §4).
    pub dated: BTreeMap<String, i64>,
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
pub fn history(seed: u64, n: usize, mix: Mix) -> Vec<Event> {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let kinds = if mix.outside || mix.dates { 20 } else { 15 };
    let mut out: Vec<Event> = (0..n.saturating_sub(1))
        .map(|_| {
            let who = rng.below(PEOPLE);
            let item = ITEMS[rng.below(ITEMS.len())].1;
            match rng.below(kinds) {
                0..=4 => Event::Grant(who, item),
                5..=6 => Event::Revoke(who, item),
                7 => Event::Leave(who),
                8 => Event::Rehire(who),
                9 => Event::HandRemove(who, GROUPS[rng.below(GROUPS.len())].0),
                10 => Event::Kill,
                11 if mix.movers => Event::Move(who),
                15 if mix.outside => Event::HandDelete(who),
                16 if mix.outside => Event::HandEnable(who),
                17 if mix.outside => Event::Down,
                18 | 19 if mix.dates => Event::GrantUntil(who, item, 1 + rng.below(3) as u64),
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
    let mut slapd = Slapd::start().await;
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
    let mut model = Model::default();
    let mut owner = Owner::default();
    let mut moves: BTreeMap<usize, u32> = BTreeMap::new();
    let mut down = false;
    for (step, e) in events.iter().enumerate() {
        let at = |m: String| format!("step {step} ({e:?}): {m}");
        // Hand-made changes and checks find slapd up again.
        if down
            && matches!(
                e,
                Event::Quiet
                    | Event::HandRemove(..)
                    | Event::HandDelete(_)
                    | Event::HandEnable(_)
                    | Event::Down
            )
        {
            slapd.restart().await;
            down = false;
        }
        match e {
            Event::Grant(p, item) | Event::Revoke(p, item) | Event::GrantUntil(p, item, _) => {
                let grant = !matches!(e, Event::Revoke(..));
                if model.leavers.contains(p) && grant {
                    continue; // refused at the door; the model says so
                }
                let kind = if grant {
                    "GRANT_ACCESS"
                } else {
                    "REVOKE_ACCESS"
                };
                let mut it = json!({ "type": item_type(item), "id": item, "comment": "sim" });
                let due = match e {
                    Event::GrantUntil(_, _, secs) => {
                        let due = jiff::Timestamp::now() + Duration::from_secs(*secs);
                        it["removeDate"] = due.to_string().into();
                        Some(due.as_millisecond())
                    }
                    _ => None,
                };
                let body = json!({ "requestedFor": [person(*p)], "requestType": kind,
                    "requestedItems": [it] });
                let out = env.cli_with(&["submit", "-"], Some(body.to_string().as_bytes()));
                if !out.status.success() {
                    return Err(at(String::from_utf8_lossy(&out.stderr).into_owned()));
                }
                if grant {
                    let answer: Value =
                        serde_json::from_slice(&out.stdout).map_err(|x| at(x.to_string()))?;
                    let ids = |k: &str| {
                        answer[k][0]["accessRequestIds"][0]
                            .as_str()
                            .map(str::to_string)
                    };
                    if let Some(rid) = ids("newRequests").or_else(|| ids("existingRequests")) {
                        match due {
                            Some(due) => model.dated.insert(rid, due),
                            None => model.dated.remove(&rid),
                        };
                    }
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
                    _ if model.leavers.contains(p) => "leaver",
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
                    model.leavers.insert(*p);
                } else {
                    model.leavers.remove(p);
                    // Rehired: provd enables the entry, as the hand did.
                    model.enabled.remove(p);
                }
            }
            Event::HandRemove(p, ent) => {
                // Out of band, between provd's own changes.
                settle(&env, &mut owner).await.map_err(at)?;
                let dn = GROUPS
                    .iter()
                    .find(|(e, _)| e == ent)
                    .map_or("", |(_, d)| *d);
                let member = entry(*p);
                if slapd.values(dn, "member").await.contains(&member) {
                    slapd.ldapadd(&format!(
                        "dn: {dn}\nchangetype: modify\ndelete: member\nmember: {member}\n"
                    ));
                }
            }
            Event::HandDelete(p) => {
                settle(&env, &mut owner).await.map_err(at)?;
                if exists(&slapd, *p).await {
                    slapd.ldapadd(&format!("dn: {}\nchangetype: delete\n", entry(*p)));
                    model.enabled.remove(p);
                }
            }
            Event::HandEnable(p) => {
                settle(&env, &mut owner).await.map_err(at)?;
                let disabled = slapd.values(&entry(*p), "employeeType").await;
                if model.leavers.contains(p) && disabled.iter().any(|v| v == "disabled") {
                    slapd.ldapadd(&format!(
                        "dn: {}\nchangetype: modify\ndelete: employeeType\n",
                        entry(*p)
                    ));
                    model.enabled.insert(*p);
                }
            }
            Event::Down => {
                slapd.stop();
                down = true;
            }
            Event::Kill => {
                first.signal_and_wait("KILL", 10).await;
                first = env.start().await;
            }
            Event::Quiet => check(&env, &slapd, &scim, &model, &mut owner)
                .await
                .map_err(at)?,
        }
    }
    Ok(())
}

/// A person's LDAP entry.
fn entry(p: usize) -> String {
    format!("uid={},ou=people,dc=example,dc=com", person(p))
}

async fn exists(slapd: &Slapd, p: usize) -> bool {
    !slapd
        .search(
            "ou=people,dc=example,dc=com",
            &format!("(uid={})", person(p)),
        )
        .await
        .is_empty()
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
/// A deleted entry's DN left in a group (slapd keeps it) is nobody's membership.
async fn ldap_members(slapd: &Slapd) -> BTreeMap<&'static str, BTreeSet<String>> {
    let mut out = BTreeMap::new();
    let people: BTreeSet<String> = slapd
        .search("ou=people,dc=example,dc=com", "(uid=*)")
        .await
        .into_iter()
        .filter_map(|e| e.attrs.get("uid").and_then(|v| v.first().cloned()))
        .collect();
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
            .filter(|uid| people.contains(uid))
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
    model: &Model,
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
    for p in &model.enabled {
        if exists(slapd, *p).await {
            differ.insert(("enabled_unexpectedly".into(), person(*p), "enabled".into()));
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
    model: &Model,
    owner: &mut Owner,
) -> Result<(), String> {
    // A removeDate falling due while the targets are read would race the reading: the
    // quiet point waits until the dates near it have passed and their removals fired.
    let now = jiff::Timestamp::now().as_millisecond();
    if let Some(last) = model.dated.values().filter(|d| **d > now - 3_000).max() {
        tokio::time::sleep(Duration::from_millis((last + 1_500 - now).max(0) as u64)).await;
    }
    settle(env, owner).await?;
    let settled = jiff::Timestamp::now().as_millisecond();
    drift_is_the_difference(env, slapd, model, owner).await?;
    removed_when_due(env, model, settled)?;
    trail_names_each_step(env, slapd).await?;
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
            let rows: Vec<String> = have
                .symmetric_difference(&said)
                .map(|who| {
                    let out = env.cli(&["access", "list", "--identity", who, "--format", "json"]);
                    let trail = env.cli(&["audit", "--identity", who, "--format", "json"]);
                    if let Ok(dir) = std::env::var("SIM_DUMP") {
                        let _ = std::fs::write(format!("{dir}/{who}-trail.json"), &trail.stdout);
                    }
                    String::from_utf8_lossy(&out.stdout).into_owned()
                })
                .collect();
            return Err(format!(
                "I5 {ent}: slapd has {have:?}, provd says {said:?}; provd's rows: {}",
                rows.join("\n")
            ));
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
        let leaver = model.leavers.contains(&p);
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
            if disabled != leaver && !model.enabled.contains(&p) {
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
        // The access list's account state is the targets' (slapd's unless enabled by
        // hand, which drift reports instead).
        let out = env.cli(&["access", "list", "--identity", &who, "--format", "json"]);
        let rows: Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
        for r in rows.as_array().into_iter().flatten() {
            let said = r["accountState"].as_str();
            let truth = match r["source"].as_str() {
                Some("badges") => owner.account_of(&who).map(|(_, d)| *d),
                Some("corp") if exists(slapd, p).await && !model.enabled.contains(&p) => Some(
                    slapd
                        .values(&entry(p), "employeeType")
                        .await
                        .iter()
                        .any(|v| v == "disabled"),
                ),
                _ => None,
            };
            if let Some(truth) = truth
                && said != Some(if truth { "disabled" } else { "enabled" })
            {
                return Err(format!(
                    "I1 {who}: the access list says {r}, the target disabled {truth}"
                ));
            }
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

/// I4: every call provd made is part of a request whose trail names its requester, and
/// every LDAP membership provd says it gave has the call that gave it on the trail.
async fn trail_names_each_step(env: &Env, slapd: &Slapd) -> Result<(), String> {
    use provd_connector_core::Operation;
    let store = env.store();
    let events = wait(store.events_after(0, usize::MAX >> 1)).map_err(|e| e.to_string())?;
    let requesters: BTreeMap<&str, &str> = events
        .iter()
        .filter(|e| e.kind == "request_accepted")
        .filter_map(|e| Some((e.request_id.as_deref()?, e.actor.as_deref()?)))
        .collect();
    let mut jobs: BTreeMap<i64, provd::store::Job> = BTreeMap::new();
    let mut given: BTreeSet<(String, String)> = BTreeSet::new();
    for e in events.iter().filter(|e| e.kind == "connector_call") {
        let rid = e.request_id.as_deref().unwrap_or("");
        if requesters.get(rid).is_none_or(|a| a.is_empty()) {
            return Err(format!(
                "I4: call {} of request {rid} names no requester",
                e.id
            ));
        }
        let Some(job_id) = e.job_id else { continue };
        if !jobs.contains_key(&job_id) {
            let job = wait(store.job(job_id))
                .map_err(|x| x.to_string())?
                .ok_or_else(|| format!("I4: event {} names job {job_id}, which is gone", e.id))?;
            jobs.insert(job_id, job);
        }
        let index = e.data["index"].as_u64().unwrap_or(u64::MAX) as usize;
        if let (Some(Operation::AddEntitlement(ent)), Some(who)) =
            (jobs[&job_id].ops.get(index), e.identity.as_deref())
        {
            given.insert((who.to_string(), ent.value.clone()));
        }
    }
    let members = ldap_members(slapd).await;
    for (ent, dn) in GROUPS {
        for who in holders(env, ent)?.intersection(&members[ent]) {
            if !given.contains(&(who.clone(), dn.to_string())) {
                return Err(format!("I4: {who} in {dn} with no call on the trail"));
            }
        }
    }
    Ok(())
}

/// I3: a grant whose removeDate passed well before the quiet point (`settled`, ms) is
/// held nowhere: provd's access list has it in no live state.
fn removed_when_due(env: &Env, model: &Model, settled: i64) -> Result<(), String> {
    let due: BTreeSet<&str> = model
        .dated
        .iter()
        .filter(|(_, at)| **at + 5_000 <= settled)
        .map(|(rid, _)| rid.as_str())
        .collect();
    if due.is_empty() {
        return Ok(());
    }
    let out = env.cli(&["access", "list", "--format", "json"]);
    let rows: Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
    let live = ["active", "pending", "removal_scheduled", "removing"];
    for r in rows.as_array().into_iter().flatten() {
        let rid = r["requestId"].as_str().unwrap_or("");
        if due.contains(rid) && live.iter().any(|s| r["state"] == *s) {
            return Err(format!("I3: held after its removeDate: {r}"));
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
                .filter(|r| {
                    ["active", "removal_scheduled", "removing"]
                        .iter()
                        .any(|s| r["state"] == *s)
                })
                .filter_map(|r| r["identity"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default())
}
