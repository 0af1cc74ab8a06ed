//! The `/tmp/perf-PID.map` format.
//!
//! Each line is `START SIZE NAME`: START and SIZE in hex, with or without a
//! `0x` prefix (the JDK's `Compiler.perfmap` writes `0x` and 16 digits,
//! perf-map-agent and most other JITs write plain hex), NAME is the rest of
//! the line and may hold spaces. [`PerfMap::parse`] works on bytes from any
//! source; [`read_perf_map`] reads a file the way a root process must read a
//! file another user could have planted.

use std::path::{Path, PathBuf};

use crate::safe_file::{read_file, read_file_in_root, ReadPolicy, UnsafeFile};

/// Largest perf map read, in bytes. A JVM with a very large code cache writes
/// a few tens of MB; anything larger is treated as hostile.
pub const MAX_MAP_BYTES: u64 = 256 << 20;

/// Longest name kept from a map line, in bytes (longer ones are truncated by
/// the consumer's sanitizer anyway; this bounds memory per entry).
const MAX_NAME_BYTES: usize = 4096;

/// One symbol of a perf map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PerfMapEntry {
    /// First address of the symbol.
    pub start: u64,
    /// One past the last address.
    pub end: u64,
    /// Symbol name as written (lossily decoded, trailing CR removed).
    pub name: String,
}

/// A parsed perf map: disjoint address ranges, sorted, each naming a symbol.
///
/// Where lines overlap, the later line wins over the part it covers: JITs
/// append to the map as they (re)compile code into freed space, so the later
/// line describes what is there now. Lines that do not parse are skipped and
/// counted in [`PerfMap::skipped_lines`].
#[derive(Clone, Debug, Default)]
pub struct PerfMap {
    /// Disjoint ranges sorted by start: (start, end, index into `names`).
    ranges: Vec<(u64, u64, u32)>,
    names: Vec<String>,
    skipped_lines: usize,
}

impl PerfMap {
    /// Parses perf map text. Never fails: bad lines are counted and skipped.
    pub fn parse(bytes: &[u8]) -> PerfMap {
        let mut entries: Vec<PerfMapEntry> = Vec::new();
        let mut skipped_lines = 0;
        for line in bytes.split(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            match parse_line(line) {
                Some(entry) => entries.push(entry),
                None => skipped_lines += 1,
            }
        }
        let mut map = PerfMap::from_entries(entries);
        map.skipped_lines = skipped_lines;
        map
    }

    /// Builds a map from entries in file order (later entries win overlaps).
    pub fn from_entries(entries: Vec<PerfMapEntry>) -> PerfMap {
        let mut names = Vec::with_capacity(entries.len());
        let mut tagged: Vec<(u64, u64, u32)> = Vec::with_capacity(entries.len());
        for entry in entries {
            let index = u32::try_from(names.len()).unwrap_or(u32::MAX);
            if index == u32::MAX {
                break;
            }
            tagged.push((entry.start, entry.end, index));
            names.push(entry.name);
        }
        // Fast path: JIT maps are usually already disjoint.
        let mut sorted = tagged.clone();
        sorted.sort_unstable_by_key(|&(start, end, index)| (start, end, index));
        if sorted.windows(2).all(|w| w[0].1 <= w[1].0) {
            return PerfMap {
                ranges: sorted,
                names,
                skipped_lines: 0,
            };
        }
        // Slow path: an interval set that each later line overwrites.
        let mut covered: std::collections::BTreeMap<u64, (u64, u32)> = Default::default();
        for &(start, end, index) in &tagged {
            // Remove or trim everything overlapping [start, end).
            let overlapping: Vec<u64> = covered
                .range(..end)
                .rev()
                .take_while(|(_, &(e, _))| e > start)
                .map(|(&s, _)| s)
                .collect();
            for s in overlapping {
                let (e, i) = covered.remove(&s).expect("key just listed");
                if s < start {
                    covered.insert(s, (start, i));
                }
                if e > end {
                    covered.insert(end, (e, i));
                }
            }
            covered.insert(start, (end, index));
        }
        PerfMap {
            ranges: covered.into_iter().map(|(s, (e, i))| (s, e, i)).collect(),
            names,
            skipped_lines: 0,
        }
    }

    /// The symbol covering `address`, if any.
    pub fn lookup(&self, address: u64) -> Option<&str> {
        let pos = self
            .ranges
            .partition_point(|&(start, _, _)| start <= address);
        let &(_, end, index) = self.ranges.get(pos.checked_sub(1)?)?;
        (address < end).then(|| self.names[index as usize].as_str())
    }

    /// Number of symbols (lines that parsed).
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// True when no line parsed.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Lines that were neither blank nor `START SIZE NAME`.
    pub fn skipped_lines(&self) -> usize {
        self.skipped_lines
    }
}

