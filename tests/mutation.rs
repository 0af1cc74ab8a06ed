//! Seeded mutations of every fixture recording through the reader and the
//! collapser: truncation at every record boundary (exactly the complete
//! records before the cut are read), bit flips anywhere, and edits of
//! record size fields. Nothing may panic.

mod support;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use collapse::{CollapseOptions, Collapser, PerfDataReader, ReadStats, SymbolizerOptions};
use support::*;

/// Reads a recording's records into a collapser; `None` if it does not open.
fn read_records(bytes: &[u8]) -> Option<ReadStats> {
    let mut reader = PerfDataReader::from_bytes(Path::new("mutated.data"), bytes.to_vec()).ok()?;
    let mut collapser = Collapser::new(CollapseOptions {
        idle_filter: None,
        ..CollapseOptions::default()
    });
    Some(reader.read_events(&mut collapser))
}

/// Reads a recording fully, folding included (without symbol files).
fn read(bytes: &[u8]) -> Option<ReadStats> {
    let mut reader = PerfDataReader::from_bytes(Path::new("mutated.data"), bytes.to_vec()).ok()?;
    let mut collapser = Collapser::new(CollapseOptions::default());
    let stats = reader.read_events(&mut collapser);
    let collapsed = collapser.finish(SymbolizerOptions {
        symfs: Some("/nonexistent-mutation-symfs".into()),
        kallsyms: Some("/nonexistent-mutation-kallsyms".into()),
        ..SymbolizerOptions::default()
    });
    let _ = collapsed.stacks.to_lines();
    Some(stats)
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// Record boundaries (start, end, type) of the data, walked independently.
fn records_of(bytes: &[u8]) -> (bool, Vec<(usize, usize, u32)>) {
    let pipe = u64_at(bytes, 8) == 16;
    let (mut at, end) = if pipe {
        (16, bytes.len())
    } else {
        let offset = u64_at(bytes, 40) as usize;
        (offset, offset + u64_at(bytes, 48) as usize)
    };
    let mut records = Vec::new();
    while at + 8 <= end {
        let size = u16_at(bytes, at + 6) as usize;
        if size < 8 || at + size > end {
            break;
        }
        records.push((at, at + size, u32_at(bytes, at)));
        at += size;
    }
    (pipe, records)
}

/// Records the reader hands out for the complete records before `cut`:
/// not FINISHED_ROUND (consumed), and in pipe mode not the leading
/// attribute/feature records (consumed while opening).
fn expected_records(pipe: bool, records: &[(usize, usize, u32)], cut: usize) -> u64 {
    let mut leading = pipe;
    let mut count = 0;
    for &(_, end, kind) in records {
        if end > cut {
            break;
        }
        if leading && (kind == 64 || kind == 80) {
            continue;
        }
        leading = false;
        if kind != 68 {
            count += 1;
        }
    }
    count
}

/// xorshift64*: a fixed sequence for a fixed seed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn fixtures_with_data() -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(root().join("fixtures"))
        .unwrap()
        .filter_map(|e| {
            let dir = e.ok()?.path();
            let bytes = std::fs::read(dir.join("perf.data")).ok()?;
            Some((dir.file_name()?.to_string_lossy().into_owned(), bytes))
        })
        .collect();
    files.sort();
    files
}

