//! The converter: event stream in, folded stacks out.
//!
//! While events stream in, the [`Collapser`] keeps the process model current
//! and aggregates samples on raw address stacks (per thread identity and
//! mapping snapshot), so each distinct stack is stored once however often it
//! was sampled. [`Collapser::finish`] then resolves each distinct (object,
//! address) once, symbolizing objects in parallel, and folds the named
//! stacks into a [`FoldedStacks`].

use std::collections::HashMap;
use std::hash::BuildHasherDefault;

use flamegraph_perf_folded::{
    Annotation, FoldedStacks, FoldedStacksBuilder, FrameId, StackList, StringTable,
};
use rayon::prelude::*;
use rustc_hash::FxHasher;

use crate::address_profile::{
    AddressProfile, AddressSample, CodeLocation, CodeObject, SourcePosition, ThreadRoot,
};
use crate::dso::{DsoId, DsoKind, Dsos};
use crate::event::{CpuMode, Event, EventSink, Loss, Mmap, Sample};
use crate::idle::IdleFilter;
use crate::names;
use crate::process::{CommId, MapVersion, Mapping, ProcessModel};
use crate::stack_counter::StackCounter;
use crate::symbols::{KernelReference, KernelSymbolsPreload, Symbolizer, SymbolizerOptions};

type FxHashMap<K, V> = hashbrown::HashMap<K, V, BuildHasherDefault<FxHasher>>;

/// Callchain context markers (`PERF_CONTEXT_*` as u64).
const CONTEXT_HV: u64 = -32i64 as u64;
const CONTEXT_KERNEL: u64 = -128i64 as u64;
const CONTEXT_USER: u64 = -512i64 as u64;
const CONTEXT_GUEST_KERNEL: u64 = -2176i64 as u64;
const CONTEXT_GUEST_USER: u64 = -2560i64 as u64;
/// Values at or above this are markers, not addresses.
const CONTEXT_MAX: u64 = -4095i64 as u64;

/// How much each sample counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Weight {
    /// One per sample (stackcollapse's count).
    #[default]
    Samples,
    /// The sample's period (ns for cpu-clock): stacks weigh by time even
    /// when the sampling rate varied.
    Period,
}

/// What the root frame of every stack says.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RootFrame {
    /// The thread's name (`comm`).
    #[default]
    Comm,
    /// `comm-PID`, like stackcollapse's `--pid`.
    Pid,
    /// `comm-PID/TID`, like stackcollapse's `--tid`.
    Tid,
}

/// Which address names a caller's frame.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ReturnAddresses {
    /// Look up the call instruction (return address − 1): names the right
    /// function when a call is a function's last instruction (calls to
    /// `noreturn` functions), and treats the kernel's `__pfx_f` entry
    /// padding as part of `f`.
    #[default]
    CallSite,
    /// Look up return addresses as they are, as perf does; for comparing
    /// with folded stacks made from `perf script`.
    AsIs,
}

/// How to fold. Defaults give `stackcollapse-perf.pl --all` output minus idle time.
#[derive(Clone, Debug)]
pub struct CollapseOptions {
    /// Index of the event whose samples are folded, in
    /// [`crate::RecordingInfo::events`] order. Default: 0.
    pub event_index: usize,
    /// Sample counts or period sums. Default: [`Weight::Samples`].
    pub weight: Weight,
    /// Root frame format. Default: [`RootFrame::Comm`].
    pub root: RootFrame,
    /// Idle filter; `None` keeps idle stacks. Default: the default [`IdleFilter`].
    pub idle_filter: Option<IdleFilter>,
    /// How callers' return addresses are looked up. Default: [`ReturnAddresses::CallSite`].
    pub return_addresses: ReturnAddresses,
    /// The kernel's callchain limit for this recording (`sample_max_stack`,
    /// or `kernel.perf_event_max_stack`): stacks this deep were cut by the
    /// kernel and are counted as truncated. Default: 127.
    pub max_stack: usize,
    /// Count identical stacks on a thread of their own while events are
    /// still arriving, so counting overlaps reading. Default: `true`.
    pub counting_thread: bool,
    /// Also return the samples at address level
    /// ([`Collapsed::addresses`]), for exports that keep code addresses.
    /// Default: `false`.
    pub keep_addresses: bool,
}

impl Default for CollapseOptions {
    fn default() -> CollapseOptions {
        CollapseOptions {
            event_index: 0,
            weight: Weight::Samples,
            root: RootFrame::Comm,
            idle_filter: Some(IdleFilter::default()),
            return_addresses: ReturnAddresses::CallSite,
            max_stack: 127,
            counting_thread: true,
            keep_addresses: false,
        }
    }
}

