//! Which owner gets which message now (DESIGN §15): a daily digest of every open task once
//! the digest hour has passed, and between digests a "new tasks" message at most once per
//! `mail.batch`. Pure: the loop gives it the open tasks, what was sent before, and the time.

use std::collections::BTreeMap;

use jiff::civil::{Date, Time};

use crate::store::mail::MailMark;
use crate::store::tasks::Task;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Tasks arrived since the owner was last told.
    NewTasks,
    /// The day's digest (also what `provd tasks send` sends).
    Digest,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::NewTasks => "new_tasks",
            Kind::Digest => "digest",
        }
    }
}

/// One message to send.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub owner: String,
    pub kind: Kind,
    /// Every open task of the owner, oldest first: the workbook holds them all.
    pub tasks: Vec<Task>,
    /// The ids of the tasks the owner has not been told of.
    pub new: Vec<i64>,
}

/// The time as the planner needs it: the instant, and the day and hour where the agent is.
#[derive(Debug, Clone, Copy)]
pub struct Now {
    pub ms: i64,
    pub today: Date,
    pub time: Time,
}

impl Now {
    pub fn at(t: jiff::Timestamp, zone: &jiff::tz::TimeZone) -> Now {
        let z = t.to_zoned(zone.clone());
        Now {
            ms: t.as_millisecond(),
            today: z.date(),
            time: z.time(),
        }
    }
}

/// The messages due now, one per owner at most, owners in name order.
pub fn due(
    open: Vec<Task>,
    marks: &[MailMark],
    now: Now,
    batch_ms: i64,
    digest_at: Time,
) -> Vec<Outgoing> {
    let marks: BTreeMap<&str, &MailMark> = marks.iter().map(|m| (m.owner.as_str(), m)).collect();
    let mut per_owner: BTreeMap<String, Vec<Task>> = BTreeMap::new();
    for t in open {
        per_owner.entry(t.owner.clone()).or_default().push(t);
    }
    let today = now.today.to_string();
    per_owner
        .into_iter()
        .filter_map(|(owner, tasks)| {
            let mark = marks.get(owner.as_str());
            let through = mark.map_or(0, |m| m.announced_through);
            let new: Vec<i64> = tasks
                .iter()
                .map(|t| t.id)
                .filter(|id| *id > through)
                .collect();
            let digested = mark.and_then(|m| m.digest_on.as_deref()) == Some(today.as_str());
            let kind = if now.time >= digest_at && !digested {
                Kind::Digest
            } else if !new.is_empty()
                && mark
                    .and_then(|m| m.announced_at)
                    .is_none_or(|at| now.ms - at >= batch_ms)
            {
                Kind::NewTasks
            } else {
                return None;
            };
            Some(Outgoing {
                owner,
                kind,
                tasks,
                new,
            })
        })
        .collect()
}

/// What to remember once `out` was sent: the owner was told of every task in it.
pub fn sent(out: &Outgoing, before: Option<&MailMark>, now: Now) -> MailMark {
    let mut m = before.cloned().unwrap_or_else(|| MailMark {
        owner: out.owner.clone(),
        ..MailMark::default()
    });
    let highest = out.tasks.iter().map(|t| t.id).max().unwrap_or(0);
    m.announced_through = m.announced_through.max(highest);
    m.announced_at = Some(now.ms);
    if out.kind == Kind::Digest {
        m.digest_on = Some(now.today.to_string());
    }
    m
}

/// Failed sends per owner: when each may be tried again.
#[derive(Debug, Default)]
pub struct Backoff {
    failed: BTreeMap<String, (u32, i64)>,
}

impl Backoff {
    /// Whether `owner`'s message may be tried at `now_ms`.
    pub fn ready(&self, owner: &str, now_ms: i64) -> bool {
        self.failed.get(owner).is_none_or(|(_, at)| now_ms >= *at)
    }

    /// Records a failure; returns the attempt number and the wait before the next one
    /// (the policy's ceiling for that attempt: mail is not a herd, no jitter needed).
    pub fn failed(
        &mut self,
        owner: &str,
        now_ms: i64,
        policy: &crate::model::RetryPolicy,
    ) -> (u32, std::time::Duration) {
        let e = self.failed.entry(owner.to_string()).or_insert((0, 0));
        e.0 += 1;
        let wait = policy.ceiling(e.0);
        e.1 = now_ms + wait.as_millis() as i64;
        (e.0, wait)
    }

