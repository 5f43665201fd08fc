//! One truth about access (issue 33): each finding of the issue has a regression test here
//! that failed before its fix, against real servers.

use crate::flow::{grant, settled, submit};
use crate::harness::{Env, eventually};
use crate::httpservers::Scim;
use crate::joiners::{ADA, GIT, TOKEN, VPN, member, setup};
use crate::slapd::Slapd;

const GRACE: &str = "uid=grace,ou=people,dc=example,dc=com";

/// Sets the lifecycle state of `id`'s row in identities.csv (the file the agent runs on).
fn set_state(env: &Env, id: &str, state: &str) {
    let path = env.path().join("identities.csv");
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<String> = text
        .lines()
        .map(|l| {
            if l.starts_with(&format!("{id},")) {
                let mut cells: Vec<&str> = l.split(',').collect();
                let last = cells.len() - 1;
                cells[last] = state;
                cells.join(",")
            } else {
                l.to_string()
            }
        })
        .collect();
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
}

/// Waits until `dn` carries (or not) the disable marker of the LDAP source's recipe.
pub(crate) async fn disabled(slapd: &Slapd, dn: &str, yes: bool) {
    eventually(20, &format!("{dn} disabled: {yes}"), || async move {
        let types = slapd.values(dn, "employeeType").await;
        (types.iter().any(|t| t == "disabled") == yes).then_some(())
    })
    .await;
}

/// Finding 1: a leaver edited into identities.csv and imported with `provd identities
/// import`, or let through with `--confirm` after the guard held the reload, is disabled.
/// Before, the import diffed the file against the same (already edited) file on disk:
/// the state was recorded and nothing was planned, and every later import, PUT or SIGHUP
/// was a no-op for the person.
#[tokio::test]
async fn a_leaver_edited_into_identities_csv_loses_access_however_the_edit_is_applied() {
    let slapd = Slapd::start().await;
    let scim = Scim::start(TOKEN).await;
    scim.group("engineers").await;
    let env = setup(&slapd, &scim);
    // A guard of 1: one leaver (three sources) is a mass change here.
    crate::joiners::guard_of(&env, 1);
    set_state(&env, "ada", "active");
    set_state(&env, "grace", "active");
    let agent = env.start().await;
    for (who, ent) in [("ada", "ent-vpn"), ("grace", "ent-git")] {
        let rid = submit(&env, grant(who, "ENTITLEMENT", ent));
        settled(&env, &rid).await;
    }
    member(&slapd, VPN, ADA, true).await;
    member(&slapd, GIT, GRACE, true).await;
    disabled(&slapd, ADA, false).await;

    // HR edits ada's row; the operator imports the file itself.
    set_state(&env, "ada", "leaver");
    let csv = env.path().join("identities.csv");
    let csv = csv.to_str().unwrap();
    let out = env.cli(&["identities", "import", csv, "--confirm"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("ada: active -> leaver"), "{said}");
    disabled(&slapd, ADA, true).await;

    // grace's edit reaches the agent by SIGHUP: held by the guard, nothing done...
    set_state(&env, "grace", "leaver");
    agent.signal("HUP");
    eventually(10, "the reload held", || async {
        agent
            .log_text()
            .contains("new configuration refused")
            .then_some(())
    })
    .await;
    disabled(&slapd, GRACE, false).await;
    // ...until the operator confirms it as the log line says.
    let out = env.cli(&["identities", "import", csv, "--confirm"]);
    assert!(out.status.success());
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("grace: active -> leaver"), "{said}");
    assert!(!said.contains("ada:"), "ada's change is made once: {said}");
    disabled(&slapd, GRACE, true).await;
    // The next reload finds nothing left to change: it is not held again.
    agent.signal("HUP");
    eventually(10, "the reload taken", || async {
        agent
            .log_text()
            .contains("configuration reloaded")
            .then_some(())
    })
    .await;
    disabled(&slapd, ADA, true).await;
}

