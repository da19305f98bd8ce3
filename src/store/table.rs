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
//!
//! Keys live in one arena per table, `[len, ids…]` one after the other, and a slot is
//! the series plus where its key starts (32 bytes). A key of its own on the heap cost a
//! 16-byte pointer in the slot and the allocator's rounding and header: 24 bytes more
//! per partition series, about 50 MB of the agent at 20,000 groups (README, "Keys in
//! one arena, batches reserved once").
//! A freed series leaves its key's words behind; the arena is rewritten without them
//! once they are half of it.

use hashbrown::HashTable;

use super::series::{Series, FREE};

/// Dead words below which the arena is not rewritten (small tables never are).
const COMPACT_MIN_DEAD: usize = if cfg!(test) { 8 } else { 1 << 16 };

/// Slots of series, their keys in an arena, a free list, and an index from key hash to
/// slot.
#[derive(Debug, Clone, Default)]
pub(super) struct Table {
    /// A free slot's `key_at` is [`FREE`] (and its series is a placeholder).
    slots: Vec<Series>,
    free: Vec<u32>,
    /// Every live series' key as `[len, ids…]` at the series' `key_at`; the words of
    /// freed keys (`dead` of them) until the arena is rewritten.
    keys: Vec<u32>,
    dead: usize,
    index: HashTable<u32>,
    hasher: foldhash::fast::RandomState,
}

/// The key at `at` in `keys` (`None` for a free slot or an offset out of range).
fn key_at(keys: &[u32], at: u32) -> Option<&[u32]> {
    if at == FREE {
        return None;
    }
    let at = at as usize;
    let len = *keys.get(at)? as usize;
    keys.get(at + 1..at + 1 + len)
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
        if self.next.capacity() == 0 {
            // A pass records about as many rows as the last one: sized once.
            self.next.reserve_exact(self.last.len().max(16));
        }
        self.next.push(slot.unwrap_or(u32::MAX));
    }

    /// Ends a write or a pass of reads: what it recorded is the hint of the next one.
    /// Between passes a cursor holds that one list, not a second buffer as well (the
    /// next pass allocates it): about 9 MB less at 20,000 groups.
    pub fn finish(&mut self) {
        self.last = std::mem::take(&mut self.next);
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

    /// The key and series in `slot`, if it is live.
    fn at(&self, slot: u32) -> Option<(&[u32], &Series)> {
        let s = self.slots.get(slot as usize)?;
        key_at(&self.keys, s.key_at).map(|k| (k, s))
    }

    fn slot_of(&self, ids: &[u32]) -> Option<u32> {
        let matches = |s: &u32| self.at(*s).is_some_and(|(k, _)| k == ids);
        self.index.find(self.hash(ids), matches).copied()
    }

    pub(super) fn get(&self, ids: &[u32]) -> Option<(&[u32], &Series)> {
        self.find(ids, None).map(|(_, k, s)| (k, s))
    }

    /// The slot of `ids`: `hint` if it holds that key, else by hash.
    fn slot(&self, ids: &[u32], hint: Option<u32>) -> Option<u32> {
        let hinted = hint.filter(|h| self.at(*h).is_some_and(|(k, _)| k == ids));
        hinted.or_else(|| self.slot_of(ids))
    }

    /// The series of `ids` and its slot; `hint` is tried first.
    pub(super) fn find(&self, ids: &[u32], hint: Option<u32>) -> Option<(u32, &[u32], &Series)> {
        let slot = self.slot(ids, hint)?;
        self.at(slot).map(|(k, s)| (slot, k, s))
    }

    /// The series of `ids` and its slot; `hint` is tried first.
    pub(super) fn get_mut(&mut self, ids: &[u32], hint: Option<u32>) -> Option<(u32, &mut Series)> {
        let slot = self.slot(ids, hint)?;
        Some((slot, self.slots.get_mut(slot as usize)?))
    }

    /// Adds a series whose key (`ids`) the table does not have; returns its slot, or
    /// `None` when the arena cannot address more keys (16 GiB of them: memory runs out
    /// long before).
    pub(super) fn insert(&mut self, ids: &[u32], mut series: Series) -> Option<u32> {
        let at = u32::try_from(self.keys.len()).ok().filter(|at| *at != FREE)?;
        let len = u32::try_from(ids.len()).ok()?;
        let end = self.keys.len() + 1 + ids.len();
        u32::try_from(end).ok()?;
        if end > self.keys.capacity() {
            // A quarter more, not double: the arena is the table's largest buffer.
            self.keys.reserve_exact((self.keys.len() / 4).max(end - self.keys.len()).max(256));
        }
        self.keys.push(len);
        self.keys.extend_from_slice(ids);
        series.key_at = at;
        let hash = self.hash(ids);
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slots[slot as usize] = series;
                slot
            }
            None => {
                // More than 4 billion series cannot be held in memory anyway.
                let slot = u32::try_from(self.slots.len()).unwrap_or(FREE);
                self.slots.push(series);
                slot
            }
        };
        let (slots, keys, hasher) = (&self.slots, &self.keys, &self.hasher);
        self.index.insert_unique(hash, slot, |s| rehash(slots, keys, hasher, *s));
        Some(slot)
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (&[u32], &Series)> {
        let keys = &self.keys;
        self.slots.iter().filter_map(move |s| key_at(keys, s.key_at).map(|k| (k, s)))
    }

    pub(super) fn iter_mut(&mut self) -> impl Iterator<Item = (&[u32], &mut Series)> {
        let keys = &self.keys;
        self.slots.iter_mut().filter_map(move |s| key_at(keys, s.key_at).map(|k| (k, s)))
    }

    /// Keeps the series for which `keep` is true; the others' slots are freed.
    /// `freed` gets the key of each series dropped. A kept series' key is not read: a
    /// trim visits every slot every cycle, and the arena is the table's largest buffer.
    pub(super) fn retain(&mut self, mut keep: impl FnMut(&mut Series) -> bool, mut freed: impl FnMut(&[u32])) {
        for i in 0..self.slots.len() {
            let s = &mut self.slots[i];
            if s.key_at == FREE || keep(s) {
                continue;
            }
            let Some(k) = key_at(&self.keys, s.key_at) else { continue };
            freed(k);
            let hash = {
                use std::hash::BuildHasher;
                self.hasher.hash_one(k)
            };
            self.dead += 1 + k.len();
            let slot = i as u32;
            if let Ok(entry) = self.index.find_entry(hash, |x| *x == slot) {
                entry.remove();
            }
            self.slots[i] = Series::new(0, 0.0);
            self.free.push(slot);
        }
        // Trailing free slots are given back, so a shrinking source shrinks.
        while self.slots.last().is_some_and(|s| s.key_at == FREE) {
            self.slots.pop();
        }
        if self.free.iter().any(|f| *f as usize >= self.slots.len()) {
            let len = self.slots.len();
            self.free.retain(|f| (*f as usize) < len);
        }
        if self.dead >= COMPACT_MIN_DEAD && 2 * self.dead >= self.keys.len() {
            self.compact_keys();
        }
        if self.slots.capacity() > 2 * self.slots.len() + 1024 {
            self.slots.shrink_to_fit();
            let (slots, keys, hasher, index) = (&self.slots, &self.keys, &self.hasher, &mut self.index);
            index.shrink_to(index.len(), |s| rehash(slots, keys, hasher, *s));
        }
    }

    /// Rewrites the arena with the live keys only, in slot order (hashes do not change).
    fn compact_keys(&mut self) {
        let mut keys = Vec::with_capacity(self.keys.len().saturating_sub(self.dead));
        for s in &mut self.slots {
            if let Some(k) = key_at(&self.keys, s.key_at) {
                // Never longer than the arena it comes from, which fit.
                s.key_at = u32::try_from(keys.len()).unwrap_or(FREE);
                keys.push(k.len() as u32);
                keys.extend_from_slice(k);
            }
        }
        self.keys = keys;
        self.dead = 0;
    }
}

