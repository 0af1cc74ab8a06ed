//! Kernel symbols from `/proc/kallsyms` or a saved copy.

pub use super::table::Binding;
use super::table::{Flavor, SymbolTable, SymbolTableBuilder};

/// Kernel (and module) function symbols.
#[derive(Debug)]
pub struct Kallsyms {
    table: SymbolTable,
    /// For a part of the symbols (the core kernel's, see
    /// [`Kallsyms::core_part`]): the addresses it answers for exactly as the
    /// whole table would. `None` for a whole table.
    covers: Option<std::ops::Range<u64>>,
}

/// Largest kallsyms file accepted (the real one is a few MB).
pub const MAX_KALLSYMS_BYTES: u64 = 256 << 20;

impl Kallsyms {
    /// Parses kallsyms text (`ADDRESS TYPE NAME[\t[MODULE]]` lines). Keeps
    /// the symbol types perf keeps (text, weak, data, bss); other lines and
    /// garbage are skipped. Returns `None` when no symbol has a non-zero
    /// address (as with `kptr_restrict`).
    pub fn parse(text: &[u8]) -> Option<Kallsyms> {
        let mut builder = SymbolTableBuilder::with_capacity(text.len() / 40, text.len() / 2);
        let mut any_address = false;
        let mut start = 0;
        let ends = memchr::memchr_iter(b'\n', text).chain(std::iter::once(text.len()));
        for end in ends {
            let line = &text[start..end];
            start = end + 1;
            let Some((address, symbol_type, name)) = parse_line(line) else {
                continue;
            };
            let binding = match symbol_type {
                b'W' | b'w' | b'V' | b'v' => Binding::Weak,
                c if c.is_ascii_uppercase() => Binding::Global,
                _ => Binding::Local,
            };
            if !matches!(symbol_type.to_ascii_uppercase(), b'T' | b'W' | b'D' | b'B') {
                continue;
            }
            any_address |= address != 0;
            builder.push(address, 0, binding, name);
        }
        any_address.then(|| Kallsyms {
            table: builder.build(Flavor::Kallsyms),
            covers: None,
        })
    }

    /// The core kernel's symbols (those not in a module, BPF program or
    /// other `[…]` group), which cannot change while the system is up,
    /// unlike module and BPF symbols. `None` if they are interleaved with
    /// others, so that the part would answer some address differently.
    pub fn core_part(&self) -> Option<Kallsyms> {
        if self.covers.is_some() {
            return None;
        }
        let is_core = |name: &[u8]| !name.contains(&b'[');
        let mut core = self.table.iter().filter(|(_, name)| is_core(name));
        let (first, _) = core.next()?;
        let (last, _) = core.last().unwrap_or((first, &[]));
        let covers = first.start..last.end;
        let interleaved = self
            .table
            .iter()
            .any(|(s, name)| !is_core(name) && s.start < covers.end && s.end > covers.start);
        if interleaved {
            return None;
        }
        let table = SymbolTable::from_built(
            self.table
                .iter()
                .filter(|(_, name)| is_core(name))
                .map(|(s, name)| (s.start, s.end, s.binding, name)),
        )?;
        Some(Kallsyms {
            table,
            covers: Some(covers),
        })
    }

    /// A part of a table from [`Kallsyms::core_part`], rebuilt from its
    /// symbols (see [`Kallsyms::symbols`]). `None` if they are not sorted or
    /// do not lie inside `covers`.
    pub fn from_part<'a>(
        symbols: impl Iterator<Item = (u64, u64, Binding, &'a [u8])>,
        covers: std::ops::Range<u64>,
    ) -> Option<Kallsyms> {
        let table = SymbolTable::from_built(symbols)?;
        let inside = table
            .iter()
            .all(|(s, _)| s.start >= covers.start && s.end <= covers.end);
        (inside && !table.is_empty()).then_some(Kallsyms {
            table,
            covers: Some(covers),
        })
    }

    /// The symbols, in address order: start, end, binding, raw name.
    pub fn symbols(&self) -> impl Iterator<Item = (u64, u64, Binding, &[u8])> {
        self.table
            .iter()
            .map(|(s, name)| (s.start, s.end, s.binding, name))
    }

