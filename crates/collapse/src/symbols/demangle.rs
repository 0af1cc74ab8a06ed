//! Symbol demangling the way perf shows names: C++ without parameters or
//! return types (`level<24>`, not `level<24>(int)`), Rust without the hash.

use cpp_demangle::{DemangleOptions, ParseOptions};

/// Mangled names longer than this are shown raw: demangling cost grows
/// with length and hostile inputs can be arbitrarily long.
const MAX_MANGLED_BYTES: usize = 16 * 1024;

/// Demangles a raw symbol name; names that are not mangled (C, kernel,
/// JIT) come back unchanged, invalid UTF-8 replaced.
pub fn demangle(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    if raw.len() > MAX_MANGLED_BYTES || !(text.starts_with("_Z") || text.starts_with("_R")) {
        return text.into_owned();
    }
    if is_rust_symbol(&text) {
        if let Ok(demangled) = rustc_demangle::try_demangle(&text) {
            // The alternate form omits the trailing hash.
            return format!("{demangled:#}");
        }
    }
    if text.starts_with("_Z") {
        let parse = ParseOptions::default().recursion_limit(96);
        if let Ok(symbol) = cpp_demangle::Symbol::new_with_options(raw, &parse) {
            let options = DemangleOptions::new()
                .no_params()
                .no_return_type()
                .recursion_limit(128);
            if let Ok(demangled) = symbol.demangle_with_options(&options) {
                return demangled;
            }
        }
    }
    text.into_owned()
}

/// Rust v0 symbols (`_R…`) and legacy ones (`_ZN…17h<16 hex>E`).
fn is_rust_symbol(name: &str) -> bool {
    if name.starts_with("_R") {
        return true;
    }
    // `…17h<16 hex digits>E`, possibly followed by a `.llvm.…` suffix;
    // the path itself may contain `..` (legacy mangling of `::` in types).
    name.match_indices("17h").any(|(i, _)| {
        let hash = &name.as_bytes()[i + 3..];
        hash.len() >= 17
            && hash[..16].iter().all(u8::is_ascii_hexdigit)
            && hash[16] == b'E'
            && (hash.len() == 17 || hash[17] == b'.')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpp_without_parameters() {
        assert_eq!(demangle(b"_Z5levelILi24EEvv"), "level<24>");
        assert_eq!(
            demangle(b"_ZN12_GLOBAL__N_14spinEv"),
            "(anonymous namespace)::spin"
        );
        assert_eq!(demangle(b"_ZN3Foo3barEi"), "Foo::bar");
    }

    #[test]
    fn rust_trait_impls_and_llvm_suffixes() {
        assert_eq!(
            demangle(b"_ZN109_$LT$flamegraph_perf_collapse..collapser..Collapser$u20$as$u20$flamegraph_perf_collapse..event..EventSink$GT$5event17h24ac911ee928f320E.llvm.42"),
            "<flamegraph_perf_collapse::collapser::Collapser as flamegraph_perf_collapse::event::EventSink>::event"
        );
    }

    #[test]
    fn rust_without_hash() {
        assert_eq!(
            demangle(b"_ZN4core3ptr13drop_in_place17h0123456789abcdefE"),
            "core::ptr::drop_in_place"
        );
    }

    #[test]
    fn plain_names_pass_through() {
        assert_eq!(demangle(b"do_sendfile"), "do_sendfile");
        assert_eq!(demangle(b"_Zgarbage"), "_Zgarbage");
        assert_eq!(demangle(b"caf\xe9"), "caf\u{FFFD}");
    }
}
