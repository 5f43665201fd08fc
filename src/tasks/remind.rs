//! Reminders for tasks owners have left open longer than their source's `remind_after`:
//! logged once a day per owner (count and oldest age), so operators can chase them.

use std::collections::BTreeMap;

use jiff::civil::Date;

use crate::store::tasks::Overdue;

/// Per owner: open overdue tasks across sources, and the oldest one's creation time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reminder {
    pub owner: String,
    pub count: i64,
    pub oldest_created: i64,
    pub sources: Vec<String>,
    pub tasks: Vec<i64>,
}

/// Remembers which owners were reminded on which day.
#[derive(Debug, Default)]
pub struct Reminders {
    last: BTreeMap<String, Date>,
}

impl Reminders {
    /// The reminders to log now: one per owner with overdue tasks, at most once per day.
    pub fn due(&mut self, overdue: &[Overdue], today: Date) -> Vec<Reminder> {
        let mut per_owner: BTreeMap<&str, Reminder> = BTreeMap::new();
        for o in overdue {
            let r = per_owner.entry(&o.owner).or_insert_with(|| Reminder {
                owner: o.owner.clone(),
                count: 0,
                oldest_created: o.oldest_created,
                sources: Vec::new(),
                tasks: Vec::new(),
            });
            r.count += o.count;
            r.tasks.extend(&o.tasks);
            r.oldest_created = r.oldest_created.min(o.oldest_created);
            r.sources.push(o.source.clone());
        }
        per_owner
            .into_values()
            .filter(|r| {
                if self.last.get(&r.owner) == Some(&today) {
                    return false;
                }
                self.last.insert(r.owner.clone(), today);
                true
            })
            .collect()
    }
}

/// Open tasks past `remind_after`, for every manual source that sets it.
pub async fn overdue(
    store: &crate::store::Store,
    config: &crate::config::Config,
    now_ms: i64,
) -> Result<Vec<Overdue>, crate::store::StoreError> {
    let mut out = Vec::new();
    for s in config.sources.values() {
        if let Some(after) = s.manual.as_ref().and_then(|m| m.remind_after) {
            out.extend(
                store
                    .overdue_tasks(s.id.clone(), now_ms - after.0.as_millis() as i64)
                    .await?,
            );
        }
    }
    Ok(out)
}

/// How often the agent looks for overdue tasks: a task becomes overdue at most this late
/// (it looked every 10 minutes, and the first warning came that late).
pub const EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// An age as people read it: `2d 3h`, `3h 20m`, `4m 10s`.
pub fn age(ms: i64) -> String {
    let s = (ms / 1000).max(0);
    let (d, h, m, sec) = (s / 86_400, s / 3_600 % 24, s / 60 % 60, s % 60);
    if d > 0 {
        format!("{d}d {h}h")
    } else if h > 0 {
        format!("{h}h {m}m")
    } else {
        format!("{m}m {sec}s")
    }
}

/// The ids for the log line: the first 20, then how many more.
pub fn ids(tasks: &[i64]) -> String {
    let mut out: Vec<String> = tasks.iter().take(20).map(|t| format!("T{t}")).collect();
    if tasks.len() > 20 {
        out.push(format!("(+{} more)", tasks.len() - 20));
    }
    out.join(",")
}

/// Counts, per source with an `[export]`, the DONE tasks no export has shown within its
/// `verify_within`; logs them once a day per source.
async fn unverified(
    store: &crate::store::Store,
    config: &crate::config::Config,
    now_ms: i64,
    today: Date,
    warned: &mut BTreeMap<String, Date>,
) -> Result<(), crate::store::StoreError> {
    for f in crate::evidence::unverified_filters(config, &Default::default(), now_ms) {
        let source = f.source.clone().unwrap_or_default();
        let late = store.tasks(f).await?;
        crate::metrics::unverified(&source, late.len());
        if !late.is_empty() && warned.get(&source) != Some(&today) {
            warned.insert(source.clone(), today);
            let late_ids: Vec<i64> = late.iter().map(|t| t.id).collect();
            tracing::warn!(source = %source, unverified = late.len(), tasks = %ids(&late_ids),
                "manual tasks unverified: answered DONE, but no account export has shown their effect");
        }
    }
    Ok(())
}

/// Logs overdue tasks once a day per owner until `stop`.
pub async fn run(
    store: crate::store::Store,
    live: std::sync::Arc<crate::config::Live>,
    clock: crate::clock::SharedClock,
    mut leading: crate::leading::Leading,
    stop: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(stop);
    let mut reminders = Reminders::default();
    let mut warned: BTreeMap<String, Date> = BTreeMap::new();
    loop {
        // One agent reminds (the leader), not each of them.
        if !leading.now() {
            tokio::select! {
                _ = &mut stop => return,
                _ = leading.wait() => {}
            }
        }
        let now = clock.now();
        let config = live.get();
        let found = overdue(&store, &config, now.as_millisecond()).await;
        match found {
            Ok(list) => {
                let today = now.to_zoned(config.agent.time_zone.clone()).date();
                for r in reminders.due(&list, today) {
                    let age_ms = now.as_millisecond() - r.oldest_created;
                    tracing::warn!(owner = %r.owner, open_tasks = r.count, tasks = %ids(&r.tasks), oldest_age = %age(age_ms),
                        oldest_age_s = age_ms / 1000, sources = %r.sources.join(","),
                        "manual tasks overdue: the owner has not resolved them");
                }
            }
            Err(e) => tracing::error!(error = %e, "looking for overdue tasks failed"),
        }
        let today = now.to_zoned(config.agent.time_zone.clone()).date();
        if let Err(e) = unverified(&store, &config, now.as_millisecond(), today, &mut warned).await
        {
            tracing::error!(error = %e, "looking for unverified tasks failed");
        }
        tokio::select! {
            _ = &mut stop => return,
            _ = tokio::time::sleep(EVERY) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o(source: &str, owner: &str, count: i64, oldest: i64) -> Overdue {
        Overdue {
            source: source.into(),
            owner: owner.into(),
            count,
            oldest_created: oldest,
            tasks: (oldest..oldest + count).collect(),
        }
    }

    #[test]
    fn once_a_day_per_owner_summed_across_sources() {
        let mut r = Reminders::default();
        let day1 = jiff::civil::date(2030, 1, 1);
        let all = [
            o("a", "ann", 2, 50),
            o("b", "ann", 1, 10),
            o("a", "bob", 4, 70),
        ];
        let got = r.due(&all, day1);
        assert_eq!(got.len(), 2);
        assert_eq!(
            got[0],
            Reminder {
                owner: "ann".into(),
                count: 3,
                oldest_created: 10,
                sources: vec!["a".into(), "b".into()],
                tasks: vec![50, 51, 10]
            }
        );
        assert!(r.due(&all, day1).is_empty(), "not twice the same day");
        assert_eq!(
            r.due(&all, jiff::civil::date(2030, 1, 2)).len(),
            2,
            "again the next day"
        );
    }

    #[test]
    fn ages_and_ids_read_as_people_read_them() {
        assert_eq!(age(250_000), "4m 10s");
        assert_eq!(age(3 * 3_600_000 + 20 * 60_000), "3h 20m");
        assert_eq!(age(2 * 86_400_000 + 3 * 3_600_000), "2d 3h");
        assert_eq!(ids(&[3, 9]), "T3,T9");
        let many: Vec<i64> = (1..=25).collect();
        assert!(ids(&many).ends_with(",T20,(+5 more)"));
    }
}
