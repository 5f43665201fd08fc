//! The words of an owner's message (pure), and the message itself with the workbook.

use jiff::tz::TimeZone;
use lettre::Message;
use lettre::message::header::ContentType;
use lettre::message::{Attachment, MultiPart, SinglePart};

use super::plan::{Kind, Outgoing};
use crate::config::Catalog;
use crate::store::tasks::Task;

/// The workbook's media type.
const XLSX: &str = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet";

/// Subject and plain-text body of `out`.
pub fn text(
    out: &Outgoing,
    catalog: &Catalog,
    zone: &TimeZone,
    now_ms: i64,
    agent: &str,
) -> (String, String) {
    let overdue: Vec<&Task> = out
        .tasks
        .iter()
        .filter(|t| t.due_at.is_some_and(|d| d <= now_ms))
        .collect();
    let mut sources: Vec<&str> = out.tasks.iter().map(|t| t.source.as_str()).collect();
    sources.dedup();
    sources.sort_unstable();
    sources.dedup();
    let n = out.tasks.len();
    let subject = match out.kind {
        Kind::NewTasks => format!(
            "provd: {} new task{} for you ({})",
            out.new.len(),
            plural(out.new.len()),
            sources.join(", ")
        ),
        Kind::Digest if overdue.is_empty() => {
            format!("provd: your {n} open task{}", plural(n))
        }
        Kind::Digest => format!(
            "provd: your {n} open task{}, {} overdue",
            plural(n),
            overdue.len()
        ),
    };
    let mut body = String::from("Hello,\n\n");
    match out.kind {
        Kind::NewTasks => body.push_str(&format!(
            "provd has {} new task{} for you. ",
            out.new.len(),
            plural(out.new.len())
        )),
        Kind::Digest => body.push_str("This is your daily list of provisioning tasks. "),
    }
    body.push_str(&format!(
        "All {n} of your open task{} are in the attached workbook, one sheet per source.\n",
        plural(n)
    ));
    let new: Vec<&Task> = out
        .tasks
        .iter()
        .filter(|t| out.new.contains(&t.id))
        .collect();
    if !new.is_empty() {
        body.push_str("\nNew:\n");
        for t in &new {
            body.push_str(&line(t, catalog, zone, now_ms));
        }
    }
    if !overdue.is_empty() {
        body.push_str("\nOverdue:\n");
        for t in &overdue {
            body.push_str(&line(t, catalog, zone, now_ms));
        }
    }
    body.push_str(
        "\nTo answer: open the workbook, choose DONE or FAILED in the resolution column of each \
         task you have handled, add a note if it helps and your name in resolved_by, save it, \
         and send it back to the provd operator (reply to this message). Leave a task's \
         resolution empty while it is not done: it stays open.\n",
    );
    body.push_str(&format!("\n-- provd ({agent})\n"));
    (subject, body)
}

/// One task as a line of the body: id, what, for whom, on what, and when it is due.
fn line(t: &Task, catalog: &Catalog, zone: &TimeZone, now_ms: i64) -> String {
    let item = catalog
        .value_name(&t.source, &t.attribute, &t.value)
        .map(str::to_string)
        .unwrap_or_else(|| t.value.clone());
    let due = match t.due_at {
        None => String::new(),
        Some(d) if d <= now_ms => format!(
            "  due {} ({} overdue)",
            local(d, zone),
            crate::tasks::remind::age(now_ms - d)
        ),
        Some(d) => format!("  due {}", local(d, zone)),
    };
    let what = [
        t.operation.as_str(),
        t.identity_name.as_str(),
        item.as_str(),
    ]
    .into_iter()
    .filter(|s| !s.is_empty())
    .collect::<Vec<_>>()
    .join("  ");
    format!("  T{}  {}  {what}{due}\n", t.id, t.source)
}