/// Counts gathered while collapsing, for the summary.
#[derive(Clone, Debug, Default)]
pub struct CollapseStats {
    /// Samples of the folded event.
    pub samples: u64,
    /// Samples of other events in the stream (not folded).
    pub other_event_samples: u64,
    /// Total weight folded (after the idle filter).
    pub weight: u64,
    /// Records the kernel dropped (`PERF_RECORD_LOST`).
    pub lost_records: u64,
    /// Samples the kernel dropped (`PERF_RECORD_LOST_SAMPLES`).
    pub lost_samples: u64,
    /// Times the kernel throttled sampling.
    pub throttled: u64,
    /// Samples dropped as idle.
    pub idle_samples: u64,
    /// Weight dropped as idle.
    pub idle_weight: u64,
    /// Frames in the output, each counted once per sample of its stack.
    pub frames: u64,
    /// Of those, frames without a symbol (`[module]` or `[unknown]`).
    pub unresolved_frames: u64,
    /// JIT frames (counted per sample), and how many had no perf-map symbol.
    pub jit_frames: u64,
    /// JIT frames without a symbol (`[perf-PID.map]`).
    pub unresolved_jit_frames: u64,
    /// Distinct raw address stacks seen.
    pub distinct_address_stacks: usize,
    /// User callchains cut where they left mapped code (broken frame pointers).
    pub cut_user_chains: u64,
    /// Samples whose callchain reached the kernel's depth limit (the
    /// outermost frames are missing).
    pub truncated_stacks: u64,
    /// One line per code object that could not be symbolized.
    pub object_problems: Vec<String>,
    /// Timestamp (ns, the recording's clock) of the first and the last
    /// sample of the folded event, when samples carry times.
    pub sample_time_range: Option<(u64, u64)>,
    /// Wall time of each step of [`Collapser::finish`], in order.
    pub steps: Vec<(&'static str, std::time::Duration)>,
}

impl CollapseStats {
    /// Adds `other`'s counts (another part, or another window of the same
    /// recording): counters add up, object problems are listed once, the
    /// time ranges join. Step timings are not added.
    pub fn add(&mut self, other: &CollapseStats) {
        self.samples += other.samples;
        self.other_event_samples += other.other_event_samples;
        self.weight += other.weight;
        self.lost_records += other.lost_records;
        self.lost_samples += other.lost_samples;
        self.throttled += other.throttled;
        self.idle_samples += other.idle_samples;
        self.idle_weight += other.idle_weight;
        self.frames += other.frames;
        self.unresolved_frames += other.unresolved_frames;
        self.jit_frames += other.jit_frames;
        self.unresolved_jit_frames += other.unresolved_jit_frames;
        self.distinct_address_stacks += other.distinct_address_stacks;
        self.cut_user_chains += other.cut_user_chains;
        self.truncated_stacks += other.truncated_stacks;
        for problem in &other.object_problems {
            if !self.object_problems.contains(problem) {
                self.object_problems.push(problem.clone());
            }
        }
        self.sample_time_range = match (self.sample_time_range, other.sample_time_range) {
            (Some(a), Some(b)) => Some((a.0.min(b.0), a.1.max(b.1))),
            (a, b) => a.or(b),
        };
    }
}

/// The result of collapsing: folded stacks and what it took.
#[derive(Debug)]
pub struct Collapsed {
    /// The stacks.
    pub stacks: FoldedStacks,
    /// The counts.
    pub stats: CollapseStats,
    /// The perf maps used, (pid, file bytes), to keep beside a recording.
    pub perf_maps: Vec<(i32, Vec<u8>)>,
    /// The same samples at address level, when
    /// [`CollapseOptions::keep_addresses`] was set.
    pub addresses: Option<AddressProfile>,
}

/// Identity of a stack's root: who was running.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct ThreadKey {
    /// Thread name, or `None` if never named (shown as `:TID`, as perf does).
    comm: Option<CommId>,
    /// Shown pid/tid (−1 when the root format omits them) and, for
    /// unnamed threads, the tid the name is made from.
    pid: i32,
    tid: i32,
    /// The idle task (pid 0), subject to the idle filter.
    idle: bool,
}

/// Event-stream consumer that folds samples; see the module docs.
pub struct Collapser {
    options: CollapseOptions,
    model: ProcessModel,
    dsos: Dsos,
    kernel_reference: Option<KernelReference>,
    /// Key: [thread key id << 32 | map version, callchain…] → (samples, weight).
    stacks: StackCounter,
    key_buf: Vec<u64>,
    thread_keys: Vec<ThreadKey>,
    thread_key_ids: FxHashMap<ThreadKey, u32>,
    sampled_pids: hashbrown::HashSet<i32, BuildHasherDefault<FxHasher>>,
    stats: CollapseStats,
    kernel_preload: KernelPreload,
}

/// Early loading of kernel symbols.
enum KernelPreload {
    /// Kernel symbols load when `finish` needs them.
    Off,
    /// Start loading these at the first kernel sample.
    Wanted(Box<SymbolizerOptions>),
    /// Loading.
    Started(KernelSymbolsPreload),
}

impl Collapser {
    /// A collapser with no history.
    pub fn new(options: CollapseOptions) -> Collapser {
        let counting_thread = options.counting_thread;
        Collapser {
            options,
            model: ProcessModel::new(),
            dsos: Dsos::default(),
            kernel_reference: None,
            stacks: StackCounter::new(counting_thread),
            key_buf: Vec::new(),
            thread_keys: Vec::new(),
            thread_key_ids: FxHashMap::default(),
            sampled_pids: Default::default(),
            stats: CollapseStats::default(),
            kernel_preload: KernelPreload::Off,
        }
    }

    /// Loads the kernel symbols `options` name on another thread, starting
    /// at the first kernel sample, so the loading overlaps the reading.
    /// Recordings without kernel samples never load them.
    pub fn preload_kernel_symbols(&mut self, options: &SymbolizerOptions) {
        self.kernel_preload = KernelPreload::Wanted(Box::new(options.clone()));
    }

    /// Processes with samples of the folded event so far, ascending.
    pub fn sampled_pids(&self) -> Vec<i32> {
        let mut pids: Vec<i32> = self
            .sampled_pids
            .iter()
            .copied()
            .filter(|&p| p > 0)
            .collect();
        pids.sort_unstable();
        pids
    }

    /// Tells the collapser the build id the recording lists for a path, so
    /// a different file at that path is not used for symbols.
    pub fn add_build_id(&mut self, path: &[u8], build_id: &[u8]) {
        self.dsos.note_build_id(path, build_id);
    }

    /// Counts so far.
    pub fn stats(&self) -> &CollapseStats {
        &self.stats
    }

