//! Applying a task CSV the owner sent back: every valid row is applied, every bad row is
//! reported with its line and reason. Applying the same file twice changes nothing the
//! second time.
//!
//! A file is one owner's answer for one source. One without a `source` column says
//! nothing of which source it answers for, so it may only close tasks of a single source
//! (or of the one `--source` names): a file that mixes sources is refused whole, since a
//! mistyped task id would otherwise close another owner's task.

use std::collections::BTreeSet;

use super::csv_in::{self, BadRow, Row};
use crate::store::tasks::{Resolved, TaskAnswer};
use crate::store::{Store, StoreError};

#[derive(Debug, Default)]
pub struct Report {
    /// Tasks resolved by this import.
    pub applied: usize,
    /// Rows that said what the task already says.
    pub unchanged: usize,
    /// Rows left blank: the task stays open.
    pub left_open: usize,
    pub bad: Vec<BadRow>,
    /// Jobs whose state the import changed: (job id, new state).
    pub jobs: Vec<(i64, String)>,
    /// The encoding the file was read as (see `decode`).
    pub encoding: String,
    /// DONE answers for tasks provd had withdrawn: (task, the undo request stored).
    pub undone: Vec<(i64, String)>,
}

/// What undoing a withdrawn task needs: the catalog, and the intake the undo goes through.
pub struct Undo<'a> {
    pub config: &'a crate::config::Config,
    pub intake: &'a crate::intake::Intake,
}

pub async fn import(
    store: &Store,
    bytes: &[u8],
    now: i64,
    only_source: Option<&str>,
    undo: Option<&Undo<'_>>,
) -> Result<Report, StoreError> {
    // A workbook's sheets name their sources; a CSV is decoded first.
    let (rows, bad, has_source, encoding) = if super::xlsx_in::is_xlsx(bytes) {
        let (rows, bad) = super::xlsx_in::parse(bytes);
        (rows, bad, true, "xlsx workbook".to_string())
    } else {
        let decoded = super::decode::decode(bytes);
        let (rows, bad) = csv_in::parse(&decoded.text);
        let has_source = csv_in::header_has(&decoded.text, "source");
        (rows, bad, has_source, decoded.encoding)
    };
    let mut report = Report {
        bad,
        encoding,
        ..Default::default()
    };
    let mut checked: Vec<(Row, String)> = Vec::with_capacity(rows.len());
    let mut sources = BTreeSet::new();
    for row in rows {
        let Some(task) = store.task_brief(row.task).await? else {
            report.bad.push(BadRow::at(
                row.line,
                row.task_cell.clone(),
                format!("unknown task T{}", row.task),
            ));
            continue;
        };
        let claimed = row.source.as_deref().or(only_source);
        if let Some(source) = claimed
            && source != task.source
        {
            report.bad.push(BadRow::at(
                row.line,
                row.task_cell.clone(),
                format!(
                    "task T{} belongs to source `{}`, not `{source}`",
                    row.task, task.source
                ),
            ));
            continue;
        }
        sources.insert(task.source.clone());
        checked.push((row, task.owner));
    }
    if !has_source && only_source.is_none() && sources.len() > 1 {
        let names: Vec<&str> = sources.iter().map(String::as_str).collect();
        report.bad.push(BadRow::new(
            1,
            format!(
                "the file has no `source` column and its rows name tasks of {} sources ({}); nothing was applied: add the source column or give --source",
                names.len(),
                names.join(", ")
            ),
        ));
        report.bad.sort_by_key(|b| b.line);
        return Ok(report);
    }
    let mut answers = Vec::new();
    let mut lines = Vec::new();
    for (row, owner) in checked {
        let Some(resolution) = row.resolution else {
            report.left_open += 1;
            continue;
        };
        // Who answered: the row says so, else the task's owner (whose file it is).
        let by = if row.resolved_by.is_empty() {
            owner
        } else {
            row.resolved_by.clone()
        };
        lines.push((row.line, row.task, resolution));
        answers.push(TaskAnswer {
            task: row.task,
            resolution: resolution.as_str().to_string(),
            resolved_by: by,
            note: row.note,
        });
    }
    let results = store.resolve_tasks(answers, now).await?;
    for ((line, task, resolution), result) in lines.into_iter().zip(results) {
        match result {
            Ok(Resolved::Applied { job, job_state }) => {
                report.applied += 1;
                if job_state != crate::store::jobs::JobState::Manual {
                    report.jobs.push((job, job_state.to_string()));
                }
            }
            Ok(Resolved::AlreadySo) => report.unchanged += 1,
            Err(StoreError::Conflict(m))
                if resolution == csv_in::Resolution::Done && m.ends_with("already canceled") =>
            {
                match undo_withdrawn(store, undo, task).await? {
                    Ok(request) => report.undone.push((task, request)),
                    Err(why) => report.bad.push(BadRow::new(line, why)),
                }
            }
            Err(StoreError::Conflict(m) | StoreError::NotFound(m)) => {
                report.bad.push(BadRow::new(
                    line,
                    format!("{m}; the row says {}", resolution.as_str()),
                ));
            }
            Err(e) => return Err(e),
        }
    }
    report.bad.sort_by_key(|b| b.line);
    Ok(report)
}

