//! Function symbols of ELF files, looked up by file offset as perf does.

use std::fs::File;
use std::path::{Path, PathBuf};

use object::{Object, ObjectSection, ObjectSegment, ObjectSymbol, SectionKind, SymbolKind};

use super::table::{Binding, Flavor, SymbolTable, SymbolTableBuilder};

/// Why an ELF file gave no symbols.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ElfProblem {
    /// No file at the path.
    NotFound(PathBuf),
    /// The file exists but could not be read or is not a regular file.
    Unreadable(PathBuf, String),
    /// The file is not a parsable ELF file.
    NotElf(PathBuf, String),
    /// The file is not the one that was recorded.
    BuildIdMismatch {
        /// The file.
        path: PathBuf,
        /// Build id in the recording.
        expected: String,
        /// Build id of the file.
        found: String,
    },
}

impl std::fmt::Display for ElfProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ElfProblem::NotFound(path) => write!(f, "{}: not found", path.display()),
            ElfProblem::Unreadable(path, why) => write!(f, "{}: {why}", path.display()),
            ElfProblem::NotElf(path, why) => {
                write!(f, "{}: not an ELF file ({why})", path.display())
            }
            ElfProblem::BuildIdMismatch {
                path,
                expected,
                found,
            } => write!(
                f,
                "{}: build id {found} differs from the recorded {expected}; not using it",
                path.display()
            ),
        }
    }
}

/// A loadable segment: file range and where it is mapped.
#[derive(Clone, Copy, Debug)]
struct Segment {
    offset: u64,
    file_size: u64,
    vaddr: u64,
    mem_size: u64,
}

/// Symbols of one ELF object, keyed by file offset (what a mapping gives).
#[derive(Debug)]
pub struct ElfSymbols {
    table: SymbolTable,
    segments: Vec<Segment>,
    /// File holding DWARF for inline expansion, when one was found.
    dwarf_file: Option<PathBuf>,
}

/// A file read into memory, by mmap or copy.
enum Bytes {
    Mapped(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl std::ops::Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Mapped(m) => m,
            Bytes::Owned(v) => v,
        }
    }
}

/// The file system an object's recorded path refers to.
pub enum FileRoot {
    /// This machine's, under a symfs prefix (`/` without one).
    Host(PathBuf),
    /// A live process's root (`/proc/PID/root`, e.g. a container's),
    /// walked with `openat2(RESOLVE_IN_ROOT)` so that no symlink inside it
    /// can lead to the host's files.
    Process {
        /// An fd of `/proc/PID/root`.
        root: std::os::fd::OwnedFd,
        /// `/proc/PID/root`, for messages.
        shown: PathBuf,
    },
}

impl FileRoot {
    /// Where a recorded absolute path is, for messages.
    pub fn display(&self, path: &Path) -> PathBuf {
        let relative = path.strip_prefix("/").unwrap_or(path);
        match self {
            FileRoot::Host(root) => root.join(relative),
            FileRoot::Process { shown, .. } => shown.join(relative),
        }
    }

    fn open(&self, path: &Path) -> std::io::Result<File> {
        match self {
            FileRoot::Host(_) => File::open(self.display(path)),
            FileRoot::Process { root, .. } => {
                flamegraph_perf_jvm_maps::safe_file::open_beneath(root, path, O_RDONLY)
                    .map(File::from)
            }
        }
    }

    /// Whether paths can be handed to other libraries as they are.
    fn is_host(&self) -> bool {
        matches!(self, FileRoot::Host(_))
    }
}

/// `O_RDONLY` (0 on Linux).
const O_RDONLY: i32 = 0;

/// Largest object read into memory when it cannot be mapped safely.
const MAX_READ_BYTES: u64 = 1 << 30;