fn parse_hex(field: &[u8]) -> Option<u64> {
    let digits = field
        .strip_prefix(b"0x")
        .or_else(|| field.strip_prefix(b"0X"))
        .unwrap_or(field);
    if digits.is_empty() || digits.len() > 16 {
        return None;
    }
    let text = std::str::from_utf8(digits).ok()?;
    u64::from_str_radix(text, 16).ok()
}

fn parse_line(line: &[u8]) -> Option<PerfMapEntry> {
    let mut rest = line.trim_ascii_start();
    let mut field = || {
        let end = rest
            .iter()
            .position(u8::is_ascii_whitespace)
            .unwrap_or(rest.len());
        let (f, r) = rest.split_at(end);
        rest = r.trim_ascii_start();
        f
    };
    let start = parse_hex(field())?;
    let size = parse_hex(field())?;
    let name = rest.trim_ascii_end();
    if name.is_empty() || size == 0 {
        return None;
    }
    let end = start.checked_add(size)?;
    let name = &name[..name.len().min(MAX_NAME_BYTES)];
    Some(PerfMapEntry {
        start,
        end,
        name: String::from_utf8_lossy(name).into_owned(),
    })
}

/// A perf map read from disk, with the bytes it was parsed from (kept so
/// the map can be saved beside a recording).
#[derive(Clone, Debug)]
pub struct LoadedMap {
    /// The parsed map.
    pub map: PerfMap,
    /// The file's contents.
    pub bytes: Vec<u8>,
    /// Where it was read.
    pub path: PathBuf,
}

/// Reads and parses a perf map file under `policy` (see
/// [`crate::safe_file::read_checked`]: regular file, no symlink, trusted
/// owner, size cap, bounded reads).
pub fn read_perf_map(path: &Path, policy: &ReadPolicy) -> Result<LoadedMap, UnsafeFile> {
    let bytes = read_file(path, policy)?;
    Ok(LoadedMap {
        map: PerfMap::parse(&bytes),
        bytes,
        path: path.to_owned(),
    })
}

/// Reads `relative` (e.g. `/tmp/perf-42.map`) inside a process's root
/// directory (`/proc/PID/root`) without leaving it.
pub fn read_perf_map_in_root(
    root: &Path,
    relative: &Path,
    policy: &ReadPolicy,
) -> Result<LoadedMap, UnsafeFile> {
    let bytes = read_file_in_root(root, relative, policy)?;
    Ok(LoadedMap {
        map: PerfMap::parse(&bytes),
        bytes,
        path: root.join(relative.strip_prefix("/").unwrap_or(relative)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_jdk_and_plain_formats() {
        let text = b"0x00007f0398ec7a40 0x0000000000000150 long Busy.fib(int)\r\n\
                     7f0398ec7b90 40 Interpreter\n\
                     \n\
                     garbage line\n\
                     7f0398ec8000 10 Lcom/x/Y$Z;.<init>(I)V\n";
        let map = PerfMap::parse(text);
        assert_eq!(map.len(), 3);
        assert_eq!(map.skipped_lines(), 1);
        assert_eq!(map.lookup(0x7f0398ec7a40), Some("long Busy.fib(int)"));
        assert_eq!(map.lookup(0x7f0398ec7b8f), Some("long Busy.fib(int)"));
        assert_eq!(map.lookup(0x7f0398ec7b90), Some("Interpreter"));
        assert_eq!(map.lookup(0x7f0398ec7bd0), None);
        assert_eq!(map.lookup(0x7f0398ec8005), Some("Lcom/x/Y$Z;.<init>(I)V"));
        assert_eq!(map.lookup(0), None);
    }

    #[test]
    fn later_lines_win_overlaps() {
        let map = PerfMap::parse(b"1000 100 old\n1040 20 new\n10f0 20 tail\n");
        assert_eq!(map.lookup(0x1000), Some("old"));
        assert_eq!(map.lookup(0x1045), Some("new"));
        assert_eq!(map.lookup(0x1060), Some("old"));
        assert_eq!(map.lookup(0x10f5), Some("tail"));
        assert_eq!(map.lookup(0x1105), Some("tail"));
        assert_eq!(map.lookup(0x1110), None);
    }

    #[test]
    fn rejects_overflow_and_zero_sizes() {
        let map = PerfMap::parse(b"ffffffffffffffff 10 wrap\n1000 0 empty\n1000 10\n");
        assert!(map.is_empty());
        assert_eq!(map.skipped_lines(), 3);
    }

    #[test]
    fn reads_maps_under_a_policy_and_refuses_symlinks() {
        let dir = std::env::temp_dir().join(format!("jvm-maps-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let target = dir.join("target.map");
        std::fs::write(&target, "1000 10 f\n").unwrap();
        let link = dir.join("perf-1.map");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let policy = ReadPolicy::for_target(None, MAX_MAP_BYTES);
        let loaded = read_perf_map(&target, &policy).unwrap();
        assert_eq!(loaded.map.lookup(0x1005), Some("f"));
        assert_eq!(loaded.bytes, b"1000 10 f\n");
        assert!(matches!(
            read_perf_map(&link, &policy),
            Err(UnsafeFile::Io { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
