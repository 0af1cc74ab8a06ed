//! Symbolization: (code object, address) → function names.
//!
//! Kernel addresses resolve through kallsyms, ELF objects through their
//! `.symtab` (or a separate debug file's, then `.dynsym`), the vDSO through
//! this process's own copy, and JIT code through `/tmp/perf-PID.map`. Each
//! object is loaded at most once, and only if some address needs it.

pub mod demangle;
pub mod elf;
pub mod kallsyms;
mod kernel_cache;
pub mod table;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::dso::{Dso, DsoKind};
use elf::{ElfProblem, ElfSymbols, FileRoot};
use flamegraph_perf_jvm_maps::{read_perf_map, LoadedMap, ReadPolicy, UnsafeFile, MAX_MAP_BYTES};
use kallsyms::Kallsyms;

/// Where symbols come from. Defaults match `perf script` on the recording host.
#[derive(Clone, Debug, Default)]
pub struct SymbolizerOptions {
    /// Directory prefixed to every binary and perf-map path, like perf's
    /// `--symfs`. Default: none (paths are used as recorded).
    pub symfs: Option<PathBuf>,
    /// Kernel symbol file. Default: none, meaning `/proc/kallsyms`.
    pub kallsyms: Option<PathBuf>,
    /// Expand functions inlined into each frame from DWARF, as `_[i]`
    /// frames. Default: `false` (perf script does not show them either).
    pub inline: bool,
    /// Show raw (mangled) C++ and Rust names. Default: `false`.
    pub no_demangle: bool,
    /// Directories with kept perf maps (`perf-PID.map`), searched first.
    /// Default: none.
    pub perf_map_dirs: Vec<PathBuf>,
    /// The recording is of processes that may still run: their perf maps
    /// are looked for inside their own root (containers) and may be owned
    /// by their user. Default: `false` (a pid in an old recording may now
    /// be another process).
    pub live_processes: bool,
    /// Kernel release the recording was made on, when known. The vDSO is
    /// symbolized from this process's own copy (as perf does) only when the
    /// recorded build id or, lacking one, this release matches the running
    /// kernel. Default: unknown (then the vDSO is trusted like perf does).
    pub recorded_kernel_release: Option<String>,
}

impl SymbolizerOptions {
    /// Options with every default.
    pub fn new() -> SymbolizerOptions {
        SymbolizerOptions::default()
    }
}

/// One name a frame resolves to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SymbolName {
    /// Demangled name.
    pub name: String,
    /// True for a function inlined into the frame's real function.
    pub inlined: bool,
    /// Where in the source this function was at the address: the line
    /// that ran, or for a function that something was inlined into, the
    /// line it was inlined at. Known only from DWARF (`--inline`).
    pub source: Option<SourceLine>,
}

/// A line of a source file.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SourceLine {
    /// The file as DWARF names it, joined to its compilation directory.
    pub file: String,
    /// Line number, from 1; 0 when DWARF gives the file only.
    pub line: u32,
}

/// What symbolizing one object produced.
#[derive(Debug, Default)]
pub struct ObjectSymbols {
    /// For each requested address, its names outermost first (the real
    /// function, then inlined callees); empty when unresolved.
    pub names: Vec<Vec<SymbolName>>,
    /// Why the object gave no symbols, when it did not.
    pub problem: Option<String>,
    /// For JIT code: the perf map's bytes, to keep beside a recording.
    pub perf_map: Option<Vec<u8>>,
}

/// Kernel symbols being loaded on another thread, so reading them
/// overlaps reading the recording.
#[derive(Debug)]
pub struct KernelSymbolsPreload {
    path: PathBuf,
    handle: std::thread::JoinHandle<KernelTables>,
}

/// Kernel symbol tables loaded so far.
#[derive(Debug, Default)]
struct KernelTables {
    /// The core kernel's part, from the per-boot cache.
    core: Option<Kallsyms>,
    /// The whole table, from the kallsyms file.
    full: Option<Result<Kallsyms, String>>,
}

