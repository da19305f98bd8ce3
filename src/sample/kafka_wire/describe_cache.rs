//! The group-description cache of the direct path: which groups to describe this sample,
//! and which descriptions from an earlier one still stand. Pure: listings, descriptions
//! and `now` come in, decisions come out.
//!
//! Neither protocol offers a cheap generation to compare: `ListGroups` gives a group's
//! state and type only, `DescribeGroups` has no generation at all, and the KIP-848 group
//! epoch comes only with the `ConsumerGroupDescribe` it would save. So a description is
//! reused only while all of these hold, and the group is described again otherwise:
//! - the group is `Stable` now and was `Stable` when described, with the same type (a
//!   member joining or leaving moves a group out of `Stable` until the rebalance is
//!   over, and every state other than `Stable` is described every sample);
//! - the description had no error;
//! - it is younger than the group's refresh age: between `max_age / 2` and `max_age`,
//!   spread by a hash of the group name so refreshes do not come in bursts. This bounds
//!   how late a rebalance that starts and ends between two samples is seen.
//!
//! (An `Empty` group is never described: its listing is its description.)
//!
//! # Guarantees
//! - Bounded: entries exist only for groups of the latest listing ([`DescribeCache::retain`]).
//! - A group whose state or type changed, or that failed to describe, is never served
//!   from the cache.

use std::collections::{BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};

use crate::sample::kafka_admin::{GroupDescription, GroupListing, GroupState, GroupType};

struct Entry {
    at: Instant,
    description: GroupDescription,
}

/// Descriptions of settled groups, by group.
#[derive(Default)]
pub struct DescribeCache {
    entries: HashMap<String, Entry>,
}

/// This sample's plan: descriptions reused, and the groups to describe.
#[derive(Debug, Default)]
pub struct Plan {
    pub cached: Vec<GroupDescription>,
    pub describe: Vec<(String, GroupType)>,
}

/// The refresh age of one group: in `[max_age / 2, max_age)`, fixed per group name.
pub fn refresh_age(group: &str, max_age: Duration) -> Duration {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    group.hash(&mut h);
    let spread = (h.finish() % 1024) as u32;
    max_age / 2 + (max_age / 2) * spread / 1024
}

impl DescribeCache {
    /// Which non-Empty groups of `listings` to describe, and the descriptions that stand.
    pub fn plan(&self, listings: &[GroupListing], now: Instant, max_age: Duration) -> Plan {
        let mut plan = Plan::default();
        for l in listings.iter().filter(|l| l.state != GroupState::Empty) {
            let reuse = self.entries.get(&l.group_id).filter(|e| {
                l.state == GroupState::Stable
                    && e.description.state == GroupState::Stable
                    && e.description.kind == l.kind
                    && e.description.error.is_none()
                    && now.saturating_duration_since(e.at) < refresh_age(&l.group_id, max_age)
            });
            match reuse {
                Some(e) => plan.cached.push(e.description.clone()),
                None => plan.describe.push((l.group_id.clone(), l.kind)),
            }
        }
        plan
    }

    /// Keeps this sample's fresh descriptions of settled groups; forgets the others'.
    pub fn store(&mut self, fresh: &[GroupDescription], now: Instant) {
        for d in fresh {
            if d.state == GroupState::Stable && d.error.is_none() {
                self.entries.insert(d.group_id.clone(), Entry { at: now, description: d.clone() });
            } else {
                self.entries.remove(&d.group_id);
            }
        }
    }

    /// Forgets groups that are not listed any more (or are Empty now).
    pub fn retain(&mut self, listings: &[GroupListing]) {
        let live: BTreeSet<&str> = listings.iter().filter(|l| l.state != GroupState::Empty).map(|l| l.group_id.as_str()).collect();
        self.entries.retain(|g, _| live.contains(g.as_str()));
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::kafka_admin::{Member, TopicPartition};

    fn listing(g: &str, state: GroupState, kind: GroupType) -> GroupListing {
        GroupListing { group_id: g.into(), state, kind, simple: false }
    }

    fn described(g: &str, state: GroupState, kind: GroupType, members: usize) -> GroupDescription {
        let m = |i: usize| Member { client_id: format!("c{i}"), consumer_id: format!("m{i}"), host: "h".into(), assignment: vec![TopicPartition { topic: "t".into(), partition: i as i32 }] };
        GroupDescription { group_id: g.into(), state, kind, members: (0..members).map(m).collect(), error: None }
    }

    const AGE: Duration = Duration::from_secs(30);

    #[test]
    fn a_stable_group_is_described_once_then_served_from_the_cache_until_its_refresh_age() {
        let t0 = Instant::now();
        let mut c = DescribeCache::default();
        let l = [listing("g", GroupState::Stable, GroupType::Classic)];
        let p = c.plan(&l, t0, AGE);
        assert_eq!(p.describe, [("g".to_string(), GroupType::Classic)]);
        c.store(&[described("g", GroupState::Stable, GroupType::Classic, 2)], t0);
        let p = c.plan(&l, t0 + Duration::from_secs(10), AGE);
        assert!(p.describe.is_empty() && p.cached.len() == 1 && p.cached[0].members.len() == 2, "{p:?}");
        // Refreshed within [AGE/2, AGE).
        let age = refresh_age("g", AGE);
        assert!(age >= AGE / 2 && age < AGE, "{age:?}");
        assert_eq!(c.plan(&l, t0 + age, AGE).describe.len(), 1);
    }

    #[test]
    fn a_state_or_type_change_an_error_or_an_unsettled_description_is_described_again() {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(1);
        let mut c = DescribeCache::default();
        c.store(&[described("g", GroupState::Stable, GroupType::Classic, 1)], t0);
        for l in [
            listing("g", GroupState::PreparingRebalance, GroupType::Classic),
            listing("g", GroupState::CompletingRebalance, GroupType::Classic),
            listing("g", GroupState::Unknown, GroupType::Classic),
            listing("g", GroupState::Stable, GroupType::Consumer),
        ] {
            assert_eq!(c.plan(std::slice::from_ref(&l), t1, AGE).describe.len(), 1, "{l:?}");
        }
        // Described mid-rebalance: not kept, so the settled group is described again.
        c.store(&[described("g", GroupState::PreparingRebalance, GroupType::Classic, 2)], t1);
        assert!(c.is_empty());
        assert_eq!(c.plan(&[listing("g", GroupState::Stable, GroupType::Classic)], t1, AGE).describe.len(), 1);
        let mut failed = described("g", GroupState::Stable, GroupType::Classic, 1);
        failed.error = Some(crate::sample::kafka_admin::AdminError::Client("x".into()));
        c.store(&[failed], t1);
        assert!(c.is_empty(), "a failed description is never cached");
    }

    #[test]
    fn empty_groups_are_never_described_and_gone_groups_are_forgotten() {
        let t0 = Instant::now();
        let mut c = DescribeCache::default();
        assert!(c.plan(&[listing("e", GroupState::Empty, GroupType::Classic)], t0, AGE).describe.is_empty());
        c.store(&[described("a", GroupState::Stable, GroupType::Consumer, 1), described("b", GroupState::Stable, GroupType::Classic, 1)], t0);
        c.retain(&[listing("a", GroupState::Stable, GroupType::Consumer), listing("b", GroupState::Empty, GroupType::Classic)]);
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn refresh_ages_are_spread_over_groups() {
        let ages: BTreeSet<Duration> = (0..100).map(|i| refresh_age(&format!("group-{i}"), AGE)).collect();
        assert!(ages.len() > 50, "{}", ages.len());
    }
}
