//! A sorted symbol table with perf's rules for sizes and aliases.

/// Symbol binding, for choosing between aliases.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Binding {
    /// `STB_LOCAL` (lower-case kallsyms type).
    Local,
    /// `STB_GLOBAL` (upper-case kallsyms type).
    Global,
    /// `STB_WEAK` (`W`/`w`, `V`/`v`).
    Weak,
}

/// One symbol: `[start, end)` plus where its name is.
#[derive(Clone, Copy, Debug)]
pub struct Symbol {
    /// First address.
    pub start: u64,
    /// One past the last address; equal to `start` when the size is unknown
    /// (fixed up from the next symbol).
    pub end: u64,
    /// Binding, for alias choice.
    pub binding: Binding,
    /// Offset of the name in the table's name storage.
    name_offset: u32,
    name_len: u32,
}

/// Sorted symbols with names in one buffer.
#[derive(Debug, Default)]
pub struct SymbolTable {
    symbols: Vec<Symbol>,
    names: Vec<u8>,
}

/// How zero-size symbols get an end, which differs between ELF and kallsyms in perf.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    /// ELF: aliases removed first, then zero sizes extended to the next symbol.
    Elf,
    /// kallsyms: sizes from the next symbol first (so only the last alias at
    /// an address gets a size), then aliases removed; the last kernel symbol
    /// before the modules ends at the next page.
    Kallsyms,
}

/// Builds a [`SymbolTable`].
#[derive(Debug, Default)]
pub struct SymbolTableBuilder {
    table: SymbolTable,
}

impl SymbolTableBuilder {
    /// A builder with room for `symbols` symbols and `name_bytes` of names.
    pub fn with_capacity(symbols: usize, name_bytes: usize) -> SymbolTableBuilder {
        SymbolTableBuilder {
            table: SymbolTable {
                symbols: Vec::with_capacity(symbols),
                names: Vec::with_capacity(name_bytes),
            },
        }
    }

    /// Adds a symbol; `size` 0 means unknown.
    pub fn push(&mut self, start: u64, size: u64, binding: Binding, name: &[u8]) {
        let Ok(name_offset) = u32::try_from(self.table.names.len()) else {
            return;
        };
        let name_len = name.len().min(u32::MAX as usize) as u32;
        self.table
            .names
            .extend_from_slice(&name[..name_len as usize]);
        self.table.symbols.push(Symbol {
            start,
            end: start.saturating_add(size),
            binding,
            name_offset,
            name_len,
        });
    }

    /// Sorts and applies perf's fix-ups (`symbols__fixup_duplicate`,
    /// `symbols__fixup_end`) in the order perf uses for `flavor`.
    pub fn build(mut self, flavor: Flavor) -> SymbolTable {
        // Stable: among equal starts, insertion order decides, as in perf's tree.
        self.table.symbols.sort_by_key(|s| s.start);
        match flavor {
            Flavor::Elf => {
                self.fixup_duplicates();
                self.fixup_ends(flavor);
            }
            Flavor::Kallsyms => {
                self.fixup_ends(flavor);
                self.fixup_duplicates();
            }
        }
        self.table
    }

    fn fixup_ends(&mut self, flavor: Flavor) {
        let names = &self.table.names;
        let symbols = &mut self.table.symbols;
        // perf: a module symbol is one whose name has a `[`.
        let modules: Vec<bool> = if flavor == Flavor::Kallsyms {
            symbols
                .iter()
                .map(|s| name_of(names, s).contains(&b'['))
                .collect()
        } else {
            Vec::new()
        };
        for i in 1..symbols.len() {
            let (prev, curr) = (symbols[i - 1], symbols[i]);
            if prev.end == prev.start {
                symbols[i - 1].end = if flavor == Flavor::Kallsyms && modules[i - 1] != modules[i] {
                    round_up_page(prev.end.saturating_add(4096))
                } else {
                    curr.start
                };
            }
        }
        if let Some(last) = symbols.last_mut() {
            if last.end == last.start {
                last.end = round_up_page(last.start).saturating_add(4096);
            }
        }
    }

    fn fixup_duplicates(&mut self) {
        let names = &self.table.names;
        let symbols = &mut self.table.symbols;
        // Compacts in place: `kept` symbols stay in `symbols[..kept]`.
        let mut kept = 0;
        for i in 0..symbols.len() {
            let sym = symbols[i];
            if kept > 0 && symbols[kept - 1].start == sym.start {
                if choose_second(names, &symbols[kept - 1], &sym) {
                    symbols[kept - 1] = sym;
                }
            } else {
                symbols[kept] = sym;
                kept += 1;
            }
        }
        symbols.truncate(kept);
    }
}

fn round_up_page(address: u64) -> u64 {
    address.saturating_add(4095) & !4095
}

