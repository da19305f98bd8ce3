//! A source's label sets as the evaluator reads them, built once and shared by every
//! reader that holds them at the same time.
//!
//! Each rule file's evaluation copies the series it reads into its own dataset, each
//! with a [`SharedLabels`] (one allocation of the label pairs, 144 bytes for a
//! partition's four labels). The files evaluate right after a Kafka cycle, two at once,
//! and the alert instances they keep hold the label sets of the previous evaluation.
//! At 4,000 groups that was up to three sets per partition alive at the peak, 17 MB of
//! the agent's 106 MB heap (heaptrack). A source now keeps the sets some reader still
//! holds, and a reader takes the one already built for the same labels (a reference
//! count, no allocation).
//!
//! The table holds nothing its readers have let go: every use first drops the sets only
//! the table holds, and so does [`crate::store::Store::release_label_sets`], which an
//! evaluation calls when its dataset is gone. At rest it keeps the sets of the kept
//! alert instances (16 bytes and a control byte each) and nothing else. A set is found
//! by the addresses of the source's strings it holds (the symbols of the series' key),
//! so a string freed and interned again, or an id reused for another string, is a miss
//! and a new set, never a wrong one.

use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, Mutex};

use hashbrown::HashTable;

use super::series::SeriesRef;
use crate::signal::SharedLabels;

/// Label sets of one source that some reader holds.
#[derive(Default)]
pub(super) struct LabelSets(Mutex<Sets>);

/// A clone shares nothing: the sets are a cache.
impl Clone for LabelSets {
    fn clone(&self) -> Self {
        LabelSets::default()
    }
}

impl std::fmt::Debug for LabelSets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let held = self.0.lock().map_or(0, |s| s.table.len());
        f.debug_struct("LabelSets").field("held", &held).finish()
    }
}

impl LabelSets {
    /// Runs `f` with the sets, after forgetting those no reader holds any more.
    pub(super) fn with<T>(&self, f: impl FnOnce(&mut Sets) -> T) -> T {
        let mut guard = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let sets = &mut *guard;
        sets.table.retain(|l| !l.is_unique());
        if sets.table.capacity() > 64 && sets.table.len() < sets.table.capacity() / 4 {
            let hasher = &sets.hasher;
            sets.table.shrink_to_fit(|l| hasher.hash_one_pairs(l));
        }
        f(sets)
    }

    #[cfg(test)]
    pub(super) fn held(&self) -> usize {
        self.0.lock().map_or(0, |s| s.table.len())
    }
}

/// The sets, by the addresses of their strings.
#[derive(Default)]
pub struct Sets {
    table: HashTable<SharedLabels>,
    hasher: Addresses,
}

#[derive(Default)]
struct Addresses(foldhash::fast::RandomState);

impl Addresses {
    /// `None` when a string is missing.
    fn hash<'s>(&self, strings: impl Iterator<Item = Option<&'s Arc<str>>>) -> Option<u64> {
        let mut h = self.0.build_hasher();
        for s in strings {
            h.write_usize(Arc::as_ptr(s?).cast::<u8>() as usize);
        }
        Some(h.finish())
    }

    fn hash_one_pairs(&self, labels: &SharedLabels) -> u64 {
        self.hash(labels.shared_pairs().iter().flat_map(|(n, v)| [Some(n), Some(v)])).unwrap_or_default()
    }
}

