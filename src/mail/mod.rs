//! Mail to source owners (DESIGN §15): their open tasks, with the workbook attached, once a
//! day and when new ones arrive. One loop on the leading agent; it only reads the store and
//! writes its own marks, so a slow or refusing mail server never holds provisioning up.

pub mod compose;
pub mod plan;
pub mod smtp;

use std::collections::BTreeMap;
use std::time::Duration;

use crate::config::Config;
use crate::config::mail::{Mail, is_address};
use crate::store::mail::MailMark;
use crate::store::roles::Tasks;
use crate::store::tasks::TaskFilter;
use plan::{Backoff, Kind, Now, Outgoing};

/// How often the loop looks: the batch window, but at least every 30 s and at most every
/// second.
fn every(m: &Mail) -> Duration {
    m.batch
        .clamp(Duration::from_secs(1), Duration::from_secs(30))
}

#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("no [mail] section in provd.toml: owners cannot be mailed")]
    NotConfigured,
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Compose(#[from] compose::ComposeError),
    #[error(transparent)]
    Send(#[from] smtp::SendError),
}

/// The open tasks of the owners that can be mailed (one owner, or all).
async fn open_tasks(
    store: &dyn Tasks,
    owner: Option<String>,
) -> Result<Vec<crate::store::tasks::Task>, MailError> {
    let tasks = store
        .tasks(TaskFilter {
            owner,
            open_only: true,
            ..TaskFilter::default()
        })
        .await?;
    Ok(tasks.into_iter().filter(|t| is_address(&t.owner)).collect())
}

/// Composes and sends one message.
async fn deliver(
    config: &Config,
    mail: &Mail,
    transport: &smtp::Transport,
    out: &Outgoing,
    now: Now,
) -> Result<(), MailError> {
    let message = compose::message(
        out,
        &mail.from,
        &config.catalog,
        &config.agent.time_zone,
        now.ms,
        &config.agent.name,
    )?;
    smtp::send(transport, message).await?;
    Ok(())
}

/// One pass of the loop: sends what is due, each owner apart (one failing owner does not
/// hold the others back).
async fn pass(
    store: &dyn Tasks,
    config: &Config,
    mail: &Mail,
    transport: &smtp::Transport,
    backoff: &mut Backoff,
    now: Now,
) -> Result<(), MailError> {
    let open = open_tasks(store, None).await?;
    let marks = store.mail_marks().await?;
    let by_owner: BTreeMap<&str, &MailMark> = marks.iter().map(|m| (m.owner.as_str(), m)).collect();
    let batch_ms = mail.batch.as_millis() as i64;
    for out in plan::due(open, &marks, now, batch_ms, mail.digest_at) {
        if !backoff.ready(&out.owner, now.ms) {
            continue;
        }
        let mark = by_owner.get(out.owner.as_str()).copied();
        match deliver(config, mail, transport, &out, now).await {
            Ok(()) => {
                // Sent is sent: a mark that cannot be written shows as an error, and the
                // owner may get this message once more.
                store
                    .set_mail_mark(plan::sent(&out, mark, now), now.ms)
                    .await?;
                backoff.sent(&out.owner);
                tracing::info!(owner = %out.owner, kind = out.kind.as_str(), open_tasks = out.tasks.len(),
                    new_tasks = %crate::tasks::remind::ids(&out.new), "owner mailed");
            }
            Err(e) => {
                let (attempt, wait) = backoff.failed(&out.owner, now.ms, &mail.retry);
                tracing::warn!(owner = %out.owner, kind = out.kind.as_str(), attempt, retry_in_ms = wait.as_millis() as u64,
                    error = %e, "mailing the owner failed; will retry");
            }
        }
    }
    Ok(())
}

/// Mails owners until `stop`, while this agent leads (one agent mails, not each of them).
pub async fn run(
    store: std::sync::Arc<dyn Tasks>,
    live: std::sync::Arc<crate::config::Live>,
    clock: crate::clock::SharedClock,
    mut leading: crate::leading::Leading,
    stop: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(stop);
    let mut backoff = Backoff::default();
    loop {
        if !leading.now() {
            tokio::select! {
                _ = &mut stop => return,
                _ = leading.wait() => {}
            }
        }
        let config = live.get();
        let wait = match &config.mail {
            None => Duration::from_secs(60),
            Some(mail) => {
                let now = Now::at(clock.now(), &config.agent.time_zone);
                let result = match smtp::transport(mail) {
                    Ok(t) => pass(&*store, &config, mail, &t, &mut backoff, now).await,
                    Err(e) => Err(e.into()),
                };
                if let Err(e) = result {
                    tracing::error!(error = %e, "mailing owners failed");
                }
                every(mail)
            }
        };
        tokio::select! {
            _ = &mut stop => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// What `provd tasks send` did for one owner.
#[derive(Debug)]
pub struct SentNow {
    pub owner: String,
    pub tasks: usize,
    pub result: Result<(), MailError>,
}

/// `provd tasks send [--owner X]`: every open task to its owner now, as a digest, each
/// message tried up to `attempts` times with the `[retry]` backoff between tries.
pub async fn send_now(
    store: &dyn Tasks,
    config: &Config,
    owner: Option<String>,
    now: jiff::Timestamp,
    attempts: u32,
) -> Result<Vec<SentNow>, MailError> {
    let mail = config.mail.as_ref().ok_or(MailError::NotConfigured)?;
    let transport = smtp::transport(mail)?;
    let now = Now::at(now, &config.agent.time_zone);
    let marks = store.mail_marks().await?;
    let mut per_owner: BTreeMap<String, Vec<_>> = BTreeMap::new();
    for t in open_tasks(store, owner).await? {
        per_owner.entry(t.owner.clone()).or_default().push(t);
    }
    let mut done = Vec::new();
    for (owner, tasks) in per_owner {
        let mark = marks.iter().find(|m| m.owner == owner);
        let through = mark.map_or(0, |m| m.announced_through);
        let out = Outgoing {
            new: tasks
                .iter()
                .map(|t| t.id)
                .filter(|id| *id > through)
                .collect(),
            owner,
            kind: Kind::Digest,
            tasks,
        };
        let mut result = Ok(());
        for attempt in 1..=attempts.max(1) {
            result = deliver(config, mail, &transport, &out, now).await;
            if result.is_ok() || attempt >= attempts {
                break;
            }
            tokio::time::sleep(mail.retry.ceiling(attempt)).await;
        }
        // Sent by hand, not the daily digest: today's digest still goes.
        if result.is_ok() {
            let mut m = plan::sent(&out, mark, now);
            m.digest_on = mark.and_then(|m| m.digest_on.clone());
            store.set_mail_mark(m, now.ms).await?;
        }
        done.push(SentNow {
            owner: out.owner.clone(),
            tasks: out.tasks.len(),
            result,
        });
    }
    Ok(done)
}