fn local(ms: i64, zone: &TimeZone) -> String {
    crate::clock::from_ms(ms)
        .to_zoned(zone.clone())
        .strftime("%Y-%m-%d %H:%M")
        .to_string()
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

#[derive(Debug, thiserror::Error)]
pub enum ComposeError {
    #[error("the workbook could not be written: {0}")]
    Workbook(#[from] rust_xlsxwriter::XlsxError),
    #[error("owner `{0}` is not a mail address")]
    Owner(String),
    #[error("mail.from: {0}")]
    From(String),
    #[error("the message could not be built: {0}")]
    Build(#[from] lettre::error::Error),
}

/// The message for `out`: the text, and every open task of the owner as the workbook.
pub fn message(
    out: &Outgoing,
    from: &str,
    catalog: &Catalog,
    zone: &TimeZone,
    now_ms: i64,
    agent: &str,
) -> Result<Message, ComposeError> {
    let (subject, body) = text(out, catalog, zone, now_ms, agent);
    let workbook = crate::tasks::xlsx_out::write(&out.tasks, catalog, zone)?;
    let day = crate::clock::from_ms(now_ms)
        .to_zoned(zone.clone())
        .strftime("%Y-%m-%d")
        .to_string();
    let to = out
        .owner
        .parse()
        .map_err(|_| ComposeError::Owner(out.owner.clone()))?;
    let from = from
        .parse()
        .map_err(|e: lettre::address::AddressError| ComposeError::From(e.to_string()))?;
    let xlsx = ContentType::parse(XLSX).map_err(|e| ComposeError::From(e.to_string()))?;
    Ok(Message::builder()
        .from(from)
        .to(to)
        .subject(subject)
        .multipart(
            MultiPart::mixed()
                .singlepart(SinglePart::plain(body))
                .singlepart(
                    Attachment::new(format!("provd-tasks-{day}.xlsx")).body(workbook, xlsx),
                ),
        )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(id: i64, due_at: Option<i64>) -> Task {
        Task {
            owner: "ann@example.com".into(),
            identity_id: "zoe".into(),
            identity_name: "Zoë Ångström".into(),
            operation: "ADD_ENTITLEMENT".into(),
            account: "zoe@example.com".into(),
            attribute: "groups".into(),
            value: "PAYROLL_VIEW".into(),
            due_at,
            ..Task::sample(id)
        }
    }

    #[test]
    fn new_tasks_and_overdue_ones_are_named() {
        let out = Outgoing {
            owner: "ann@example.com".into(),
            kind: Kind::NewTasks,
            tasks: vec![task(3, Some(1_000)), task(7, Some(10 * 86_400_000))],
            new: vec![7],
        };
        let now = 86_400_000 + 1_000;
        let (subject, body) = text(&out, &Catalog::default(), &TimeZone::UTC, now, "a1");
        assert_eq!(subject, "provd: 1 new task for you (payroll)");
        assert!(body.contains("All 2 of your open tasks"), "{body}");
        let new = body.split("\nNew:\n").nth(1).unwrap();
        assert!(
            new.starts_with(
                "  T7  payroll  ADD_ENTITLEMENT  Zoë Ångström  PAYROLL_VIEW  due 1970-01-11 00:00\n"
            ),
            "{body}"
        );
        let overdue = body.split("\nOverdue:\n").nth(1).unwrap();
        assert!(overdue.starts_with("  T3  payroll  ADD_ENTITLEMENT  Zoë Ångström  PAYROLL_VIEW  due 1970-01-01 00:00 (1d 0h overdue)\n"), "{body}");
        assert!(body.ends_with("-- provd (a1)\n"));
    }

    #[test]
    fn a_digest_counts_what_is_open_and_overdue() {
        let out = Outgoing {
            owner: "ann@example.com".into(),
            kind: Kind::Digest,
            tasks: vec![task(3, Some(1_000)), task(7, None)],
            new: vec![],
        };
        let (subject, body) = text(&out, &Catalog::default(), &TimeZone::UTC, 5_000, "a1");
        assert_eq!(subject, "provd: your 2 open tasks, 1 overdue");
        assert!(!body.contains("New:"));
        let m = message(
            &out,
            "provd@example.com",
            &Catalog::default(),
            &TimeZone::UTC,
            5_000,
            "a1",
        )
        .unwrap();
        let raw = String::from_utf8_lossy(&m.formatted()).to_string();
        assert!(
            raw.contains("filename=\"provd-tasks-1970-01-01.xlsx\""),
            "{raw}"
        );
        assert!(raw.contains("To: ann@example.com"), "{raw}");
    }
}
