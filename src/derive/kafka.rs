//! Signals derived from a Kafka source's history after each sample: time lag (probe and
//! interpolation), produce and consume rates, group status, rebalances, rewinds, and DLQ
//! rate and ratio.
//!
//! Everything here is computed from the store's bounded history of the raw signals
//! (`log_end_offset`, `committed_offset`, `lag_offsets`) plus the snapshot just taken, with
//! the pure functions of [`crate::window`]. The only state kept across samples is what a
//! counter needs (rebalances, rewinds, lost records), in [`DeriveState`].
//!
//! Unknown stays unknown: with too little history a derived value is simply absent.
//!
//! # Guarantees
//! - Memory follows the cluster: [`DeriveState`] keeps only the groups and partitions of
//!   the current snapshot, plus a group's counters for a grace period (the history
//!   retention) after it disappears, so ephemeral and deleted groups do not accumulate.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::config::HistoryConfig;
use crate::sample::kafka_snapshot::KafkaSnapshot;
use crate::sample::kafka_admin::{GroupState, TopicPartition};
use crate::sample::kafka_snapshot::ProbeValue;
use crate::signal::{Batch, Interned, KeyRef};
use crate::store::{Cursor, Found, View};
use crate::window::{self, Point, Status};

/// What counters need from one sample to the next.
#[derive(Debug, Default)]
pub struct DeriveState {
    groups: HashMap<String, GroupMemo, foldhash::fast::RandomState>,
    /// Topic names, once each: a partition's memo shares its topic's.
    topics: Interned,
    /// Where this derivation's per-partition look-ups found their series last time.
    reads: Cursor,
    /// The last derivation's batch size (rows, key ids): the next one reserves that and
    /// a little more at once instead of growing by doubling.
    last_size: (usize, usize),
}

/// One group's counters and what the next sample compares with.
#[derive(Debug, Clone)]
struct GroupMemo {
    /// (state, members) at the previous sample.
    previous: (GroupState, u32),
    rebalances: u64,
    rewinds: u64,
    lost_records: u64,
    last_seen: SystemTime,
    /// Its partitions' memos, by (topic, partition). Kept per group rather than in one
    /// map by owned (group, topic, partition): at 20,000 groups × 10 partitions that
    /// map's table and names were about 36 MB (README, "The agent at 20,000 groups").
    partitions: Vec<PartitionMemo>,
}

#[derive(Debug, Clone)]
struct PartitionMemo {
    topic: Arc<str>,
    partition: i32,
    /// Committed offset at the previous sample.
    committed: i64,
    /// Records below this offset that were deleted unread are already counted.
    lost_counted_to: i64,
    /// The last sample whose snapshot had this partition.
    seen: SystemTime,
}

impl GroupMemo {
    /// Where `(topic, partition)` is, or would go, in `partitions`.
    fn position(&self, topic: &str, partition: i32) -> Result<usize, usize> {
        self.partitions.binary_search_by(|m| (&*m.topic, m.partition).cmp(&(topic, partition)))
    }
}

/// How much [`DeriveState`] holds (shown in the cluster's target detail).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct StateSize {
    pub groups: usize,
    pub partitions: usize,
}

impl DeriveState {
    pub fn size(&self) -> StateSize {
        StateSize { groups: self.groups.len(), partitions: self.groups.values().map(|g| g.partitions.len()).sum() }
    }

    /// Forgets partitions the snapshot no longer has (except those of a group whose
    /// offsets failed this time) and groups unseen for longer than `grace`.
    /// ([`derive`] marks each partition of the snapshot `seen` at `at`.)
    fn prune(&mut self, snapshot: &KafkaSnapshot, at: SystemTime, grace: Duration) {
        let keep_all: std::collections::HashSet<&str> =
            snapshot.groups.iter().filter(|g| g.error.is_some()).map(|g| g.group.as_str()).collect();
        for (g, m) in &mut self.groups {
            if !keep_all.contains(g.as_str()) {
                m.partitions.retain(|p| p.seen == at);
            }
        }
        let cutoff = at.checked_sub(grace).unwrap_or(SystemTime::UNIX_EPOCH);
        self.groups.retain(|_, m| m.last_seen >= cutoff);
        self.topics.prune();
    }
}