impl KernelSymbolsPreload {
    /// Starts loading the kernel symbols `options` name; `None` if no
    /// thread could be started (they are then loaded when needed).
    pub fn start(options: &SymbolizerOptions) -> Option<KernelSymbolsPreload> {
        let path = kallsyms_path(options);
        let cached = uses_cache(options);
        let thread_path = path.clone();
        let handle = std::thread::Builder::new()
            .name("kallsyms".into())
            .spawn(move || {
                if cached {
                    if let Some(core) = kernel_cache::load() {
                        return KernelTables {
                            core: Some(core),
                            full: None,
                        };
                    }
                }
                KernelTables {
                    core: None,
                    full: Some(load_kallsyms(&thread_path, cached)),
                }
            })
            .ok()?;
        Some(KernelSymbolsPreload { path, handle })
    }
}

fn kallsyms_path(options: &SymbolizerOptions) -> PathBuf {
    options
        .kallsyms
        .clone()
        .unwrap_or_else(|| PathBuf::from("/proc/kallsyms"))
}

/// The per-boot cache stands in for this machine's /proc/kallsyms only.
fn uses_cache(options: &SymbolizerOptions) -> bool {
    options.kallsyms.is_none() && kernel_cache::enabled()
}

/// Reads and parses a kallsyms file; with `keep_core`, also caches the core
/// kernel's part for later runs of this boot.
fn load_kallsyms(path: &Path, keep_core: bool) -> Result<Kallsyms, String> {
    let text = read_bounded(path, kallsyms::MAX_KALLSYMS_BYTES)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let kallsyms = Kallsyms::parse(&text).ok_or_else(|| {
        format!(
            "{}: no kernel addresses (kptr_restrict?); kernel frames stay unresolved",
            path.display()
        )
    })?;
    if keep_core {
        if let Some(core) = kallsyms.core_part() {
            kernel_cache::store(&core);
        }
    }
    Ok(kallsyms)
}

/// Kernel relocation reference: the symbol named in the kernel map's path
/// (`[kernel.kallsyms]_text` → `_text`) and its address at record time.
#[derive(Clone, Debug)]
pub struct KernelReference {
    /// Symbol name.
    pub symbol: String,
    /// Its address when recorded.
    pub address: u64,
}

/// Resolves addresses to names; shareable across threads.
#[derive(Debug)]
pub struct Symbolizer {
    options: SymbolizerOptions,
    kernel_reference: Option<KernelReference>,
    /// The whole kernel symbol table, loaded when first needed.
    kallsyms: OnceLock<Result<Kallsyms, String>>,
    /// The core kernel's part from the per-boot cache, if there is one.
    kernel_core: OnceLock<Option<Kallsyms>>,
}

impl Symbolizer {
    /// A symbolizer; nothing is loaded until needed.
    pub fn new(
        options: SymbolizerOptions,
        kernel_reference: Option<KernelReference>,
    ) -> Symbolizer {
        Symbolizer {
            options,
            kernel_reference,
            kallsyms: OnceLock::new(),
            kernel_core: OnceLock::new(),
        }
    }

    /// The path a recorded path is read from (prefixed by symfs).
    pub fn host_path(&self, recorded: &[u8]) -> PathBuf {
        use std::os::unix::ffi::OsStrExt;
        let recorded = recorded.strip_suffix(b" (deleted)").unwrap_or(recorded);
        let path = Path::new(std::ffi::OsStr::from_bytes(recorded));
        match &self.options.symfs {
            Some(root) => root.join(path.strip_prefix("/").unwrap_or(path)),
            None => path.to_owned(),
        }
    }

