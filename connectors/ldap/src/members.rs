//! Group memberships written together: member changes of one group that wait at the same
//! time go out as one modify with many values.
//!
//! A directory writes each modify of a group as a whole new entry (its member list
//! included) in a transaction of its own, synced to disk: a thousand grants of one group
//! added one member at a time cost a thousand rewrites of an ever longer entry. Here the
//! first change of a group goes out alone; those arriving while it is in flight queue up,
//! and the first of them writes all that are queued (up to `[groups] members_per_modify`)
//! as soon as the write before is answered — batches form only when there is a queue, so a
//! lone grant waits for nothing.
//!
//! A batch is all-or-nothing on the server (RFC 4511 §4.6): one value already there (20, or
//! 68/53 on AD) refuses the whole modify. Then every change of the batch is written again
//! on its own, so each job gets its own exact answer ("already so", a missing group, the
//! last member of a groupOfNames): batching changes how many writes reach the server,
//! never what a job is told.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use ldap3::Mod;
use provd_connector_core::{ConnectorError, Outcome};
use tokio::sync::oneshot;

use crate::LdapConnector;
use crate::error::from_ldap;

/// One group's member attribute, and which way its values change.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub(crate) struct Key {
    pub group: String,
    pub attr: String,
    pub add: bool,
}

/// What a queued change hears back.
pub(crate) enum Turn {
    /// Written in someone's batch.
    Done,
    /// Not written (the batch was refused, or its writer went away): write it alone.
    Alone,
    /// Its turn to write: its own value and whatever is queued now.
    Write(Role),
}

struct Waiter {
    value: String,
    tx: oneshot::Sender<Turn>,
}

type Queues = Arc<Mutex<HashMap<Key, VecDeque<Waiter>>>>;

/// Member changes waiting per group. A group has an entry while one writer holds its
/// [`Role`]; changes arriving then queue behind it.
#[derive(Default)]
pub(crate) struct Batcher {
    queues: Queues,
}

/// The right to write a group's next batch. Whoever holds it last — the writer when done,
/// or a turn message nobody received — passes it on when it is dropped, so a writer that
/// is cancelled half-way never leaves a group's queue stuck.
pub(crate) struct Role {
    queues: Queues,
    key: Key,
    armed: bool,
}

/// A batch to write: the values, and whom to tell how it went.
pub(crate) struct Batch {
    pub values: Vec<String>,
    others: Vec<oneshot::Sender<Turn>>,
}

impl Batch {
    /// Tells every other change of the batch how it went.
    pub fn answer(self, written: bool) {
        for tx in self.others {
            let _ = tx.send(if written { Turn::Done } else { Turn::Alone });
        }
    }
}

impl Batcher {
    /// Joins the group's queue with `value`: the role at once when no one writes to the
    /// group now, otherwise whatever the writers decide.
    pub async fn join(&self, key: &Key, value: &str) -> Turn {
        let rx = {
            let Ok(mut queues) = self.queues.lock() else {
                return Turn::Alone;
            };
            match queues.get_mut(key) {
                Some(queue) => {
                    let (tx, rx) = oneshot::channel();
                    queue.push_back(Waiter {
                        value: value.to_string(),
                        tx,
                    });
                    rx
                }
                None => {
                    queues.insert(key.clone(), VecDeque::new());
                    return Turn::Write(Role {
                        queues: self.queues.clone(),
                        key: key.clone(),
                        armed: true,
                    });
                }
            }
        };
        // A writer that went away took this change's sender with it: write it alone.
        rx.await.unwrap_or(Turn::Alone)
    }
}

impl Role {
    /// `own` and up to `max - 1` of the changes queued behind it, taken off the queue.
    pub fn take(&self, own: &str, max: usize) -> Batch {
        let mut batch = Batch {
            values: vec![own.to_string()],
            others: Vec::new(),
        };
        if let Ok(mut queues) = self.queues.lock()
            && let Some(queue) = queues.get_mut(&self.key)
        {
            while batch.values.len() < max.max(1) {
                let Some(w) = queue.pop_front() else { break };
                if w.tx.is_closed() {
                    continue;
                }
                batch.values.push(w.value);
                batch.others.push(w.tx);
            }
        }
        batch
    }
}

impl Drop for Role {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        loop {
            let next = {
                let Ok(mut queues) = self.queues.lock() else {
                    return;
                };
                match queues.get_mut(&self.key).and_then(|q| q.pop_front()) {
                    Some(w) => w,
                    None => {
                        queues.remove(&self.key);
                        return;
                    }
                }
            };
            let role = Role {
                queues: self.queues.clone(),
                key: self.key.clone(),
                armed: true,
            };
            match next.tx.send(Turn::Write(role)) {
                Ok(()) => return,
                // That change is gone (its job was cancelled): the next one, then.
                Err(Turn::Write(mut role)) => role.armed = false,
                Err(_) => {}
            }
        }
    }
}

