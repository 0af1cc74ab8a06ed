//! The folded profile at address level, for exporters that keep code
//! addresses and objects (pprof): the same samples as the folded stacks,
//! after the same symbolization and idle filter, but one location per
//! distinct (object, address) instead of one frame per name.

use flamegraph_perf_folded::FrameId;

/// Samples as chains of code locations. Made by
/// [`crate::Collapser::finish`] when
/// [`crate::CollapseOptions::keep_addresses`] is set.
///
/// Samples are in the order their raw stacks were first seen in the
/// recording, the same on every run whatever the thread count; locations
/// and objects follow the collapser's internal order, which may not be.
#[derive(Clone, Debug, Default)]
pub struct AddressProfile {
    /// Code objects that locations refer to.
    pub objects: Vec<CodeObject>,
    /// Distinct code locations.
    pub locations: Vec<CodeLocation>,
    /// Who ran: the root frame of the folded stacks and the ids behind it.
    pub threads: Vec<ThreadRoot>,
    /// Samples with identical chains are not necessarily merged.
    pub samples: Vec<AddressSample>,
    /// The samples' chains back to back (see [`AddressSample::chain`]).
    pub chains: Vec<u32>,
    /// Source files that [`CodeLocation::sources`] refer to.
    pub files: Vec<String>,
}

impl AddressProfile {
    /// A sample's chain: indices in [`AddressProfile::locations`], leaf first.
    pub fn chain(&self, sample: &AddressSample) -> &[u32] {
        &self.chains[sample.chain.0 as usize..(sample.chain.0 + sample.chain.1) as usize]
    }
}

/// A binary, the kernel, a kernel module or JIT code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CodeObject {
    /// The name perf shows: a path, `[kernel.kallsyms]`, `[vdso]`,
    /// `/tmp/perf-PID.map`.
    pub name: String,
    /// GNU build id, when the recording carries one.
    pub build_id: Option<Vec<u8>>,
    /// Kernel image or module.
    pub kernel: bool,
    /// JIT code named by a perf map.
    pub jit: bool,
}

impl CodeObject {
    /// The build id in lower-case hex, as perf and pprof write it.
    pub fn build_id_hex(&self) -> Option<String> {
        self.build_id.as_deref().map(crate::symbols::elf::hex)
    }
}

/// One distinct code address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CodeLocation {
    /// Index in [`AddressProfile::objects`]; `None` for addresses outside
    /// every known mapping.
    pub object: Option<u32>,
    /// The address looked up: the object-relative address (file offset for
    /// ELF files, kernel virtual address for the kernel), already moved back
    /// into the call instruction for callers unless return addresses are
    /// kept as they are.
    pub address: u64,
    /// Frame names at this address, outermost first (a function, then what
    /// was inlined into it), as ids of the collapsed [`flamegraph_perf_folded::FoldedStacks`].
    pub names: Vec<FrameId>,
    /// Where each of `names` was in its source, when DWARF said (with
    /// `--inline`): one per name, or empty when none is known.
    pub sources: Vec<Option<SourcePosition>>,
}

/// A line of a source file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SourcePosition {
    /// Index in [`AddressProfile::files`].
    pub file: u32,
    /// Line number, from 1; 0 when only the file is known.
    pub line: u32,
}

/// The thread a sample came from, as the folded stacks' root shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ThreadRoot {
    /// The root frame (comm, or comm-PID, comm-PID/TID).
    pub root: FrameId,
    /// Process id (−1 when the root format merges processes).
    pub pid: i32,
    /// Thread id (−1 when the root format merges threads).
    pub tid: i32,
}

/// Samples of one chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddressSample {
    /// Index in [`AddressProfile::threads`].
    pub thread: u32,
    /// Start and length of its chain in [`AddressProfile::chains`].
    pub chain: (u32, u32),
    /// Samples.
    pub samples: u64,
    /// Weight, as in the folded stacks (samples or period).
    pub weight: u64,
}
