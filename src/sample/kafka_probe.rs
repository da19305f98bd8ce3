//! The exact time-lag probe: reads the timestamp of the record at a lagging group's
//! committed offset (the next record it will process).
//!
//! # Guarantees
//! - **Bounded:** at most `budget` (partition, offset) reads per cycle, within its own
//!   `timeout`, which is always shorter than the sample timeout: a probe that cannot read
//!   (an open transaction, a slow leader) costs its own budget, never the sample.
//! - **Fair:** candidates are chosen least-recently-probed first per (group, partition),
//!   and within equal staleness round-robin across groups, so every lagging partition is
//!   probed within about `lagging partitions / budget` cycles and every group gets a share
//!   each cycle, whatever the size of its lag ([`probe_candidates`]).
//! - **Valid assignments:** one `assign` never names a partition twice (librdkafka rejects
//!   the whole list): several groups at different offsets of one partition are read in
//!   successive rounds ([`rounds`]).
//! - **Agrees with lag:** the probe consumer reads with `read_uncommitted`, like the high
//!   watermark that offset lag uses, so records of open transactions are seen.
//! - **Never silent:** every read that fails or does not finish in time is returned as a
//!   typed [`ProbeError`] that the sampler puts in the target's `partial_errors` and a
//!   per-cause counter.
//!
//! A record's timestamp never changes, so a value read for (partition, offset) stays
//! exact while a group's committed offset stays there: values are cached by that key
//! and dropped when no group is at that offset any more.
//!
//! # Assumptions
//! A record deleted by retention or compaction is replaced by the next one that exists,
//! whose timestamp is a lower bound of the missing one's age.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use rdkafka::config::ClientConfig;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer as _, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::Message as _;

pub use super::kafka_snapshot::ProbeValue;
use super::kafka_snapshot::GroupLag;
use super::kafka_admin::TopicPartition;

/// Why a probe read gave no value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    #[error("time-lag probe: cannot create its consumer: {0}")]
    Consumer(String),
    #[error("time-lag probe: assign of {partitions} partition(s) failed: {message}")]
    Assign { partitions: usize, message: String },
    #[error("time-lag probe: {partitions} partition(s) not read within {timeout:?}")]
    Timeout { partitions: usize, timeout: Duration },
    #[error("time-lag probe: {count} fetch error(s), first: {first}")]
    Fetch { count: usize, first: String },
}

impl ProbeError {
    /// A bounded label value for the error counter.
    pub fn cause(&self) -> &'static str {
        match self {
            ProbeError::Consumer(_) => "probe_consumer",
            ProbeError::Assign { .. } => "probe_assign",
            ProbeError::Timeout { .. } => "probe_timeout",
            ProbeError::Fetch { .. } => "probe_fetch",
        }
    }
}

/// One cycle's result: every known value for a live (partition, offset), and what failed.
#[derive(Debug, Default)]
pub struct ProbeOutcome {
    pub values: HashMap<(TopicPartition, i64), ProbeValue>,
    pub errors: Vec<ProbeError>,
}

type Key = (TopicPartition, i64);

/// When each (group, partition) was last probed, by cycle number: per group, its
/// partitions in (topic, partition) order, each topic's name held once. (One map by
/// owned `(group, topic, partition)` held about 30 MB at 20,000 groups × 10
/// partitions: README, "The agent at 20,000 groups".)
#[derive(Debug, Default, Clone)]
pub struct LastProbed {
    groups: hashbrown::HashMap<String, Vec<Probed>, foldhash::fast::RandomState>,
    topics: crate::signal::Interned,
}

/// (topic, partition, cycle last probed).
type Probed = (Arc<str>, i32, u64);

impl LastProbed {
    fn position(parts: &[Probed], topic: &str, partition: i32) -> Result<usize, usize> {
        parts.binary_search_by(|(t, p, _)| (&**t, *p).cmp(&(topic, partition)))
    }

    /// The cycle in which `group` last probed `(topic, partition)`.
    pub fn get(&self, group: &str, topic: &str, partition: i32) -> Option<u64> {
        let parts = self.groups.get(group)?;
        Self::position(parts, topic, partition).ok().map(|i| parts[i].2)
    }