    fn thread_key(&mut self, pid: i32, tid: i32) -> u32 {
        let comm = self.model.thread_comm(tid);
        let (shown_pid, shown_tid) = match self.options.root {
            RootFrame::Comm => (-1, if comm.is_none() { tid } else { -1 }),
            RootFrame::Pid => (pid, if comm.is_none() { tid } else { -1 }),
            RootFrame::Tid => (pid, tid),
        };
        let key = ThreadKey {
            comm,
            pid: shown_pid,
            tid: shown_tid,
            idle: pid == 0,
        };
        if let Some(&id) = self.thread_key_ids.get(&key) {
            return id;
        }
        let id = u32::try_from(self.thread_keys.len()).expect("fewer than 2^32 threads");
        self.thread_keys.push(key);
        self.thread_key_ids.insert(key, id);
        id
    }

    fn on_sample(&mut self, sample: &Sample<'_>) {
        if sample.event_index != self.options.event_index {
            self.stats.other_event_samples += 1;
            return;
        }
        self.stats.samples += 1;
        if let Some(time) = sample.time {
            let range = self.stats.sample_time_range.get_or_insert((time, time));
            range.0 = range.0.min(time);
            range.1 = range.1.max(time);
        }
        let weight = match self.options.weight {
            Weight::Samples => 1,
            Weight::Period => sample.period.unwrap_or(1),
        };
        if weight == 0 {
            return;
        }
        self.sampled_pids.insert(sample.pid);
        if sample.cpu_mode == CpuMode::Kernel {
            if let KernelPreload::Wanted(options) = &self.kernel_preload {
                self.kernel_preload = KernelSymbolsPreload::start(options)
                    .map_or(KernelPreload::Off, KernelPreload::Started);
            }
        }
        let thread = self.thread_key(sample.pid, sample.tid);
        let version = self.model.freeze_maps(sample.pid);
        self.key_buf.clear();
        self.key_buf
            .push(u64::from(thread) << 32 | u64::from(version));
        let chain = sample.callchain;
        if chain.len() >= self.options.max_stack
            && chain.iter().filter(|&&a| a < CONTEXT_MAX).count() >= self.options.max_stack
        {
            self.stats.truncated_stacks += 1;
        }
        if chain.is_empty() || chain[0] < CONTEXT_MAX {
            self.key_buf.push(context_marker(sample.cpu_mode));
        }
        if chain.is_empty() {
            self.key_buf.push(sample.ip.unwrap_or(0));
        } else {
            self.key_buf.extend_from_slice(chain);
        }
        self.stacks.add(&self.key_buf, weight);
    }

    fn on_mmap(&mut self, mmap: &Mmap<'_>) {
        if !mmap.executable || mmap.len == 0 {
            return;
        }
        let dso = self
            .dsos
            .for_mapping(mmap.pid, mmap.path, mmap.cpu_mode, mmap.build_id);
        let mapping = Mapping {
            start: mmap.start,
            end: mmap.start.saturating_add(mmap.len),
            pgoff: mmap.pgoff,
            dso,
        };
        if self.dsos.get(dso).kind == DsoKind::Kernel {
            // `[kernel.kallsyms]_text`: pgoff is the address of `_text`.
            if let Some(symbol) = mmap.path.strip_prefix(b"[kernel.kallsyms]") {
                if !symbol.is_empty() {
                    self.kernel_reference = Some(KernelReference {
                        symbol: String::from_utf8_lossy(symbol).into_owned(),
                        address: mmap.pgoff,
                    });
                }
            }
        }
        if matches!(mmap.cpu_mode, CpuMode::Kernel | CpuMode::GuestKernel) {
            self.model.map_kernel(mapping);
        } else {
            self.model.map_user(mmap.pid, mapping);
        }
    }

    /// Symbolizes and folds everything seen so far.
    pub fn finish(mut self, symbolizer_options: SymbolizerOptions) -> Collapsed {
        self.finish_window(symbolizer_options)
    }