    /// The file system an object of process `pid` is read from: symfs if
    /// given; for a live recording, the process's own root when it differs
    /// from ours (a container), walked so nothing inside can reach the host;
    /// else this machine's.
    fn file_root(&self, pid: i32) -> FileRoot {
        if let Some(symfs) = &self.options.symfs {
            return FileRoot::Host(symfs.clone());
        }
        if self.options.live_processes && pid > 0 {
            let shown = PathBuf::from(format!("/proc/{pid}/root"));
            let same_as_ours = |a: &Path, b: &Path| {
                use std::os::unix::fs::MetadataExt;
                match (std::fs::metadata(a), std::fs::metadata(b)) {
                    (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
                    _ => true,
                }
            };
            if !same_as_ours(&shown, Path::new("/")) {
                if let Ok(root) = flamegraph_perf_jvm_maps::safe_file::open_directory(&shown) {
                    return FileRoot::Process { root, shown };
                }
            }
        }
        FileRoot::Host(PathBuf::from("/"))
    }

    fn kallsyms(&self) -> &Result<Kallsyms, String> {
        self.kallsyms.get_or_init(|| {
            load_kallsyms(
                &kallsyms_path(&self.options),
                uses_cache(&self.options) && self.kernel_core.get().is_none_or(Option::is_none),
            )
        })
    }

    fn kernel_core(&self) -> Option<&Kallsyms> {
        self.kernel_core
            .get_or_init(|| uses_cache(&self.options).then(kernel_cache::load).flatten())
            .as_ref()
    }

    /// Uses kernel symbols loaded ahead of time, if they came from the
    /// file these options name.
    pub fn adopt_kernel_symbols(&self, preload: KernelSymbolsPreload) {
        if preload.path != kallsyms_path(&self.options) {
            return;
        }
        if let Ok(tables) = preload.handle.join() {
            if let Some(core) = tables.core {
                let _ = self.kernel_core.set(Some(core));
            }
            if let Some(full) = tables.full {
                let _ = self.kallsyms.set(full);
            }
        }
    }

    /// Resolves sorted, distinct `addresses` in `dso`. Addresses are what
    /// the collapser recorded: file offsets for ELF objects and the vDSO,
    /// absolute addresses for the kernel and JIT code.
    pub fn resolve(&self, dso: &Dso, addresses: &[u64]) -> ObjectSymbols {
        match dso.kind {
            DsoKind::Kernel | DsoKind::KernelModule => self.resolve_kernel(addresses),
            DsoKind::Elf => {
                use std::os::unix::ffi::OsStrExt;
                let recorded = dso.name.strip_suffix(b" (deleted)").unwrap_or(&dso.name);
                let path = Path::new(std::ffi::OsStr::from_bytes(recorded));
                let root = self.file_root(dso.pid);
                let mut loaded = ElfSymbols::load(&root, path, dso.build_id.as_deref());
                // Paths synthesized from /proc/PID/maps of a chroot are
                // relative to our root, not the process's: fall back to
                // ours when the file is not inside (as perf does).
                if matches!(root, FileRoot::Process { .. })
                    && matches!(loaded, Err(ElfProblem::NotFound(_)))
                {
                    loaded = ElfSymbols::load(
                        &FileRoot::Host(PathBuf::from("/")),
                        path,
                        dso.build_id.as_deref(),
                    );
                }
                match loaded {
                    Ok(symbols) => self.resolve_elf(&symbols, addresses),
                    Err(problem) => unresolved(addresses, problem_text(&problem)),
                }
            }
            DsoKind::Vdso => match self.vdso_for(dso) {
                Ok(symbols) => self.resolve_elf(symbols, addresses),
                Err(why) => unresolved(addresses, format!("[vdso]: {why}")),
            },
            DsoKind::PerfMap(pid) => match self.load_perf_map(pid, &dso.name) {
                Ok(loaded) => ObjectSymbols {
                    names: addresses
                        .iter()
                        .map(|&a| {
                            loaded
                                .map
                                .lookup(a)
                                .map(|name| {
                                    vec![SymbolName {
                                        name: name.to_owned(),
                                        inlined: false,
                                        source: None,
                                    }]
                                })
                                .unwrap_or_default()
                        })
                        .collect(),
                    problem: None,
                    perf_map: Some(loaded.bytes),
                },
                Err(problem) => unresolved(addresses, problem),
            },
            DsoKind::Other => unresolved(addresses, String::new()),
        }
    }

    /// This process's vDSO, if it is the one that was recorded.
    fn vdso_for(&self, dso: &Dso) -> Result<&'static ElfSymbols, String> {
        let (symbols, build_id) = vdso_symbols().ok_or("no vDSO image in this process")?;
        match (&dso.build_id, build_id) {
            (Some(recorded), Some(ours)) => {
                if recorded[..recorded.len().min(ours.len())] != ours[..] {
                    return Err("the recorded vDSO differs from this kernel's".into());
                }
            }
            _ => {
                let ours =
                    std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
                if let Some(recorded) = &self.options.recorded_kernel_release {
                    if recorded.trim() != ours.trim() {
                        return Err(format!(
                            "recorded on kernel {recorded}, this is {}",
                            ours.trim()
                        ));
                    }
                }
            }
        }
        Ok(symbols)
    }