/// Records newly found deleted unread: `start − max(committed, counted_to)` when
/// positive. Returns (new records, new counted_to). Pure.
pub fn newly_lost(committed: i64, start: i64, counted_to: i64) -> (u64, i64) {
    let from = committed.max(counted_to);
    if start > from {
        (u64::try_from(start - from).unwrap_or(0), start)
    } else {
        (0, counted_to)
    }
}

/// A rebalance is seen when the group leaves Stable or its member count changes. Pure.
pub fn is_rebalance(previous: Option<(GroupState, u32)>, now: (GroupState, u32)) -> bool {
    match previous {
        None => false,
        Some((state, members)) => (state == GroupState::Stable && now.0 != GroupState::Stable) || members != now.1,
    }
}

/// Sum of several series at the times all of them have a point (they come from the same
/// snapshots, so their timestamps line up), oldest first.
fn aligned_sum(view: &View<'_>, series: &[Found<'_>], since: SystemTime) -> Vec<Point> {
    if series.is_empty() {
        return Vec::new();
    }
    let mut sums: BTreeMap<SystemTime, (f64, usize)> = BTreeMap::new();
    for f in series {
        for (t, v) in view.points_of(f, since) {
            let e = sums.entry(t).or_insert((0.0, 0));
            e.0 += v;
            e.1 += 1;
        }
    }
    sums.into_iter().filter(|(_, (_, n))| *n == series.len()).map(|(t, (v, _))| (t, v)).collect()
}

fn since(at: SystemTime, window: Duration) -> SystemTime {
    at.checked_sub(window).unwrap_or(SystemTime::UNIX_EPOCH)
}

/// The raw signals [`derive`] reads with a window, and how far back: the whole
/// retention of log-end offsets (the time-lag interpolation table), the rate and status
/// windows of committed offsets and lag. The store keeps history for these
/// ([`crate::store::Store::keep_history`]).
pub fn history_windows(history: &HistoryConfig) -> BTreeMap<String, Vec<crate::store::HistoryNeed>> {
    use crate::store::HistoryNeed;
    let [end, committed, lag] = READS;
    BTreeMap::from([
        (end.to_string(), vec![HistoryNeed::all(history.retention)]),
        (committed.to_string(), vec![HistoryNeed::all(history.rate_window.max(history.status_window))]),
        (lag.to_string(), vec![HistoryNeed::all(history.status_window)]),
    ])
}

/// The raw signals [`derive`] reads from the store (see [`history_windows`]).
pub const READS: [&str; 3] = ["log_end_offset", "committed_offset", "lag_offsets"];

/// The raw signals whose pending values [`derive`] looks up in the sample (the view
/// indexes these): the log-end offsets. It gives the committed offsets and lags itself
/// ([`View::find`]; debug builds check them against the sample).
pub const LOOKS_UP: &[&str] = &["log_end_offset"];

