//! A source's series by key, in slots: a look-up by key hashes it, and a sample whose
//! series come in the same order as last time finds each one at the slot it used then,
//! without hashing.
//!
//! The Kafka source writes its million-odd series in the same order every cycle (the
//! snapshot's groups and partitions, then their derivations). In a hash map each write
//! was a probe into a table of that size and a comparison with a key elsewhere on the
//! heap: two or three cache misses per series, a third of a cycle's CPU. A
//! [`Cursor`] remembers the slot of each row of the previous sample of the same kind;
//! when the row's key is the slot's key (one comparison, slots read in order) the
//! look-up is skipped. Anything else (a new series, a freed or reused slot, another
//! order) falls back to the hash index, so the cursor only ever saves work.

use hashbrown::HashTable;

use super::series::{Key, Series};

/// Slots of `(key, series)`, a free list, and an index from key hash to slot.
#[derive(Debug, Clone, Default)]
pub(super) struct Table {
    slots: Vec<Option<(Key, Series)>>,
    free: Vec<u32>,
    index: HashTable<u32>,
    hasher: foldhash::fast::RandomState,
}

/// The slots one kind of write (a source's raw sample, its derivations) or one reader
/// (a derivation's look-ups, in its order) used last time, row by row. `u32::MAX`: the
/// row found nothing.
#[derive(Debug, Clone, Default)]
pub struct Cursor {
    last: Vec<u32>,
    next: Vec<u32>,
}

impl Cursor {
    /// The slot row `row` used last time, if any.
    pub(super) fn hint(&self, row: usize) -> Option<u32> {
        self.last.get(row).copied().filter(|s| *s != u32::MAX)
    }

    /// The slot the next row used last time, if any.
    pub(super) fn next_hint(&self) -> Option<u32> {
        self.hint(self.next.len())
    }

    /// Records the slot of the next row (`None`: it stored nothing).
    pub(super) fn record(&mut self, slot: Option<u32>) {
        self.next.push(slot.unwrap_or(u32::MAX));
    }

    /// Ends a write or a pass of reads: what it recorded is the hint of the next one.
    pub fn finish(&mut self) {
        std::mem::swap(&mut self.last, &mut self.next);
        self.next.clear();
        if self.next.capacity() > 2 * self.last.len() + 1024 {
            self.next.shrink_to(self.last.len());
        }
    }
}

impl Table {
    fn hash(&self, ids: &[u32]) -> u64 {
        use std::hash::BuildHasher;
        self.hasher.hash_one(ids)
    }

    pub(super) fn len(&self) -> usize {
        self.index.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    fn slot_of(&self, ids: &[u32]) -> Option<u32> {
        let slots = &self.slots;
        let matches = |s: &u32| slots.get(*s as usize).and_then(Option::as_ref).is_some_and(|(k, _)| **k == *ids);
        self.index.find(self.hash(ids), matches).copied()
    }

    pub(super) fn get(&self, ids: &[u32]) -> Option<(&Key, &Series)> {
        self.find(ids, None).map(|(_, k, s)| (k, s))
    }

    /// The slot of `ids`: `hint` if it holds that key, else by hash.
    fn slot(&self, ids: &[u32], hint: Option<u32>) -> Option<u32> {
        let hinted = hint.filter(|h| self.slots.get(*h as usize).and_then(Option::as_ref).is_some_and(|(k, _)| **k == *ids));
        hinted.or_else(|| self.slot_of(ids))
    }

    /// The series of `ids` and its slot; `hint` is tried first.
    pub(super) fn find(&self, ids: &[u32], hint: Option<u32>) -> Option<(u32, &Key, &Series)> {
        let slot = self.slot(ids, hint)?;
        self.slots.get(slot as usize)?.as_ref().map(|(k, s)| (slot, k, s))
    }

    /// The series of `ids` and its slot; `hint` is tried first.
    pub(super) fn get_mut(&mut self, ids: &[u32], hint: Option<u32>) -> Option<(u32, &mut Series)> {
        let slot = self.slot(ids, hint)?;
        let (_, s) = self.slots.get_mut(slot as usize)?.as_mut()?;
        Some((slot, s))
    }

    /// Adds a series whose key the table does not have; returns its slot.
    pub(super) fn insert(&mut self, key: Key, series: Series) -> u32 {
        let hash = self.hash(&key);
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slots[slot as usize] = Some((key, series));
                slot
            }
            None => {
                // More than 4 billion series cannot be held in memory anyway.
                let slot = u32::try_from(self.slots.len()).unwrap_or(u32::MAX);
                self.slots.push(Some((key, series)));
                slot
            }
        };
        let (slots, hasher) = (&self.slots, &self.hasher);
        let rehash = |s: &u32| match slots.get(*s as usize).and_then(Option::as_ref) {
            Some((k, _)) => {
                use std::hash::BuildHasher;
                hasher.hash_one(&**k)
            }
            None => 0,
        };
        self.index.insert_unique(hash, slot, rehash);
        slot
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (&Key, &Series)> {
        self.slots.iter().filter_map(|s| s.as_ref().map(|(k, s)| (k, s)))
    }