    fn resolve_kernel(&self, addresses: &[u64]) -> ObjectSymbols {
        // perf relocates kallsyms by the reference symbol: the kernel may
        // sit elsewhere now (KASLR) than when it was recorded.
        let delta = |kallsyms: &Kallsyms| {
            self.kernel_reference
                .as_ref()
                .and_then(|r| {
                    Some(
                        kallsyms
                            .address_of(r.symbol.as_bytes())?
                            .wrapping_sub(r.address),
                    )
                })
                .unwrap_or(0)
        };
        // The cached core kernel answers when every address lies in it.
        let core = self.kernel_core().and_then(|core| {
            let delta = delta(core);
            let covers = core.covers()?;
            addresses
                .iter()
                .all(|&a| covers.contains(&a.wrapping_add(delta)))
                .then_some((core, delta))
        });
        let (kallsyms, delta) = match core {
            Some(found) => found,
            None => match self.kallsyms() {
                Ok(k) => (k, delta(k)),
                Err(e) => return unresolved(addresses, e.clone()),
            },
        };
        ObjectSymbols {
            names: addresses
                .iter()
                .map(|&a| {
                    kallsyms
                        .lookup(a.wrapping_add(delta))
                        .map(|name| {
                            vec![SymbolName {
                                name: String::from_utf8_lossy(name).into_owned(),
                                inlined: false,
                                source: None,
                            }]
                        })
                        .unwrap_or_default()
                })
                .collect(),
            problem: None,
            perf_map: None,
        }
    }

    /// The perf map of process `pid`, from the first place that has one:
    /// maps kept with the recording, `symfs/tmp`, the live process (inside
    /// its container root, then the host's /tmp), and `/tmp/perf-PID.map`.
    /// Files that are not regular, are symlinks, too large, or owned by
    /// someone else are refused with the reason.
    fn load_perf_map(&self, pid: i32, name: &[u8]) -> Result<LoadedMap, String> {
        use std::os::unix::ffi::OsStrExt;
        let file_name = Path::new(std::ffi::OsStr::from_bytes(name))
            .file_name()
            .map(Path::new)
            .unwrap_or(Path::new("perf.map"))
            .to_owned();
        let trusted = ReadPolicy::for_target(None, MAX_MAP_BYTES);
        let mut not_found = Vec::new();
        let mut attempt = |result: Result<LoadedMap, UnsafeFile>| match result {
            Ok(loaded) => Some(Ok(loaded)),
            Err(e) if e.is_not_found() => {
                not_found.push(e.to_string());
                None
            }
            Err(e) => Some(Err(e.to_string())),
        };
        for dir in &self.options.perf_map_dirs {
            if let Some(result) = attempt(read_perf_map(&dir.join(&file_name), &trusted)) {
                return result;
            }
        }
        if self.options.symfs.is_some() {
            if let Some(result) = attempt(read_perf_map(&self.host_path(name), &trusted)) {
                return result;
            }
        }
        if self.options.live_processes {
            if let Some(result) = attempt(flamegraph_perf_jvm_maps::find_perf_map(pid)) {
                return result;
            }
        } else if let Some(result) = attempt(read_perf_map(
            Path::new(std::ffi::OsStr::from_bytes(name)),
            &trusted,
        )) {
            return result;
        }
        Err(not_found
            .pop()
            .unwrap_or_else(|| format!("/tmp/perf-{pid}.map: not found")))
    }

