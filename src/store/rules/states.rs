//! The store's state machines: jobs, assignments (what a person holds) and manual tasks.
//! Each state is an enum with one text mapping (the column's value, the contract's word),
//! and each machine has one table of the moves it allows, River-style. A rule that moves
//! a row asks its table first; the SQL guard of the backend (`WHERE state = …`) makes the
//! same check again at the moment of the write, against what another agent did meanwhile.
//!
//! Adding a state: a variant, its word in `as_str`, its rows in the table, and the
//! `CHECK` of each backend's schema.

use serde::{Deserialize, Serialize};

/// One state machine's states: the text mapping and the table of allowed moves.
pub trait Machine: Copy + Eq + std::fmt::Debug + 'static {
    /// Every state, in the contract's order.
    const ALL: &'static [Self];
    /// (from, to): every move the machine allows.
    const MOVES: &'static [(Self, Self)];
    /// What the rows of this machine are called in messages.
    const WHAT: &'static str;

    fn as_str(self) -> &'static str;

    fn parse(s: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|st| st.as_str() == s)
    }

    /// Whether `self → to` is one of the machine's moves.
    fn can_move(self, to: Self) -> bool {
        Self::MOVES.contains(&(self, to))
    }

    /// The states a row may be in for a move to `to`: what the write's guard names.
    fn sources_of(to: Self) -> Vec<Self> {
        Self::MOVES
            .iter()
            .filter(|(_, t)| *t == to)
            .map(|(f, _)| *f)
            .collect()
    }
}

/// Parses a stored state, or says which row holds a word this build does not know.
pub fn parse_stored<M: Machine>(s: &str, row: impl std::fmt::Display) -> super::Result<M> {
    M::parse(s).ok_or_else(|| {
        super::StoreError::Corrupt(format!("{} {row}: unknown state `{s}`", M::WHAT))
    })
}

/// DESIGN §3 contract: the job states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Queued,
    Running,
    Retrying,
    Manual,
    Succeeded,
    Failed,
    Canceled,
}

impl Machine for JobState {
    const ALL: &'static [Self] = &JobState::ALL;
    const WHAT: &'static str = "job";
    const MOVES: &'static [(Self, Self)] = {
        use JobState::*;
        &[
            // A claim.
            (Queued, Running),
            (Retrying, Running),
            // An attempt's end.
            (Running, Succeeded),
            (Running, Retrying),
            (Running, Failed),
            // Given back (shutdown, authentication) or taken back (lease expired).
            (Running, Queued),
            // A manual source: the job waits on its tasks, then ends with them.
            (Running, Manual),
            (Manual, Succeeded),
            (Manual, Failed),
            // The operator.
            (Queued, Canceled),
            (Retrying, Canceled),
            (Manual, Canceled),
            (Failed, Queued),
        ]
    };

    fn as_str(self) -> &'static str {
        JobState::as_str(self)
    }
}

impl JobState {
    pub const ALL: [JobState; 7] = [
        JobState::Queued,
        JobState::Running,
        JobState::Retrying,
        JobState::Manual,
        JobState::Succeeded,
        JobState::Failed,
        JobState::Canceled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Retrying => "retrying",
            JobState::Manual => "manual",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Canceled => "canceled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        <Self as Machine>::parse(s)
    }

    /// Ended: no move leads on but the operator's retry of a failed job.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Canceled
        )
    }
}

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An assignment's state: what provd says a person holds of an item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AssignmentState {
    /// Granted; its jobs have not all ended.
    Pending,
    /// Held: every job of the grant succeeded.
    Active,
    /// Being taken away: a revoke's jobs are under way.
    Revoking,
    Removed,
    /// A job of the grant failed: not held where it failed, held where its job
    /// succeeded (`holdings::grant_state`).
    Failed,
    /// The grant's jobs were canceled before they ran.
    Canceled,
}

impl Machine for AssignmentState {
    const ALL: &'static [Self] = {
        use AssignmentState::*;
        &[Pending, Active, Revoking, Removed, Failed, Canceled]
    };
    const WHAT: &'static str = "assignment";
    const MOVES: &'static [(Self, Self)] = {
        use AssignmentState::*;
        &[
            // A grant's jobs ended.
            (Pending, Active),
            (Pending, Failed),
            (Pending, Canceled),
            // A revoke (asked for, or a removeDate come due) and how its jobs ended.
            (Active, Revoking),
            (Revoking, Removed),
            (Revoking, Active),
            // A revoke of a grant still under way.
            (Pending, Revoking),
            // A revoke with nothing to do on any source, or superseded by a new grant.
            (Active, Removed),
            (Pending, Removed),
            // A failed grant retried by the operator.
            (Failed, Pending),
            // A failed grant's provisioned half revoked (asked for, or a removeDate come
            // due); a failed grant with nothing held revoked, or granted again.
            (Failed, Revoking),
            (Failed, Removed),
        ]
    };

    fn as_str(self) -> &'static str {
        match self {
            AssignmentState::Pending => "pending",
            AssignmentState::Active => "active",
            AssignmentState::Revoking => "revoking",
            AssignmentState::Removed => "removed",
            AssignmentState::Failed => "failed",
            AssignmentState::Canceled => "canceled",
        }
    }
}

