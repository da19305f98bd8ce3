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
//! Keys live in one arena per table, `[signal, schema, values…]` one after the other
//! (the label names once per schema), and a slot is the series plus where its key
//! starts (32 bytes). A key of its own on the heap cost a
//! 16-byte pointer in the slot and the allocator's rounding and header: 24 bytes more
//! per partition series, about 50 MB of the agent at 20,000 groups (README, "Keys in
//! one arena, batches reserved once").
//! A freed series leaves its key's words behind; the arena is rewritten without them
//! once they are half of it.

use std::hash::{BuildHasher, Hasher};

use hashbrown::HashTable;

use super::series::{KeyIds, Series, FREE};

/// Dead words below which the arena is not rewritten (small tables never are).
const COMPACT_MIN_DEAD: usize = if cfg!(test) { 8 } else { 1 << 16 };

/// Slots of series, their keys in an arena, a free list, and an index from key hash to
/// slot.
#[derive(Debug, Clone, Default)]
pub(super) struct Table {
    /// A free slot's `key_at` is [`FREE`] (and its series is a placeholder).
    slots: Vec<Series>,
    free: Vec<u32>,
    /// Every live series' key as `[signal, schema, values…]` at the series' `key_at`
    /// (as many values as its schema has names); the words of freed keys (`dead` of
    /// them) until the arena is rewritten.
    keys: Vec<u32>,
    dead: usize,
    schemas: Schemas,
    index: HashTable<u32>,
    hasher: foldhash::fast::RandomState,
}

/// The label names of a table's keys, each list once: a key holds its schema's number
/// instead of its names. The Kafka source's 1.4 million partition series share one list
/// of four names; holding the names in every key was 16 bytes per series (README, "The
/// agent at 20,000 groups").
#[derive(Debug, Clone, Default)]
struct Schemas {
    /// Names and how many keys use them; an unused one is empty and listed in `free`.
    list: Vec<(Box<[u32]>, u32)>,
    by_names: hashbrown::HashMap<Box<[u32]>, u32, foldhash::fast::RandomState>,
    free: Vec<u32>,
}

impl Schemas {
    fn names(&self, schema: u32) -> Option<&[u32]> {
        self.list.get(schema as usize).map(|(n, _)| &**n)
    }

    /// The schema of `names` (strided by `step` in `ids`), one more key using it.
    fn acquire(&mut self, ids: &[u32], step: usize) -> Option<u32> {
        let names: Box<[u32]> = ids.iter().step_by(step).copied().collect();
        if let Some(&id) = self.by_names.get(&names) {
            self.list[id as usize].1 += 1;
            return Some(id);
        }
        let id = match self.free.pop() {
            Some(id) => {
                self.list[id as usize] = (names.clone(), 1);
                id
            }
            None => {
                let id = u32::try_from(self.list.len()).ok()?;
                self.list.push((names.clone(), 1));
                id
            }
        };
        self.by_names.insert(names, id);
        Some(id)
    }

    /// One key fewer uses `schema`; the last one frees it.
    fn release(&mut self, schema: u32) {
        let Some((names, uses)) = self.list.get_mut(schema as usize) else { return };
        *uses = uses.saturating_sub(1);
        if *uses == 0 {
            let names = std::mem::take(names);
            self.by_names.remove(&names);
            self.free.push(schema);
        }
    }
}

/// The key at `at` in `keys` (`None` for a free slot or an offset out of range).
fn key_at<'a>(keys: &'a [u32], schemas: &'a Schemas, at: u32) -> Option<KeyIds<'a>> {
    if at == FREE {
        return None;
    }
    let at = at as usize;
    let (signal, schema) = (*keys.get(at)?, *keys.get(at + 1)?);
    let names = schemas.names(schema)?;
    let labels = keys.get(at + 1..at + 2 + names.len())?;
    Some(KeyIds::stored(signal, names, labels))
}