    /// Symbolizes and folds the samples since the last window (or the
    /// start), and starts a new window: processes, mappings and names seen
    /// so far carry over, counts start again from zero. For continuous
    /// profiling, one profile per interval.
    pub fn finish_window(&mut self, symbolizer_options: SymbolizerOptions) -> Collapsed {
        let counting_thread = self.options.counting_thread;
        let stacks = std::mem::replace(&mut self.stacks, StackCounter::new(counting_thread));
        let mut stats = std::mem::take(&mut self.stats);
        let kernel_preload = std::mem::replace(&mut self.kernel_preload, KernelPreload::Off);
        let options = &self.options;
        let model = &self.model;
        let kernel_reference = self.kernel_reference.clone();
        let thread_keys = &self.thread_keys;
        let dsos = &mut self.dsos;
        let stacks = stacks.finish();
        stats.distinct_address_stacks = stacks.len();
        let mut clock = PhaseClock::new();

        // 1. Raw addresses → (object, lookup address), each distinct pair
        //    once; parts of the stacks on all cores, their frame ids merged.
        //    Each stack's frame ids overwrite its addresses in place (there
        //    are never more), so no second copy of the stacks exists.
        let kernel_dso = dsos.kernel();
        let call_sites = options.return_addresses == ReturnAddresses::CallSite;
        // In first-seen order (the same whatever the thread count), which
        // is also their order in the buffer: parts of consecutive stacks
        // own consecutive stretches of it, and the address-level samples
        // come out in that order.
        let (mut items, entries) = stacks.into_parts();
        debug_assert!(entries.windows(2).all(|w| w[0].0 < w[1].0));
        let part_len = entries
            .len()
            .div_ceil(rayon::current_num_threads())
            .max(1 << 12);
        let entry_parts: Vec<&[RawStackEntry]> = entries.chunks(part_len).collect();
        // Each part owns the stretch of the buffer up to its last stack's end.
        let mut end = 0;
        let stretches: Vec<usize> = entry_parts
            .iter()
            .map(|part| {
                let start = end;
                end = part
                    .last()
                    .map_or(end, |&(first, len, _)| first + len as usize);
                end - start
            })
            .collect();
        let mut parts: Vec<ResolvedPart> = entry_parts
            .into_par_iter()
            .zip(split_consecutive(&mut items, stretches))
            .map(|(part, (items, offset))| {
                ResolvedPart::resolve(part, items, offset, model, dsos, kernel_dso, call_sites)
            })
            .collect();
        drop(entries);
        let items = PackedFrameIds::pack(items, &mut parts);
        let mut frame_ids: FxHashMap<(DsoId, u64), u32> = FxHashMap::default();
        let mut frames: Vec<(DsoId, u64)> = Vec::new();
        for part in &mut parts {
            stats.cut_user_chains += part.cut_user_chains;
            part.renumbering = std::mem::take(&mut part.frames)
                .into_iter()
                .map(|frame| {
                    *frame_ids.entry(frame).or_insert_with(|| {
                        frames.push(frame);
                        frames.len() as u32 - 1
                    })
                })
                .collect();
        }
        clock.lap(&mut stats, "map addresses to objects");

        // 2. Symbolize each object's addresses, objects in parallel.
        let mut by_dso: HashMap<DsoId, Vec<u64>> = HashMap::new();
        for &(dso, address) in &frames {
            if dso != NO_DSO {
                by_dso.entry(dso).or_default().push(address);
            }
        }
        let mut requests: Vec<(DsoId, Vec<u64>)> = by_dso.into_iter().collect();
        requests.sort_unstable_by_key(|(dso, _)| *dso);
        for (_, addresses) in &mut requests {
            addresses.sort_unstable();
            addresses.dedup();
        }
        let symbolizer = Symbolizer::new(symbolizer_options, kernel_reference);
        if let KernelPreload::Started(preload) = kernel_preload {
            symbolizer.adopt_kernel_symbols(preload);
        }
        let results: Vec<_> = requests
            .par_iter()
            .map(|(dso, addresses)| symbolizer.resolve(dsos.get(*dso), addresses))
            .collect();

        clock.lap(&mut stats, "symbolize");
        // 3. Name every distinct frame: interned ids, outermost first.
        // The parts' stacks arrive later, through `append`.
        let mut folded = FoldedStacksBuilder::new();
        // Per distinct frame: its ids, whether it is unresolved, whether it is JIT code.
        let mut frame_names = FrameNames::with_capacity(frames.len());
        let request_index: HashMap<DsoId, usize> = requests
            .iter()
            .enumerate()
            .map(|(i, (dso, _))| (*dso, i))
            .collect();
        let unknown = folded.intern_name("[unknown]", Annotation::None);
        // Source files of the frames' names, for the address-level output.
        let mut files = StringTable::new();
        for &(dso_id, address) in &frames {
            if dso_id == NO_DSO {
                frame_names.push(&[unknown], &[None], true, false);
                continue;
            }
            let dso = dsos.get(dso_id);
            let annotation = match dso.kind {
                DsoKind::Kernel | DsoKind::KernelModule => Annotation::Kernel,
                DsoKind::PerfMap(_) => Annotation::Jit,
                _ => Annotation::None,
            };
            let request = request_index[&dso_id];
            let (addresses, result) = (&requests[request].1, &results[request]);
            let names = addresses
                .binary_search(&address)
                .ok()
                .map(|i| &result.names[i][..])
                .unwrap_or_default();
            let jit = annotation == Annotation::Jit;
            if names.is_empty() {
                let id = folded.intern_name(&dso.unresolved_frame_name(), annotation);
                frame_names.push(&[id], &[None], true, jit);
                continue;
            }
            let mut ids = Vec::with_capacity(names.len());
            let mut sources = Vec::with_capacity(names.len());
            for symbol in names {
                let mut name = symbol.name.as_str();
                if annotation == Annotation::Kernel
                    && options.return_addresses == ReturnAddresses::CallSite
                {
                    // `__pfx_f` is the padding before `f` where call-depth
                    // tracking and CFI code run on entry to `f` (and where a
                    // retpoline's target lands): it is part of `f`.
                    name = name
                        .strip_prefix("__pfx_")
                        .filter(|n| !n.is_empty())
                        .unwrap_or(name);
                }
                let parts: Vec<&str> = if annotation == Annotation::Jit {
                    names::split_jit_inlining(name).collect()
                } else {
                    vec![name]
                };
                for (j, part) in parts.into_iter().enumerate() {
                    let frame_annotation = if symbol.inlined || j > 0 {
                        Annotation::Inlined
                    } else {
                        annotation
                    };
                    ids.push(folded.intern_name(names::strip_parameters(part), frame_annotation));
                    // A JIT name's inlined parts have no source of their own.
                    sources.push(symbol.source.as_ref().filter(|_| j == 0).map(|source| {
                        SourcePosition {
                            file: files.intern(&source.file),
                            line: source.line,
                        }
                    }));
                }
            }
            frame_names.push(&ids, &sources, false, jit);
        }
        stats.object_problems = requests
            .iter()
            .zip(&results)
            .filter_map(|((dso, addresses), result)| {
                let problem = result.problem.as_ref()?;
                Some(format!(
                    "{problem} ({} address{})",
                    addresses.len(),
                    if addresses.len() == 1 { "" } else { "es" }
                ))
                .filter(|_| dsos.get(*dso).kind != DsoKind::Other)
            })
            .collect();

        clock.lap(&mut stats, "name frames");
        // 4. Fold: root frame, then frames root-first; idle filter; java
        //    tidying. Every name is interned first so the parts fold in parallel.
        let roots: Vec<FrameId> = thread_keys
            .iter()
            .map(|&key| {
                let comm = key.comm.map(|c| model.comm(c));
                folded.intern_name(&root_name(key, comm, options.root), Annotation::None)
            })
            .collect();
        let java_threads: Vec<bool> = thread_keys
            .iter()
            .map(|key| key.comm.is_some_and(|c| model.comm(c).starts_with(b"java")))
            .collect();
        let java_tidied: Vec<FrameId> = if java_threads.contains(&true) {
            (0..folded.frame_count() as FrameId)
                .map(|id| {
                    let frame = folded.frame(id).clone();
                    let tidied = names::tidy_java(frame.name());
                    if tidied.len() == frame.name().len() {
                        id
                    } else {
                        folded.intern_name(tidied, frame.annotation())
                    }
                })
                .collect()
        } else {
            Vec::new()
        };
        let context = FoldContext {
            thread_keys,
            roots: &roots,
            java_threads: &java_threads,
            java_tidied: &java_tidied,
            frame_names: &frame_names,
            names: &folded,
            idle_filter: options.idle_filter.as_ref(),
            frame_ids: &items,
            keep_addresses: options.keep_addresses,
        };
        // Address-level chains go straight to their place in one buffer:
        // each part owns the slice its stacks' frames could fill.
        let chain_room: Vec<usize> = parts
            .iter()
            .map(|part| {
                if options.keep_addresses {
                    part.stacks.iter().map(|s| s.len as usize).sum()
                } else {
                    0
                }
            })
            .collect();
        let mut chains: Vec<u32> = vec![0; chain_room.iter().sum()];
        let folded_parts: Vec<FoldedPart> = parts
            .par_iter()
            .zip(split_consecutive(&mut chains, chain_room.iter().copied()))
            .map(|(part, (chains, offset))| context.fold(part, chains, offset))
            .collect();
        drop(parts);
        drop(items);
        let mut address_samples: Vec<AddressSample> = Vec::with_capacity(
            folded_parts
                .iter()
                .map(|(_, _, samples, _)| samples.len())
                .sum(),
        );
        // Stacks the idle filter dropped leave room at the end of a part's
        // slice; the next parts' chains move down to keep them back to back.
        let (mut room_start, mut filled) = (0usize, 0usize);
        for ((list, part_stats, samples, used), room) in folded_parts.into_iter().zip(chain_room) {
            folded.append(list);
            if filled != room_start {
                chains.copy_within(room_start..room_start + used, filled);
            }
            let shift = (room_start - filled) as u32;
            address_samples.extend(samples.into_iter().map(|mut sample| {
                sample.chain.0 -= shift;
                sample
            }));
            room_start += room;
            filled += used;
            stats.add(&part_stats);
        }
        chains.truncate(filled);
        clock.lap(&mut stats, "fold");
        let addresses = options.keep_addresses.then(|| {
            address_profile(
                &frames,
                &frame_names,
                files.into_strings(),
                dsos,
                ThreadNames {
                    keys: thread_keys,
                    roots: &roots,
                    java: &java_threads,
                    java_tidied: &java_tidied,
                },
                address_samples,
                chains,
            )
        });
        let folded = folded.build();
        clock.lap(&mut stats, "merge and sort");
        let perf_maps = requests
            .iter()
            .zip(results)
            .filter_map(|((dso, _), result)| match dsos.get(*dso).kind {
                DsoKind::PerfMap(pid) => Some((pid, result.perf_map?)),
                _ => None,
            })
            .collect();
        Collapsed {
            stacks: folded,
            stats,
            perf_maps,
            addresses,
        }
    }
}