/// Opens and maps (or reads) the object at recorded path `path`. Files
/// that someone other than root could truncate under us are read, not
/// mapped: truncating a mapped file would crash this process.
fn open_elf(root: &FileRoot, path: &Path) -> Result<Bytes, ElfProblem> {
    use std::os::unix::fs::MetadataExt;
    let shown = root.display(path);
    let file = root.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            ElfProblem::NotFound(shown.clone())
        } else {
            ElfProblem::Unreadable(shown.clone(), e.to_string())
        }
    })?;
    let metadata = file
        .metadata()
        .map_err(|e| ElfProblem::Unreadable(shown.clone(), e.to_string()))?;
    if !metadata.is_file() {
        return Err(ElfProblem::Unreadable(shown, "not a regular file".into()));
    }
    let others_can_write = metadata.uid() != 0 || metadata.mode() & 0o022 != 0;
    if others_can_write {
        if metadata.len() > MAX_READ_BYTES {
            return Err(ElfProblem::Unreadable(
                shown,
                "over 1 GiB and not owned by root".into(),
            ));
        }
        let mut bytes = Vec::with_capacity(metadata.len() as usize);
        use std::io::Read;
        file.take(MAX_READ_BYTES)
            .read_to_end(&mut bytes)
            .map_err(|e| ElfProblem::Unreadable(shown, e.to_string()))?;
        return Ok(Bytes::Owned(bytes));
    }
    // SAFETY: a read-only mapping of a root-owned file nobody else may
    // write; see above for the others.
    let map = unsafe { memmap2::Mmap::map(&file) }
        .map_err(|e| ElfProblem::Unreadable(shown, e.to_string()))?;
    Ok(Bytes::Mapped(map))
}

/// `bytes` in lower-case hex, the way build ids are written.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Where to look for separate debug files, perf's order: the
/// `.gnu_debuglink` name next to the binary, in `.debug/` beside it, under
/// `/usr/lib/debug/<dir>/`, then `/usr/lib/debug/.build-id/xx/rest.debug`.
fn debug_file_candidates(
    binary: &Path,
    debuglink: Option<&[u8]>,
    build_id: Option<&[u8]>,
) -> Vec<PathBuf> {
    let mut candidates = Vec::new();
    let debug_root = Path::new("/usr/lib/debug");
    if let (Some(link), Some(dir)) = (debuglink, binary.parent()) {
        if let Ok(link) = std::str::from_utf8(link) {
            if !link.contains('/') && !link.is_empty() {
                candidates.push(dir.join(link));
                candidates.push(dir.join(".debug").join(link));
                let relative_dir = dir.strip_prefix("/").unwrap_or(dir);
                candidates.push(debug_root.join(relative_dir).join(link));
            }
        }
    }
    if let Some(id) = build_id.filter(|id| id.len() >= 2) {
        let id = hex(id);
        candidates.push(
            debug_root
                .join(".build-id")
                .join(&id[..2])
                .join(format!("{}.debug", &id[2..])),
        );
    }
    candidates.retain(|c| c != binary);
    candidates
}

impl ElfSymbols {
    /// Loads the symbols of the ELF file at recorded path `path` in `root`.
    /// When `expected_build_id` is given, a file with a different build id
    /// is refused, as perf refuses it. Separate debug files in the same
    /// root supply `.symtab` when the binary has none.
    pub fn load(
        root: &FileRoot,
        path: &Path,
        expected_build_id: Option<&[u8]>,
    ) -> Result<ElfSymbols, ElfProblem> {
        let bytes = open_elf(root, path)?;
        let shown = root.display(path);
        let file = object::File::parse(&*bytes)
            .map_err(|e| ElfProblem::NotElf(shown.clone(), e.to_string()))?;
        let build_id = file.build_id().ok().flatten();
        if let (Some(expected), Some(found)) = (expected_build_id, build_id) {
            // Kernels pad MMAP2 build ids with zeros up to 20 bytes.
            let expected_trimmed = &expected[..expected.len().min(found.len())];
            if expected_trimmed != found {
                return Err(ElfProblem::BuildIdMismatch {
                    path: shown,
                    expected: hex(expected),
                    found: hex(found),
                });
            }
        }
        let segments = segments_of(&file);
        let mut symbols = ElfSymbols {
            table: SymbolTable::default(),
            segments,
            // DWARF is read by path; only host paths are safe to hand over.
            dwarf_file: (root.is_host() && has_dwarf(&file)).then(|| shown.clone()),
        };
        if has_function_symbols(file.symbols()) {
            symbols.table = build_table(&file, &symbols.segments, file.symbols());
            return Ok(symbols);
        }
        let debuglink = file.gnu_debuglink().ok().flatten().map(|(name, _)| name);
        for candidate in debug_file_candidates(path, debuglink, build_id) {
            let Ok(debug_bytes) = open_elf(root, &candidate) else {
                continue;
            };
            let Ok(debug_file) = object::File::parse(&*debug_bytes) else {
                continue;
            };
            let debug_id = debug_file.build_id().ok().flatten();
            if build_id.is_some() && debug_id.is_some() && debug_id != build_id {
                continue;
            }
            if has_function_symbols(debug_file.symbols()) {
                symbols.table = build_table(&debug_file, &symbols.segments, debug_file.symbols());
                if root.is_host() && has_dwarf(&debug_file) {
                    symbols.dwarf_file = Some(root.display(&candidate));
                }
                return Ok(symbols);
            }
        }
        symbols.table = build_table(&file, &symbols.segments, file.dynamic_symbols());
        Ok(symbols)
    }