/// The hash of a key: its signal, then each label's name and value (the same words for
/// a full key `[signal, n₀, v₀, …]` and a stored one).
fn hash_key(hasher: &foldhash::fast::RandomState, key: KeyIds<'_>) -> u64 {
    let mut h = hasher.build_hasher();
    h.write_u32(key.signal());
    for (n, v) in key.pairs() {
        h.write_u32(n);
        h.write_u32(v);
    }
    h.finish()
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
    pub(super) fn len(&self) -> usize {
        self.index.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// The key and series in `slot`, if it is live.
    fn at(&self, slot: u32) -> Option<(KeyIds<'_>, &Series)> {
        let s = self.slots.get(slot as usize)?;
        key_at(&self.keys, &self.schemas, s.key_at).map(|k| (k, s))
    }

    /// Whether `slot` holds the key `ids` (`[signal, n₀, v₀, …]`).
    fn holds(&self, slot: u32, ids: &[u32]) -> bool {
        self.at(slot).is_some_and(|(k, _)| k.is(ids))
    }

    fn slot_of(&self, ids: &[u32]) -> Option<u32> {
        let hash = hash_key(&self.hasher, KeyIds::full(ids)?);
        self.index.find(hash, |s| self.holds(*s, ids)).copied()
    }

    pub(super) fn get(&self, ids: &[u32]) -> Option<(KeyIds<'_>, &Series)> {
        self.find(ids, None).map(|(_, k, s)| (k, s))
    }

    /// The slot of `ids`: `hint` if it holds that key, else by hash.
    fn slot(&self, ids: &[u32], hint: Option<u32>) -> Option<u32> {
        let hinted = hint.filter(|h| self.holds(*h, ids));
        hinted.or_else(|| self.slot_of(ids))
    }

    /// The series of `ids` and its slot; `hint` is tried first.
    pub(super) fn find(&self, ids: &[u32], hint: Option<u32>) -> Option<(u32, KeyIds<'_>, &Series)> {
        let slot = self.slot(ids, hint)?;
        self.at(slot).map(|(k, s)| (slot, k, s))
    }

    /// The series of `ids` and its slot; `hint` is tried first.
    pub(super) fn get_mut(&mut self, ids: &[u32], hint: Option<u32>) -> Option<(u32, &mut Series)> {
        let slot = self.slot(ids, hint)?;
        Some((slot, self.slots.get_mut(slot as usize)?))
    }

    /// Adds a series whose key (`ids`: `[signal, n₀, v₀, …]`) the table does not have;
    /// returns its slot, or `None` for a key that is not a signal and label pairs, or
    /// when the arena cannot address more keys (16 GiB of them: memory runs out long
    /// before).
    pub(super) fn insert(&mut self, ids: &[u32], mut series: Series) -> Option<u32> {
        let key = KeyIds::full(ids)?;
        let at = u32::try_from(self.keys.len()).ok().filter(|at| *at != FREE)?;
        let values = key.len();
        let end = self.keys.len() + 2 + values;
        u32::try_from(end).ok()?;
        let schema = self.schemas.acquire(&ids[1..], 2)?;
        if end > self.keys.capacity() {
            // A quarter more, not double: the arena is the table's largest buffer.
            self.keys.reserve_exact((self.keys.len() / 4).max(end - self.keys.len()).max(256));
        }
        self.keys.extend_from_slice(&[key.signal(), schema]);
        self.keys.extend(ids.get(2..).unwrap_or_default().iter().step_by(2));
        series.key_at = at;
        let hash = hash_key(&self.hasher, key);
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slots[slot as usize] = series;
                slot
            }
            None => {
                // More than 4 billion series cannot be held in memory anyway.
                let slot = u32::try_from(self.slots.len()).unwrap_or(FREE);
                if self.slots.len() == self.slots.capacity() {
                    // A quarter more, as the arena: doubling left up to half the slots
                    // unused (at 384,000 series, 140,000 of them: 4.5 MB).
                    self.slots.reserve_exact((self.slots.len() / 4).max(256));
                }
                self.slots.push(series);
                slot
            }
        };
        let (slots, keys, schemas, hasher) = (&self.slots, &self.keys, &self.schemas, &self.hasher);
        self.index.insert_unique(hash, slot, |s| rehash(slots, keys, schemas, hasher, *s));
        Some(slot)
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (KeyIds<'_>, &Series)> {
        let (keys, schemas) = (&self.keys, &self.schemas);
        self.slots.iter().filter_map(move |s| key_at(keys, schemas, s.key_at).map(|k| (k, s)))
    }

    pub(super) fn iter_mut(&mut self) -> impl Iterator<Item = (KeyIds<'_>, &mut Series)> {
        let (keys, schemas) = (&self.keys, &self.schemas);
        self.slots.iter_mut().filter_map(move |s| key_at(keys, schemas, s.key_at).map(|k| (k, s)))
    }

    /// Keeps the series for which `keep` is true; the others' slots are freed.
    /// `freed` gets the key of each series dropped. A kept series' key is not read: a
    /// trim visits every slot every cycle, and the arena is the table's largest buffer.
    pub(super) fn retain(&mut self, mut keep: impl FnMut(&mut Series) -> bool, mut freed: impl FnMut(KeyIds<'_>)) {
        for i in 0..self.slots.len() {
            let s = &mut self.slots[i];
            if s.key_at == FREE || keep(s) {
                continue;
            }
            let Some(k) = key_at(&self.keys, &self.schemas, s.key_at) else { continue };
            freed(k);
            let hash = hash_key(&self.hasher, k);
            self.dead += 2 + k.len();
            let schema = k.schema();
            let slot = i as u32;
            if let Ok(entry) = self.index.find_entry(hash, |x| *x == slot) {
                entry.remove();
            }
            self.schemas.release(schema);
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
            let (slots, keys, schemas, hasher, index) = (&self.slots, &self.keys, &self.schemas, &self.hasher, &mut self.index);
            index.shrink_to(index.len(), |s| rehash(slots, keys, schemas, hasher, *s));
        }
    }

    /// Rewrites the arena with the live keys only, in slot order (hashes do not change).
    fn compact_keys(&mut self) {
        let mut keys = Vec::with_capacity(self.keys.len().saturating_sub(self.dead));
        for s in &mut self.slots {
            if let Some(k) = key_at(&self.keys, &self.schemas, s.key_at) {
                // Never longer than the arena it comes from, which fit.
                s.key_at = u32::try_from(keys.len()).unwrap_or(FREE);
                keys.push(k.signal());
                keys.extend_from_slice(k.label_ids());
            }
        }
        self.keys = keys;
        self.dead = 0;
    }
}

/// The hash of the key in `slot`, for the index's growth (0 for a free slot, which the
/// index never holds).
fn rehash(slots: &[Series], keys: &[u32], schemas: &Schemas, hasher: &foldhash::fast::RandomState, slot: u32) -> u64 {
    match slots.get(slot as usize).and_then(|s| key_at(keys, schemas, s.key_at)) {
        Some(k) => hash_key(hasher, k),
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
                // A signal and one to three labels, named by one of six schemas.
                let ids: Vec<u32> = std::iter::once(k % 7).chain((0..=k % 3).flat_map(|j| [100 + j + 10 * (k % 2), k])).collect();
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
                        table.retain(|s| s.head != f64::from(k), |key| freed.push(key.to_full()));
                        let mut dropped: Vec<Vec<u32>> = model.keys().filter(|key| key[2] == k).cloned().collect();
                        model.retain(|key, _| key[2] != k);
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
                let mut all: Vec<(Vec<u32>, u64)> = table.iter().map(|(k, s)| (k.to_full(), s.head_seq)).collect();
                all.sort();
                let mut expected: Vec<(Vec<u32>, u64)> = model.iter().map(|(k, v)| (k.clone(), *v)).collect();
                expected.sort();
                proptest::prop_assert_eq!(all, expected);
                proptest::prop_assert!(table.dead < COMPACT_MIN_DEAD || 2 * table.dead < table.keys.len());
                // A schema lives as long as a key uses it.
                let mut used: Vec<Vec<u32>> = model.keys().map(|key| key[1..].iter().step_by(2).copied().collect()).collect();
                used.sort();
                used.dedup();
                let mut live: Vec<Vec<u32>> = table.schemas.by_names.keys().map(|n| n.to_vec()).collect();
                live.sort();
                proptest::prop_assert_eq!(live, used);
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
        assert_eq!(full, 1000 * 3, "a key is its signal, its schema and its values, nothing else");
        assert_eq!(table.schemas.list.len(), 1, "one list of names for all");
        table.retain(|s| s.head_seq % 10 == 0, |_| {});
        assert_eq!(table.len(), 100);
        assert_eq!(table.keys.len(), 100 * 3, "the arena was rewritten without the freed keys");
        for k in 0..1000u32 {
            let found = table.get(&[1, 2, k]).map(|(key, s)| (key.to_full(), s.head_seq));
            assert_eq!(found, (k % 10 == 0).then(|| (vec![1, 2, k], u64::from(k))), "key {k}");
        }
    }

    /// A key that is not a signal and label pairs is refused, not stored half.
    #[test]
    fn a_key_without_whole_label_pairs_is_refused() {
        let mut table = Table::default();
        assert_eq!(table.insert(&[1, 2], Series::new(0, 0.0)), None);
        assert_eq!(table.insert(&[], Series::new(0, 0.0)), None);
        assert!(table.get(&[1, 2]).is_none());
        assert_eq!((table.len(), table.keys.len(), table.schemas.list.len()), (0, 0, 0));
        assert!(table.insert(&[1], Series::new(0, 0.0)).is_some(), "a signal without labels is a key");
        assert_eq!(table.get(&[1]).map(|(k, _)| k.to_full()), Some(vec![1]));
    }

    #[test]
    fn slots_grow_by_a_quarter() {
        let mut table = Table::default();
        for k in 0..10_000u32 {
            table.insert(&[1, 2, k], Series::new(0, 0.0));
            assert!(table.slots.capacity() <= table.slots.len() * 5 / 4 + 256, "{} slots for {}", table.slots.capacity(), table.slots.len());
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
