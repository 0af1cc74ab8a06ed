//! gzip-compressed pprof (`profile.proto`) profiles.
//!
//! Tables are sorted and numbered in a fixed order, and the gzip header
//! carries no time or name, so the same samples always give the same bytes.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;

use flamegraph_perf_collapse::{AddressProfile, CodeLocation, SourcePosition};
use flamegraph_perf_folded::{FoldedStacks, FrameId, StringTable};
use prost::Message;
use rayon::prelude::*;

use crate::ExportError;

/// What one sample stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SampleUnit {
    /// CPU time: sample types `samples/count` and `cpu/nanoseconds`
    /// (default `cpu`), period type `cpu/nanoseconds` with this period
    /// (10⁹/F for a frequency F).
    CpuNanoseconds {
        /// Nanoseconds per sample.
        period: i64,
    },
    /// Event counts (tracepoints): sample type `samples/count`, period 1.
    Count,
}

impl SampleUnit {
    /// Samples per second, as Pyroscope's `sampleRate` wants it: 10⁹/period
    /// for CPU time, and Pyroscope's default of 100 for counts.
    pub fn sample_rate_hz(self) -> u64 {
        match self {
            SampleUnit::CpuNanoseconds { period } if period > 0 => (1_000_000_000 / period) as u64,
            _ => 100,
        }
    }
}

/// How to write a pprof profile.
#[derive(Clone, Debug)]
pub struct PprofOptions {
    /// Default: CPU time at 99 Hz (period 10,101,010 ns).
    pub unit: SampleUnit,
    /// The folded weights are period sums (`--weight period`), used as the
    /// CPU nanoseconds as they are. Default: `false` (samples × period).
    pub weights_are_periods: bool,
    /// When the recording started, ns since the Unix epoch. Default: 0.
    pub time_nanos: i64,
    /// How long it ran, ns. Default: 0.
    pub duration_nanos: i64,
}

impl Default for PprofOptions {
    fn default() -> PprofOptions {
        PprofOptions {
            unit: SampleUnit::CpuNanoseconds {
                period: 1_000_000_000 / 99,
            },
            weights_are_periods: false,
            time_nanos: 0,
            duration_nanos: 0,
        }
    }
}

