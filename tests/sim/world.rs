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
pub const PEOPLE: usize = 6;
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
pub const GROUPS: [(&str, &str); 2] = [
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

/// Tasks the owner answered DONE after provd had withdrawn them, across runs.
pub static LATE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

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
    /// A grant with a startDate this many seconds ahead.
    GrantFrom(usize, &'static str, u64),
    /// An administrator puts someone provd does not manage in an LDAP group by hand.
    Stranger(&'static str),
    /// The badge owner goes away: back at the next quiet point or hand-made change, it
    /// does every task sent meanwhile — withdrawn ones too — and answers them late.
    OwnerAway,
    /// The badge owner answers the next task FAILED; the operator retries its job.
    OwnerFails,
    /// The operator cancels the newest badge grant waiting on its owner: its tasks are
    /// withdrawn, though its owner, at work on them, does them and answers late.
    Withdraw(usize),
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
    /// Grants with startDates (`--starts`).
    pub starts: bool,
    /// People provd does not manage put in its groups by hand (`--strangers`).
    pub strangers: bool,
    /// The badge owner answering late, after a withdrawal, or FAILED (`--owners`).
    pub owners: bool,
}

impl Mix {
    pub const NONE: Mix = Mix {
        movers: false,
        outside: false,
        dates: false,
        starts: false,
        strangers: false,
        owners: false,
    };
    pub const MOVERS: Mix = Mix {
        movers: true,
        ..Mix::NONE
    };
    /// The first three flags (what `--all` meant before the last three).
    pub const FIRST: Mix = Mix {
        movers: true,
        outside: true,
        dates: true,
        ..Mix::NONE
    };
    pub const ALL: Mix = Mix {
        starts: true,
        strangers: true,
        owners: true,
        ..Mix::FIRST
    };
}

/// What the history did that provd is not told of, and what it must have undone.
#[derive(Default)]
pub struct Model {
    pub leavers: BTreeSet<usize>,
    /// Leavers whose entry an administrator enabled again (drift until a rehire).
    pub enabled: BTreeSet<usize>,
    /// When an agent was last killed (ms): the leader's singleton work may wait one leader
    /// lease for another agent to take it over.
    pub killed_at: Option<i64>,
    /// Grants due to end: their assignment's request id -> removeDate (ms). A later grant
    /// of the same item replaces the date, or clears it when it has none (DESIGN §4).
    pub dated: BTreeMap<String, i64>,
    /// People provd does not manage, put in corp's groups by hand: (entry, group) until
    /// `reconcile --fix` takes them out (corp says `unmanaged_members = "remove"`).
    pub strangers: BTreeSet<(String, String)>,
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
    let kinds = match mix {
        m if m.starts || m.strangers || m.owners => 28,
        m if m.outside || m.dates => 20,
        _ => 15,
    };
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
                20 | 21 if mix.starts => Event::GrantFrom(who, item, 1 + rng.below(3) as u64),
                22 if mix.strangers => Event::Stranger(GROUPS[rng.below(GROUPS.len())].0),
                23 if mix.owners => Event::OwnerAway,
                24 if mix.owners => Event::OwnerFails,
                25 if mix.owners => Event::Withdraw(who),
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

pub fn person(i: usize) -> String {
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
    // A failure keeps the world's directory (agent logs, store) where SIM_KEEP says.
    let outcome: Result<(), String> = async {
        for (step, e) in events.iter().enumerate() {
            let at = |m: String| format!("step {step} ({e:?}): {m}");
            // Hand-made changes and checks find slapd up again, and the owner back.
            let hand = matches!(
                e,
                Event::Quiet
                    | Event::HandRemove(..)
                    | Event::HandDelete(_)
                    | Event::HandEnable(_)
                    | Event::Down
                    | Event::Stranger(_)
            );
            if down && hand {
                slapd.restart().await;
                down = false;
            }
            if hand {
                owner.come_back(&env).await.map_err(at)?;
            }
            match e {
                Event::Grant(p, item)
                | Event::Revoke(p, item)
                | Event::GrantUntil(p, item, _)
                | Event::GrantFrom(p, item, _) => {
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
                    if let Event::GrantFrom(_, _, secs) = e {
                        let start = jiff::Timestamp::now() + Duration::from_secs(*secs);
                        it["startDate"] = start.to_string().into();
                    }
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
                Event::Stranger(ent) => {
                    settle(&env, &mut owner).await.map_err(at)?;
                    let group = GROUPS
                        .iter()
                        .find(|(e, _)| e == ent)
                        .map_or("", |(_, d)| *d);
                    let s = format!("uid=s{step},ou=people,dc=example,dc=com");
                    slapd.ldapadd(&format!(
                        "dn: {s}\nobjectClass: inetOrgPerson\nuid: s{step}\ncn: S\nsn: {step}\n\n\
                         dn: {group}\nchangetype: modify\nadd: member\nmember: {s}\n"
                    ));
                    model.strangers.insert((s, group.to_string()));
                }
                Event::OwnerAway => owner.go_away(&env).await.map_err(at)?,
                Event::OwnerFails => owner.fail_next = true,
                Event::Withdraw(p) => {
                    // The person asks for the HQ zone (when not a leaver); once the badge job
                    // waits on its owner, it is withdrawn.
                    let mut rid = None;
                    if !model.leavers.contains(p) {
                        let body = json!({ "requestedFor": [person(*p)], "requestedItems":
                            [{ "type": "ENTITLEMENT", "id": "ent-hq", "comment": "sim" }] });
                        let out = env.cli_with(&["submit", "-"], Some(body.to_string().as_bytes()));
                        if !out.status.success() {
                            return Err(at(String::from_utf8_lossy(&out.stderr).into_owned()));
                        }
                        let answer: Value =
                            serde_json::from_slice(&out.stdout).map_err(|x| at(x.to_string()))?;
                        rid = ["newRequests", "existingRequests"].iter().find_map(|k| {
                            answer[k][0]["accessRequestIds"][0]
                                .as_str()
                                .map(str::to_string)
                        });
                        // A grant again clears a removeDate (DESIGN §4).
                        if let Some(r) = &rid {
                            model.dated.remove(r);
                        }
                    }
                    let deadline = std::time::Instant::now() + Duration::from_secs(10);
                    let waiting = loop {
                        let waiting =
                            crate::harness::wait(env.store().jobs(provd::store::jobs::JobFilter {
                                state: Some(provd::store::JobState::Manual),
                                source: Some("badges".into()),
                                ..Default::default()
                            }))
                            .map_err(|x| at(x.to_string()))?;
                        let busy = match &rid {
                            Some(r) => crate::harness::wait(env.store().jobs(
                                provd::store::jobs::JobFilter {
                                    request_id: Some(r.clone()),
                                    ..Default::default()
                                },
                            ))
                            .map_err(|x| at(x.to_string()))?
                            .iter()
                            .any(|j| {
                                matches!(
                                    j.state,
                                    provd::store::JobState::Queued
                                        | provd::store::JobState::Running
                                )
                            }),
                            None => false,
                        };
                        if !busy || std::time::Instant::now() > deadline {
                            break waiting;
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    };
                    // A grant withdrawn (a lifecycle job canceled would leave a leaver
                    // enabled: that is the operator's doing, not provd's).
                    let grant = |j: &&provd::store::Job| {
                        j.kind == "grant"
                            && j.ops.iter().all(|o| {
                                matches!(
                                    o,
                                    provd_connector_core::Operation::CreateAccount
                                        | provd_connector_core::Operation::AddEntitlement(_)
                                )
                            })
                    };
                    if let Some(j) = waiting.iter().filter(grant).max_by_key(|j| j.id) {
                        // The owner is at work on its tasks, from the mail, and answers
                        // later: after provd withdrew them.
                        let open = crate::harness::wait(env.store().tasks(
                            provd::store::tasks::TaskFilter {
                                open_only: true,
                                source: Some("badges".into()),
                                ..Default::default()
                            },
                        ))
                        .map_err(|x| at(x.to_string()))?;
                        owner.go_away(&env).await.map_err(at)?;
                        owner.late.extend(
                            open.iter()
                                .filter(|t| {
                                    t.identity_id == j.identity_id && t.request_id == j.request_id
                                })
                                .map(|t| t.id),
                        );
                        let _ = env.cli(&["jobs", "cancel", &j.id.to_string()]);
                    }
                }
                Event::Kill => {
                    model.killed_at = Some(jiff::Timestamp::now().as_millisecond());
                    first.signal_and_wait("KILL", 10).await;
                    first = env.start().await;
                }
                Event::Quiet => crate::checks::check(&env, &slapd, &scim, &mut model, &mut owner)
                    .await
                    .map_err(at)?,
            }
        }
        Ok(())
    }
    .await;
    if let (Err(e), Ok(keep)) = (&outcome, std::env::var("SIM_KEEP")) {
        let to = std::path::Path::new(&keep).join(env.path().file_name().unwrap_or_default());
        let copied = std::process::Command::new("cp")
            .args([
                "-r",
                &env.path().display().to_string(),
                &to.display().to_string(),
            ])
            .status()
            .is_ok_and(|s| s.success());
        // On PostgreSQL the store lives in the cluster's temp dir, gone with it: a dump
        // (restore with `psql -f store.sql` into an empty database) keeps it.
        if copied && let Some((_, url)) = &env.pg {
            let _ = std::process::Command::new("pg_dump")
                .args(["--no-owner", "-f"])
                .arg(to.join("store.sql"))
                .arg(url)
                .status();
        }
        if copied {
            return Err(format!("{e} (the world is kept in {})", to.display()));
        }
    }
    outcome
}

/// A person's LDAP entry.
pub fn entry(p: usize) -> String {
    format!("uid={},ou=people,dc=example,dc=com", person(p))
}

pub async fn exists(slapd: &Slapd, p: usize) -> bool {
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
         [account.disable]\nattribute = \"employeeType\"\nvalue = \"disabled\"\n\
         [reconcile]\nunmanaged_members = \"remove\"\n",
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
        // A short leader lease: after a kill -9 of the leader, removeDates fire again on
        // the other agent within it (DESIGN §19), well before the next quiet point's reads.
        conf.replace(
            "[agent]\n",
            "[agent]\nlifecycle = \"lifecycle.toml\"\nleader_lease = \"3s\"\n",
        ),
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
pub async fn settle(env: &Env, owner: &mut Owner) -> Result<(), String> {
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