impl AssignmentState {
    /// Held or about to be: what a new grant of the same item would duplicate.
    pub fn is_live(self) -> bool {
        matches!(self, AssignmentState::Pending | AssignmentState::Active)
    }
}

/// A manual task's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskStatus {
    Open,
    Done,
    Failed,
    Canceled,
}

impl Machine for TaskStatus {
    const ALL: &'static [Self] = {
        use TaskStatus::*;
        &[Open, Done, Failed, Canceled]
    };
    const WHAT: &'static str = "task";
    const MOVES: &'static [(Self, Self)] = {
        use TaskStatus::*;
        // The owner's answer, or the job canceled or failed by another task; a failed
        // job retried sends its failed and canceled tasks again.
        &[
            (Open, Done),
            (Open, Failed),
            (Open, Canceled),
            (Failed, Open),
            (Canceled, Open),
        ]
    };

    fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Open => "open",
            TaskStatus::Done => "done",
            TaskStatus::Failed => "failed",
            TaskStatus::Canceled => "canceled",
        }
    }
}

macro_rules! text_mapping {
    ($($t:ty),*) => {$(
        impl $t {
            /// The state's word (its [`Machine`] mapping), without importing the trait.
            pub fn as_str(self) -> &'static str {
                <$t as Machine>::as_str(self)
            }
        }
        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(Machine::as_str(*self))
            }
        }
        impl std::str::FromStr for $t {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                <$t as Machine>::parse(s).ok_or_else(|| format!("unknown {} state `{s}`", <$t>::WHAT))
            }
        }
    )*};
}
text_mapping!(AssignmentState, TaskStatus);

#[cfg(test)]
mod tests {
    use super::*;

    /// Every state's word maps back to it, and serde writes the same word.
    fn round_trips<M: Machine + Serialize>() {
        for s in M::ALL {
            assert_eq!(M::parse(s.as_str()), Some(*s));
            assert_eq!(
                serde_json::to_value(s).ok(),
                Some(serde_json::Value::from(s.as_str()))
            );
        }
        assert_eq!(M::parse("no such state"), None);
    }

    /// Every state but the first is reached by some move, and no move stays in place.
    fn connected<M: Machine>() {
        for s in &M::ALL[1..] {
            assert!(M::MOVES.iter().any(|(_, t)| t == s), "{s:?} is unreachable");
        }
        for (f, t) in M::MOVES {
            assert_ne!(f, t, "{f:?} moves to itself");
        }
    }

    #[test]
    fn every_state_has_one_word() {
        round_trips::<JobState>();
        round_trips::<AssignmentState>();
        round_trips::<TaskStatus>();
        connected::<JobState>();
        connected::<AssignmentState>();
        connected::<TaskStatus>();
    }

    #[test]
    fn an_ended_job_moves_only_when_the_operator_retries_a_failure() {
        use JobState::*;
        for from in JobState::ALL.into_iter().filter(|s| s.is_final()) {
            let exits: Vec<_> = JobState::ALL
                .into_iter()
                .filter(|to| from.can_move(*to))
                .collect();
            let expected: &[JobState] = if from == Failed { &[Queued] } else { &[] };
            assert_eq!(exits, expected, "{from}");
        }
        assert!(!Running.can_move(Canceled), "a running attempt ends first");
        assert!(Manual.can_move(Canceled));
        assert_eq!(
            JobState::sources_of(Canceled),
            [Queued, Retrying, Manual],
            "what a cancel's guard names"
        );
        assert_eq!(JobState::sources_of(Running), [Queued, Retrying]);
    }

    #[test]
    fn held_access_leaves_only_through_a_revoke() {
        use AssignmentState::*;
        assert!(!Active.can_move(Failed));
        assert!(!Active.can_move(Canceled));
        assert!(Active.can_move(Revoking));
        assert!(Revoking.can_move(Active), "a failed removal: still held");
        assert!(!Removed.can_move(Active), "removed is for good");
        assert!(!Canceled.can_move(Pending));
    }

    #[test]
    fn a_done_task_stays_done_and_only_a_retry_reopens_the_others() {
        use TaskStatus::*;
        for to in TaskStatus::ALL {
            assert!(!Done.can_move(*to), "done → {to}");
        }
        for from in [Failed, Canceled] {
            for to in TaskStatus::ALL {
                assert_eq!(from.can_move(*to), *to == Open, "{from} → {to}");
            }
        }
    }
}