#[test]
fn truncation_at_every_record_boundary_reads_exactly_the_records_before_it() {
    let mut failures = Vec::new();
    let mut cases = 0;
    for (name, bytes) in fixtures_with_data() {
        let (pipe, records) = records_of(&bytes);
        // Compressed containers expand into more records than they are.
        let countable = !records.iter().any(|&(_, _, kind)| kind == 81 || kind == 83);
        // Every record boundary, a cut inside every fifth record, and cuts
        // inside the header.
        let mut cuts: Vec<usize> = records.iter().map(|&(_, end, _)| end).collect();
        cuts.extend(records.iter().step_by(5).map(|&(start, _, _)| start + 3));
        cuts.extend([0, 7, 8, 15, 16, 50, 103, 104, 200, bytes.len()]);
        for cut in cuts {
            let cut = cut.min(bytes.len());
            cases += 1;
            let result = catch_unwind(AssertUnwindSafe(|| read_records(&bytes[..cut])));
            match result {
                Err(_) => failures.push(format!("{name}: panic when cut at {cut}")),
                Ok(Some(stats))
                    if countable && cut >= records.first().map_or(usize::MAX, |r| r.0) =>
                {
                    let expected = expected_records(pipe, &records, cut);
                    if stats.records != expected {
                        failures.push(format!(
                            "{name}: cut at {cut}: read {} records, {expected} were complete",
                            stats.records
                        ));
                    }
                    // A pipe stream cut between records looks complete; a
                    // file says how long its data is.
                    let whole = records.last().is_some_and(|r| r.1 <= cut)
                        || (pipe && records.iter().any(|r| r.1 == cut));
                    if !whole && !stats.is_partial() {
                        failures.push(format!("{name}: cut at {cut} not reported as partial"));
                    }
                }
                Ok(_) => {}
            }
        }
    }
    assert!(cases > 3000, "{cases} truncations");
    assert!(
        failures.is_empty(),
        "{} failures, first: {:#?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );
}

#[test]
fn bit_flips_and_size_edits_never_panic() {
    let mut rng = Rng(0x5EED_F1A6_2026_1129);
    let mut failures = Vec::new();
    let mut opened = 0;
    for (name, bytes) in fixtures_with_data() {
        let (_, records) = records_of(&bytes);
        for round in 0..150 {
            let mut mutated = bytes.clone();
            // Flip 1–8 random bits, favouring the header and first records.
            for _ in 0..1 + rng.below(8) {
                let span = if rng.below(2) == 0 {
                    mutated.len().min(4096)
                } else {
                    mutated.len()
                };
                let at = rng.below(span);
                mutated[at] ^= 1 << rng.below(8);
            }
            if catch_unwind(AssertUnwindSafe(|| read(&mutated))).is_err() {
                failures.push(format!("{name}: panic after bit flips, round {round}"));
            }
        }
        for round in 0..100 {
            let mut mutated = bytes.clone();
            let (start, _, _) = records[rng.below(records.len())];
            let size: u16 = match rng.below(4) {
                0 => 0,
                1 => 65535,
                2 => 8,
                _ => rng.next() as u16,
            };
            mutated[start + 6..start + 8].copy_from_slice(&size.to_le_bytes());
            match catch_unwind(AssertUnwindSafe(|| read(&mutated))) {
                Err(_) => failures.push(format!(
                    "{name}: panic with record size {size} at {start}, round {round}"
                )),
                Ok(Some(_)) => opened += 1,
                Ok(None) => {}
            }
        }
    }
    assert!(
        opened > 100,
        "size edits mostly still open the file ({opened})"
    );
    assert!(failures.is_empty(), "{failures:#?}");
}

/// Inputs that crashed, or would crash, an unchecked reader (and anything
/// the fuzzers ever found) are replayed: in process without a panic, and
/// through the binary with a clean exit status (0, 2 or 3, never a crash).
#[test]
fn fuzz_regressions_stay_fixed() {
    let dir = root().join("fixtures/fuzz-regressions");
    let mut replayed = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.ends_with(".sh") || name.ends_with(".md") {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        assert!(
            catch_unwind(AssertUnwindSafe(|| read(&bytes))).is_ok(),
            "{name}: panic"
        );
        let output = run(&["-i", path.to_str().unwrap(), "--folded"]);
        let code = output.status.code();
        assert!(
            matches!(code, Some(0 | 2 | 3)),
            "{name}: exit {code:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        replayed += 1;
    }
    assert!(replayed >= 5, "{replayed} regression inputs");
}