/// Findings 7 and 8: leaver PUTs one after the other are one burst for the guard, which
/// counts only accounts that exist; each change is an event naming the identity, its
/// changed fields and who made it, and the requests it causes carry that actor and the
/// event's id. Before, each PUT passed the guard alone (counted on every configured
/// source, account or not), the trail said `lifecycle` and the import event named no one.
#[tokio::test]
async fn leaver_puts_in_a_row_are_one_burst_and_each_change_names_who_made_it() {
    let slapd = Slapd::start().await;
    let scim = Scim::start(TOKEN).await;
    scim.group("engineers").await;
    let env = setup(&slapd, &scim);
    crate::joiners::guard_of(&env, 3);
    let agent = env.start().await;
    let people = ["p0", "p1", "p2", "p3"];
    for p in people {
        let rid = submit(&env, grant(p, "ENTITLEMENT", "ent-vpn"));
        settled(&env, &rid).await;
    }
    let put = |id: &str, confirm: bool| {
        let n = &id[1..];
        let body = serde_json::json!({ "firstName": "P", "lastName": n,
            "email": format!("{id}@example.com"), "lifecycleState": "leaver" });
        let mut req = agent
            .http
            .put(format!("{}/identities/v1/{id}", agent.base))
            .bearer_auth(env.token())
            .body(body.to_string());
        if confirm {
            req = req.header("Provd-Confirm", "true");
        }
        async move { req.send().await.unwrap() }
    };
    // One account each (corp): three pass, the fourth within the window is held.
    for p in &people[..3] {
        assert_eq!(put(p, false).await.status(), 200, "{p}");
    }
    let held = put("p3", false).await;
    assert_eq!(held.status(), 409);
    let text = held.text().await.unwrap();
    assert!(
        text.contains("disable or delete 1 accounts (3 more were within the last 10m)"),
        "{text}"
    );
    assert_eq!(put("p3", true).await.status(), 200);
    for p in people {
        let dn = format!("uid={p},ou=people,dc=example,dc=com");
        disabled(&slapd, &dn, true).await;
    }

    // The trail: who changed p0, what changed, and the requests it caused.
    let events = env.events();
    let changed = events
        .iter()
        .find(|e| e.kind == "identity_changed" && e.identity.as_deref() == Some("p0"))
        .expect("p0's change is an event");
    let token_name = changed.actor.clone().unwrap();
    assert!(!token_name.starts_with("agent:") && token_name != "lifecycle");
    assert_eq!(changed.data["values"]["lifecycleState"], "leaver");
    assert_eq!(
        changed.data["fields"],
        serde_json::json!(["lifecycleState"])
    );
    assert_eq!(
        (changed.data["from"].as_str(), changed.data["to"].as_str()),
        (Some("active"), Some("leaver"))
    );
    assert_eq!(changed.data["accountRemovals"], 1);
    let queued: Vec<_> = events
        .iter()
        .filter(|e| {
            e.kind == "job_queued" && e.identity.as_deref() == Some("p0") && e.id > changed.id
        })
        .collect();
    assert_eq!(queued.len(), 1, "one disable, on corp");
    assert_eq!(queued[0].actor.as_deref(), Some(token_name.as_str()));
    let cause = format!(r#""cause":"{}""#, changed.id);
    assert!(
        env.store_text().contains(&cause),
        "the request carries {cause}"
    );
    let trail = env.cli(&["audit", "--identity", "p0", "--format", "json"]);
    let trail: serde_json::Value = serde_json::from_slice(&trail.stdout).unwrap();
    assert!(
        trail
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "identity_changed"),
        "{trail}"
    );
    // `provd status` of the request the change caused: its one job as an item (before,
    // a request with no catalog item answered `[]`), with its requester and cause.
    let request = queued[0].request_id.clone().unwrap();
    let out = env.cli(&["status", &request]);
    let items: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(items.as_array().map(Vec::len), Some(1), "{items}");
    let item = &items[0];
    assert_eq!(
        (
            item["type"].as_str(),
            item["name"].as_str(),
            item["state"].as_str(),
            item["requestedFor"]["id"].as_str(),
            item["requester"]["id"].as_str(),
        ),
        (
            Some("ACCOUNT"),
            Some("DISABLE_ACCOUNT on corp"),
            Some("REQUEST_COMPLETED"),
            Some("p0"),
            Some(token_name.as_str()),
        ),
        "{item}"
    );
    assert_eq!(
        item["clientMetadata"]["cause"],
        changed.id.to_string(),
        "{item}"
    );
}