    /// Loads symbols from an in-memory image (the vDSO).
    pub fn from_image(image: Vec<u8>) -> Result<ElfSymbols, ElfProblem> {
        let bytes = Bytes::Owned(image);
        let file = object::File::parse(&*bytes)
            .map_err(|e| ElfProblem::NotElf(PathBuf::from("[vdso]"), e.to_string()))?;
        let segments = segments_of(&file);
        let source = if has_function_symbols(file.symbols()) {
            file.symbols()
        } else {
            file.dynamic_symbols()
        };
        let table = build_table(&file, &segments, source);
        Ok(ElfSymbols {
            table,
            segments,
            dwarf_file: None,
        })
    }

    /// The raw (mangled) name of the function at a file offset.
    pub fn lookup(&self, file_offset: u64) -> Option<&[u8]> {
        self.table.lookup(file_offset).map(|(_, name)| name)
    }

    /// The virtual address a file offset is loaded at (for DWARF lookups).
    pub fn vaddr_of_offset(&self, file_offset: u64) -> Option<u64> {
        self.segments
            .iter()
            .find(|s| file_offset >= s.offset && file_offset - s.offset < s.file_size)
            .map(|s| file_offset - s.offset + s.vaddr)
    }

    /// The file holding DWARF debug info for this object, if any.
    pub fn dwarf_file(&self) -> Option<&Path> {
        self.dwarf_file.as_deref()
    }

    /// Number of symbols.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// True when the object has no usable symbols.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }
}

fn segments_of(file: &object::File<'_>) -> Vec<Segment> {
    file.segments()
        .map(|s| {
            let (offset, file_size) = s.file_range();
            Segment {
                offset,
                file_size,
                vaddr: s.address(),
                mem_size: s.size(),
            }
        })
        .collect()
}

fn has_dwarf(file: &object::File<'_>) -> bool {
    file.section_by_name(".debug_info")
        .is_some_and(|s| s.size() > 0 && s.kind() != SectionKind::UninitializedData)
}

fn has_function_symbols<'a>(mut symbols: impl Iterator<Item = object::Symbol<'a, 'a>>) -> bool {
    symbols.any(|s| s.kind() == SymbolKind::Text && !s.is_undefined())
}

/// Collects function, object and text-label symbols as perf does
/// (`dso__load_sym`), converted from virtual addresses to file offsets.
fn build_table<'a>(
    file: &object::File<'a>,
    segments: &[Segment],
    symbols: impl Iterator<Item = object::Symbol<'a, 'a>>,
) -> SymbolTable {
    let mut builder = SymbolTableBuilder::default();
    for symbol in symbols {
        let Some(section_index) = symbol.section_index() else {
            continue;
        };
        let name = match symbol.name_bytes() {
            Ok(name) if !name.is_empty() => name,
            _ => continue,
        };
        let Ok(section) = file.section_by_index(section_index) else {
            continue;
        };
        let allocated = match section.flags() {
            object::SectionFlags::Elf { sh_flags, .. } => {
                (sh_flags & object::elf::SHF_ALLOC).0 != 0
            }
            _ => true,
        };
        if !allocated {
            continue;
        }
        let keep = match symbol.kind() {
            SymbolKind::Text | SymbolKind::Data => true,
            // Labels (STT_NOTYPE) only in text sections.
            SymbolKind::Unknown => section
                .name_bytes()
                .is_ok_and(|n| n.windows(4).any(|w| w == b"text")),
            _ => false,
        };
        if !keep {
            continue;
        }
        let vaddr = symbol.address();
        let Some(segment) = segments
            .iter()
            .find(|s| vaddr >= s.vaddr && vaddr - s.vaddr < s.mem_size.max(s.file_size))
        else {
            continue;
        };
        let offset = vaddr - segment.vaddr + segment.offset;
        let binding = if symbol.is_weak() {
            Binding::Weak
        } else if symbol.is_global() {
            Binding::Global
        } else {
            Binding::Local
        };
        builder.push(offset, symbol.size(), binding, name);
    }
    builder.build(Flavor::Elf)
}