/// The hash of the key in `slot`, for the index's growth (0 for a free slot, which the
/// index never holds).
fn rehash(slots: &[Series], keys: &[u32], hasher: &foldhash::fast::RandomState, slot: u32) -> u64 {
    use std::hash::BuildHasher;
    match slots.get(slot as usize).and_then(|s| key_at(keys, s.key_at)) {
        Some(k) => hasher.hash_one(k),
        None => 0,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    proptest::proptest! {
        /// The table holds what a hash map holds through inserts, removals (which
        /// rewrite the key arena now and then) and hinted look-ups, whatever the hints
        /// (right, stale, reused or out of range) and the keys' lengths.
        #[test]
        fn the_table_is_a_map(ops in proptest::collection::vec((0u8..4, 0u32..40, 0u32..50), 1..400)) {
            let mut table = Table::default();
            let mut model: HashMap<Vec<u32>, u64> = HashMap::new();
            for (op, k, hint) in ops {
                let ids: Vec<u32> = std::iter::once(k % 7).chain(std::iter::repeat_n(k, 1 + k as usize % 5)).collect();
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
                                proptest::prop_assert!(table.insert(&ids, Series::new(0, f64::from(k))).is_some());
                                model.insert(ids.clone(), 0);
                            }
                        }
                    }
                    2 => {
                        // A series' head is the k of its key (see the insert above).
                        let mut freed = Vec::new();
                        table.retain(|s| s.head != f64::from(k), |key| freed.push(key.to_vec()));
                        let mut dropped: Vec<Vec<u32>> = model.keys().filter(|key| key[1] == k).cloned().collect();
                        model.retain(|key, _| key[1] != k);
                        freed.sort();
                        dropped.sort();
                        proptest::prop_assert_eq!(freed, dropped, "the keys handed back are the dropped series'");
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
                proptest::prop_assert!(table.dead < COMPACT_MIN_DEAD || 2 * table.dead < table.keys.len());
            }
        }
    }

    #[test]
    fn freed_keys_are_given_back_and_the_rest_still_found() {
        let mut table = Table::default();
        for k in 0..1000u32 {
            table.insert(&[1, 2, k], Series::new(u64::from(k), 0.0));
        }
        let full = table.keys.len();
        assert_eq!(full, 1000 * 4, "a key is its length and its ids, nothing else");
        table.retain(|s| s.head_seq % 10 == 0, |_| {});
        assert_eq!(table.len(), 100);
        assert_eq!(table.keys.len(), 100 * 4, "the arena was rewritten without the freed keys");
        for k in 0..1000u32 {
            let found = table.get(&[1, 2, k]).map(|(key, s)| (key.to_vec(), s.head_seq));
            assert_eq!(found, (k % 10 == 0).then(|| (vec![1, 2, k], u64::from(k))), "key {k}");
        }
    }

    #[test]
    fn a_slot_is_32_bytes() {
        // The series and where its key starts; the agent holds two million of them.
        assert_eq!(std::mem::size_of::<Series>(), 32);
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
        assert_eq!(c.next.capacity(), 0, "between passes a cursor holds one list");
        for s in 0..100 {
            c.record(Some(s));
        }
        c.finish();
        for s in 0..90 {
            c.record(Some(s));
        }
        assert_eq!(c.next.capacity(), 100, "a pass is sized by the last one, once");
    }
}