/// profile.proto messages (github.com/google/pprof/proto/profile.proto),
/// written by hand so no protoc is needed at build time.
pub mod proto {
    #![allow(missing_docs)]

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Profile {
        #[prost(message, repeated, tag = "1")]
        pub sample_type: Vec<ValueType>,
        #[prost(message, repeated, tag = "2")]
        pub sample: Vec<Sample>,
        #[prost(message, repeated, tag = "3")]
        pub mapping: Vec<Mapping>,
        #[prost(message, repeated, tag = "4")]
        pub location: Vec<Location>,
        #[prost(message, repeated, tag = "5")]
        pub function: Vec<Function>,
        #[prost(string, repeated, tag = "6")]
        pub string_table: Vec<String>,
        #[prost(int64, tag = "7")]
        pub drop_frames: i64,
        #[prost(int64, tag = "8")]
        pub keep_frames: i64,
        #[prost(int64, tag = "9")]
        pub time_nanos: i64,
        #[prost(int64, tag = "10")]
        pub duration_nanos: i64,
        #[prost(message, optional, tag = "11")]
        pub period_type: Option<ValueType>,
        #[prost(int64, tag = "12")]
        pub period: i64,
        #[prost(int64, repeated, tag = "13")]
        pub comment: Vec<i64>,
        #[prost(int64, tag = "14")]
        pub default_sample_type: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ValueType {
        #[prost(int64, tag = "1")]
        pub r#type: i64,
        #[prost(int64, tag = "2")]
        pub unit: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Sample {
        #[prost(uint64, repeated, tag = "1")]
        pub location_id: Vec<u64>,
        #[prost(int64, repeated, tag = "2")]
        pub value: Vec<i64>,
        #[prost(message, repeated, tag = "3")]
        pub label: Vec<Label>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Label {
        #[prost(int64, tag = "1")]
        pub key: i64,
        #[prost(int64, tag = "2")]
        pub str: i64,
        #[prost(int64, tag = "3")]
        pub num: i64,
        #[prost(int64, tag = "4")]
        pub num_unit: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Mapping {
        #[prost(uint64, tag = "1")]
        pub id: u64,
        #[prost(uint64, tag = "2")]
        pub memory_start: u64,
        #[prost(uint64, tag = "3")]
        pub memory_limit: u64,
        #[prost(uint64, tag = "4")]
        pub file_offset: u64,
        #[prost(int64, tag = "5")]
        pub filename: i64,
        #[prost(int64, tag = "6")]
        pub build_id: i64,
        #[prost(bool, tag = "7")]
        pub has_functions: bool,
        #[prost(bool, tag = "8")]
        pub has_filenames: bool,
        #[prost(bool, tag = "9")]
        pub has_line_numbers: bool,
        #[prost(bool, tag = "10")]
        pub has_inline_frames: bool,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Location {
        #[prost(uint64, tag = "1")]
        pub id: u64,
        #[prost(uint64, tag = "2")]
        pub mapping_id: u64,
        #[prost(uint64, tag = "3")]
        pub address: u64,
        #[prost(message, repeated, tag = "4")]
        pub line: Vec<Line>,
        #[prost(bool, tag = "5")]
        pub is_folded: bool,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Line {
        #[prost(uint64, tag = "1")]
        pub function_id: u64,
        #[prost(int64, tag = "2")]
        pub line: i64,
        #[prost(int64, tag = "3")]
        pub column: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Function {
        #[prost(uint64, tag = "1")]
        pub id: u64,
        #[prost(int64, tag = "2")]
        pub name: i64,
        #[prost(int64, tag = "3")]
        pub system_name: i64,
        #[prost(int64, tag = "4")]
        pub filename: i64,
        #[prost(int64, tag = "5")]
        pub start_line: i64,
    }
}

use proto::{Function, Label, Line, Location, Mapping, Profile, Sample, ValueType};

/// An object in mapping order: name, hex build id, index in the profile.
type ObjectKey = (String, String, u32);
/// A location's order: uses (most first), mapping, address, lines
/// (function id and line number), then its index in the profile.
type LocationKey = (std::cmp::Reverse<u32>, u64, u64, Vec<(u64, u32)>, usize);
/// Lowest address, one past the highest, whether inline frames occur,
/// whether source lines are known.
type AddressRange = (u64, u64, bool, bool);

/// The profile's string table, in first-use order; index 0 is "" as the
/// format requires.
struct Strings(StringTable);

impl Strings {
    fn new() -> Strings {
        let mut table = StringTable::new();
        table.intern("");
        Strings(table)
    }

    fn get(&mut self, text: &str) -> i64 {
        i64::from(self.0.intern(text))
    }
}

/// Writes `profile` (frame names from `names`, the collapsed stacks) as a
/// gzip-compressed pprof profile.
pub fn write_pprof<W: Write>(
    profile: &AddressProfile,
    names: &FoldedStacks,
    options: &PprofOptions,
    mut out: W,
) -> Result<(), ExportError> {
    let prepared = prepare(profile, names, options)?;
    // A message's fields may come in any order and a repeated field may be
    // split, so the samples (nearly all the bytes) are encoded in parallel
    // after the rest, straight from the merged samples.
    let label_bytes: Vec<Vec<u8>> = prepared
        .label_sets
        .iter()
        .map(|labels| {
            let mut buf = Vec::new();
            for label in labels {
                prost::encoding::message::encode(3, label, &mut buf);
            }
            buf
        })
        .collect();
    // Each piece of samples becomes one gzip member, compressed as soon as
    // it is encoded, in parallel: the members one after the other are a
    // valid gzip stream (readers concatenate members), and the pieces are
    // cut the same way whatever the thread count, so the bytes are too.
    // The first member starts with the rest of the profile, so a profile
    // of up to one piece is a single member, which every reader takes. The
    // whole uncompressed profile never exists at once.
    let header = prepared.message.encode_to_vec();
    let pieces: Vec<&[MergedSample]> = prepared.samples.chunks(SAMPLES_PER_MEMBER).collect();
    let members: Vec<Vec<u8>> = pieces
        .into_par_iter()
        .enumerate()
        .map(|(i, samples)| -> std::io::Result<Vec<u8>> {
            let mut bytes = if i == 0 { header.clone() } else { Vec::new() };
            encode_samples(profile, &prepared, &label_bytes, samples, &mut bytes);
            gzip(&bytes, flate2::Compression::fast())
        })
        .collect::<std::io::Result<_>>()?;
    for member in members {
        out.write_all(&member)?;
    }
    out.flush()?;
    Ok(())
}

/// Appends `samples` as `Profile.sample` fields (field 2; `location_id` =
/// 1 and `value` = 2, both packed) to `buf`, the same bytes prost writes.
fn encode_samples(
    profile: &AddressProfile,
    prepared: &Prepared,
    label_bytes: &[Vec<u8>],
    samples: &[MergedSample],
    buf: &mut Vec<u8>,
) {
    buf.reserve(samples.len() * 96);
    let mut locations = Vec::new();
    for sample in samples {
        prepared.locations_of(profile, sample, &mut locations);
        let both = [sample.samples as u64, sample.cpu as u64];
        let values = match prepared.unit {
            SampleUnit::CpuNanoseconds { .. } => &both[..],
            SampleUnit::Count => &both[..1],
        };
        let labels = &label_bytes[sample.labels as usize];
        let locations_len: usize = locations.iter().map(|&v| varint_len(v)).sum();
        let values_len: usize = values.iter().map(|&v| varint_len(v)).sum();
        let len = 1
            + varint_len(locations_len as u64)
            + locations_len
            + 1
            + varint_len(values_len as u64)
            + values_len
            + labels.len();
        buf.push(2 << 3 | 2);
        put_varint(buf, len as u64);
        buf.push(1 << 3 | 2);
        put_varint(buf, locations_len as u64);
        for &v in &locations {
            put_varint(buf, v);
        }
        buf.push(2 << 3 | 2);
        put_varint(buf, values_len as u64);
        for &v in values {
            put_varint(buf, v);
        }
        buf.extend_from_slice(labels);
    }
}

/// `bytes` as one gzip member with no time or name in its header, so the
/// same bytes always compress the same.
fn gzip(bytes: &[u8], level: flate2::Compression) -> std::io::Result<Vec<u8>> {
    let out = Vec::with_capacity(bytes.len() / 4 + 64);
    let mut gzip = flate2::GzBuilder::new().mtime(0).write(out, level);
    gzip.write_all(bytes)?;
    gzip.finish()
}

/// Bytes of `v` as a protobuf varint.
fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push(v as u8 | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

/// Samples per gzip member: about half a megabyte of typical stacks, many
/// times deflate's 32 KiB window, so cutting costs nothing in size.
const SAMPLES_PER_MEMBER: usize = 8192;

/// The profile message, with every table sorted and numbered from 1.
pub fn encode(
    profile: &AddressProfile,
    names: &FoldedStacks,
    options: &PprofOptions,
) -> Result<Profile, ExportError> {
    let prepared = prepare(profile, names, options)?;
    let mut message = prepared.message.clone();
    let mut locations = Vec::new();
    for sample in &prepared.samples {
        prepared.locations_of(profile, sample, &mut locations);
        message.sample.push(Sample {
            location_id: locations.clone(),
            value: prepared.values(sample),
            label: prepared.label_sets[sample.labels as usize].clone(),
        });
    }
    Ok(message)
}

/// One merged sample: its label set, a representative raw sample (whose
/// chain all merged ones share) and the summed values.
struct MergedSample {
    labels: u32,
    representative: u32,
    samples: i64,
    cpu: i64,
}

/// Everything but the samples as a message, and the samples in order.
struct Prepared {
    message: Profile,
    unit: SampleUnit,
    label_sets: Vec<Vec<Label>>,
    location_id: Vec<u64>,
    samples: Vec<MergedSample>,
}

impl Prepared {
    fn locations_of(&self, profile: &AddressProfile, sample: &MergedSample, out: &mut Vec<u64>) {
        out.clear();
        out.extend(
            profile
                .chain(&profile.samples[sample.representative as usize])
                .iter()
                .map(|&l| self.location_id[l as usize]),
        );
    }

    fn values(&self, sample: &MergedSample) -> Vec<i64> {
        match self.unit {
            SampleUnit::CpuNanoseconds { .. } => vec![sample.samples, sample.cpu],
            SampleUnit::Count => vec![sample.samples],
        }
    }
}

fn prepare(
    profile: &AddressProfile,
    names: &FoldedStacks,
    options: &PprofOptions,
) -> Result<Prepared, ExportError> {
    if profile.samples.iter().all(|s| s.samples == 0) {
        return Err(ExportError::NoSamples);
    }
    let frame_text = |id: FrameId| names.frame(id).to_string();
    let mut strings = Strings::new();
    let mut message = Profile::default();
    let value_type = |strings: &mut Strings, kind: &str, unit: &str| ValueType {
        r#type: strings.get(kind),
        unit: strings.get(unit),
    };
    match options.unit {
        SampleUnit::CpuNanoseconds { period } => {
            message.sample_type = vec![
                value_type(&mut strings, "samples", "count"),
                value_type(&mut strings, "cpu", "nanoseconds"),
            ];
            message.period_type = Some(value_type(&mut strings, "cpu", "nanoseconds"));
            message.period = period;
            message.default_sample_type = strings.get("cpu");
        }
        SampleUnit::Count => {
            message.sample_type = vec![value_type(&mut strings, "samples", "count")];
            message.period_type = Some(value_type(&mut strings, "samples", "count"));
            message.period = 1;
        }
    }
    message.time_nanos = options.time_nanos;
    message.duration_nanos = options.duration_nanos;

    // Objects in name order become mappings 1…; only objects in use.
    // How often each location occurs in the chains: the most frequent get
    // the smallest ids, which are the shortest varints.
    let uses = count_uses(&profile.chains, profile.locations.len());
    let used_locations: Vec<bool> = uses.iter().map(|&n| n > 0).collect();
    let mut object_ranges: Vec<Option<AddressRange>> = vec![None; profile.objects.len()];
    for (location, _) in profile
        .locations
        .iter()
        .zip(&used_locations)
        .filter(|(_, &used)| used)
    {
        if let Some(object) = location.object {
            let range = object_ranges[object as usize].get_or_insert((u64::MAX, 0, false, false));
            range.0 = range.0.min(location.address);
            range.1 = range.1.max(location.address.saturating_add(1));
            range.2 |= location.names.len() > 1;
            range.3 |= !location.sources.is_empty();
        }
    }
    let ranges: BTreeMap<ObjectKey, AddressRange> = object_ranges
        .iter()
        .enumerate()
        .filter_map(|(object, range)| {
            let o = &profile.objects[object];
            let key = (
                o.name.clone(),
                o.build_id_hex().unwrap_or_default(),
                object as u32,
            );
            range.map(|r| (key, r))
        })
        .collect();
    let mut mapping_of_object: HashMap<u32, u64> = HashMap::new();
    for ((name, build_id, object), (start, limit, inline, sources)) in &ranges {
        let id = message.mapping.len() as u64 + 1;
        mapping_of_object.insert(*object, id);
        let kernel = profile.objects[*object as usize].kernel;
        message.mapping.push(Mapping {
            id,
            memory_start: *start,
            memory_limit: *limit,
            // Addresses of files are file offsets; the kernel's are its own.
            file_offset: if kernel { 0 } else { *start },
            filename: strings.get(name),
            build_id: if build_id.is_empty() {
                0
            } else {
                strings.get(build_id)
            },
            has_functions: true,
            has_filenames: *sources,
            has_line_numbers: *sources,
            has_inline_frames: *inline,
        });
    }

    // Functions: every (name, source file) used, in text order.
    let source_of = |location: &CodeLocation, k: usize| -> Option<SourcePosition> {
        location.sources.get(k).copied().flatten()
    };
    let mut name_used = vec![false; names.frame_count()];
    let mut with_file: Vec<(FrameId, u32)> = Vec::new();
    for (location, _) in profile
        .locations
        .iter()
        .zip(&used_locations)
        .filter(|(_, &used)| used)
    {
        for (k, &id) in location.names.iter().enumerate() {
            match source_of(location, k) {
                Some(source) => with_file.push((id, source.file)),
                None => name_used[id as usize] = true,
            }
        }
    }
    with_file.sort_unstable();
    with_file.dedup();
    let file_name = |file: Option<u32>| file.map_or("", |f| profile.files[f as usize].as_str());
    let mut functions: Vec<(String, &str, FrameId, Option<u32>)> = name_used
        .iter()
        .enumerate()
        .filter(|(_, &used)| used)
        .map(|(id, _)| (id as FrameId, None))
        .chain(with_file.iter().map(|&(id, file)| (id, Some(file))))
        .map(|(id, file)| (frame_text(id), file_name(file), id, file))
        .collect();
    functions.sort();
    let mut function_of_name = vec![0u64; names.frame_count()];
    let mut function_with_file: HashMap<(FrameId, u32), u64> = HashMap::new();
    for (text, file, id, file_index) in &functions {
        let function_id = message.function.len() as u64 + 1;
        match file_index {
            Some(f) => {
                function_with_file.insert((*id, *f), function_id);
            }
            None => function_of_name[*id as usize] = function_id,
        }
        message.function.push(Function {
            id: function_id,
            name: strings.get(text),
            system_name: strings.get(names.frame(*id).name()),
            filename: if file.is_empty() {
                0
            } else {
                strings.get(file)
            },
            start_line: 0,
        });
    }

    // Locations by use (most used first), then (mapping, address, lines).
    let mut location_keys: Vec<LocationKey> = profile
        .locations
        .iter()
        .enumerate()
        .filter(|(i, _)| used_locations[*i])
        .map(|(i, l)| {
            let mapping = l.object.map_or(0, |o| mapping_of_object[&o]);
            // pprof lists inlined functions first, the caller they were inlined into last.
            let lines = l
                .names
                .iter()
                .enumerate()
                .rev()
                .map(|(k, &id)| match source_of(l, k) {
                    Some(source) => (function_with_file[&(id, source.file)], source.line),
                    None => (function_of_name[id as usize], 0),
                })
                .collect();
            (std::cmp::Reverse(uses[i]), mapping, l.address, lines, i)
        })
        .collect();
    location_keys.par_sort_unstable();
    let mut location_id = vec![0u64; profile.locations.len()];
    for (_, mapping, address, lines, index) in location_keys {
        let id = message.location.len() as u64 + 1;
        location_id[index] = id;
        message.location.push(Location {
            id,
            mapping_id: mapping,
            address,
            line: lines
                .into_iter()
                .map(|(function_id, line)| Line {
                    function_id,
                    line: i64::from(line),
                    column: 0,
                })
                .collect(),
            is_folded: false,
        });
    }

    // Each thread's labels, numbered in label order.
    let thread_labels: Vec<Vec<(String, String)>> = profile
        .threads
        .iter()
        .map(|thread| {
            let root = frame_text(thread.root);
            let comm = if thread.tid >= 0 && thread.pid >= 0 {
                root.strip_suffix(&format!("-{}/{}", thread.pid, thread.tid))
            } else if thread.pid >= 0 {
                root.strip_suffix(&format!("-{}", thread.pid))
            } else {
                None
            }
            .unwrap_or(&root)
            .to_owned();
            let mut labels = vec![("comm".to_owned(), comm)];
            if thread.pid >= 0 {
                labels.push(("pid".to_owned(), thread.pid.to_string()));
            }
            if thread.tid >= 0 {
                labels.push(("tid".to_owned(), thread.tid.to_string()));
            }
            labels
        })
        .collect();
    let mut label_sets: Vec<&Vec<(String, String)>> = thread_labels.iter().collect();
    label_sets.sort();
    label_sets.dedup();
    let label_set_of_thread: Vec<u32> = thread_labels
        .iter()
        .map(|labels| label_sets.binary_search(&labels).expect("present") as u32)
        .collect();

    // Samples merged by (labels, locations), in the order the collapser
    // gives them (first seen in the recording: the same on every run).
    let labels_of = |i: usize| label_set_of_thread[profile.samples[i].thread as usize];
    // Location indices map one to one to ids, so the raw chains can be
    // hashed and compared as they are.
    let raw_chain = |i: usize| profile.chain(&profile.samples[i]);
    let key_hash = |i: usize| {
        use std::hash::{Hash, Hasher};
        let mut hasher = rustc_hash::FxHasher::default();
        labels_of(i).hash(&mut hasher);
        raw_chain(i).hash(&mut hasher);
        hasher.finish()
    };
    let hashes: Vec<u64> = (0..profile.samples.len())
        .into_par_iter()
        .map(key_hash)
        .collect();
    let same_key =
        |a: usize, b: usize| labels_of(a) == labels_of(b) && raw_chain(a) == raw_chain(b);
    let first_with_key = first_with_same_key(&hashes, same_key);
    let mut samples: Vec<MergedSample> = Vec::with_capacity(profile.samples.len());
    // Per sample: its merged sample, once it has one.
    let mut merged_index = vec![0u32; profile.samples.len()];
    for (index, sample) in profile.samples.iter().enumerate() {
        let cpu = match options.unit {
            SampleUnit::CpuNanoseconds { period } => {
                if options.weights_are_periods {
                    sample.weight as i64
                } else {
                    (sample.samples as i64).saturating_mul(period)
                }
            }
            SampleUnit::Count => 0,
        };
        match first_with_key[index] {
            u32::MAX => {
                merged_index[index] = samples.len() as u32;
                samples.push(MergedSample {
                    labels: labels_of(index),
                    representative: index as u32,
                    samples: sample.samples as i64,
                    cpu,
                });
            }
            first => {
                let merged = &mut samples[merged_index[first as usize] as usize];
                merged.samples += sample.samples as i64;
                merged.cpu += cpu;
            }
        }
    }
    let label_sets: Vec<Vec<Label>> = label_sets
        .iter()
        .map(|labels| {
            labels
                .iter()
                .map(|(key, value)| Label {
                    key: strings.get(key),
                    str: strings.get(value),
                    num: 0,
                    num_unit: 0,
                })
                .collect()
        })
        .collect();
    message.string_table = strings.0.into_strings();
    Ok(Prepared {
        message,
        unit: options.unit,
        label_sets,
        location_id,
        samples,
    })
}

/// For each item, the first item with the same key, or `u32::MAX` if that
/// is itself; items are told apart by `hashes` (of their keys) and
/// `same_key`.
///
/// Items go by the top bits of their hash to shards small enough that a
/// shard's table stays in cache, and the shards are searched in parallel.
fn first_with_same_key(hashes: &[u64], same_key: impl Fn(usize, usize) -> bool + Sync) -> Vec<u32> {
    const SHARD_BITS: u32 = 8;
    let shard_of = |hash: u64| (hash >> (64 - SHARD_BITS)) as usize;
    let mut starts = vec![0usize; (1 << SHARD_BITS) + 1];
    for &hash in hashes {
        starts[shard_of(hash) + 1] += 1;
    }
    for i in 1..starts.len() {
        starts[i] += starts[i - 1];
    }
    // Each shard's items in order: the first of a key is met first.
    let mut by_shard = vec![0u32; hashes.len()];
    let mut next = starts.clone();
    for (index, &hash) in hashes.iter().enumerate() {
        let slot = &mut next[shard_of(hash)];
        by_shard[*slot] = index as u32;
        *slot += 1;
    }
    let duplicates: Vec<Vec<(u32, u32)>> = starts
        .par_windows(2)
        .map(|range| {
            let items = &by_shard[range[0]..range[1]];
            let mut seen: hashbrown::HashTable<(u64, u32)> =
                hashbrown::HashTable::with_capacity(items.len());
            let mut duplicates = Vec::new();
            for &index in items {
                let hash = hashes[index as usize];
                let found = seen.find(hash, |&(h, other)| {
                    h == hash && same_key(other as usize, index as usize)
                });
                match found {
                    Some(&(_, first)) => duplicates.push((index, first)),
                    None => {
                        seen.insert_unique(hash, (hash, index), |&(h, _)| h);
                    }
                }
            }
            duplicates
        })
        .collect();
    let mut first = vec![u32::MAX; hashes.len()];
    for (index, earlier) in duplicates.into_iter().flatten() {
        first[index as usize] = earlier;
    }
    first
}

/// How often each of `locations` locations occurs in `chains`, saturating.
fn count_uses(chains: &[u32], locations: usize) -> Vec<u32> {
    // Four tables break the dependency between increments of the same
    // location in a row (a hot location is most of a deep chain); chunks
    // count on all cores.
    let count = |chunk: &[u32]| {
        let mut tables = vec![[0u32; 4]; locations];
        let mut quads = chunk.chunks_exact(4);
        for quad in &mut quads {
            for (lane, &l) in quad.iter().enumerate() {
                let n = &mut tables[l as usize][lane];
                *n = n.saturating_add(1);
            }
        }
        for &l in quads.remainder() {
            tables[l as usize][0] = tables[l as usize][0].saturating_add(1);
        }
        tables
            .into_iter()
            .map(|t| t.into_iter().fold(0u32, u32::saturating_add))
            .collect::<Vec<u32>>()
    };
    chains.par_chunks(1 << 20).map(count).reduce(
        || vec![0; locations],
        |mut a, b| {
            for (a, b) in a.iter_mut().zip(b) {
                *a = a.saturating_add(b);
            }
            a
        },
    )
}

/// Limits of one upload (Grafana Pyroscope's `/ingest`).
#[derive(Clone, Copy, Debug)]
pub struct UploadLimits {
    /// Most samples in one profile. Default: 16,000.
    pub max_samples: usize,
    /// Most bytes of one profile before compression. Default: 4 MiB.
    pub max_bytes: usize,
}

impl Default for UploadLimits {
    fn default() -> UploadLimits {
        UploadLimits {
            max_samples: 16_000,
            max_bytes: 4 << 20,
        }
    }
}

/// The profile as one or more gzip-compressed pprof profiles that each
/// stay within `limits`: the samples are split, never dropped, and each
/// part carries only the locations, functions and mappings it uses. The
/// parts' samples add up to the whole.
pub fn upload_parts(
    profile: &AddressProfile,
    names: &FoldedStacks,
    options: &PprofOptions,
    limits: UploadLimits,
) -> Result<Vec<Vec<u8>>, ExportError> {
    let prepared = prepare(profile, names, options)?;
    // One sample per merged sample, so a part's count is its pprof count.
    let merged: Vec<flamegraph_perf_collapse::AddressSample> = prepared
        .samples
        .iter()
        .map(|s| {
            let representative = &profile.samples[s.representative as usize];
            flamegraph_perf_collapse::AddressSample {
                thread: representative.thread,
                chain: representative.chain,
                samples: s.samples as u64,
                weight: if options.weights_are_periods {
                    s.cpu as u64
                } else {
                    s.samples as u64
                },
            }
        })
        .collect();
    let mut parts = Vec::new();
    let mut pending: Vec<&[flamegraph_perf_collapse::AddressSample]> =
        merged.chunks(limits.max_samples.max(1)).rev().collect();
    while let Some(chunk) = pending.pop() {
        // The part's own chains, back to back.
        let mut chains = Vec::new();
        let samples = chunk
            .iter()
            .map(|sample| {
                let start = chains.len() as u32;
                chains.extend_from_slice(profile.chain(sample));
                flamegraph_perf_collapse::AddressSample {
                    chain: (start, sample.chain.1),
                    ..sample.clone()
                }
            })
            .collect();
        let part = AddressProfile {
            objects: profile.objects.clone(),
            locations: profile.locations.clone(),
            threads: profile.threads.clone(),
            samples,
            chains,
            files: profile.files.clone(),
        };
        let message = encode(&part, names, options)?;
        if message.encoded_len() > limits.max_bytes && chunk.len() > 1 {
            let (first, second) = chunk.split_at(chunk.len() / 2);
            pending.push(second);
            pending.push(first);
            continue;
        }
        parts.push(gzip(
            &message.encode_to_vec(),
            flate2::Compression::default(),
        )?);
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flamegraph_perf_collapse::{AddressSample, CodeLocation, CodeObject, ThreadRoot};
    use flamegraph_perf_folded::Annotation;
    use std::io::Read;

    /// A profile over several gzip members: two objects (one the kernel,
    /// with a build id), addresses outside both, inline frames, and samples
    /// that merge.
    fn sample_profile() -> (AddressProfile, FoldedStacks) {
        let mut names = FoldedStacks::new();
        let mut profile = AddressProfile::default();
        profile.objects.push(CodeObject {
            name: "/usr/bin/app".into(),
            build_id: None,
            kernel: false,
            jit: false,
        });
        profile.objects.push(CodeObject {
            name: "[kernel.kallsyms]".into(),
            build_id: Some(vec![0xab, 0x01, 0xff]),
            kernel: true,
            jit: false,
        });
        // Two threads whose labels are the same (their samples merge), one
        // with pid and tid labels.
        for (comm, pid, tid) in [("app", -1, -1), ("app", -1, -1), ("db-7/7", 7, 7)] {
            let root = names.intern_name(comm, Annotation::None);
            profile.threads.push(ThreadRoot { root, pid, tid });
        }
        profile.files = (0..4).map(|f| format!("/src/file{f}.c")).collect();
        for i in 0..300u32 {
            let kernel = i % 5 == 0;
            let annotation = if kernel {
                Annotation::Kernel
            } else {
                Annotation::None
            };
            let mut ids = vec![names.intern_name(&format!("f{}", i % 40), annotation)];
            if i % 7 == 0 {
                ids.push(names.intern_name(&format!("inl{i}"), Annotation::Inlined));
            }
            // Some user code has source lines (one file per ten names).
            let sources = if !kernel && i % 3 == 0 {
                (0..ids.len() as u32)
                    .map(|k| {
                        (k == 0 || i % 2 == 0).then_some(SourcePosition {
                            file: i % 40 / 10,
                            line: 10 + i + k,
                        })
                    })
                    .collect()
            } else {
                Vec::new()
            };
            profile.locations.push(CodeLocation {
                object: (i % 11 != 0).then_some(u32::from(kernel)),
                address: 0x1000 + u64::from(i) * 16,
                names: ids,
                sources,
            });
        }
        for i in 0..3 * SAMPLES_PER_MEMBER as u32 {
            let start = profile.chains.len() as u32;
            // Every chain occurs in two threads; short ones more often.
            let mut state = u64::from(i / 2) * 0x9e37_79b9_7f4a_7c15 + 1;
            let len = 1 + (i / 2) % 30;
            profile.chains.extend((0..len).map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state % 300) as u32
            }));
            profile.samples.push(AddressSample {
                thread: i % 3,
                chain: (start, len),
                samples: u64::from(1 + i % 4),
                weight: u64::from(1 + i % 4) * 1000,
            });
        }
        (profile, names)
    }

    fn decode(gzipped: &[u8]) -> Profile {
        let mut raw = Vec::new();
        flate2::read::MultiGzDecoder::new(gzipped)
            .read_to_end(&mut raw)
            .unwrap();
        Profile::decode(&raw[..]).unwrap()
    }

    #[test]
    fn written_samples_equal_the_prost_encoding() {
        let (profile, names) = sample_profile();
        for options in [
            PprofOptions::default(),
            PprofOptions {
                unit: SampleUnit::Count,
                ..PprofOptions::default()
            },
            PprofOptions {
                weights_are_periods: true,
                time_nanos: 5,
                duration_nanos: 7,
                ..PprofOptions::default()
            },
        ] {
            let mut written = Vec::new();
            write_pprof(&profile, &names, &options, &mut written).unwrap();
            let expected = encode(&profile, &names, &options).unwrap();
            let got = decode(&written);
            assert!(got.sample.len() > SAMPLES_PER_MEMBER, "several members");
            // Threads 0 and 1 have the same labels: one sample per
            // (labels, chain), and every such key once.
            let keys: std::collections::BTreeSet<(bool, &[u32])> = profile
                .samples
                .iter()
                .map(|s| (s.thread == 2, profile.chain(s)))
                .collect();
            assert!(keys.len() < profile.samples.len(), "some merge");
            assert_eq!(got.sample.len(), keys.len());
            let written_keys: std::collections::BTreeSet<_> = got
                .sample
                .iter()
                .map(|s| {
                    let labels: Vec<(i64, i64)> = s.label.iter().map(|l| (l.key, l.str)).collect();
                    (&s.location_id[..], labels)
                })
                .collect();
            assert_eq!(written_keys.len(), got.sample.len(), "no key twice");
            assert_eq!(got, expected);
            let total: i64 = got.sample.iter().map(|s| s.value[0]).sum();
            let recorded: u64 = profile.samples.iter().map(|s| s.samples).sum();
            assert_eq!(total, recorded as i64);
            let mut again = Vec::new();
            write_pprof(&profile, &names, &options, &mut again).unwrap();
            assert_eq!(written, again, "the same bytes every time");
        }
    }

    #[test]
    fn a_profile_of_one_piece_is_one_gzip_member() {
        // Readers that stop after the first member see everything.
        let (mut profile, names) = sample_profile();
        profile.samples.truncate(SAMPLES_PER_MEMBER / 2);
        let mut written = Vec::new();
        write_pprof(&profile, &names, &PprofOptions::default(), &mut written).unwrap();
        let mut raw = Vec::new();
        let mut first = flate2::read::GzDecoder::new(&written[..]);
        first.read_to_end(&mut raw).unwrap();
        let expected = encode(&profile, &names, &PprofOptions::default()).unwrap();
        assert_eq!(Profile::decode(&raw[..]).unwrap(), expected);
        assert_eq!(
            first.into_inner().len(),
            0,
            "nothing after the first member"
        );
    }
}
