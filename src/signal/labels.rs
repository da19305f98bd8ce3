//! [`SharedLabels`]: a label set the evaluator passes around by reference count, whose
//! strings are the store's own.
//!
//! At 20,000 groups one evaluation of the example rules reads about 2.5 million series
//! and holds about 300,000 distinct label sets at once. As `Arc<BTreeMap<String,
//! String>>` each was a tree node and eight string copies, about 1 KB: 337 MB of the
//! agent's peak heap (heaptrack). Here a label set is one allocation of its `(name,
//! value)` pairs, each string an `Arc<str>` taken from the store's symbol table (a
//! reference count bumped, nothing copied): 144 bytes for a partition's four labels.

use std::cmp::Ordering;
use std::fmt;
use std::sync::Arc;

use super::Labels;

/// A label set shared by reference count: the evaluator's series, its results and the
/// alert instances they become hold one allocation per label set between them, not a
/// copy each (in a mass incident there are hundreds of thousands).
///
/// Sorted by name, names unique; ordered and compared as the [`Labels`] map with the
/// same pairs (`Ord` is the map's: pair by pair, by name then value), hashed by content.
///
/// Comparisons take a string's pointer first: two sets read from one source share their
/// strings, so equal names and values compare without reading their bytes.
#[derive(Clone, Default)]
pub struct SharedLabels(Arc<[(Arc<str>, Arc<str>)]>);

/// `a.cmp(b)`, equal without reading the bytes when both are one allocation.
fn cmp_str(a: &Arc<str>, b: &Arc<str>) -> Ordering {
    if Arc::ptr_eq(a, b) {
        Ordering::Equal
    } else {
        a.cmp(b)
    }
}

impl SharedLabels {
    /// From pairs in any order; of two pairs with one name the later wins (as collecting
    /// into a map).
    pub fn from_pairs(pairs: impl IntoIterator<Item = (Arc<str>, Arc<str>)>) -> Self {
        let mut v: Vec<(Arc<str>, Arc<str>)> = pairs.into_iter().collect();
        // Stable: equal names keep their order, and the last of each run is kept.
        v.sort_by(|a, b| a.0.cmp(&b.0));
        let mut out: Vec<(Arc<str>, Arc<str>)> = Vec::with_capacity(v.len());
        for p in v {
            match out.last_mut() {
                Some(last) if last.0 == p.0 => *last = p,
                _ => out.push(p),
            }
        }
        SharedLabels(out.into())
    }

    /// From pairs already sorted by name with unique names (checked in debug builds).
    pub fn from_sorted(pairs: Vec<(Arc<str>, Arc<str>)>) -> Self {
        debug_assert!(pairs.windows(2).all(|w| w[0].0 < w[1].0), "label pairs sorted by unique name");
        SharedLabels(pairs.into())
    }

    /// The value of label `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.binary_search_by(|(n, _)| (**n).cmp(name)).ok().map(|i| &*self.0[i].1)
    }

    /// The shared value of label `name` (a reference count, no copy).
    pub fn get_shared(&self, name: &str) -> Option<&(Arc<str>, Arc<str>)> {
        self.0.binary_search_by(|(n, _)| (**n).cmp(name)).ok().map(|i| &self.0[i])
    }

    /// `(name, value)` pairs, by name.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &str)> + '_ {
        self.0.iter().map(|(n, v)| (&**n, &**v))
    }

    /// The label names, sorted.
    pub fn keys(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        self.0.iter().map(|(n, _)| &**n)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// An owned copy as a map.
    pub fn to_labels(&self) -> Labels {
        self.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect()
    }

    /// Compares with a map as two maps compare.
    pub fn cmp_labels(&self, other: &Labels) -> Ordering {
        self.iter().cmp(other.iter().map(|(n, v)| (n.as_str(), v.as_str())))
    }

    /// The `(name, value)` pairs by name, as the shared strings themselves.
    pub fn shared_pairs(&self) -> &[(Arc<str>, Arc<str>)] {
        &self.0
    }

    /// Whether this is the only holder of the set.
    pub fn is_unique(&self) -> bool {
        Arc::strong_count(&self.0) == 1
    }

    /// Whether both are the same allocation (then equal, without comparing).
    pub fn ptr_eq(a: &Self, b: &Self) -> bool {
        Arc::ptr_eq(&a.0, &b.0)
    }
}

impl Ord for SharedLabels {
    fn cmp(&self, other: &Self) -> Ordering {
        if Arc::ptr_eq(&self.0, &other.0) {
            return Ordering::Equal;
        }
        for ((na, va), (nb, vb)) in self.0.iter().zip(other.0.iter()) {
            match cmp_str(na, nb).then_with(|| cmp_str(va, vb)) {
                Ordering::Equal => {}
                o => return o,
            }
        }
        self.len().cmp(&other.len())
    }
}

impl PartialOrd for SharedLabels {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for SharedLabels {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.cmp(other) == Ordering::Equal
    }
}

impl Eq for SharedLabels {}

/// As the pairs' strings hash: equal sets (by content) hash alike.
impl std::hash::Hash for SharedLabels {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.0.hash(h);
    }
}

impl From<Labels> for SharedLabels {
    fn from(labels: Labels) -> Self {
        SharedLabels(labels.into_iter().map(|(n, v)| (Arc::from(n), Arc::from(v))).collect())
    }
}

