//! kallsyms text through the parser (with perf's size and alias rules) and lookups.
#![no_main]

use collapse::symbols::kallsyms::Kallsyms;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(kallsyms) = Kallsyms::parse(data) else {
        return;
    };
    let _ = kallsyms.address_of(b"_text");
    for probe in data.chunks(8).take(64) {
        let mut raw = [0u8; 8];
        raw[..probe.len()].copy_from_slice(probe);
        let _ = kallsyms.lookup(u64::from_le_bytes(raw));
    }
});
