//! Interned sequences: a set of slices stored back to back in one buffer,
//! each with a value, found again by content.
//!
//! Millions of distinct stacks as separately allocated boxes cost an
//! allocation each and re-hash every key whenever the map grows; here a
//! stack is a range of one arena and its hash is stored, so growing the
//! index never looks at the stacks again.

use std::hash::{BuildHasher, BuildHasherDefault, Hash};

use hashbrown::HashTable;
use rustc_hash::FxHasher;

struct Entry<V> {
    start: usize,
    len: u32,
    hash: u64,
    value: V,
}

/// Distinct sequences of `T` with a value each.
pub struct SeqTable<T, V> {
    items: Vec<T>,
    entries: Vec<Entry<V>>,
    index: HashTable<u32>,
}

impl<T, V> Default for SeqTable<T, V> {
    fn default() -> Self {
        SeqTable {
            items: Vec::new(),
            entries: Vec::new(),
            index: HashTable::new(),
        }
    }
}

impl<T: Copy + Eq + Hash, V> SeqTable<T, V> {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty table with room for `sequences` sequences of `items` elements in all.
    pub fn with_capacity(sequences: usize, items: usize) -> Self {
        SeqTable {
            items: Vec::with_capacity(items),
            entries: Vec::with_capacity(sequences),
            index: HashTable::with_capacity(sequences),
        }
    }

    fn hash(sequence: &[T]) -> u64 {
        BuildHasherDefault::<FxHasher>::default().hash_one(sequence)
    }

    fn slice(&self, entry: &Entry<V>) -> &[T] {
        &self.items[entry.start..entry.start + entry.len as usize]
    }

    /// The value of `sequence`, inserting `make()` if it is new.
    pub fn entry(&mut self, sequence: &[T], make: impl FnOnce() -> V) -> &mut V {
        let hash = Self::hash(sequence);
        let (items, entries) = (&self.items, &self.entries);
        let found = self.index.find(hash, |&i| {
            let e = &entries[i as usize];
            e.hash == hash && &items[e.start..e.start + e.len as usize] == sequence
        });
        let index = match found {
            Some(&i) => i as usize,
            None => {
                let i = self.entries.len();
                let start = self.items.len();
                self.items.extend_from_slice(sequence);
                self.entries.push(Entry {
                    start,
                    len: u32::try_from(sequence.len()).expect("sequences shorter than 2^32"),
                    hash,
                    value: make(),
                });
                let entries = &self.entries;
                self.index
                    .insert_unique(hash, i as u32, |&j| entries[j as usize].hash);
                i
            }
        };
        &mut self.entries[index].value
    }

    /// The value of `sequence`, if present.
    pub fn get(&self, sequence: &[T]) -> Option<&V> {
        let hash = Self::hash(sequence);
        self.index
            .find(hash, |&i| {
                let e = &self.entries[i as usize];
                e.hash == hash && self.slice(e) == sequence
            })
            .map(|&i| &self.entries[i as usize].value)
    }

    /// Sequences and values, in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = (&[T], &V)> {
        self.entries.iter().map(|e| (self.slice(e), &e.value))
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
                    hash: e.hash,
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
}
