//! The invariants checked at each quiet point, reading the targets themselves (not
//! through provd): I1 drift and status, I2, I3, I4, I5 (see `main.rs`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::Value;

use crate::harness::{Env, wait};
use crate::httpservers::Scim;
use crate::owner::Owner;
use crate::slapd::Slapd;
use crate::world::{GROUPS, Model, PEOPLE, REPAIRED, entry, exists, person, settle};

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
            // Strangers (`s…`) are no one's managed membership: drift says so apart.
            .filter(|uid| people.contains(uid) && uid.starts_with('p'))
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
    model: &mut Model,
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
    for (_, group) in &model.strangers {
        differ.insert(("unmanaged_member".into(), String::new(), group.clone()));
    }
    // An account provd manages that an administrator deleted is drift of its own, with
    // the status the person's state wants (issue 34, item 10).
    let managed = wait(env.store().managed_accounts("corp".into())).map_err(|e| e.to_string())?;
    for (who, _) in managed {
        let Some(p) = (0..PEOPLE).find(|p| person(*p) == who) else {
            continue;
        };
        if !exists(slapd, p).await {
            let want = if model.leavers.contains(&p) {
                "disabled"
            } else {
                "enabled"
            };
            differ.insert(("missing".into(), who, want.into()));
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
        // corp says `unmanaged_members = "remove"`: --fix took the strangers out.
        for (s, group) in std::mem::take(&mut model.strangers) {
            if slapd.values(&group, "member").await.contains(&s) {
                return Err(format!("I1: --fix left unmanaged {s} in {group}"));
            }
        }
    }
    Ok(())
}

/// Waits for every job to end, then checks the invariants against the targets.
pub async fn check(
    env: &Env,
    slapd: &Slapd,
    scim: &Scim,
    model: &mut Model,
    owner: &mut Owner,
) -> Result<(), String> {
    // A removeDate falling due while the targets are read would race the reading: the
    // quiet point waits until the dates near it have passed and their removals fired.
    // A killed leader's removals fire on another agent within one leader lease (3 s).
    let now = jiff::Timestamp::now().as_millisecond();
    if let Some(k) = model.killed_at.filter(|k| *k + 4_000 > now) {
        tokio::time::sleep(Duration::from_millis((k + 4_000 - now) as u64)).await;
    }
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
    if let Some(j) = failed.iter().find(|j| !owner.moot.contains(&j.id)) {
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
        let job = match jobs.entry(job_id) {
            std::collections::btree_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::btree_map::Entry::Vacant(v) => v.insert(
                wait(store.job(job_id))
                    .map_err(|x| x.to_string())?
                    .ok_or_else(|| {
                        format!("I4: event {} names job {job_id}, which is gone", e.id)
                    })?,
            ),
        };
        let index = e.data["index"].as_u64().unwrap_or(u64::MAX) as usize;
        if let (Some(Operation::AddEntitlement(ent)), Some(who)) =
            (job.ops.get(index), e.identity.as_deref())
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
    // A holding's `until` is set only when every grant that wants it ends (DESIGN §21):
    // one wanted by an undated grant too stays, rightly.
    let cutoff = settled - 5_000;
    for r in rows.as_array().into_iter().flatten() {
        let until = r["until"]
            .as_str()
            .and_then(|u| u.parse::<jiff::Timestamp>().ok());
        if until.is_some_and(|u| u.as_millisecond() <= cutoff)
            && live.iter().any(|s| r["state"] == *s)
        {
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