/// A SCIM server whose search lags its writes, as some do: the next `hide` filtered user
/// searches find nothing; every other call goes to the real server behind unchanged.
struct Lagging {
    base: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Lagging {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn lagging(behind: String, hide: usize) -> Lagging {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let left = Arc::new(AtomicUsize::new(hide));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/v2", listener.local_addr().unwrap());
    let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
        let (left, behind) = (left.clone(), behind.clone());
        async move {
            let uri = req.uri().clone();
            let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
            let search = req.method() == axum::http::Method::GET
                && path.starts_with("/v2/Users?filter=");
            if search
                && left
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok()
            {
                let empty = serde_json::json!({ "schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"],
                    "totalResults": 0, "Resources": [] });
                return axum::response::IntoResponse::into_response(axum::Json(empty));
            }
            let url = format!("{}{}", behind.trim_end_matches("/v2"), path);
            let mut out = crate::harness::client().request(req.method().clone(), url);
            for (k, v) in req.headers() {
                if k != "host" && k != "content-length" {
                    out = out.header(k, v);
                }
            }
            let body = axum::body::to_bytes(req.into_body(), 1 << 20).await.unwrap();
            let r = out.body(body).send().await.unwrap();
            let status = r.status();
            let kind = r.headers().get("content-type").cloned();
            let bytes = r.bytes().await.unwrap();
            let mut resp = axum::response::Response::new(axum::body::Body::from(bytes));
            *resp.status_mut() = status;
            if let Some(k) = kind {
                resp.headers_mut().insert("content-type", k);
            }
            resp
        }
    });
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Lagging { base, task }
}