/// `buffer` cut into consecutive slices of `lengths`, each with its offset
/// in `buffer`, for parts that each write their own stretch in parallel.
///
/// # Panics
/// If the lengths add up to more than the buffer.
fn split_consecutive<T>(
    buffer: &mut [T],
    lengths: impl IntoIterator<Item = usize>,
) -> Vec<(&mut [T], usize)> {
    let mut slices = Vec::new();
    let mut rest = buffer;
    let mut offset = 0;
    for len in lengths {
        let (mine, tail) = std::mem::take(&mut rest).split_at_mut(len);
        slices.push((mine, offset));
        rest = tail;
        offset += len;
    }
    slices
}

/// A folded part: its stacks, the counts they add, and (when kept) its
/// samples at address level and how much of its chains' slice they fill.
type FoldedPart = (StackList, CollapseStats, Vec<AddressSample>, usize);

/// One resolved stack of a [`ResolvedPart`].
#[derive(Clone, Copy)]
struct ResolvedStack {
    /// Thread key id.
    thread: u32,
    samples: u64,
    weight: u64,
    /// Where its frame indices are (see [`ResolvedPart`]).
    start: u32,
    len: u32,
}

/// A raw stack in the counted stacks' buffer: start, length (thread key
/// first, then addresses), (samples, weight).
type RawStackEntry = (usize, u32, (u64, u64));

/// Stacks of one part of the raw stacks, as indices of distinct frames
/// (object, lookup address) local to the part. The indices themselves are
/// in the raw stacks' buffer, where the addresses were.
struct ResolvedPart {
    /// The part's distinct frames (emptied once merged).
    frames: Vec<(DsoId, u64)>,
    /// Local frame index → global frame index, once merged.
    renumbering: Vec<u32>,
    /// Per stack: thread key, samples, weight, and where its frame
    /// indices (leaf first) are in the buffer.
    stacks: Vec<ResolvedStack>,
    /// Samples whose user chain was cut where it left mapped code.
    cut_user_chains: u64,
}