    pub fn insert(&mut self, group: &str, topic: &str, partition: i32, cycle: u64) {
        let parts = match self.groups.get_mut(group) {
            Some(parts) => parts,
            None => self.groups.entry(group.to_string()).or_default(),
        };
        match Self::position(parts, topic, partition) {
            Ok(i) => parts[i].2 = cycle,
            Err(i) => parts.insert(i, (self.topics.get(topic), partition, cycle)),
        }
    }

    /// Keeps the (group, partition) pairs `keep` says are still there.
    fn retain(&mut self, keep: impl Fn(&str, &str, i32) -> bool) {
        self.groups.retain(|g, parts| {
            parts.retain(|(t, p, _)| keep(g, t, *p));
            !parts.is_empty()
        });
        self.topics.prune();
    }

    /// (group, partition) pairs held.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.groups.values().map(Vec::len).sum()
    }
}

/// A borrowed [`Key`]: `(topic, partition, committed offset)`, hashed and compared as
/// the owned one, so the per-partition look-ups of a cycle clone nothing.
#[derive(Hash, PartialEq, Eq, Clone, Copy)]
struct KeyRef<'a>(&'a str, i32, i64);

impl hashbrown::Equivalent<Key> for KeyRef<'_> {
    fn equivalent(&self, k: &Key) -> bool {
        self.0 == k.0.topic && self.1 == k.0.partition && self.2 == k.1
    }
}

/// A borrowed `(group, topic, partition)`.
#[derive(Hash, PartialEq, Eq, Clone, Copy)]
struct MemberRef<'a>(&'a str, &'a str, i32);

/// Which (partition, committed offset) pairs to probe this cycle. Pure.
///
/// Every lagging partition of every group (lag > 0, committed offset known, not yet in
/// `cached`) is a candidate. They are ordered by when that (group, partition) was last
/// probed (`last_probed`, a cycle number; never probed first), then by rank within
/// their group (round-robin across groups), then by lag, largest first. Pairs shared by
/// several groups are read once. At most `budget` are returned.
pub fn probe_candidates(
    groups: &[GroupLag],
    cached: &dyn Fn(&str, i32, i64) -> bool,
    last_probed: &LastProbed,
    budget: usize,
) -> Vec<Key> {
    // (last probed, rank in group, −lag, key)
    let mut all: Vec<(Option<u64>, usize, i64, Key)> = Vec::new();
    for g in groups.iter().filter(|g| g.error.is_none()) {
        let mut mine: Vec<(Option<u64>, i64, Key)> = g
            .partitions
            .iter()
            .filter_map(|p| {
                let (c, lag) = (p.committed_offset?, p.lag_offsets?);
                if lag <= 0 || cached(&p.topic, p.partition, c) {
                    return None;
                }
                let last = last_probed.get(&g.group, &p.topic, p.partition);
                Some((last, -lag, (TopicPartition { topic: p.topic.clone(), partition: p.partition }, c)))
            })
            .collect();
        mine.sort();
        all.extend(mine.into_iter().enumerate().map(|(rank, (last, neg_lag, key))| (last, rank, neg_lag, key)));
    }
    all.sort();
    let mut seen = HashSet::new();
    all.into_iter().map(|(_, _, _, k)| k).filter(|k| seen.insert(k.clone())).take(budget).collect()
}

/// Splits the pairs into rounds in which each partition appears at most once (one
/// `assign` per round), keeping their order. Pure.
pub fn rounds(wanted: &[Key]) -> Vec<Vec<Key>> {
    let mut out: Vec<(HashSet<TopicPartition>, Vec<Key>)> = Vec::new();
    for key in wanted {
        match out.iter_mut().find(|(tps, _)| !tps.contains(&key.0)) {
            Some((tps, keys)) => {
                tps.insert(key.0.clone());
                keys.push(key.clone());
            }
            None => out.push((HashSet::from([key.0.clone()]), vec![key.clone()])),
        }
    }
    out.into_iter().map(|(_, k)| k).collect()
}