/// Finding 9: a user the server already has (made by an attempt whose answer was lost)
/// that its lagging search does not find yet: the create's 409 is retried, and the
/// next attempt links the user. Before, the job failed for good.
#[tokio::test]
async fn a_create_that_meets_a_lagging_search_is_retried_and_links_the_user() {
    let scim = Scim::start(TOKEN).await;
    let eng = scim.group("engineers").await;
    let made = scim
        .post(
            "/Users",
            serde_json::json!({ "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                "userName": "ada", "displayName": "Ada Lovelace" }),
        )
        .await;
    let ada_id = made["id"].as_str().unwrap().to_string();
    // The create's lookup and the lookup after its 409 both find nothing.
    let proxy = lagging(scim.base(), 2).await;
    let saas = format!(
        "id = \"saas\"\ntype = \"scim\"\nowner = \"saas@example.com\"\nbase_url = \"{}\"\n\
         token_file = \"../scim-token\"\n[account]\ncorrelation = \"userName\"\n\
         [account.attributes]\nuserName = \"{{id}}\"\ndisplayName = \"{{firstName}} {{lastName}}\"\n",
        proxy.base
    );
    let catalog = "[[entitlement]]\nid = \"ent-eng\"\nsource = \"saas\"\nattribute = \"groups\"\nvalue = \"engineers\"\n";
    let env = crate::flow::custom_env(&[("saas.toml", saas)], catalog);
    std::fs::write(env.path().join("scim-token"), format!("{TOKEN}\n")).unwrap();
    let _agent = env.start().await;
    let rid = submit(&env, grant("ada", "ENTITLEMENT", "ent-eng"));
    let jobs = settled(&env, &rid).await;
    assert_eq!(jobs.len(), 1);
    let job = &jobs[0];
    assert_eq!(job.state.as_str(), "succeeded", "{:?}", job.errors);
    assert_eq!(job.attempt, 2, "one retry: {:?}", job.errors);
    assert_eq!(job.errors[0].class, "retryable");
    assert!(
        job.errors[0].message.contains("may lag"),
        "{:?}",
        job.errors
    );
    assert_eq!(scim.members(&eng).await, vec![ada_id]);
}

/// Finding 10: two identity ids that differ only in letter case meet on a directory,
/// which compares `uid=ADA` and `uid=ada` as one name. The second person's create finds
/// the first one's entry; it must not be linked to them. Before, ADA's create linked
/// ada's account: ADA's grants landed on ada, and ADA's leaver would disable ada.
#[tokio::test]
async fn a_second_person_never_gets_the_first_ones_account() {
    let slapd = Slapd::start().await;
    let scim = Scim::start(TOKEN).await;
    let corp: Vec<_> = crate::joiners::sources(&slapd, &scim)
        .into_iter()
        .filter(|(f, _)| *f == "corp.toml")
        .collect();
    let catalog = "[[entitlement]]\nid = \"ent-vpn\"\nsource = \"corp\"\nattribute = \"groups\"\nvalue = \"cn=vpn,ou=groups,dc=example,dc=com\"\n";
    let env = crate::flow::custom_env(&corp, catalog);
    std::fs::write(
        env.path().join("ldap-password"),
        format!("{}\n", crate::slapd::PASSWORD),
    )
    .unwrap();
    let ids = env.path().join("identities.csv");
    let mut text = std::fs::read_to_string(&ids).unwrap();
    text.push_str("ADA,Ada,King,ada.king@example.com\n");
    std::fs::write(&ids, text).unwrap();
    let _agent = env.start().await;
    let first = submit(&env, grant("ada", "ENTITLEMENT", "ent-vpn"));
    crate::flow::all_succeeded(&settled(&env, &first).await);
    let second = submit(&env, grant("ADA", "ENTITLEMENT", "ent-vpn"));
    let jobs = settled(&env, &second).await;
    assert_eq!(jobs[0].state.as_str(), "failed");
    let error = &jobs[0].errors.last().unwrap().message;
    assert!(
        error.contains("is ada's") && error.contains("not linked to ADA"),
        "{error}"
    );
    // ada's account is hers alone: ADA holds no account, and the group one member.
    let store = env.store();
    let owners = crate::harness::wait(store.account_owners("corp".into(), ADA.into())).unwrap();
    assert_eq!(owners, ["ada"]);
    let people: Vec<String> = slapd
        .values(VPN, "member")
        .await
        .into_iter()
        .filter(|m| m.starts_with("uid="))
        .collect();
    assert_eq!(people, [ADA]);
    let out = env.cli(&["access", "list", "--identity", "ADA", "--format", "json"]);
    let held: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        held.as_array()
            .unwrap()
            .iter()
            .all(|h| h["account"].is_null() && h["state"] != "active"),
        "{held}"
    );
}

/// Finding 2: a rehire soon after provd deleted the person's accounts gets new ones.
/// Before, provd still took the deleted accounts for theirs: no create was planned, the
/// member add met `noSuchObject` (SCIM: no such user) and the grant failed for good.
#[tokio::test]
async fn a_rehire_after_provds_own_delete_gets_new_accounts() {
    use crate::joiners::{do_tasks, import, open_tasks, quiet, scim_user};
    let slapd = Slapd::start().await;
    let scim = Scim::start(TOKEN).await;
    let eng = scim.group("engineers").await;
    let env = setup(&slapd, &scim);
    let _agent = env.start().await;
    let out = import(&env, "active", false);
    assert!(out.status.success(), "{out:?}");
    quiet(&env).await;
    open_tasks(&env, 2).await;
    do_tasks(&env).await;
    member(&slapd, GIT, ADA, true).await;
    let first = scim_user(&scim).await.expect("ada on saas")["id"].clone();

    // Purged: every grant revoked, the LDAP entry and the SCIM user deleted.
    let out = import(&env, "purged", false);
    assert!(out.status.success(), "{out:?}");
    quiet(&env).await;
    open_tasks(&env, 1).await;
    do_tasks(&env).await;
    eventually(15, "ada's entry deleted", || async {
        slapd
            .search("ou=people,dc=example,dc=com", "(uid=ada)")
            .await
            .is_empty()
            .then_some(())
    })
    .await;
    assert!(scim_user(&scim).await.is_none());

    // Rehired at once: new accounts, the birthright on them, nothing failed.
    let out = import(&env, "active", false);
    assert!(out.status.success(), "{out:?}");
    quiet(&env).await;
    member(&slapd, GIT, ADA, true).await;
    member(&slapd, VPN, ADA, true).await;
    let again = scim_user(&scim).await.expect("ada on saas again");
    assert_ne!(again["id"], first, "a new SCIM user");
    assert_eq!(
        scim.members(&eng).await,
        vec![again["id"].as_str().unwrap().to_string()]
    );
}

/// Finding 3: a mover on a manual source keyed by e-mail. Attribute sync changes the
/// address, the owner renames the account and the next export shows the new one: it is
/// the same account. Before, provd reported the old address missing and the new one
/// unexpected, and opened a CREATE_ACCOUNT for the old address.
#[tokio::test]
async fn a_mover_renamed_by_sync_keeps_one_account_on_a_manual_source() {
    use crate::joiners::{do_tasks, open_tasks};
    let env = Env::new();
    let path = env.path().join("sources/flat.toml");
    let text = std::fs::read_to_string(&path).unwrap().replace(
        "native_id = \"{email}\"\n",
        "native_id = \"{email}\"\nsync = [\"email\"]\n",
    ) + "[export]\nkey = \"employee_id\"\nentitlements = { column = \"roles\" }\n";
    std::fs::write(&path, text).unwrap();
    let agent = env.start().await;
    submit(&env, grant("ada", "ENTITLEMENT", "ent-view"));
    open_tasks(&env, 2).await;
    assert_eq!(do_tasks(&env).await, ["CREATE_ACCOUNT", "ADD_ENTITLEMENT"]);

    // She moves: a new address, synced to the source as a task its owner does.
    let moved = serde_json::json!({ "firstName": "Ada", "lastName": "Lovelace",
        "email": "ada.lovelace@example.com" });
    let r = agent
        .http
        .put(format!("{}/identities/v1/ada", agent.base))
        .bearer_auth(env.token())
        .body(moved.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    open_tasks(&env, 1).await;
    assert_eq!(do_tasks(&env).await, ["UPDATE_ACCOUNT"]);

    // The owner's export shows the account under its new address.
    let file = env.path().join("export.csv");
    std::fs::write(
        &file,
        "employee_id,name,roles\r\nada.lovelace@example.com,Ada,VIEW\r\nsvc@example.com,Service,\r\n",
    )
    .unwrap();
    let out = env.cli(&[
        "accounts",
        "import",
        "--source",
        "flat",
        file.to_str().unwrap(),
    ]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains(
            "drift: 0 missing, 0 unexpected, 0 unmanaged, 0 status; 0 repair request(s) made"
        ),
        "{said}"
    );
    let creates = crate::harness::wait(
        env.store()
            .tasks(provd::store::tasks::TaskFilter::default()),
    )
    .unwrap()
    .into_iter()
    .filter(|t| t.operation == "CREATE_ACCOUNT")
    .count();
    assert_eq!(creates, 1, "no second account for the mover");
}