impl ResolvedPart {
    /// Resolves the raw stacks `entries` (`(start, len, (samples, weight))`
    /// in the whole buffer, of which `items` is the part from `offset` on),
    /// writing each stack's frame indices over its addresses.
    fn resolve(
        entries: &[RawStackEntry],
        items: &mut [u64],
        offset: usize,
        model: &ProcessModel,
        dsos: &Dsos,
        kernel_dso: DsoId,
        call_sites: bool,
    ) -> ResolvedPart {
        let mut resolver = FrameResolver {
            model,
            dsos,
            kernel_dso,
            call_sites,
            frame_ids: FxHashMap::default(),
            frames: Vec::new(),
            cache: vec![CacheEntry::EMPTY; 1 << RESOLVE_CACHE_BITS],
        };
        let mut stacks = Vec::with_capacity(entries.len());
        let mut cut_user_chains = 0;
        let mut resolved: Vec<u32> = Vec::new();
        for &(start, len, (samples, weight)) in entries {
            let raw = &mut items[start - offset..start - offset + len as usize];
            let thread = (raw[0] >> 32) as u32;
            let version = raw[0] as u32 as MapVersion;
            resolved.clear();
            if resolver.resolve_chain(version, &raw[1..], &mut resolved) {
                cut_user_chains += samples;
            }
            debug_assert!(resolved.len() < raw.len());
            for (slot, &frame) in raw.iter_mut().zip(&resolved) {
                *slot = u64::from(frame);
            }
            let start = u32::try_from(start).expect("stack buffer under 2^32 items");
            stacks.push(ResolvedStack {
                thread,
                samples,
                weight,
                start,
                len: resolved.len() as u32,
            });
        }
        ResolvedPart {
            frames: resolver.frames,
            renumbering: Vec::new(),
            stacks,
            cut_user_chains,
        }
    }
}

/// The resolved parts' frame indices, two per word, packed at the start of
/// the buffer that held the raw stacks.
struct PackedFrameIds {
    words: Vec<u64>,
}

impl PackedFrameIds {
    /// Packs each stack's frame indices (one per word at its start in
    /// `items`) to consecutive 32-bit halves, rewrites the stacks' starts
    /// to match, and gives back the rest of the buffer. In place: index `k`
    /// goes to word `k / 2`, never past the word being read (a stack has at
    /// least one word more than frames, the thread key).
    fn pack(mut items: Vec<u64>, parts: &mut [ResolvedPart]) -> PackedFrameIds {
        let mut k: usize = 0;
        for part in parts.iter_mut() {
            for stack in &mut part.stacks {
                let (start, len) = (stack.start as usize, stack.len as usize);
                stack.start = u32::try_from(k).expect("under 2^32 frames");
                for i in start..start + len {
                    let id = items[i] & 0xffff_ffff;
                    if k & 1 == 0 {
                        items[k / 2] = id;
                    } else {
                        items[k / 2] |= id << 32;
                    }
                    k += 1;
                }
            }
        }
        items.truncate(k.div_ceil(2));
        items.shrink_to_fit();
        PackedFrameIds { words: items }
    }

    fn get(&self, k: u32) -> u32 {
        (self.words[k as usize / 2] >> (32 * (k % 2))) as u32
    }
}

/// The names of each distinct frame: interned ids, outermost first (a
/// function, then what was inlined into it), back to back.
struct FrameNames {
    ids: Vec<FrameId>,
    /// Each of `ids`' source position, when known.
    sources: Vec<Option<SourcePosition>>,
    /// Per frame: start and length in `ids`, unresolved, JIT code.
    frames: Vec<(u32, u32, bool, bool)>,
}

impl FrameNames {
    fn with_capacity(frames: usize) -> FrameNames {
        FrameNames {
            ids: Vec::with_capacity(frames),
            sources: Vec::with_capacity(frames),
            frames: Vec::with_capacity(frames),
        }
    }

    /// Adds a frame's names and their sources (one per name).
    fn push(
        &mut self,
        ids: &[FrameId],
        sources: &[Option<SourcePosition>],
        unresolved: bool,
        jit: bool,
    ) {
        debug_assert_eq!(ids.len(), sources.len());
        self.frames
            .push((self.ids.len() as u32, ids.len() as u32, unresolved, jit));
        self.ids.extend_from_slice(ids);
        self.sources.extend_from_slice(sources);
    }
}

/// What folding a [`ResolvedPart`] reads.
struct FoldContext<'a> {
    thread_keys: &'a [ThreadKey],
    roots: &'a [FrameId],
    java_threads: &'a [bool],
    /// Per frame id: its tidied form (empty when no thread is java).
    java_tidied: &'a [FrameId],
    frame_names: &'a FrameNames,
    names: &'a FoldedStacksBuilder,
    idle_filter: Option<&'a IdleFilter>,
    /// The stacks' local frame indices (see [`ResolvedPart`]).
    frame_ids: &'a PackedFrameIds,
    /// Also return each kept stack at address level.
    keep_addresses: bool,
}