#[derive(Debug, Default)]
struct State {
    cache: hashbrown::HashMap<Key, ProbeValue, foldhash::fast::RandomState>,
    /// Cycle in which each (group, partition) was last probed.
    last_probed: LastProbed,
    cycle: u64,
}

/// The probe consumer's context. End of partition is how the probe learns that only
/// transaction markers remain, not an error; other client errors reach the sample's
/// partial errors through `poll`, so librdkafka's own report of them is debug only (the
/// default context would log every one at ERROR, every cycle).
/// Its log lines go through the cluster's limiter and secret scrubbing (see
/// [`super::kafka_context`]): a consumer polled only while probing would otherwise
/// deliver an outage's worth of queued lines at once when the cluster recovers.
struct ProbeContext {
    events: std::sync::Arc<super::kafka_context::ClientEvents>,
}

impl ClientContext for ProbeContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        super::kafka_context::KafkaContext { events: self.events.clone() }.log(level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if !matches!(error, KafkaError::PartitionEOF(_)) {
            tracing::debug!(error = %error, reason, "time-lag probe client error");
        }
    }
}

impl ConsumerContext for ProbeContext {}

/// The probe of one cluster. Its consumer is created on first use and kept.
pub struct Probe {
    config: ClientConfig,
    budget: usize,
    timeout: Duration,
    consumer: Mutex<Option<BaseConsumer<ProbeContext>>>,
    state: Mutex<State>,
    events: std::sync::Arc<super::kafka_context::ClientEvents>,
}

impl std::fmt::Debug for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Probe").field("budget", &self.budget).field("timeout", &self.timeout).finish_non_exhaustive()
    }
}

impl Probe {
    pub fn new(mut config: ClientConfig, budget: usize, timeout: Duration, events: std::sync::Arc<super::kafka_context::ClientEvents>) -> Self {
        config
            .set("group.id", "streamguard-probe")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            // Lag is measured against the high watermark (read_uncommitted): read the
            // same records, or an open transaction hides the next record from the probe.
            .set("isolation.level", "read_uncommitted")
            // Tells "only transaction markers left" apart from "not read yet".
            .set("enable.partition.eof", "true")
            .set("fetch.wait.max.ms", "50")
            .set("max.partition.fetch.bytes", "65536");
        Probe { config, budget, timeout, consumer: Mutex::new(None), state: Mutex::new(State::default()), events }
    }

    /// Whether the probe's librdkafka consumer exists (it is made on the first read a
    /// lagging partition asks for; with budget 0 never).
    pub fn has_consumer(&self) -> bool {
        self.consumer.lock().unwrap_or_else(|p| p.into_inner()).is_some()
    }

    /// Probes what the budget and the probe's own timeout allow (never past
    /// `sample_deadline`); returns every known value of a live (partition, offset).
    pub fn run(&self, groups: &[GroupLag], sample_deadline: Instant, now: SystemTime) -> ProbeOutcome {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.cycle += 1;
        let cycle = state.cycle;
        // Keep only what some group still needs: bounded by the current partitions.
        let live: HashSet<KeyRef<'_>, foldhash::fast::RandomState> = groups
            .iter()
            .flat_map(|g| g.partitions.iter().filter_map(|p| p.committed_offset.map(|c| KeyRef(&p.topic, p.partition, c))))
            .collect();
        let members: HashSet<MemberRef<'_>, foldhash::fast::RandomState> =
            groups.iter().flat_map(|g| g.partitions.iter().map(|p| MemberRef(&g.group, &p.topic, p.partition))).collect();
        state.cache.retain(|k, _| live.contains(&KeyRef(&k.0.topic, k.0.partition, k.1)));
        state.last_probed.retain(|g, t, p| members.contains(&MemberRef(g, t, p)));

        let mut outcome = ProbeOutcome::default();
        if self.budget > 0 {
            let wanted = probe_candidates(groups, &|t, p, c| state.cache.contains_key(&KeyRef(t, p, c)), &state.last_probed, self.budget);
            if !wanted.is_empty() {
                let deadline = sample_deadline.min(Instant::now() + self.timeout);
                let (found, errors) = self.read(&wanted, deadline, now);
                outcome.errors = errors;
                let attempted: HashSet<KeyRef<'_>, foldhash::fast::RandomState> =
                    wanted.iter().map(|(tp, c)| KeyRef(&tp.topic, tp.partition, *c)).collect();
                for g in groups {
                    for p in &g.partitions {
                        let Some(c) = p.committed_offset else { continue };
                        if attempted.contains(&KeyRef(&p.topic, p.partition, c)) {
                            state.last_probed.insert(&g.group, &p.topic, p.partition, cycle);
                        }
                    }
                }
                for (k, v) in found {
                    match v {
                        ProbeValue::Record { .. } => {
                            state.cache.insert(k, v);
                        }
                        ProbeValue::NoRecord { .. } => {
                            outcome.values.insert(k, v);
                        }
                    }
                }
            }
        }
        outcome.values.extend(state.cache.iter().map(|(k, v)| (k.clone(), *v)));
        outcome
    }

