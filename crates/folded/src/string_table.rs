//! Strings stored once each, numbered in first-use order.

use std::collections::HashMap;

/// Distinct strings, numbered from 0 in the order they were first interned.
#[derive(Clone, Debug, Default)]
pub struct StringTable {
    strings: Vec<String>,
    index: HashMap<String, u32>,
}

impl StringTable {
    /// An empty table.
    pub fn new() -> StringTable {
        StringTable::default()
    }

    /// The number of `text`, adding it if it is new.
    ///
    /// # Panics
    /// With 2^32 distinct strings.
    pub fn intern(&mut self, text: &str) -> u32 {
        if let Some(&i) = self.index.get(text) {
            return i;
        }
        let i = u32::try_from(self.strings.len()).expect("fewer than 2^32 distinct strings");
        self.strings.push(text.to_owned());
        self.index.insert(text.to_owned(), i);
        i
    }

    /// The strings, each at its number.
    pub fn into_strings(self) -> Vec<String> {
        self.strings
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_strings_in_first_use_order() {
        let mut table = StringTable::new();
        assert_eq!(table.intern("b"), 0);
        assert_eq!(table.intern("a"), 1);
        assert_eq!(table.intern("b"), 0);
        assert_eq!(table.into_strings(), ["b", "a"]);
    }
}