impl LdapConnector {
    /// Adds or removes `member` in `group`, in a batch with the group's other waiting
    /// changes when `[groups] members_per_modify` allows.
    pub(crate) async fn change_member(
        &self,
        group: &str,
        member: &str,
        add: bool,
    ) -> Result<Outcome, ConnectorError> {
        let attr = self.s.groups.member_attribute.clone();
        let max = self.s.groups.members_per_modify;
        if max > 1 {
            let key = Key {
                group: group.to_string(),
                attr: attr.clone(),
                add,
            };
            match self.members.join(&key, member).await {
                Turn::Done => return Ok(Outcome::Applied),
                Turn::Alone => {}
                Turn::Write(role) => {
                    let batch = role.take(member, max);
                    if batch.values.len() == 1 {
                        // Nobody to write with: the exact single change, while the role
                        // makes the next changes queue up for a batch.
                        let out = self.change_value(group, &attr, member, add).await;
                        drop(role);
                        return out;
                    }
                    let written = self.write_batch(&key, &batch.values).await;
                    batch.answer(written);
                    drop(role);
                    if written {
                        return Ok(Outcome::Applied);
                    }
                }
            }
        }
        self.change_value(group, &attr, member, add).await
    }

    /// One modify with every value of the batch; true when the server took all of them.
    async fn write_batch(&self, key: &Key, values: &[String]) -> bool {
        let set: HashSet<String> = values.iter().cloned().collect();
        let m = if key.add {
            Mod::Add(key.attr.clone(), set)
        } else {
            Mod::Delete(key.attr.clone(), set)
        };
        let r = self
            .run("change members", |mut ldap| {
                let (dn, m) = (key.group.clone(), m.clone());
                async move {
                    ldap.modify(&dn, vec![m])
                        .await
                        .map_err(|e| from_ldap("modify", e))
                }
            })
            .await;
        match r {
            Ok(r) if r.rc == 0 => true,
            Ok(r) => {
                tracing::debug!(group = %key.group, values = values.len(), rc = r.rc, "batched member change refused; written one by one");
                false
            }
            Err(e) => {
                // Logged here, before the connector's own scrubbing: redact first.
                let e = e.redacted(&self.redactor);
                tracing::debug!(group = %key.group, values = values.len(), error = %e, "batched member change failed; written one by one");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Key {
        Key {
            group: "cn=g".into(),
            attr: "member".into(),
            add: true,
        }
    }

    /// Waits (with a deadline) until `n` changes queue behind the group's writer.
    async fn queued(b: &Batcher, n: usize) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while b.queues.lock().unwrap().get(&key()).map_or(0, |q| q.len()) < n {
            assert!(
                std::time::Instant::now() < deadline,
                "{n} changes never queued"
            );
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn changes_queued_behind_a_writer_are_written_by_the_next_one_together() {
        let b = Arc::new(Batcher::default());
        let Turn::Write(first) = b.join(&key(), "a").await else {
            panic!("the first change writes at once")
        };
        assert_eq!(first.take("a", 10).values, ["a"]);
        let mut waiting = Vec::new();
        for (n, v) in ["b", "c", "d"].into_iter().enumerate() {
            let b2 = b.clone();
            waiting.push(tokio::spawn(async move { (v, b2.join(&key(), v).await) }));
            queued(&b, n + 1).await;
        }
        drop(first);
        let mut waiting = waiting.into_iter();
        let (who, Turn::Write(role)) = waiting.next().unwrap().await.unwrap() else {
            panic!("the first queued writes next")
        };
        let batch = role.take(who, 2);
        assert_eq!(batch.values, ["b", "c"], "at most `max` values");
        assert_eq!(b.queues.lock().unwrap()[&key()].len(), 1, "d waits");
        batch.answer(true);
        drop(role);
        assert!(
            b.queues.lock().unwrap()[&key()].is_empty(),
            "d holds the role now"
        );
        assert!(matches!(
            waiting.next().unwrap().await.unwrap(),
            ("c", Turn::Done)
        ));
        assert!(matches!(
            waiting.next().unwrap().await.unwrap(),
            ("d", Turn::Write(_))
        ));
        assert!(
            b.queues.lock().unwrap().is_empty(),
            "d's role was dropped in turn"
        );
    }

    #[tokio::test]
    async fn a_refused_batch_sends_everyone_to_write_alone_and_a_dropped_role_frees_the_group() {
        let b = Arc::new(Batcher::default());
        let Turn::Write(first) = b.join(&key(), "a").await else {
            panic!()
        };
        let b2 = b.clone();
        let other = tokio::spawn(async move { b2.join(&key(), "b").await });
        queued(&b, 1).await;
        let batch = first.take("a", 10);
        assert_eq!(batch.values, ["a", "b"]);
        batch.answer(false);
        assert!(matches!(other.await.unwrap(), Turn::Alone));
        drop(first);
        assert!(b.queues.lock().unwrap().is_empty(), "no writer left");
        // A cancelled waiter is skipped: the role goes to the next one alive.
        let Turn::Write(r) = b.join(&key(), "x").await else {
            panic!()
        };
        let b3 = b.clone();
        let gone = tokio::spawn(async move { b3.join(&key(), "y").await });
        queued(&b, 1).await;
        let b4 = b.clone();
        let alive = tokio::spawn(async move { b4.join(&key(), "z").await });
        queued(&b, 2).await;
        gone.abort();
        let _ = gone.await;
        drop(r);
        assert!(matches!(alive.await.unwrap(), Turn::Write(_)));
        assert!(
            b.queues.lock().unwrap().is_empty(),
            "z's role was dropped in turn"
        );
    }
}