/// Derives every signal of this sample. `view` reads the store's history with the raw
/// observations of `snapshot` at time `at` (the [`READS`] signals at least).
pub fn derive(
    view: &View<'_>,
    snapshot: &KafkaSnapshot,
    at: SystemTime,
    history: &HistoryConfig,
    state: &mut DeriveState,
) -> Batch {
    let c = snapshot.cluster.as_str();
    let (rows, words) = state.last_size;
    let mut out = Batch::with_capacity(rows + rows / 16, words + words / 16);
    let rate_since = since(at, history.rate_window);
    let status_since = since(at, history.status_window);

    // Produce rates per partition and topic (from log-end offsets).
    let mut produce: BTreeMap<&str, Option<f64>> = BTreeMap::new();
    for tp in snapshot.partitions.keys() {
        let p = tp.partition.to_string();
        let l = [("cluster", c), ("topic", tp.topic.as_str()), ("partition", p.as_str())];
        let r = window::rate(&view.points(KeyRef::new("log_end_offset", &l), rate_since));
        let topic = produce.entry(tp.topic.as_str()).or_insert(Some(0.0));
        match r {
            Some(r) => {
                out.push("produce_rate", &l, r.per_second);
                if let Some(sum) = topic {
                    *sum += r.per_second;
                }
            }
            // One unknown partition makes the topic's total unknown, not smaller.
            None => *topic = None,
        }
    }
    for (topic, rate) in &produce {
        if let Some(r) = rate {
            out.push("topic_produce_rate", &[("cluster", c), ("topic", topic)], *r);
        }
    }

    // Probe coverage of the lagging partitions.
    let coverage = snapshot.probe_coverage();
    out.push("probe_lagging_partitions", &[("cluster", c)], coverage.lagging as f64);
    out.push("probe_uncovered_partitions", &[("cluster", c)], coverage.uncovered as f64);

    // Per group: time lag, consume rate, status, rebalances, rewinds, lost records.
    // A topic partition's log-end history (the interpolation table) is read once, not
    // once per group reading it.
    let mut end_tables: HashMap<(&str, i32), Vec<Point>> = HashMap::new();
    for g in &snapshot.groups {
        let gname = g.group.as_str();
        let gl = [("cluster", c), ("group", gname)];
        let now = (g.state, g.members);
        if !state.groups.contains_key(gname) {
            let memo = GroupMemo { previous: now, rebalances: 0, rewinds: 0, lost_records: 0, last_seen: at, partitions: Vec::new() };
            state.groups.insert(g.group.clone(), memo);
        }
        let Some(memo) = state.groups.get_mut(gname) else { continue };
        if is_rebalance(Some(memo.previous), now) {
            memo.rebalances += 1;
        }
        memo.previous = now;
        memo.last_seen = at;
        out.push("group_rebalances", &gl, memo.rebalances as f64);
        if g.error.is_some() {
            continue;
        }

        let mut max_lag: BTreeMap<&str, Option<f64>> = BTreeMap::from([("probe", Some(0.0)), ("interpolation", Some(0.0))]);
        let mut statuses = Vec::new();
        let mut group_rate = Some(0.0);
        let mut topic_rates: BTreeMap<&str, Option<f64>> = BTreeMap::new();
        // Sized once for the group's partitions, not grown by doubling.
        memo.partitions.reserve_exact(g.partitions.len().saturating_sub(memo.partitions.len()));
        for p in &g.partitions {
            let found = memo.position(&p.topic, p.partition);
            if let Ok(i) = found {
                memo.partitions[i].seen = at;
            }
            let Some(committed) = p.committed_offset else { continue };
            let part = p.partition.to_string();
            let pl = [("cluster", c), ("group", gname), ("topic", p.topic.as_str()), ("partition", part.as_str())];

            let i = match found {
                Ok(i) => i,
                Err(i) => {
                    let topic = state.topics.get(&p.topic);
                    let m = PartitionMemo { topic, partition: p.partition, committed, lost_counted_to: committed, seen: at };
                    memo.partitions.insert(i, m);
                    i
                }
            };
            let pmemo = &mut memo.partitions[i];
            if committed < pmemo.committed {
                memo.rewinds += 1;
            }
            pmemo.committed = committed;
            if let Some(start) = p.log_start_offset {
                let (lost, counted_to) = newly_lost(committed, start, pmemo.lost_counted_to);
                pmemo.lost_counted_to = counted_to;
                memo.lost_records += lost;
            }

            // Time lag, both methods.
            let caught_up = p.lag_offsets == Some(0);
            let probe = if caught_up {
                Some(0.0)
            } else {
                let tp = TopicPartition { topic: p.topic.clone(), partition: p.partition };
                match snapshot.probe_value(&tp, committed) {
                    Some(ProbeValue::Record { timestamp_ms, read_at }) => {
                        out.push("probe_age_seconds", &pl, window::age(at, *read_at));
                        Some(window::age(at, SystemTime::UNIX_EPOCH + Duration::from_millis((*timestamp_ms).max(0) as u64)))
                    }
                    // Only transaction markers after the committed offset: nothing waits.
                    Some(ProbeValue::NoRecord { .. }) => Some(0.0),
                    None => None,
                }
            };
            let interpolation = if caught_up {
                Some(0.0)
            } else if p.lag_offsets.is_some() {
                let table = end_tables.entry((p.topic.as_str(), p.partition)).or_insert_with(|| {
                    let l = [("cluster", c), ("topic", p.topic.as_str()), ("partition", part.as_str())];
                    view.points(KeyRef::new("log_end_offset", &l), SystemTime::UNIX_EPOCH)
                });
                window::time_at_offset(table, committed as f64).map(|t| window::age(at, t))
            } else {
                None
            };
            for (method, value) in [("probe", probe), ("interpolation", interpolation)] {
                let slot = max_lag.get_mut(method).expect("both methods are present");
                match value {
                    Some(v) => {
                        out.push("lag_seconds", &[pl[0], pl[1], pl[2], pl[3], ("method", method)], v);
                        if let Some(m) = slot {
                            *m = m.max(v);
                        }
                    }
                    None => *slot = None,
                }
            }

            // Consume rate.
            // The sample holds these two as the snapshot has them (`KafkaSnapshot::batch`).
            let (committed_now, lag_now) = (Some(committed as f64), p.lag_offsets.map(|v| v as f64));
            let committed_series = view.find(KeyRef::new("committed_offset", &pl), committed_now, &mut state.reads);
            let lag_series = view.find(KeyRef::new("lag_offsets", &pl), lag_now, &mut state.reads);
            let rate = window::rate(&view.points_of(&committed_series, rate_since));
            let topic_rate = topic_rates.entry(p.topic.as_str()).or_insert(Some(0.0));
            match rate {
                Some(r) => {
                    if let Some(s) = group_rate.as_mut() {
                        *s += r.per_second;
                    }
                    if let Some(s) = topic_rate.as_mut() {
                        *s += r.per_second;
                    }
                }
                None => {
                    group_rate = None;
                    *topic_rate = None;
                }
            }

            // Status: a committed offset outside the log is judged on this sample alone.
            statuses.push(match (p.out_of_range, p.lost_records) {
                (Some(true), Some(lost)) if lost > 0 => Status::DataLoss,
                (Some(true), _) => Status::OutOfRange,
                _ => window::partition_status(
                    &view.points_covering_of(&committed_series, status_since),
                    &view.points_covering_of(&lag_series, status_since),
                    history.status_window,
                    g.members > 0,
                ),
            });
        }
        out.push("group_rewinds", &gl, memo.rewinds as f64);
        out.push("group_lost_records", &gl, memo.lost_records as f64);
        if g.partitions.iter().any(|p| p.committed_offset.is_some()) {
            for (method, max) in max_lag {
                if let Some(m) = max {
                    out.push("group_lag_seconds", &[gl[0], gl[1], ("method", method)], m);
                }
            }
            if let Some(r) = group_rate {
                out.push("consume_rate", &gl, r);
            }
            for (topic, r) in topic_rates {
                if let Some(r) = r {
                    out.push("group_topic_consume_rate", &[gl[0], gl[1], ("topic", topic)], r);
                }
            }
        }
        let status = window::group_status(statuses);
        for s in Status::ALL {
            out.push("group_status", &[gl[0], gl[1], ("status", s.as_str())], f64::from(u8::from(s == status)));
        }
    }

    // DLQ rate and ratio. Both are computed over the sample times the DLQ topic and the
    // source's committed offsets have in common, so the ratio compares the same interval
    // (a group first seen later than its DLQ would otherwise skew it).
    let dlq_series = |dlq: &str| -> Vec<Found<'_>> {
        snapshot
            .partitions
            .keys()
            .filter(|tp| tp.topic == dlq)
            .map(|tp| view.found(KeyRef::new("log_end_offset", &[("cluster", c), ("topic", tp.topic.as_str()), ("partition", &tp.partition.to_string())])))
            .collect()
    };
    // The rate once per DLQ topic, however many pipelines it serves.
    let dlq_topics: std::collections::BTreeSet<&str> = snapshot.dlq.iter().map(|d| d.dlq_topic.as_str()).collect();
    for dlq in dlq_topics {
        if let Some(r) = window::rate(&aligned_sum(view, &dlq_series(dlq), rate_since)) {
            out.push("dlq_rate", &[("cluster", c), ("dlq_topic", dlq)], r.per_second);
        }
    }
    // The ratio only where the DLQ is attributed to the group that writes it.
    for d in &snapshot.dlq {
        let Some(gname) = d.group.as_deref() else { continue };
        let l = [("cluster", c), ("dlq_topic", d.dlq_topic.as_str()), ("topic", d.source_topic.as_str()), ("group", gname)];
        let dlq = dlq_series(&d.dlq_topic);
        let Some(group) = snapshot.groups.iter().find(|g| g.group == gname && g.error.is_none()) else { continue };
        // Committed offsets are not looked up in the sample (see `LOOKS_UP`): given.
        let mut once = Cursor::default();
        let committed: Vec<Found<'_>> = group
            .partitions
            .iter()
            .filter(|p| p.topic == d.source_topic && p.committed_offset.is_some())
            .map(|p| {
                let part = p.partition.to_string();
                let l = [("cluster", c), ("group", gname), ("topic", p.topic.as_str()), ("partition", part.as_str())];
                view.find(KeyRef::new("committed_offset", &l), p.committed_offset.map(|v| v as f64), &mut once)
            })
            .collect();
        let dlq_points = aligned_sum(view, &dlq, rate_since);
        let consumed_points = aligned_sum(view, &committed, rate_since);
        let common: std::collections::BTreeSet<SystemTime> = consumed_points.iter().map(|p| p.0).collect();
        let dlq_common: Vec<Point> = dlq_points.into_iter().filter(|p| common.contains(&p.0)).collect();
        let dlq_times: std::collections::BTreeSet<SystemTime> = dlq_common.iter().map(|p| p.0).collect();
        let consumed_common: Vec<Point> = consumed_points.into_iter().filter(|p| dlq_times.contains(&p.0)).collect();
        // Absent while the source is idle: a ratio over nothing is unknown, not 0 or ∞.
        if let (Some(failed), Some(consumed)) = (window::rate(&dlq_common), window::rate(&consumed_common)) {
            if consumed.per_second > 0.0 {
                out.push("dlq_ratio", &l, failed.per_second / consumed.per_second);
            }
        }
    }
    state.reads.finish();
    state.prune(snapshot, at, history.retention);
    state.last_size = out.size();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HistoryConfig;
    use crate::sample::kafka_snapshot::{build_snapshot, ResolvedDlq};
    use crate::sample::kafka_admin::{GroupListing, GroupType};
    use crate::signal::Observation;
    use crate::store::{SourceKind, Store};

    /// Each partition's counters stay with that partition when a group's partitions come
    /// in another order, gain one in the middle or lose one; a partition that comes back
    /// starts again from its new commit, and a topic's name is kept once.
    #[test]
    fn partition_memos_follow_their_partitions_through_order_and_membership_changes() {
        let (store, history) = kafka_store();
        let mut state = DeriveState::default();
        // (sample, [(topic, partition, committed)], log start of every partition)
        type Commits<'a> = &'a [(&'a str, i32, i64)];
        let samples: [(u64, Commits, i64); 4] = [
            (0, &[("a", 0, 50), ("a", 2, 50), ("b", 1, 50)], 0),
            // a/1 appears between the others; b/1 rewinds.
            (10, &[("b", 1, 40), ("a", 2, 60), ("a", 1, 5), ("a", 0, 60)], 0),
            // a/2 is gone; the log start passes a/1's commit: 20 − 5 deleted unread.
            (20, &[("a", 0, 70), ("a", 1, 5), ("b", 1, 45)], 20),
            // a/2 is back below its old commit: new, so not a rewind.
            (30, &[("a", 0, 80), ("a", 1, 25), ("a", 2, 30), ("b", 1, 50)], 20),
        ];
        let mut last = Vec::new();
        let mut sizes = Vec::new();
        for (s, parts, start) in samples {
            let listing = GroupListing { group_id: "g".into(), state: GroupState::Empty, kind: GroupType::Classic, simple: false };
            let commits = vec![("g".to_string(), Ok(parts.iter().map(|(t, p, c)| (tp(t, *p), Some(*c))).collect()))];
            let ends: HashMap<_, _> = parts.iter().map(|(t, p, _)| (tp(t, *p), Ok(100))).collect();
            let starts: HashMap<_, _> = parts.iter().map(|(t, p, _)| (tp(t, *p), Ok(start))).collect();
            let mut snap = build_snapshot("c", &[listing], &[], &commits, &starts, &ends);
            snap.taken_at = t(s);
            store.record_success_with(SourceKind::Kafka, "c", t(s), snap.to_sample(), LOOKS_UP, |view| {
                let derived = derive(view, &snap, t(s), &history, &mut state);
                last = derived.to_observations();
                derived
            });
            sizes.push(state.size().partitions);
            let held: std::collections::BTreeSet<&str> = state.groups.values().flat_map(|g| g.partitions.iter().map(|p| &*p.topic)).collect();
            assert_eq!(state.topics.len(), held.len(), "one name per topic held, none unused: {:?}", state.topics);
        }
        assert_eq!(sizes, [3, 4, 3, 4]);
        let g = [("group", "g")];
        assert_eq!(value(&last, "group_rewinds", &g), Some(1.0), "only b/1's 50 → 40");
        assert_eq!(value(&last, "group_lost_records", &g), Some(15.0), "a/1's 5..20, once");
        let memo = &state.groups["g"];
        let held: Vec<(&str, i32, i64)> = memo.partitions.iter().map(|m| (&*m.topic, m.partition, m.committed)).collect();
        assert_eq!(held, [("a", 0, 80), ("a", 1, 25), ("a", 2, 30), ("b", 1, 50)]);
        assert!(Arc::ptr_eq(&memo.partitions[0].topic, &memo.partitions[2].topic), "one name per topic");
    }

    fn t(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + s)
    }

    /// A store with the Kafka source `c` registered, and its history settings (1 h,
    /// 60 s windows).
    fn kafka_store() -> (Store, HistoryConfig) {
        let history = HistoryConfig {
            retention: Duration::from_secs(3600),
            max_points: 1000,
            rate_window: Duration::from_secs(60),
            status_window: Duration::from_secs(60),
        };
        let store = Store::new(history);
        store.register(SourceKind::Kafka, "c", Duration::from_secs(3600));
        (store, history)
    }

    /// Once the sample's shape is steady, a derivation reserves its batch once: it never
    /// grows by doubling (which holds the old and the new buffers at once).
    #[test]
    fn a_steady_derivation_reserves_its_batch_once() {
        let (store, history) = kafka_store();
        let mut state = DeriveState::default();
        let groups: Vec<String> = (0..5).map(|g| format!("g{g}")).collect();
        let mut sizes = Vec::new();
        for i in 0..6u64 {
            let listings: Vec<GroupListing> =
                groups.iter().map(|g| GroupListing { group_id: g.clone(), state: GroupState::Stable, kind: GroupType::Classic, simple: false }).collect();
            let commits: Vec<_> = groups.iter().map(|g| (g.clone(), Ok((0..4).map(|p| (tp("t", p), Some(10 * i as i64))).collect()))).collect();
            let ends: HashMap<_, _> = (0..4).map(|p| (tp("t", p), Ok(100 + 20 * i as i64))).collect();
            let mut snap = build_snapshot("c", &listings, &[], &commits, &HashMap::new(), &ends);
            snap.taken_at = t(10 * i);
            let reserved = state.last_size;
            store.record_success_with(SourceKind::Kafka, "c", t(10 * i), snap.to_sample(), LOOKS_UP, |view| {
                let derived = derive(view, &snap, t(10 * i), &history, &mut state);
                sizes.push((reserved, derived.size(), derived.capacity()));
                derived
            });
        }
        let (_, steady, _) = sizes[3];
        assert!(steady.0 > 40, "a real derivation: {sizes:?}");
        for (reserved, size, capacity) in &sizes[4..] {
            assert_eq!(size, &steady, "{sizes:?}");
            assert_eq!(*capacity, (reserved.0 + reserved.0 / 16, reserved.1 + reserved.1 / 16), "the batch grew: {sizes:?}");
        }
    }

    fn tp(topic: &str, p: i32) -> TopicPartition {
        TopicPartition { topic: topic.into(), partition: p }
    }

    /// Feeds a sequence of (time, log end, committed, members) samples of one group on one
    /// partition through the store and derive, as the agent does.
    fn run(samples: &[(u64, i64, i64, u32)], dlq_end: Option<&[i64]>) -> Vec<Observation> {
        let (store, history) = kafka_store();
        let mut state = DeriveState::default();
        let mut last = Vec::new();
        for (i, (s, end, committed, members)) in samples.iter().enumerate() {
            let listing = GroupListing {
                group_id: "g".into(),
                state: if *members > 0 { GroupState::Stable } else { GroupState::Empty },
                kind: GroupType::Classic,
                simple: false,
            };
            let commits = vec![("g".to_string(), Ok(vec![(tp("t", 0), Some(*committed))]))];
            let mut ends: HashMap<_, _> = [(tp("t", 0), Ok(*end))].into_iter().collect();
            if let Some(d) = dlq_end {
                ends.insert(tp("t.dlq", 0), Ok(d[i]));
            }
            let mut snap = build_snapshot("c", &[listing], &[], &commits, &HashMap::new(), &ends);
            if let Some(d) = dlq_end {
                snap.partitions.insert(
                    tp("t.dlq", 0),
                    crate::sample::kafka_snapshot::PartitionOffsets { log_start_offset: Some(0), log_end_offset: Some(d[i]), last_stable_offset: None },
                );
                snap.dlq = vec![ResolvedDlq { dlq_topic: "t.dlq".into(), source_topic: "t".into(), group: Some("g".into()), origin: "config".into() }];
            }
            snap.groups[0].members = *members;
            snap.taken_at = t(*s);
            store.record_success_with(SourceKind::Kafka, "c", t(*s), snap.to_sample(), LOOKS_UP, |view| {
                let derived = derive(view, &snap, t(*s), &history, &mut state);
                last = derived.to_observations();
                derived
            });
        }
        last
    }

    fn value(obs: &[Observation], signal: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let found: Vec<f64> = obs
            .iter()
            .filter(|o| o.key.signal == signal && labels.iter().all(|(k, v)| o.key.label(k) == Some(*v)))
            .map(|o| o.value)
            .collect();
        assert!(found.len() <= 1, "{signal} {labels:?}: {found:?}");
        found.first().copied()
    }

    #[test]
    fn interpolated_time_lag_follows_the_log_end_table() {
        // The producer writes 10 records/s; the group committed offset 100, which the log
        // end reached at t=10. At t=40 the lag is 30 s.
        let s: Vec<(u64, i64, i64, u32)> = (0..=4).map(|i| (i * 10, i as i64 * 100, 100, 1)).collect();
        let obs = run(&s, None);
        assert_eq!(value(&obs, "lag_seconds", &[("method", "interpolation")]), Some(30.0));
        assert_eq!(value(&obs, "group_lag_seconds", &[("method", "interpolation")]), Some(30.0));
        assert_eq!(value(&obs, "lag_seconds", &[("method", "probe")]), None, "no probe result: unknown, not 0");
    }

    #[test]
    fn time_lag_is_zero_when_caught_up_and_absent_with_one_point() {
        let obs = run(&[(0, 50, 50, 1)], None);
        assert_eq!(value(&obs, "lag_seconds", &[("method", "interpolation")]), Some(0.0));
        assert_eq!(value(&obs, "lag_seconds", &[("method", "probe")]), Some(0.0));
        let obs = run(&[(0, 50, 10, 1)], None);
        assert_eq!(value(&obs, "lag_seconds", &[("method", "interpolation")]), None);
    }

    #[test]
    fn rates_come_from_offset_deltas() {
        let s: Vec<(u64, i64, i64, u32)> = (0..=3).map(|i| (i * 10, i as i64 * 100, i as i64 * 40, 1)).collect();
        let obs = run(&s, None);
        assert_eq!(value(&obs, "produce_rate", &[("partition", "0")]), Some(10.0));
        assert_eq!(value(&obs, "topic_produce_rate", &[("topic", "t")]), Some(10.0));
        assert_eq!(value(&obs, "consume_rate", &[("group", "g")]), Some(4.0));
        assert_eq!(value(&obs, "group_topic_consume_rate", &[("topic", "t")]), Some(4.0));
    }

    #[test]
    fn a_rewind_is_counted_and_reported_never_a_negative_rate() {
        let obs = run(&[(0, 100, 80, 1), (10, 110, 90, 1), (20, 120, 10, 1), (30, 130, 20, 1)], None);
        assert_eq!(value(&obs, "group_rewinds", &[]), Some(1.0));
        assert_eq!(value(&obs, "consume_rate", &[]), Some(1.0));
        assert_eq!(value(&obs, "group_status", &[("status", "REWIND")]), Some(1.0));
    }

    #[test]
    fn status_is_stop_for_an_idle_group_with_lag_and_stall_with_members() {
        let s: Vec<(u64, i64, i64, u32)> = (0..=6).map(|i| (i * 10, 100 + i as i64, 50, 0)).collect();
        assert_eq!(value(&run(&s, None), "group_status", &[("status", "STOP")]), Some(1.0));
        let s: Vec<(u64, i64, i64, u32)> = (0..=6).map(|i| (i * 10, 100 + i as i64, 50, 2)).collect();
        assert_eq!(value(&run(&s, None), "group_status", &[("status", "STALL")]), Some(1.0));
        let short: Vec<(u64, i64, i64, u32)> = (0..=1).map(|i| (i * 10, 100, 50, 2)).collect();
        assert_eq!(value(&run(&short, None), "group_status", &[("status", "UNKNOWN")]), Some(1.0));
    }

    #[test]
    fn rebalances_count_member_changes_and_leaving_stable() {
        let obs = run(&[(0, 10, 10, 1), (10, 10, 10, 2), (20, 10, 10, 2), (30, 10, 10, 0)], None);
        assert_eq!(value(&obs, "group_rebalances", &[]), Some(2.0));
    }

    #[test]
    fn dlq_rate_and_ratio_follow_the_dlq_topic_and_the_consume_rate() {
        // Source consumed at 10/s, DLQ grows 1/s → ratio 0.1.
        let s: Vec<(u64, i64, i64, u32)> = (0..=3).map(|i| (i * 10, 1000, i as i64 * 100, 1)).collect();
        let obs = run(&s, Some(&[0, 10, 20, 30]));
        assert_eq!(value(&obs, "dlq_rate", &[("dlq_topic", "t.dlq")]), Some(1.0));
        assert_eq!(value(&obs, "dlq_ratio", &[("dlq_topic", "t.dlq"), ("group", "g")]), Some(0.1));
    }

    /// The ratio reads the newest sample's committed offsets too (they are given to the
    /// view, not looked up in the sample): a DLQ burst in the last interval shows.
    #[test]
    fn dlq_ratio_covers_the_newest_sample() {
        let s: Vec<(u64, i64, i64, u32)> = (0..=3).map(|i| (i * 10, 1000, i as i64 * 100, 1)).collect();
        let obs = run(&s, Some(&[0, 10, 20, 80]));
        let dlq = value(&obs, "dlq_rate", &[("dlq_topic", "t.dlq")]).expect("a DLQ rate");
        let consumed = value(&obs, "consume_rate", &[("group", "g")]).expect("a consume rate");
        let ratio = value(&obs, "dlq_ratio", &[("dlq_topic", "t.dlq"), ("group", "g")]).expect("a ratio");
        assert!(dlq > 1.0, "the burst is in the DLQ rate: {dlq}");
        assert!((ratio - dlq / consumed).abs() < 1e-9, "ratio {ratio}, rates {dlq} / {consumed}");
    }

    #[test]
    fn dlq_ratio_is_absent_while_the_source_is_idle() {
        let s: Vec<(u64, i64, i64, u32)> = (0..=3).map(|i| (i * 10, 1000, 100, 1)).collect();
        let obs = run(&s, Some(&[0, 0, 5, 5]));
        assert!(value(&obs, "dlq_rate", &[]).is_some());
        assert_eq!(value(&obs, "dlq_ratio", &[]), None);
    }

    #[test]
    fn every_derived_observation_is_a_catalog_signal_with_its_declared_labels() {
        let s: Vec<(u64, i64, i64, u32)> = (0..=6).map(|i| (i * 10, i as i64 * 100, i as i64 * 40, 1)).collect();
        for o in run(&s, Some(&[0, 1, 2, 3, 4, 5, 6])) {
            let def = crate::catalog::find(&o.key.signal).unwrap_or_else(|| panic!("{} is not in the catalog", o.key.signal));
            let names: Vec<&str> = o.key.labels.keys().map(String::as_str).collect();
            let mut declared: Vec<&str> = def.labels.to_vec();
            declared.sort();
            assert_eq!(names, declared, "{}", o.key.signal);
        }
    }
}
