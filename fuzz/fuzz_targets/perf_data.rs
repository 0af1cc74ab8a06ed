//! perf.data bytes (file or pipe mode) through the reader, the event
//! conversion and the collapser, then folding without symbol files.
#![no_main]

use collapse::{CollapseOptions, Collapser, PerfDataReader, SymbolizerOptions};
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(mut reader) = PerfDataReader::from_bytes(Path::new("fuzz.data"), data.to_vec()) else {
        return;
    };
    let info = reader.info().clone();
    let mut collapser = Collapser::new(CollapseOptions::default());
    for (path, build_id) in &info.build_ids {
        collapser.add_build_id(path, build_id);
    }
    reader.read_events(&mut collapser);
    let collapsed = collapser.finish(SymbolizerOptions {
        symfs: Some("/nonexistent-fuzz-symfs".into()),
        kallsyms: Some("/nonexistent-fuzz-kallsyms".into()),
        ..SymbolizerOptions::default()
    });
    let _ = collapsed.stacks.to_lines();
});