impl From<&Labels> for SharedLabels {
    fn from(labels: &Labels) -> Self {
        SharedLabels(labels.iter().map(|(n, v)| (Arc::from(n.as_str()), Arc::from(v.as_str()))).collect())
    }
}

impl PartialEq<Labels> for SharedLabels {
    fn eq(&self, other: &Labels) -> bool {
        self.len() == other.len() && self.cmp_labels(other) == Ordering::Equal
    }
}

impl fmt::Debug for SharedLabels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

/// Serialized as its map (`serde_json` and the API see no difference).
impl serde::Serialize for SharedLabels {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.iter())
    }
}

/// Strings held once and shared: many holders of the same few names (a topic's, in
/// per-partition memos at 20,000 groups × 10 partitions) share one allocation.
#[derive(Debug, Default, Clone)]
pub struct Interned(hashbrown::HashSet<Arc<str>, foldhash::fast::RandomState>);

impl Interned {
    /// `s`, shared.
    pub fn get(&mut self, s: &str) -> Arc<str> {
        if let Some(held) = self.0.get(s) {
            return held.clone();
        }
        let new: Arc<str> = Arc::from(s);
        self.0.insert(new.clone());
        new
    }

    /// Forgets the strings nobody else holds any more.
    pub fn prune(&mut self) {
        self.0.retain(|s| Arc::strong_count(s) > 1);
    }

    /// The strings held.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Tests only: indexing panics when the label is missing, as a map's index does.
#[cfg(test)]
impl std::ops::Index<&str> for SharedLabels {
    type Output = str;
    fn index(&self, name: &str) -> &str {
        self.get(name).expect("the label is in the set")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn map(pairs: &[(String, String)]) -> Labels {
        pairs.iter().cloned().collect()
    }

    fn shared(pairs: &[(String, String)]) -> SharedLabels {
        SharedLabels::from_pairs(pairs.iter().map(|(n, v)| (Arc::from(n.as_str()), Arc::from(v.as_str()))))
    }

    fn pairs() -> impl Strategy<Value = Vec<(String, String)>> {
        prop::collection::vec(("[a-c]{0,2}", "[x-z]{0,2}"), 0..6)
    }

    #[test]
    fn an_interned_string_is_held_once_and_forgotten_with_its_last_holder() {
        let mut names = Interned::default();
        let a = names.get("orders");
        let b = names.get("orders");
        assert!(Arc::ptr_eq(&a, &b));
        let c = names.get("audit");
        assert_eq!(names.len(), 2);
        drop((a, c));
        names.prune();
        assert_eq!(names.len(), 1, "orders is still held by b");
        drop(b);
        names.prune();
        assert!(names.is_empty());
    }

    proptest! {
        /// Built from pairs in any order, with repeated names, a set is the map that
        /// collecting the same pairs gives: same pairs, same look-ups, same order, same
        /// equality and the same JSON.
        #[test]
        fn a_set_is_the_map_of_its_pairs(a in pairs(), b in pairs()) {
            let (sa, sb, ma, mb) = (shared(&a), shared(&b), map(&a), map(&b));
            prop_assert_eq!(sa.to_labels(), ma.clone());
            prop_assert_eq!(SharedLabels::from(ma.clone()), sa.clone());
            prop_assert_eq!(sa.cmp(&sb), ma.cmp(&mb));
            prop_assert_eq!(sa == sb, ma == mb);
            prop_assert_eq!(sa.cmp_labels(&mb), ma.cmp(&mb));
            prop_assert_eq!(sa == mb, ma == mb);
            for n in ["", "a", "b", "ab", "c", "cc", "d"] {
                prop_assert_eq!(sa.get(n), ma.get(n).map(String::as_str));
            }
            prop_assert_eq!(serde_json::to_string(&sa).unwrap(), serde_json::to_string(&ma).unwrap());
            prop_assert_eq!(format!("{sa:?}"), format!("{ma:?}"));
            // A set built from the other two's own strings compares partly by pointer.
            let sc = SharedLabels::from_pairs(sa.0.iter().chain(sb.0.iter()).cloned());
            let mc: Labels = ma.iter().chain(mb.iter()).map(|(n, v)| (n.clone(), v.clone())).collect();
            prop_assert_eq!(sc.cmp(&sa), mc.cmp(&ma));
            prop_assert_eq!(sc.cmp(&sb), mc.cmp(&mb));
            prop_assert_eq!(sc == sa, mc == ma);
            prop_assert_eq!(sa.cmp(&sa.clone()), Ordering::Equal);
        }
    }

    #[test]
    fn equal_sets_hash_alike_and_clones_share_their_allocation() {
        use std::hash::BuildHasher;
        let a = shared(&[("group".into(), "g".into()), ("cluster".into(), "c".into())]);
        let b = SharedLabels::from(Labels::from([("cluster".into(), "c".into()), ("group".into(), "g".into())]));
        let h = foldhash::fast::FixedState::with_seed(1);
        assert_eq!(h.hash_one(&a), h.hash_one(&b));
        assert!(!SharedLabels::ptr_eq(&a, &b));
        assert!(SharedLabels::ptr_eq(&a, &a.clone()));
        assert_eq!(a.keys().collect::<Vec<_>>(), ["cluster", "group"]);
    }
}