impl FoldContext<'_> {
    /// The part's stacks with names, and the counts they add to the stats.
    /// When addresses are kept, the kept stacks' chains go back to back to
    /// the start of `chains`, which starts at `offset` in the whole buffer.
    fn fold(&self, part: &ResolvedPart, chains: &mut [u32], offset: usize) -> FoldedPart {
        let frame_count: usize = part.stacks.iter().map(|s| s.len as usize).sum();
        let mut list = StackList::with_capacity(part.stacks.len(), frame_count + part.stacks.len());
        let mut stats = CollapseStats::default();
        let mut stack: Vec<FrameId> = Vec::new();
        let mut address_samples = Vec::new();
        let mut filled = 0usize;
        for &ResolvedStack {
            thread,
            samples,
            weight,
            start,
            len,
        } in &part.stacks
        {
            let key = self.thread_keys[thread as usize];
            stack.clear();
            stack.push(self.roots[thread as usize]);
            let (mut unresolved, mut jit, mut unresolved_jit) = (0u64, 0u64, 0u64);
            // Leaf first, as the frame ids are; overwritten if not kept.
            let chain = if self.keep_addresses {
                &mut chains[filled..filled + len as usize]
            } else {
                &mut []
            };
            for k in (start..start + len).rev() {
                let frame = part.renumbering[self.frame_ids.get(k) as usize];
                if let Some(slot) = chain.get_mut((k - start) as usize) {
                    *slot = frame;
                }
                let (start, len, is_unresolved, is_jit) = self.frame_names.frames[frame as usize];
                let count = u64::from(len);
                unresolved += u64::from(is_unresolved) * count;
                jit += u64::from(is_jit) * count;
                unresolved_jit += u64::from(is_jit && is_unresolved) * count;
                if len == 1 {
                    stack.push(self.frame_names.ids[start as usize]);
                } else {
                    stack.extend_from_slice(
                        &self.frame_names.ids[start as usize..(start + len) as usize],
                    );
                }
            }
            if key.idle {
                if let Some(filter) = self.idle_filter {
                    if filter.is_idle(stack[1..].iter().map(|&id| self.names.frame(id).name())) {
                        stats.idle_samples += samples;
                        stats.idle_weight += weight;
                        continue;
                    }
                }
            }
            if self.java_threads[thread as usize] {
                for id in &mut stack[1..] {
                    *id = self.java_tidied[*id as usize];
                }
            }
            stats.frames += samples * (stack.len() as u64 - 1);
            stats.unresolved_frames += samples * unresolved;
            stats.jit_frames += samples * jit;
            stats.unresolved_jit_frames += samples * unresolved_jit;
            stats.weight += weight;
            list.add(&stack, weight);
            if self.keep_addresses {
                let chain_start = u32::try_from(offset + filled).expect("under 2^32 chain entries");
                address_samples.push(AddressSample {
                    thread,
                    chain: (chain_start, len),
                    samples,
                    weight,
                });
                filled += len as usize;
            }
        }
        (list, stats, address_samples, filled)
    }
}

/// Builds [`Collapsed::addresses`] from the finished frame tables.
/// Per thread key: the key, its root frame, whether it is a java thread;
/// and each frame id's tidied java form (empty without java threads), as
/// the fold uses them.
struct ThreadNames<'a> {
    keys: &'a [ThreadKey],
    roots: &'a [FrameId],
    java: &'a [bool],
    java_tidied: &'a [FrameId],
}

fn address_profile(
    frames: &[(DsoId, u64)],
    frame_names: &FrameNames,
    files: Vec<String>,
    dsos: &Dsos,
    threads: ThreadNames<'_>,
    samples: Vec<AddressSample>,
    chains: Vec<u32>,
) -> AddressProfile {
    // Locations that java threads run get the tidied names the folded
    // stacks of those threads show.
    let mut in_java = vec![false; frames.len()];
    if !threads.java_tidied.is_empty() {
        for sample in &samples {
            if threads.java[sample.thread as usize] {
                let (start, len) = (sample.chain.0 as usize, sample.chain.1 as usize);
                for &l in &chains[start..start + len] {
                    in_java[l as usize] = true;
                }
            }
        }
    }
    let mut objects = Vec::new();
    let mut object_index: HashMap<DsoId, u32> = HashMap::new();
    let locations = frames
        .iter()
        .enumerate()
        .map(|(i, &(dso_id, address))| {
            let object = (dso_id != NO_DSO).then(|| {
                *object_index.entry(dso_id).or_insert_with(|| {
                    let dso = dsos.get(dso_id);
                    objects.push(CodeObject {
                        name: String::from_utf8_lossy(&dso.name).into_owned(),
                        build_id: dso.build_id.clone(),
                        kernel: matches!(dso.kind, DsoKind::Kernel | DsoKind::KernelModule),
                        jit: matches!(dso.kind, DsoKind::PerfMap(_)),
                    });
                    objects.len() as u32 - 1
                })
            });
            let (start, len, _, _) = frame_names.frames[i];
            let names = &frame_names.ids[start as usize..(start + len) as usize];
            let sources = &frame_names.sources[start as usize..(start + len) as usize];
            CodeLocation {
                object,
                address,
                sources: if sources.iter().any(Option::is_some) {
                    sources.to_vec()
                } else {
                    Vec::new()
                },
                names: if in_java[i] {
                    names
                        .iter()
                        .map(|&id| threads.java_tidied[id as usize])
                        .collect()
                } else {
                    names.to_vec()
                },
            }
        })
        .collect();
    let thread_roots = threads
        .keys
        .iter()
        .zip(threads.roots)
        .map(|(key, &root)| ThreadRoot {
            root,
            pid: key.pid,
            tid: key.tid,
        })
        .collect();
    AddressProfile {
        objects,
        locations,
        threads: thread_roots,
        samples,
        chains,
        files,
    }
}

/// Times the steps of [`Collapser::finish`] into [`CollapseStats::steps`].
struct PhaseClock(std::time::Instant);

impl PhaseClock {
    fn new() -> PhaseClock {
        PhaseClock(std::time::Instant::now())
    }

    fn lap(&mut self, stats: &mut CollapseStats, step: &'static str) {
        let now = std::time::Instant::now();
        stats.steps.push((step, now - self.0));
        self.0 = now;
    }
}

fn root_name(key: ThreadKey, comm: Option<&[u8]>, root: RootFrame) -> String {
    let name = match comm {
        Some(comm) => String::from_utf8_lossy(comm).into_owned(),
        None => format!(":{}", key.tid),
    };
    match root {
        RootFrame::Comm => name,
        RootFrame::Pid => format!("{name}-{}", key.pid),
        RootFrame::Tid => format!("{name}-{}/{}", key.pid, key.tid),
    }
}