/// A DONE answer for a task provd had withdrawn (its job canceled): the access exists but
/// is not wanted (DESIGN §15). The inverse is requested like any request (requester
/// `undo:T<id>`, so the trail records the late answer), and the owner gets its task; what
/// cannot be undone that way is said, never dropped.
async fn undo_withdrawn(
    store: &Store,
    undo: Option<&Undo<'_>>,
    task: i64,
) -> Result<Result<String, String>, StoreError> {
    use crate::model::{ItemType, RequestType, Requester, ValidItem, ValidRequest};
    use provd_connector_core::Operation;
    let Some(undo) = undo else {
        return Ok(Err(format!(
            "task T{task} was withdrawn before it was done"
        )));
    };
    let filter = crate::store::tasks::TaskFilter {
        id: Some(task),
        ..Default::default()
    };
    let Some(t) = store.tasks(filter).await?.into_iter().next() else {
        return Ok(Err(format!("no task T{task}")));
    };
    let comment = format!(
        "undo: T{task} ({}) was done after provd had withdrawn it",
        t.operation
    );
    let item = |ty| ValidItem {
        ty,
        id: String::new(),
        comment: Some(comment.clone()),
        start_at: None,
        remove_at: None,
        client_metadata: Default::default(),
    };
    let entitlement = undo
        .config
        .catalog
        .entitlement_for(&t.source, &t.attribute, &t.value)
        .map(|e| e.id.clone());
    let Some(identity) =
        crate::intake::Directory::load(undo.config, &**store, vec![t.identity_id.clone()])
            .await?
            .lookup(&t.identity_id)
    else {
        return Ok(Err(format!(
            "task T{task}: identity `{}` is unknown now",
            t.identity_id
        )));
    };
    let cannot = |op: &str| {
        Ok(Err(format!(
            "task T{task} ({op}) was done after provd had withdrawn it; provd cannot undo that by itself: undo it by hand"
        )))
    };
    let mut request = ValidRequest {
        request_type: RequestType::Grant,
        requested_for: vec![t.identity_id.clone()],
        items: Vec::new(),
        client_metadata: Default::default(),
        account_ops: Vec::new(),
        repairs: Vec::new(),
    };
    let on = |op| vec![(t.source.clone(), op)];
    // What the person's grants want on the task's source now: a late answer gave access
    // that may be wanted again meanwhile (a later grant), and then there is nothing to
    // undo — revoking the item would take the newer grant's access away.
    let grants = store
        .holdings(crate::store::audit::AccessQuery {
            identity: Some(t.identity_id.clone()),
            ..Default::default()
        })
        .await?;
    let wanted: Vec<crate::holdings::Held> = crate::holdings::derive(&grants)
        .into_iter()
        .filter(|h| h.source == t.source)
        .filter(|h| matches!(h.state, "pending" | "active" | "removal_scheduled"))
        .collect();
    let nothing = |what: String| {
        Ok(Err(format!(
            "task T{task} ({}) was done after provd had withdrawn it; {what}, wanted: nothing to undo",
            t.operation
        )))
    };
    match (t.operation.as_str(), entitlement) {
        ("ADD_ENTITLEMENT", Some(id)) => {
            if wanted.iter().any(|h| h.value == t.value) {
                return nothing(format!(
                    "`{}` is granted {} there now",
                    t.identity_id, t.value
                ));
            }
            request.request_type = RequestType::Revoke;
            request.items = vec![ValidItem {
                id,
                ..item(ItemType::Entitlement)
            }];
        }
        ("REMOVE_ENTITLEMENT", Some(id)) => {
            request.items = vec![ValidItem {
                id,
                ..item(ItemType::Entitlement)
            }];
        }
        ("ENABLE_ACCOUNT", _) => {
            request.request_type = RequestType::Revoke;
            request.account_ops = on(Operation::DisableAccount);
        }
        ("DISABLE_ACCOUNT", _) => request.account_ops = on(Operation::EnableAccount),
        // An account made for a withdrawn grant is deleted — unless it is the account
        // provd knows the person by there (a later grant made it under the same key, and
        // the person may have moved since), or its key is no longer the person's (a
        // mover: provd would name another account, so the owner removes it by hand), or
        // the person has an account there or a grant still wants a value there (a later
        // request queued without a create while this one's was pending: it is that one).
        ("CREATE_ACCOUNT", _) => {
            let known = store
                .native_id(t.identity_id.clone(), t.source.clone())
                .await?;
            if known.as_deref() == Some(t.account.as_str()) {
                return nothing(format!("`{}` has this account there now", t.identity_id));
            }
            let source = undo.config.sources.get(&t.source);
            if source.map(|s| crate::tasks::account_key(s, &identity)) != Some(t.account.clone()) {
                return cannot("CREATE_ACCOUNT");
            }
            let held = store.account_sources(vec![t.identity_id.clone()]).await?;
            if !wanted.is_empty()
                || held
                    .get(&t.identity_id)
                    .is_some_and(|s| s.contains(&t.source))
            {
                return nothing(format!("`{}` has an account there now", t.identity_id));
            }
            request.request_type = RequestType::Revoke;
            request.repairs = on(Operation::DeleteAccount);
        }
        (op, _) => return cannot(op),
    }
    let ids = std::collections::BTreeMap::from([(t.identity_id.clone(), identity)]);
    let from = Requester::other(&format!("undo:T{task}"));
    // Keyed: the same file imported again asks for the undo once.
    let key = format!("undo:T{task}");
    match undo
        .intake
        .submit_valid(request, ids, &from, Some(&key))
        .await
    {
        Ok(replay) => Ok(Ok(replay.accepted().request_id.clone())),
        Err(e) => Ok(Err(format!(
            "task T{task}: the undo could not be stored: {e}"
        ))),
    }
}