    pub(super) fn iter_mut(&mut self) -> impl Iterator<Item = (&Key, &mut Series)> {
        self.slots.iter_mut().filter_map(|s| s.as_mut().map(|(k, s)| (&*k, s)))
    }

    /// Keeps the series for which `keep` is true; the others' slots are freed.
    pub(super) fn retain(&mut self, mut keep: impl FnMut(&Key, &mut Series) -> bool) {
        for i in 0..self.slots.len() {
            let Some((k, s)) = self.slots[i].as_mut() else { continue };
            if keep(k, s) {
                continue;
            }
            let hash = {
                use std::hash::BuildHasher;
                self.hasher.hash_one(&**k)
            };
            let slot = i as u32;
            if let Ok(entry) = self.index.find_entry(hash, |x| *x == slot) {
                entry.remove();
            }
            self.slots[i] = None;
            self.free.push(slot);
        }
        // Trailing free slots are given back, so a shrinking source shrinks.
        while matches!(self.slots.last(), Some(None)) {
            self.slots.pop();
        }
        if self.free.iter().any(|f| *f as usize >= self.slots.len()) {
            let len = self.slots.len();
            self.free.retain(|f| (*f as usize) < len);
        }
        if self.slots.capacity() > 2 * self.slots.len() + 1024 {
            self.slots.shrink_to_fit();
            let (slots, hasher, index) = (&self.slots, &self.hasher, &mut self.index);
            index.shrink_to(index.len(), |s| match slots.get(*s as usize).and_then(Option::as_ref) {
                Some((k, _)) => {
                    use std::hash::BuildHasher;
                    hasher.hash_one(&**k)
                }
                None => 0,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn key(ids: &[u32]) -> Key {
        ids.to_vec().into_boxed_slice()
    }

    proptest::proptest! {
        /// The table holds what a hash map holds through inserts, removals and hinted
        /// look-ups, whatever the hints (right, stale, reused or out of range).
        #[test]
        fn the_table_is_a_map(ops in proptest::collection::vec((0u8..4, 0u32..40, 0u32..50), 1..400)) {
            let mut table = Table::default();
            let mut model: HashMap<Vec<u32>, u64> = HashMap::new();
            for (op, k, hint) in ops {
                let ids = [k % 7, k];
                match op {
                    0 | 1 => {
                        let hint = (op == 1).then_some(hint);
                        match table.get_mut(&ids, hint) {
                            Some((_, s)) => {
                                proptest::prop_assert!(model.contains_key(ids.as_slice()));
                                s.head_seq += 1;
                                *model.get_mut(ids.as_slice()).unwrap() += 1;
                            }
                            None => {
                                proptest::prop_assert!(!model.contains_key(ids.as_slice()));
                                table.insert(key(&ids), Series::new(0, 0.0));
                                model.insert(ids.to_vec(), 0);
                            }
                        }
                    }
                    2 => {
                        table.retain(|key, _| key[1] != k);
                        model.retain(|key, _| key[1] != k);
                    }
                    _ => {
                        let got = table.get(&ids).map(|(_, s)| s.head_seq);
                        proptest::prop_assert_eq!(got, model.get(ids.as_slice()).copied());
                    }
                }
                proptest::prop_assert_eq!(table.len(), model.len());
                let mut all: Vec<(Vec<u32>, u64)> = table.iter().map(|(k, s)| (k.to_vec(), s.head_seq)).collect();
                all.sort();
                let mut expected: Vec<(Vec<u32>, u64)> = model.iter().map(|(k, v)| (k.clone(), *v)).collect();
                expected.sort();
                proptest::prop_assert_eq!(all, expected);
            }
        }
    }

    #[test]
    fn a_cursor_hints_the_slots_of_the_last_write() {
        let mut c = Cursor::default();
        c.record(Some(3));
        c.record(None);
        c.record(Some(0));
        assert_eq!(c.hint(0), None, "nothing before the first write ends");
        c.finish();
        assert_eq!((c.hint(0), c.hint(1), c.hint(2), c.hint(3)), (Some(3), None, Some(0), None));
        c.record(Some(7));
        c.finish();
        assert_eq!((c.hint(0), c.hint(1)), (Some(7), None), "only the last write counts");
    }
}
