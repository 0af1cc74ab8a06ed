//! Interned sequences: a set of slices stored back to back in one buffer,
//! each with a value, found again by content.
//!
//! Millions of distinct stacks as separately allocated boxes cost an
//! allocation each and re-hash every key whenever the map grows; here a
//! stack is a range of one arena and its hash is stored, so growing the
//! index never looks at the stacks again.

use std::hash::{BuildHasher, BuildHasherDefault, Hash};
use std::sync::OnceLock;

use hashbrown::HashTable;
use rustc_hash::FxHasher;

struct Entry<V> {
    start: usize,
    len: u32,
    value: V,
}

/// An index slot: a sequence's hash, kept so that neither growing the index
/// nor telling sequences apart needs to look at the sequences, and its
/// entry.
type Slot = (u64, u32);

/// Distinct sequences of `T` with a value each.
pub struct SeqTable<T, V> {
    items: Vec<T>,
    entries: Vec<Entry<V>>,
    /// Built on first lookup: tables made from already distinct sequences
    /// ([`SeqTable::from_distinct`]) that are only iterated never pay for it.
    index: OnceLock<HashTable<Slot>>,
}

impl<T, V> Default for SeqTable<T, V> {
    fn default() -> Self {
        SeqTable {
            items: Vec::new(),
            entries: Vec::new(),
            index: OnceLock::new(),
        }
    }
}

impl<T: Copy + Eq + Hash, V> SeqTable<T, V> {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// A table of sequences the caller knows to be distinct, in the given
    /// order: each `(start, len, value)` is `items[start..start + len]`.
    ///
    /// # Panics
    /// If a range lies outside `items`. Duplicates are not detected; a
    /// lookup finds one of them.
    pub fn from_distinct(items: Vec<T>, sequences: Vec<(usize, u32, V)>) -> Self {
        let entries = sequences
            .into_iter()
            .map(|(start, len, value)| {
                assert!(start + len as usize <= items.len(), "sequence out of range");
                Entry { start, len, value }
            })
            .collect();
        SeqTable {
            items,
            entries,
            index: OnceLock::new(),
        }
    }

    fn hash(sequence: &[T]) -> u64 {
        BuildHasherDefault::<FxHasher>::default().hash_one(sequence)
    }

    fn slice(&self, entry: &Entry<V>) -> &[T] {
        &self.items[entry.start..entry.start + entry.len as usize]
    }

    fn build_index(items: &[T], entries: &[Entry<V>]) -> HashTable<Slot> {
        let mut index = HashTable::with_capacity(entries.len());
        for (i, e) in entries.iter().enumerate() {
            let hash = Self::hash(&items[e.start..e.start + e.len as usize]);
            index.insert_unique(hash, (hash, i as u32), |&(h, _)| h);
        }
        index
    }

    fn index(&self) -> &HashTable<Slot> {
        self.index
            .get_or_init(|| Self::build_index(&self.items, &self.entries))
    }

    /// The value of `sequence`, inserting `make()` if it is new.
    pub fn entry(&mut self, sequence: &[T], make: impl FnOnce() -> V) -> &mut V {
        self.index();
        let hash = Self::hash(sequence);
        let index = self.index.get_mut().expect("index built above");
        let (items, entries) = (&self.items, &self.entries);
        let found = index.find(hash, |&(h, i)| {
            let e = &entries[i as usize];
            h == hash && &items[e.start..e.start + e.len as usize] == sequence
        });
        let position = match found {
            Some(&(_, i)) => i as usize,
            None => {
                let i = self.entries.len();
                let start = self.items.len();
                self.items.extend_from_slice(sequence);
                self.entries.push(Entry {
                    start,
                    len: u32::try_from(sequence.len()).expect("sequences shorter than 2^32"),
                    value: make(),
                });
                index.insert_unique(hash, (hash, i as u32), |&(h, _)| h);
                i
            }
        };
        &mut self.entries[position].value
    }

    /// The value of `sequence`, if present.
    pub fn get(&self, sequence: &[T]) -> Option<&V> {
        let hash = Self::hash(sequence);
        self.index()
            .find(hash, |&(h, i)| {
                h == hash && self.slice(&self.entries[i as usize]) == sequence
            })
            .map(|&(_, i)| &self.entries[i as usize].value)
    }

    /// Sequences and values, in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = (&[T], &V)> {
        self.entries.iter().map(|e| (self.slice(e), &e.value))
    }

    /// The buffer and each sequence's `(start, len, value)` in it, in
    /// insertion order; the index is freed. For consumers that rewrite the
    /// sequences in place.
    pub fn into_parts(self) -> (Vec<T>, Vec<(usize, u32, V)>) {
        let entries = self
            .entries
            .into_iter()
            .map(|e| (e.start, e.len, e.value))
            .collect();
        (self.items, entries)
    }

    /// Number of sequences.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl<T: Clone, V: Clone> Clone for SeqTable<T, V> {
    fn clone(&self) -> Self {
        SeqTable {
            items: self.items.clone(),
            entries: self
                .entries
                .iter()
                .map(|e| Entry {
                    start: e.start,
                    len: e.len,
                    value: e.value.clone(),
                })
                .collect(),
            index: self.index.clone(),
        }
    }
}

impl<T, V> std::fmt::Debug for SeqTable<T, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SeqTable({} sequences)", self.entries.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_sequences_by_content() {
        let mut table: SeqTable<u32, u64> = SeqTable::new();
        for round in 0..3 {
            for i in 0..10_000u32 {
                *table.entry(&[i, i * 7, round.min(1)], || 0) += 1;
            }
        }
        assert_eq!(table.len(), 20_000);
        assert_eq!(table.get(&[5, 35, 1]), Some(&2));
        assert_eq!(table.get(&[5, 35, 0]), Some(&1));
        assert_eq!(table.get(&[5, 35]), None);
        assert_eq!(*table.entry(&[], || 9), 9);
        assert_eq!(table.iter().map(|(_, &v)| v).sum::<u64>(), 30_009);
    }

    #[test]
    fn tables_of_distinct_sequences_index_on_first_lookup() {
        let items = vec![1u32, 2, 3, 4, 5];
        let mut table = SeqTable::from_distinct(items, vec![(0, 2, 'a'), (2, 3, 'b'), (1, 0, 'c')]);
        assert_eq!(table.len(), 3);
        assert_eq!(table.get(&[3, 4, 5]), Some(&'b'));
        assert_eq!(table.get(&[]), Some(&'c'));
        assert_eq!(table.get(&[2, 3]), None);
        *table.entry(&[1, 2], || 'x') = 'A';
        table.entry(&[2, 3], || 'd');
        let all: Vec<(&[u32], char)> = table.iter().map(|(s, &v)| (s, v)).collect();
        assert_eq!(
            all,
            vec![
                (&[1, 2][..], 'A'),
                (&[3, 4, 5][..], 'b'),
                (&[][..], 'c'),
                (&[2, 3][..], 'd')
            ]
        );
    }
}