    pub fn sent(&mut self, owner: &str) {
        self.failed.remove(owner);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(id: i64, owner: &str) -> Task {
        Task {
            owner: owner.into(),
            ..Task::sample(id)
        }
    }

    fn now(ms: i64, hour: i8) -> Now {
        Now {
            ms,
            today: jiff::civil::date(2030, 1, 2),
            time: jiff::civil::time(hour, 0, 0, 0),
        }
    }

    const EIGHT: Time = jiff::civil::time(8, 0, 0, 0);

    #[test]
    fn new_tasks_go_at_once_then_wait_for_the_batch_window() {
        let at7 = now(1_000_000, 7);
        let out = due(
            vec![task(1, "ann"), task(2, "ann")],
            &[],
            at7,
            60_000,
            EIGHT,
        );
        assert_eq!(out.len(), 1);
        assert_eq!(
            (out[0].kind, out[0].new.clone()),
            (Kind::NewTasks, vec![1, 2])
        );
        let mark = sent(&out[0], None, at7);
        assert_eq!(
            (mark.announced_through, mark.digest_on.as_deref()),
            (2, None)
        );

        let soon = now(1_030_000, 7);
        let open = vec![task(1, "ann"), task(2, "ann"), task(3, "ann")];
        assert!(
            due(
                open.clone(),
                std::slice::from_ref(&mark),
                soon,
                60_000,
                EIGHT
            )
            .is_empty()
        );
        let later = now(1_060_000, 7);
        let out = due(
            open.clone(),
            std::slice::from_ref(&mark),
            later,
            60_000,
            EIGHT,
        );
        assert_eq!(out[0].new, vec![3]);
        assert_eq!(out[0].tasks.len(), 3, "the workbook holds every open task");
        let mark = sent(&out[0], Some(&mark), later);
        assert!(due(open, &[mark], now(2_000_000, 7), 60_000, EIGHT).is_empty());
    }

    #[test]
    fn one_digest_a_day_after_its_hour_and_only_with_open_tasks() {
        let at9 = now(5_000_000, 9);
        let mark = MailMark {
            owner: "ann".into(),
            announced_through: 5,
            announced_at: Some(4_999_000),
            digest_on: Some("2030-01-01".into()),
        };
        let out = due(
            vec![task(5, "ann")],
            std::slice::from_ref(&mark),
            at9,
            60_000,
            EIGHT,
        );
        assert_eq!((out[0].kind, out[0].new.len()), (Kind::Digest, 0));
        let after = sent(&out[0], Some(&mark), at9);
        assert_eq!(after.digest_on.as_deref(), Some("2030-01-02"));
        assert!(
            due(
                vec![task(5, "ann")],
                &[after],
                now(6_000_000, 10),
                60_000,
                EIGHT
            )
            .is_empty()
        );
        assert!(due(vec![], &[mark], at9, 60_000, EIGHT).is_empty());
    }

    #[test]
    fn owners_are_planned_apart() {
        let out = due(
            vec![task(1, "bob"), task(2, "ann")],
            &[],
            now(0, 7),
            60_000,
            EIGHT,
        );
        let owners: Vec<_> = out.iter().map(|o| o.owner.as_str()).collect();
        assert_eq!(owners, ["ann", "bob"]);
        assert_eq!(out[0].new, vec![2]);
    }

    #[test]
    fn failures_back_off_per_owner() {
        let policy = crate::model::RetryPolicy::default();
        let mut b = Backoff::default();
        assert!(b.ready("ann", 0));
        assert_eq!(
            b.failed("ann", 0, &policy),
            (1, std::time::Duration::from_secs(2))
        );
        assert!(!b.ready("ann", 1_999));
        assert!(b.ready("bob", 1_999));
        assert!(b.ready("ann", 2_000));
        assert_eq!(b.failed("ann", 2_000, &policy).0, 2);
        assert!(!b.ready("ann", 5_999));
        b.sent("ann");
        assert!(b.ready("ann", 0));
    }
}