    fn resolve_elf(&self, symbols: &ElfSymbols, addresses: &[u64]) -> ObjectSymbols {
        let dwarf = if self.options.inline {
            symbols
                .dwarf_file()
                .and_then(|path| addr2line::Loader::new(path).ok())
        } else {
            None
        };
        let names = addresses
            .iter()
            .map(|&offset| {
                let Some(raw) = symbols.lookup(offset) else {
                    return Vec::new();
                };
                let mut names = vec![SymbolName {
                    name: self.demangle(raw),
                    inlined: false,
                    source: None,
                }];
                if let (Some(dwarf), Some(vaddr)) = (&dwarf, symbols.vaddr_of_offset(offset)) {
                    let (inlined, source) =
                        inlined_functions(dwarf, vaddr, |raw| self.demangle(raw));
                    names[0].source = source;
                    names.extend(inlined);
                }
                names
            })
            .collect();
        ObjectSymbols {
            names,
            problem: symbols.is_empty().then(|| "no symbols".to_owned()),
            perf_map: None,
        }
    }

    fn demangle(&self, raw: &[u8]) -> String {
        if self.options.no_demangle {
            String::from_utf8_lossy(raw).into_owned()
        } else {
            demangle::demangle(raw)
        }
    }
}

/// The functions inlined at `vaddr`, outermost first, each with its
/// source line, and the source line of the function they were inlined
/// into, from DWARF.
fn inlined_functions(
    dwarf: &addr2line::Loader,
    vaddr: u64,
    demangle: impl Fn(&[u8]) -> String,
) -> (Vec<SymbolName>, Option<SourceLine>) {
    let Ok(mut frames) = dwarf.find_frames(vaddr) else {
        return (Vec::new(), None);
    };
    let mut innermost_first = Vec::new();
    while let Ok(Some(frame)) = frames.next() {
        let name = frame
            .function
            .as_ref()
            .and_then(|f| f.raw_name().ok().map(|n| demangle(n.as_bytes())));
        let source = frame.location.and_then(|location| {
            Some(SourceLine {
                file: location.file?.to_owned(),
                line: location.line.unwrap_or(0),
            })
        });
        innermost_first.push(SymbolName {
            name: name.unwrap_or_else(|| "[unknown]".to_owned()),
            inlined: true,
            source,
        });
    }
    // The last DWARF frame is the real function, already named from the
    // symbol table; the others were inlined into it.
    let outer_source = innermost_first.pop().and_then(|outer| outer.source);
    innermost_first.reverse();
    (innermost_first, outer_source)
}

fn problem_text(problem: &ElfProblem) -> String {
    problem.to_string()
}

fn unresolved(addresses: &[u64], problem: String) -> ObjectSymbols {
    ObjectSymbols {
        names: vec![Vec::new(); addresses.len()],
        problem: (!problem.is_empty()).then_some(problem),
        perf_map: None,
    }
}

/// Reads at most `limit` bytes of a file.
fn read_bounded(path: &Path, limit: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(limit)
        .read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// This process's vDSO and its build id.
fn vdso_symbols() -> Option<(&'static ElfSymbols, Option<&'static [u8]>)> {
    static VDSO: OnceLock<Option<(ElfSymbols, Option<Vec<u8>>)>> = OnceLock::new();
    VDSO.get_or_init(|| {
        let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
        let line = maps.lines().find(|l| l.ends_with("[vdso]"))?;
        let range = line.split_whitespace().next()?;
        let (start, end) = range.split_once('-')?;
        let start = u64::from_str_radix(start, 16).ok()?;
        let end = u64::from_str_radix(end, 16).ok()?;
        let len = usize::try_from(end.checked_sub(start)?).ok()?;
        if len > 1 << 20 {
            return None;
        }
        let mut image = vec![0; len];
        use std::os::unix::fs::FileExt;
        std::fs::File::open("/proc/self/mem")
            .ok()?
            .read_exact_at(&mut image, start)
            .ok()?;
        let build_id = object::File::parse(&image[..]).ok().and_then(|f| {
            object::Object::build_id(&f)
                .ok()
                .flatten()
                .map(<[u8]>::to_vec)
        });
        Some((ElfSymbols::from_image(image).ok()?, build_id))
    })
    .as_ref()
    .map(|(symbols, id)| (symbols, id.as_deref()))
}