impl Sets {
    /// The label set of `series` ([`SeriesRef::label_set`]): the one a reader already
    /// holds if any, else a new one, kept while someone holds it.
    pub fn get(&mut self, series: &SeriesRef<'_>) -> SharedLabels {
        let Some(hash) = self.hasher.hash(series.key_strings()) else { return series.label_set() };
        let same = |l: &SharedLabels| {
            let pairs = l.shared_pairs();
            pairs.len() == series.label_count()
                && pairs.iter().flat_map(|(n, v)| [n, v]).zip(series.key_strings().flatten()).all(|(a, b)| Arc::ptr_eq(a, b))
        };
        if let Some(held) = self.table.find(hash, same) {
            return held.clone();
        }
        let built = series.label_set();
        // Only a set whose pairs are the key's strings in the key's order can be found
        // again by them (a key whose names are not in string order is sorted when built).
        if same(&built) {
            let hasher = &self.hasher;
            self.table.insert_unique(hash, built.clone(), |l| hasher.hash_one_pairs(l));
        }
        built
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use crate::signal::{Observation, SourceKind, SourceSample};
    use crate::store::Store;

    fn sample(groups: &[&str]) -> SourceSample {
        let obs = groups
            .iter()
            .flat_map(|g| {
                [("lag_offsets", 1.0), ("committed_offset", 2.0)].map(|(signal, v)| {
                    Observation::new(signal, &[("cluster", "c"), ("group", g), ("topic", "t"), ("partition", "0")], v)
                })
            })
            .flatten()
            .collect();
        SourceSample { observations: obs, ..Default::default() }
    }

    #[test]
    fn readers_holding_the_same_labels_share_one_set_and_let_go_of_it() {
        let store = Store::default();
        let now = SystemTime::now();
        store.register(SourceKind::Kafka, "c", Duration::from_secs(30));
        store.record_success(SourceKind::Kafka, "c", now, sample(&["a", "b"]));
        let read = || {
            store
                .with_entry(SourceKind::Kafka, "c", |e| e.with_label_sets(|sets| e.iter().map(|s| (s.signal().to_string(), sets.get(&s))).collect::<Vec<_>>()))
                .unwrap()
        };
        let first = read();
        let second = read();
        assert_eq!(first.len(), 4);
        for ((signal, a), (_, b)) in first.iter().zip(&second) {
            assert!(crate::signal::SharedLabels::ptr_eq(a, b), "{signal} {a:?}: one set for two readers");
            assert_eq!(a.get("group").map(str::len), Some(1));
        }
        // A partition's committed offset and lag have the same labels: one set.
        let by_group = |g: &str| first.iter().filter(|(_, l)| l.get("group") == Some(g)).map(|(_, l)| l.clone()).collect::<Vec<_>>();
        let a = by_group("a");
        assert!(a.len() == 2 && crate::signal::SharedLabels::ptr_eq(&a[0], &a[1]));
        let held = || store.with_entry(SourceKind::Kafka, "c", |e| e.label_sets.held()).unwrap();
        assert_eq!(held(), 2);
        drop((first, second, a));
        // Let go by every reader: forgotten when one says so, or at the next use.
        store.release_label_sets();
        assert_eq!(held(), 0);
    }

    #[test]
    fn a_label_string_freed_and_interned_again_is_a_new_set_with_the_new_strings() {
        let store = Store::new(crate::config::HistoryConfig { retention: Duration::from_secs(5), ..Default::default() });
        let t0 = SystemTime::now();
        store.register(SourceKind::Kafka, "c", Duration::from_secs(30));
        store.record_success(SourceKind::Kafka, "c", t0, sample(&["a"]));
        let read = || {
            store.with_entry(SourceKind::Kafka, "c", |e| e.with_label_sets(|sets| e.iter().map(|s| sets.get(&s)).collect::<Vec<_>>())).unwrap()
        };
        let old = read();
        // Group "a" goes (its strings' ids are freed) and "z" comes, possibly under the
        // same ids, while a reader still holds the old set.
        store.record_success(SourceKind::Kafka, "c", t0 + Duration::from_secs(10), sample(&["z"]));
        store.record_success(SourceKind::Kafka, "c", t0 + Duration::from_secs(20), sample(&["z"]));
        let new = read();
        assert!(!new.is_empty());
        for l in &new {
            assert_eq!(l.get("group"), Some("z"), "{l:?}");
        }
        assert!(old.iter().all(|l| l.get("group") == Some("a")));
        let names = store.with_entry(SourceKind::Kafka, "c", |e| e.iter().map(|s| s.label("group").unwrap_or("").to_string()).collect::<Vec<_>>());
        assert_eq!(names, Some(vec!["z".to_string(); 2]), "group a's series are gone");
    }
}