fn context_marker(mode: CpuMode) -> u64 {
    match mode {
        CpuMode::Kernel => CONTEXT_KERNEL,
        CpuMode::User | CpuMode::Unknown => CONTEXT_USER,
        CpuMode::Hypervisor => CONTEXT_HV,
        CpuMode::GuestKernel => CONTEXT_GUEST_KERNEL,
        CpuMode::GuestUser => CONTEXT_GUEST_USER,
    }
}

/// Marks a frame that belongs to no known object.
const NO_DSO: DsoId = DsoId::MAX;

/// Turns raw callchains into indices of distinct (object, address) frames.
struct FrameResolver<'m> {
    model: &'m ProcessModel,
    dsos: &'m Dsos,
    kernel_dso: DsoId,
    /// Look up return addresses − 1.
    call_sites: bool,
    frame_ids: FxHashMap<(DsoId, u64), u32>,
    frames: Vec<(DsoId, u64)>,
    cache: Vec<CacheEntry>,
}

impl FrameResolver<'_> {
    fn frame(&mut self, dso: DsoId, address: u64) -> u32 {
        let next = self.frames.len() as u32;
        *self.frame_ids.entry((dso, address)).or_insert_with(|| {
            self.frames.push((dso, address));
            next
        })
    }

    /// Appends the frames of `chain` (leaf first) to `out`. Returns true if
    /// the user part was cut because it left mapped code.
    fn resolve_chain(&mut self, version: MapVersion, chain: &[u64], out: &mut Vec<u32>) -> bool {
        let mut context = CONTEXT_USER;
        let mut first_in_context = true;
        let mut user_frames = 0;
        let mut cut = false;
        for &address in chain {
            if address >= CONTEXT_MAX {
                context = address;
                first_in_context = true;
                continue;
            }
            // Callers' entries are return addresses: look up the call itself.
            let call_site = !first_in_context && self.call_sites;
            first_in_context = false;
            match context {
                CONTEXT_KERNEL => out.push(self.cached(KERNEL_SPACE, call_site, address)),
                CONTEXT_USER => {
                    if cut {
                        continue;
                    }
                    match self.cached(version, call_site, address) {
                        UNMAPPED if user_frames == 0 => {
                            out.push(self.frame(NO_DSO, 0));
                            user_frames += 1;
                        }
                        // Frame-pointer chains through code built without
                        // frame pointers wander into data: stop there.
                        UNMAPPED => cut = true,
                        frame => {
                            out.push(frame);
                            user_frames += 1;
                        }
                    }
                }
                _ => out.push(self.frame(NO_DSO, 0)),
            }
        }
        cut
    }

    /// [`Self::lookup`] through a direct-mapped cache: a million stacks
    /// hold tens of millions of addresses but only thousands of distinct
    /// ones, so most lookups end at one cache line.
    fn cached(&mut self, space: MapVersion, call_site: bool, address: u64) -> u32 {
        let tag = (u64::from(space) << 1) | u64::from(call_site);
        let slot = (address ^ tag.rotate_left(29)).wrapping_mul(0x9e37_79b9_7f4a_7c15)
            >> (64 - RESOLVE_CACHE_BITS);
        let entry = &self.cache[slot as usize];
        if entry.address == address && entry.tag == tag {
            return entry.frame;
        }
        let frame = self.lookup(space, call_site, address);
        self.cache[slot as usize] = CacheEntry {
            address,
            tag,
            frame,
        };
        frame
    }

    /// The frame of one address in address space `space` (a frozen map
    /// version, or [`KERNEL_SPACE`]); [`UNMAPPED`] for user addresses
    /// outside every mapping.
    fn lookup(&mut self, space: MapVersion, call_site: bool, address: u64) -> u32 {
        let lookup = if call_site {
            address.saturating_sub(1)
        } else {
            address
        };
        if space == KERNEL_SPACE {
            let dso = self
                .model
                .kernel_maps()
                .find(address)
                .map(|m| m.dso)
                .unwrap_or(self.kernel_dso);
            return self.frame(dso, lookup);
        }
        match self.model.frozen_maps(space).find(address) {
            Some(map) => {
                let relative = match self.dsos.get(map.dso).kind {
                    DsoKind::Elf | DsoKind::Vdso => map.file_offset(lookup.max(map.start)),
                    _ => lookup,
                };
                let dso = map.dso;
                self.frame(dso, relative)
            }
            None => UNMAPPED,
        }
    }
}

/// log2 of the number of [`FrameResolver`] cache slots.
const RESOLVE_CACHE_BITS: u32 = 16;
/// The address space of kernel addresses in the resolver.
const KERNEL_SPACE: MapVersion = MapVersion::MAX;
/// A user address outside every mapping.
const UNMAPPED: u32 = u32::MAX;

/// One [`FrameResolver`] cache slot.
#[derive(Clone, Copy)]
struct CacheEntry {
    address: u64,
    /// Address space and lookup mode; `u64::MAX` (never a real tag) when empty.
    tag: u64,
    frame: u32,
}

impl CacheEntry {
    const EMPTY: CacheEntry = CacheEntry {
        address: 0,
        tag: u64::MAX,
        frame: 0,
    };
}

impl EventSink for Collapser {
    fn event(&mut self, event: &Event<'_>) {
        match event {
            Event::Sample(sample) => self.on_sample(sample),
            Event::Comm(comm) => self
                .model
                .set_comm(comm.pid, comm.tid, comm.name, comm.exec),
            Event::Mmap(mmap) => self.on_mmap(mmap),
            Event::Fork(task) => self.model.fork(task.pid, task.ppid, task.tid, task.ptid),
            Event::Exit(_) => {}
            Event::Lost(Loss::Records(n)) => self.stats.lost_records += n,
            Event::Lost(Loss::Samples(n)) => self.stats.lost_samples += n,
            Event::Lost(Loss::Throttled) => self.stats.throttled += 1,
        }
    }
}