fn name_of<'n>(names: &'n [u8], sym: &Symbol) -> &'n [u8] {
    &names[sym.name_offset as usize..][..sym.name_len as usize]
}

/// perf's `choose_best_symbol`: true when `b` is better than `a`.
fn choose_second(names: &[u8], a: &Symbol, b: &Symbol) -> bool {
    let (size_a, size_b) = (a.end - a.start, b.end - b.start);
    if size_a > 0 && size_b == 0 {
        return false;
    }
    if size_a == 0 && size_b > 0 {
        return true;
    }
    let (weak_a, weak_b) = (a.binding == Binding::Weak, b.binding == Binding::Weak);
    if weak_b != weak_a {
        return weak_a;
    }
    let (global_a, global_b) = (a.binding == Binding::Global, b.binding == Binding::Global);
    if global_a != global_b {
        return global_b;
    }
    let underscores = |s: &Symbol| name_of(names, s).iter().take_while(|&&c| c == b'_').count();
    let (under_a, under_b) = (underscores(a), underscores(b));
    if under_a != under_b {
        return under_b < under_a;
    }
    let (len_a, len_b) = (a.name_len, b.name_len);
    if len_a != len_b {
        return len_b > len_a;
    }
    false
}

impl SymbolTable {
    /// A table of already built symbols (`start`, `end`, binding, name), as
    /// [`SymbolTable::iter`] gives them. `None` unless they are sorted by
    /// start, no end lies before its start, and the names fit in memory.
    pub fn from_built<'a>(
        symbols: impl Iterator<Item = (u64, u64, Binding, &'a [u8])>,
    ) -> Option<SymbolTable> {
        let mut table = SymbolTable::default();
        let mut previous_start = 0;
        for (start, end, binding, name) in symbols {
            if start < previous_start || end < start {
                return None;
            }
            previous_start = start;
            table.symbols.push(Symbol {
                start,
                end,
                binding,
                name_offset: u32::try_from(table.names.len()).ok()?,
                name_len: u32::try_from(name.len()).ok()?,
            });
            table.names.extend_from_slice(name);
        }
        Some(table)
    }

    /// Every symbol with its raw name, in address order.
    pub fn iter(&self) -> impl Iterator<Item = (&Symbol, &[u8])> {
        self.symbols.iter().map(|s| (s, name_of(&self.names, s)))
    }

    /// The symbol containing `address`, with its raw name.
    pub fn lookup(&self, address: u64) -> Option<(&Symbol, &[u8])> {
        let pos = self.symbols.partition_point(|s| s.start <= address);
        // The closest symbol usually contains the address; a zero-size
        // label inside a sized function may not, so look a little further back.
        for sym in self.symbols[..pos].iter().rev().take(4) {
            if address < sym.end {
                return Some((sym, name_of(&self.names, sym)));
            }
        }
        None
    }

    /// The first symbol with exactly this name.
    pub fn find_by_name(&self, name: &[u8]) -> Option<&Symbol> {
        self.symbols
            .iter()
            .find(|s| name_of(&self.names, s) == name)
    }

    /// Number of symbols.
    pub fn len(&self) -> usize {
        self.symbols.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.symbols.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kallsyms_aliases_keep_the_last_one_and_sizes_come_from_the_next() {
        let mut b = SymbolTableBuilder::default();
        b.push(0x1000, 0, Binding::Global, b"srso_alias_untrain_ret");
        b.push(0x1000, 0, Binding::Global, b"_stext");
        b.push(0x1000, 0, Binding::Global, b"_text");
        b.push(0x1100, 0, Binding::Local, b"next");
        let t = b.build(Flavor::Kallsyms);
        assert_eq!(t.lookup(0x1050).unwrap().1, b"_text");
        assert_eq!(t.lookup(0x1100).unwrap().1, b"next");
        assert!(t.lookup(0xfff).is_none());
        // The last symbol ends at the next page boundary plus a page.
        assert!(t.lookup(0x2fff).is_some());
        assert!(t.lookup(0x3000).is_none());
    }

    #[test]
    fn elf_prefers_sized_global_fewer_underscores_then_longer_names() {
        let mut b = SymbolTableBuilder::default();
        b.push(0x10, 0x10, Binding::Weak, b"weak_alias");
        b.push(0x10, 0x10, Binding::Global, b"__real");
        b.push(0x10, 0x10, Binding::Global, b"real");
        b.push(0x40, 0x8, Binding::Local, b"gap_after");
        let t = b.build(Flavor::Elf);
        assert_eq!(t.lookup(0x15).unwrap().1, b"real");
        assert!(t.lookup(0x25).is_none(), "past the sized end");
        assert_eq!(t.lookup(0x47).unwrap().1, b"gap_after");
        assert!(t.lookup(0x48).is_none());
    }
}
