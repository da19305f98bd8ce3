//! The cost of a change, measured: after the replica count changes, the consumer group
//! rebalances (members leave or join, partitions move). This pure watcher is stepped with
//! the group's sampled state and member count and says when the group has settled —
//! `Stable` (or `Empty`) with as many members as the new count — and how long that took
//! from the change.
//!
//! The measurement is what the sampler saw: its resolution is the sample interval (a
//! rebalance shorter than one interval reads as at most one interval), and it includes
//! the time new replicas take to start and join. That is the cost a user pays.
//!
//! # Guarantees
//! - Only readings sampled after the change count: a sample from before the change never
//!   "settles" it.
//! - Unknown is not zero: a watch that ends without a settled sample (the deadline passed,
//!   the data went stale) is [`Settle::Unsettled`], never a duration.

use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::policy::GroupState;

/// One change being watched.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Watch {
    pub from: u32,
    pub to: u32,
    pub since: SystemTime,
}

/// The group as one sample saw it (fresh samples only; the caller drops stale ones).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GroupSample {
    pub state: GroupState,
    pub members: Option<u32>,
    /// When it was sampled.
    pub at: SystemTime,
}

/// What the watcher concluded.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "rebalance", rename_all = "snake_case")]
pub enum Settle {
    /// Still waiting.
    Pending,
    /// The group was seen stable with the new member count `seconds` after the change.
    Settled { from: u32, to: u32, seconds: f64 },
    /// Not seen settled within the deadline: the cost is unknown (and at least `waited`).
    Unsettled { from: u32, to: u32, waited_seconds: f64, last_state: Option<GroupState>, last_members: Option<u32> },
}

impl Settle {
    /// The one-line account for the audit.
    pub fn why(&self) -> String {
        match self {
            Settle::Pending => "rebalance in progress".to_string(),
            Settle::Settled { from, to, seconds } => format!("rebalance after {from} → {to} took {seconds:.1}s (group stable with {to} members)"),
            Settle::Unsettled { from, to, waited_seconds, last_members, .. } => {
                let m = last_members.map_or_else(|| "unknown".to_string(), |m| m.to_string());
                format!("rebalance after {from} → {to} not seen settled within {waited_seconds:.0}s (last seen {m} members): its cost is unknown")
            }
        }
    }
}

/// One step: `sample` is the latest fresh sample of the group, if any.
pub fn observe(w: &Watch, sample: Option<&GroupSample>, now: SystemTime, deadline: Duration) -> Settle {
    if let Some(s) = sample.filter(|s| s.at >= w.since) {
        if s.state == GroupState::Stable && s.members == Some(w.to) {
            let seconds = s.at.duration_since(w.since).unwrap_or_default().as_secs_f64();
            return Settle::Settled { from: w.from, to: w.to, seconds };
        }
    }
    let waited = now.duration_since(w.since).unwrap_or_default();
    if waited >= deadline {
        let last = sample.filter(|s| s.at >= w.since);
        return Settle::Unsettled { from: w.from, to: w.to, waited_seconds: waited.as_secs_f64(), last_state: last.map(|s| s.state), last_members: last.and_then(|s| s.members) };
    }
    Settle::Pending
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000 + s)
    }

    fn w() -> Watch {
        Watch { from: 1, to: 3, since: t(10) }
    }

    fn s(state: GroupState, members: u32, at: u64) -> GroupSample {
        GroupSample { state, members: Some(members), at: t(at) }
    }

    #[test]
    fn settles_when_a_later_sample_sees_the_group_stable_with_the_new_member_count() {
        let d = Duration::from_secs(60);
        assert_eq!(observe(&w(), Some(&s(GroupState::Rebalancing, 2, 12)), t(12), d), Settle::Pending);
        assert_eq!(observe(&w(), Some(&s(GroupState::Stable, 2, 13)), t(13), d), Settle::Pending, "stable, but not all new members joined yet");
        assert_eq!(observe(&w(), Some(&s(GroupState::Stable, 3, 17)), t(18), d), Settle::Settled { from: 1, to: 3, seconds: 7.0 });
    }

    #[test]
    fn a_sample_from_before_the_change_never_settles_it() {
        let mut before = s(GroupState::Stable, 3, 9);
        assert_eq!(observe(&w(), Some(&before), t(11), Duration::from_secs(60)), Settle::Pending);
        before.at = t(10);
        assert!(matches!(observe(&w(), Some(&before), t(11), Duration::from_secs(60)), Settle::Settled { seconds, .. } if seconds == 0.0));
    }

    #[test]
    fn no_settled_sample_within_the_deadline_is_unknown_not_zero() {
        let u = observe(&w(), None, t(70), Duration::from_secs(60));
        let Settle::Unsettled { waited_seconds, last_state, .. } = &u else { panic!("{u:?}") };
        assert_eq!((*waited_seconds, *last_state), (60.0, None));
        assert!(u.why().contains("cost is unknown"), "{}", u.why());
        let u = observe(&w(), Some(&s(GroupState::Rebalancing, 2, 65)), t(70), Duration::from_secs(60));
        assert!(matches!(u, Settle::Unsettled { last_members: Some(2), .. }), "{u:?}");
    }
}