    fn read(&self, wanted: &[Key], deadline: Instant, now: SystemTime) -> (HashMap<Key, ProbeValue>, Vec<ProbeError>) {
        let mut out = HashMap::new();
        let mut errors = Vec::new();
        let mut slot = self.consumer.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            match self.config.create_with_context::<_, BaseConsumer<ProbeContext>>(ProbeContext { events: self.events.clone() }) {
                Ok(c) => *slot = Some(c),
                Err(e) => return (out, vec![ProbeError::Consumer(e.to_string())]),
            }
        }
        let Some(consumer) = slot.as_ref() else { return (out, errors) };
        let rounds = rounds(wanted);
        let mut fetch_errors = (0usize, String::new());
        let mut not_read = 0usize;
        for (i, round) in rounds.iter().enumerate() {
            // Each remaining round gets an equal share of what is left.
            let left = deadline.saturating_duration_since(Instant::now());
            let share = left / u32::try_from(rounds.len() - i).unwrap_or(u32::MAX);
            match read_round(consumer, round, Instant::now() + share, now, &mut out, &mut fetch_errors) {
                Ok(pending) => not_read += pending,
                Err(e) => errors.push(e),
            }
        }
        if not_read > 0 {
            errors.push(ProbeError::Timeout { partitions: not_read, timeout: self.timeout });
        }
        if fetch_errors.0 > 0 {
            errors.push(ProbeError::Fetch { count: fetch_errors.0, first: fetch_errors.1 });
        }
        (out, errors)
    }
}

