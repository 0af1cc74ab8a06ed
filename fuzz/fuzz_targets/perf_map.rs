//! perf-PID.map text through the parser and lookups.
#![no_main]

use jvm_maps::PerfMap;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let map = PerfMap::parse(data);
    for probe in data.chunks(8).take(64) {
        let mut raw = [0u8; 8];
        raw[..probe.len()].copy_from_slice(probe);
        let _ = map.lookup(u64::from_le_bytes(raw));
    }
    let _ = (map.len(), map.skipped_lines());
});