    /// The addresses this table answers for: all, or for a part, a range.
    pub fn covers(&self) -> Option<&std::ops::Range<u64>> {
        self.covers.as_ref()
    }

    /// The function containing a kernel address, without module suffix.
    pub fn lookup(&self, address: u64) -> Option<&[u8]> {
        let (_, name) = self.table.lookup(address)?;
        Some(strip_module(name))
    }

    /// Address of a symbol (e.g. `_text`, the relocation reference).
    pub fn address_of(&self, name: &[u8]) -> Option<u64> {
        self.table.find_by_name(name).map(|s| s.start)
    }

    /// Number of symbols kept.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// True when no symbol was kept.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }
}

fn strip_module(name: &[u8]) -> &[u8] {
    match memchr::memchr(b'\t', name) {
        Some(tab) => &name[..tab],
        None => name,
    }
}

fn parse_line(line: &[u8]) -> Option<(u64, u8, &[u8])> {
    // Short searches: a plain loop beats a SIMD search's setup here.
    let space = line.iter().take(17).position(|&c| c == b' ')?;
    let (hex, rest) = line.split_at(space);
    if hex.is_empty() || hex.len() > 16 {
        return None;
    }
    let mut address = 0u64;
    for &digit in hex {
        let value = match digit {
            b'0'..=b'9' => digit - b'0',
            b'a'..=b'f' => digit - b'a' + 10,
            b'A'..=b'F' => digit - b'A' + 10,
            _ => return None,
        };
        address = address << 4 | u64::from(value);
    }
    // " T name…"
    let rest = rest.get(1..)?;
    let (&symbol_type, rest) = rest.split_first()?;
    let name = rest.strip_prefix(b" ")?;
    let name = name.strip_suffix(b"\r").unwrap_or(name);
    if name.is_empty() {
        return None;
    }
    Some((address, symbol_type, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_resolves_kernel_and_module_symbols() {
        let text = b"ffffffff81000000 T srso_alias_untrain_ret\n\
ffffffff81000000 T _text\n\
ffffffff81001000 t do_one\n\
ffffffff81002000 T do_sendfile\n\
ffffffff81003000 A not_a_function\n\
garbage\n\
ffffffffc0000000 t nf_hook\t[nf_conntrack]\n";
        let k = Kallsyms::parse(text).unwrap();
        assert_eq!(k.address_of(b"_text"), Some(0xffffffff81000000));
        assert_eq!(k.lookup(0xffffffff81000010), Some(&b"_text"[..]));
        assert_eq!(k.lookup(0xffffffff81002abc), Some(&b"do_sendfile"[..]));
        assert_eq!(k.lookup(0xffffffffc0000010), Some(&b"nf_hook"[..]));
        // The last kernel symbol before the modules ends after a page, not at the module.
        assert_eq!(k.lookup(0xffffffff90000000), None);
    }

    #[test]
    fn the_core_part_answers_like_the_whole() {
        let text = b"ffffffff81000000 T _text\n\
ffffffff81001000 t do_one\n\
ffffffff81002000 T do_sendfile\n\
ffffffffc0000000 t nf_hook\t[nf_conntrack]\n\
ffffffffc0001000 t bpf_prog_1234\t[bpf]\n";
        let whole = Kallsyms::parse(text).unwrap();
        let core = whole.core_part().unwrap();
        let covers = core.covers().unwrap().clone();
        assert_eq!(covers.start, 0xffffffff81000000);
        assert!(!covers.contains(&0xffffffffc0000010));
        for address in [
            0xffffffff81000000,
            0xffffffff81001fff,
            0xffffffff81002abc,
            covers.end - 1,
        ] {
            assert_eq!(core.lookup(address), whole.lookup(address), "{address:x}");
        }
        let rebuilt = Kallsyms::from_part(core.symbols(), covers.clone()).unwrap();
        assert_eq!(rebuilt.lookup(0xffffffff81001010), Some(&b"do_one"[..]));
        assert!(Kallsyms::from_part(core.symbols(), covers.start + 1..covers.end).is_none());
    }

    #[test]
    fn restricted_kallsyms_is_rejected() {
        assert!(Kallsyms::parse(b"0000000000000000 T _text\n0000000000000000 T x\n").is_none());
    }
}