/// Reads one round (each partition at most once). Returns how many stayed unread.
fn read_round(
    consumer: &BaseConsumer<ProbeContext>,
    round: &[Key],
    deadline: Instant,
    now: SystemTime,
    out: &mut HashMap<Key, ProbeValue>,
    fetch_errors: &mut (usize, String),
) -> Result<usize, ProbeError> {
    let mut tpl = rdkafka::TopicPartitionList::new();
    let mut pending: HashMap<(String, i32), i64> = HashMap::new();
    let mut per_partition_number: HashMap<i32, usize> = HashMap::new();
    for (tp, offset) in round {
        if tpl.add_partition_offset(&tp.topic, tp.partition, rdkafka::Offset::Offset(*offset)).is_ok() {
            pending.insert((tp.topic.clone(), tp.partition), *offset);
            *per_partition_number.entry(tp.partition).or_default() += 1;
        }
    }
    consumer.assign(&tpl).map_err(|e| ProbeError::Assign { partitions: round.len(), message: e.to_string() })?;
    while !pending.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match consumer.poll(left.min(Duration::from_millis(100))) {
            Some(Ok(m)) => {
                let key = (m.topic().to_string(), m.partition());
                if let Some(&offset) = pending.get(&key) {
                    // The first record at or after the committed offset (a compacted
                    // or deleted record is replaced by the next one that exists).
                    if m.offset() >= offset {
                        pending.remove(&key);
                        if let Some(ms) = m.timestamp().to_millis() {
                            let tp = TopicPartition { topic: key.0, partition: key.1 };
                            out.insert((tp, offset), ProbeValue::Record { timestamp_ms: ms, read_at: now });
                        }
                    }
                }
            }
            // librdkafka names only the partition number of an end-of-partition event:
            // it is attributed only when one partition of the round has that number.
            Some(Err(KafkaError::PartitionEOF(p))) if per_partition_number.get(&p) == Some(&1) => {
                if let Some(key) = pending.keys().find(|(_, part)| *part == p).cloned() {
                    if let Some(offset) = pending.remove(&key) {
                        let tp = TopicPartition { topic: key.0, partition: key.1 };
                        out.insert((tp, offset), ProbeValue::NoRecord { read_at: now });
                    }
                }
            }
            Some(Err(KafkaError::PartitionEOF(_))) => {}
            Some(Err(e)) => {
                if fetch_errors.0 == 0 {
                    fetch_errors.1 = e.to_string();
                }
                fetch_errors.0 += 1;
            }
            None => {}
        }
    }
    if let Err(e) = consumer.unassign() {
        tracing::debug!(error = %e, "time-lag probe: unassign failed");
    }
    Ok(pending.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::kafka_snapshot::PartitionLag;
    use crate::sample::kafka_admin::{GroupState, GroupType};

    fn tp(t: &str, p: i32) -> TopicPartition {
        TopicPartition { topic: t.into(), partition: p }
    }

    fn group(name: &str, parts: &[(&str, i32, i64, i64)]) -> GroupLag {
        GroupLag {
            group: name.into(),
            state: GroupState::Empty,
            kind: GroupType::Classic,
            members: 0,
            partitions: parts
                .iter()
                .map(|(t, p, c, lag)| PartitionLag {
                    topic: t.to_string(),
                    partition: *p,
                    committed_offset: Some(*c),
                    log_start_offset: Some(0),
                    log_end_offset: Some(c + lag),
                    last_stable_offset: Some(c + lag),
                    lag_offsets: Some(*lag),
                    out_of_range: Some(false),
                    lost_records: Some(0),
                    client_id: None,
                })
                .collect(),
            lag_offsets: None,
            uncommitted_partitions: 0,
            error: None,
        }
    }

    #[test]
    fn two_groups_at_different_offsets_of_one_partition_are_read_in_separate_rounds() {
        let wanted = vec![(tp("t", 0), 2), (tp("t", 0), 5), (tp("t", 1), 3), (tp("t", 0), 7)];
        let r = rounds(&wanted);
        assert_eq!(r, vec![vec![(tp("t", 0), 2), (tp("t", 1), 3)], vec![(tp("t", 0), 5)], vec![(tp("t", 0), 7)]]);
        for round in &r {
            let distinct: HashSet<&TopicPartition> = round.iter().map(|k| &k.0).collect();
            assert_eq!(distinct.len(), round.len(), "an assignment never names a partition twice");
        }
    }

    #[test]
    fn caught_up_and_cached_partitions_are_never_candidates() {
        let g = group("g", &[("t", 0, 5, 0), ("t", 1, 5, 3), ("t", 2, 5, 9)]);
        let picked = probe_candidates(std::slice::from_ref(&g), &|_, _, _| false, &LastProbed::default(), 10);
        assert_eq!(picked, vec![(tp("t", 2), 5), (tp("t", 1), 5)], "largest lag first among equals");
        let picked = probe_candidates(&[g], &|_, p, _| p == 2, &LastProbed::default(), 10);
        assert_eq!(picked, vec![(tp("t", 1), 5)]);
    }

    #[test]
    fn a_shared_partition_and_offset_is_read_once() {
        let a = group("a", &[("t", 0, 5, 3)]);
        let b = group("b", &[("t", 0, 5, 3)]);
        assert_eq!(probe_candidates(&[a, b], &|_, _, _| false, &LastProbed::default(), 10), vec![(tp("t", 0), 5)]);
    }

    /// The borrowed keys find what the owned keys stored (same hash, same equality).
    #[test]
    fn borrowed_keys_find_owned_entries() {
        let mut cache: hashbrown::HashMap<Key, u8, foldhash::fast::RandomState> = Default::default();
        cache.insert((tp("orders", 3), 42), 1);
        assert_eq!(cache.get(&KeyRef("orders", 3, 42)), Some(&1));
        assert_eq!(cache.get(&KeyRef("orders", 3, 43)), None);
        assert_eq!(cache.get(&KeyRef("orders", 4, 42)), None);
    }

    /// Each (group, partition) keeps its own cycle whatever order they come in; a retain
    /// drops pairs, emptied groups and unused topic names.
    #[test]
    fn last_probed_is_kept_per_group_and_partition() {
        let mut last = LastProbed::default();
        for (g, t, p, c) in [("g", "orders", 3, 7), ("g", "audit", 0, 8), ("g", "orders", 1, 9), ("h", "orders", 3, 10), ("g", "orders", 3, 11)] {
            last.insert(g, t, p, c);
        }
        assert_eq!(last.get("g", "orders", 3), Some(11));
        assert_eq!(last.get("g", "orders", 1), Some(9));
        assert_eq!(last.get("g", "audit", 0), Some(8));
        assert_eq!(last.get("h", "orders", 3), Some(10));
        assert_eq!((last.get("g", "orders", 2), last.get("h", "audit", 0), last.get("x", "orders", 3)), (None, None, None));
        assert_eq!(last.len(), 4);
        assert_eq!(last.topics.len(), 2, "one name per topic");
        last.retain(|g, t, _| g == "g" && t == "orders");
        assert_eq!((last.len(), last.groups.len(), last.topics.len()), (2, 1, 1));
        assert_eq!(last.get("g", "orders", 3), Some(11));
    }

    #[test]
    fn every_group_gets_a_share_whatever_its_lag() {
        // A big group with huge lags and a small one with a tiny lag: budget 3.
        let big = group("big", &[("b", 0, 0, 1_000_000), ("b", 1, 0, 900_000), ("b", 2, 0, 800_000), ("b", 3, 0, 700_000)]);
        let small = group("small", &[("s", 0, 0, 1)]);
        let picked = probe_candidates(&[big, small], &|_, _, _| false, &LastProbed::default(), 3);
        assert!(picked.contains(&(tp("s", 0), 0)), "{picked:?}");
    }

    #[test]
    fn every_lagging_partition_is_probed_within_a_bounded_number_of_cycles() {
        // 10 groups × 8 lagging partitions whose committed offsets move every cycle (no
        // cache hit ever), budget 7: simulate the cycles and track the longest wait.
        let mut last_probed = LastProbed::default();
        let mut waits: HashMap<(String, TopicPartition), u64> = HashMap::new();
        let total = 80u64;
        let budget = 7usize;
        for cycle in 1..=100u64 {
            let groups: Vec<GroupLag> = (0..10)
                .map(|g| {
                    let parts: Vec<(&str, i32, i64, i64)> = (0..8).map(|p| ("t", g * 8 + p, cycle as i64 * 10, 1000 - (p as i64) * 100)).collect();
                    group(&format!("g{g}"), &parts)
                })
                .collect();
            let picked = probe_candidates(&groups, &|_, _, _| false, &last_probed, budget);
            assert_eq!(picked.len(), budget);
            for g in &groups {
                for p in &g.partitions {
                    let key = (g.group.clone(), tp(&p.topic, p.partition));
                    if picked.iter().any(|k| k.0 == key.1) {
                        let since = cycle - last_probed.get(&g.group, &p.topic, p.partition).unwrap_or(0);
                        let w = waits.entry(key.clone()).or_default();
                        *w = (*w).max(since);
                        last_probed.insert(&g.group, &p.topic, p.partition, cycle);
                    }
                }
            }
        }
        assert_eq!(waits.len() as u64, total, "every partition was probed");
        let bound = total.div_ceil(budget as u64) + 1;
        let worst = waits.values().max().copied().unwrap_or(0);
        assert!(worst <= bound, "longest wait {worst} cycles, bound {bound}");
    }

    #[test]
    fn a_failed_group_is_not_probed() {
        let mut g = group("g", &[("t", 0, 0, 5)]);
        g.error = Some("offsets failed".into());
        assert!(probe_candidates(&[g], &|_, _, _| false, &LastProbed::default(), 10).is_empty());
    }
}
