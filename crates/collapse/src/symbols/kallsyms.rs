//! Kernel symbols from `/proc/kallsyms` or a saved copy.

use super::table::{Binding, Flavor, SymbolTable, SymbolTableBuilder};

/// Kernel (and module) function symbols.
#[derive(Debug)]
pub struct Kallsyms {
    table: SymbolTable,
}

/// Largest kallsyms file accepted (the real one is a few MB).
pub const MAX_KALLSYMS_BYTES: u64 = 256 << 20;

impl Kallsyms {
    /// Parses kallsyms text (`ADDRESS TYPE NAME[\t[MODULE]]` lines). Keeps
    /// the symbol types perf keeps (text, weak, data, bss); other lines and
    /// garbage are skipped. Returns `None` when no symbol has a non-zero
    /// address (as with `kptr_restrict`).
    pub fn parse(text: &[u8]) -> Option<Kallsyms> {
        let mut builder = SymbolTableBuilder::default();
        let mut any_address = false;
        for line in text.split(|&b| b == b'\n') {
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
        })
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
    let space = memchr::memchr(b' ', line)?;
    let (hex, rest) = line.split_at(space);
    if hex.is_empty() || hex.len() > 16 {
        return None;
    }
    let address = u64::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?;
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
    fn restricted_kallsyms_is_rejected() {
        assert!(Kallsyms::parse(b"0000000000000000 T _text\n0000000000000000 T x\n").is_none());
    }
}
