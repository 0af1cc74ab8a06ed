//! Reading perf.data (file mode, pipe mode, zstd-compressed) into the event stream.
//!
//! [`PerfDataReader::open`] checks the header against the file size before
//! anything is handed to linux-perf-data (which trusts offsets), and
//! describes the recording in a [`RecordingInfo`].
//! [`PerfDataReader::read_events`] then streams every record, in time order,
//! into an [`EventSink`]; a record that does not parse is counted and
//! skipped, and a read error ends the stream early with what was read so far.

use std::cell::RefCell;
use std::fs::File;
use std::io::{self, BufReader, Read, Stdin};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use linux_perf_data::linux_perf_event_reader::{
    PerfEventType, SamplingPolicy, SoftwareCounterType,
};
use linux_perf_data::{
    AttributeDescription, PerfFile, PerfFileReader, PerfFileRecord, PerfRecordIter,
};

use crate::event::{event_from_record, EventSink};

mod direct;
mod layout;
mod patched;
mod pipe;

pub use layout::{inspect, inspect_releasing, Damage, Layout};
use patched::Patched;
use pipe::{PipeGuard, PipeState};

/// Why a recording could not be read at all.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The file could not be opened or read.
    #[error("{path}: {error}")]
    Io {
        /// The file (`-` for stdin).
        path: PathBuf,
        /// The cause.
        error: io::Error,
    },
    /// The file is empty.
    #[error("{path}: empty file, not a perf.data recording")]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// The magic bytes are wrong.
    #[error("{path}: not a perf.data file (starts with {magic:?}, expected \"PERFILE2\")")]
    NotPerfData {
        /// The file.
        path: PathBuf,
        /// The first bytes.
        magic: String,
    },
    /// The header or a section table is inconsistent with the file.
    #[error("{path}: corrupt perf.data at offset {offset}: {what}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Byte offset of the bad field or section.
        offset: u64,
        /// What is wrong.
        what: String,
    },
    /// linux-perf-data rejected the file.
    #[error("{path}: cannot parse perf.data: {error}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's error.
        error: linux_perf_data::Error,
    },
}

/// What kind of event an attribute describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// `cpu-clock`: timer-based CPU sampling (period in ns).
    CpuClock,
    /// `task-clock`: per-task timer sampling (period in ns).
    TaskClock,
    /// Another software event.
    Software,
    /// A hardware (PMU) event.
    Hardware,
    /// A tracepoint (`subsystem:name`).
    Tracepoint,
    /// perf's placeholder event for side-band records; never sampled.
    Dummy,
    /// Anything else (raw PMU, breakpoints, …).
    Other,
}

/// One event (attribute) of a recording.
#[derive(Clone, Debug)]
pub struct EventInfo {
    /// Name as perf shows it (`cpu-clock`, `timer:timer_start`, …).
    pub name: String,
    /// Kind.
    pub kind: EventKind,
    /// Whether samples carry callchains (`-g`).
    pub has_callchain: bool,
    /// Sampling frequency in Hz, when sampling by frequency.
    pub frequency: Option<u64>,
    /// Sampling period, when sampling by period.
    pub period: Option<u64>,
    /// The callchain depth limit the event asked for, when it set one.
    pub max_stack: Option<usize>,
}

/// What a recording says about itself.
#[derive(Clone, Debug, Default)]
pub struct RecordingInfo {
    /// The file (`-` for stdin).
    pub path: PathBuf,
    /// Host the recording was made on.
    pub hostname: Option<String>,
    /// Its kernel release.
    pub os_release: Option<String>,
    /// perf version that wrote it.
    pub perf_version: Option<String>,
    /// Architecture.
    pub arch: Option<String>,
    /// perf command line.
    pub cmdline: Option<Vec<String>>,
    /// Events in attribute order; [`crate::Sample::event_index`] indexes this.
    pub events: Vec<EventInfo>,
    /// (path, build id) pairs from the build-id table.
    pub build_ids: Vec<(Vec<u8>, Vec<u8>)>,
    /// True for pipe-mode data.
    pub pipe_mode: bool,
}

impl RecordingInfo {
    /// Indices of events that can have samples (not perf's dummy event).
    pub fn sampled_events(&self) -> Vec<usize> {
        self.events
            .iter()
            .enumerate()
            .filter(|(_, e)| e.kind != EventKind::Dummy)
            .map(|(i, _)| i)
            .collect()
    }

    /// The index of the event called `name`, also accepting perf's plain
    /// form for decorated names (`cpu-clock` for `cpu-clock:ppp` or
    /// `cpu-clock/freq=999/`).
    pub fn event_by_name(&self, name: &str) -> Option<usize> {
        let base = |n: &str| -> String {
            // Strip perf's `/term=value/` list and `:u`/`:k`/`:ppp`
            // modifiers, but keep `subsystem:name`.
            let n = match n.split_once('/') {
                Some((event, terms)) if terms.contains('/') => event,
                _ => n,
            };
            let mut parts: Vec<&str> = n.split(':').collect();
            while parts.len() > 1
                && parts
                    .last()
                    .is_some_and(|m| !m.is_empty() && m.chars().all(|c| "ukhGHpPSDIWe".contains(c)))
            {
                parts.pop();
            }
            parts.join(":")
        };
        self.events
            .iter()
            .position(|e| e.name == name)
            .or_else(|| self.events.iter().position(|e| base(&e.name) == base(name)))
    }
}

/// Counts from streaming the records.
#[derive(Clone, Debug, Default)]
pub struct ReadStats {
    /// Records delivered (kernel and perf records).
    pub records: u64,
    /// Records that did not parse and were skipped.
    pub malformed_records: u64,
    /// Where the recording is damaged, if it is: the data before that
    /// point was read, the rest could not be.
    pub damage: Option<Damage>,
    /// The parser's own error, when it stopped early for a reason the
    /// layout check did not see (e.g. corrupt compressed data).
    pub stopped_early: Option<String>,
}

/// How far reading has got, for a progress display.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReadProgress {
    /// Records read so far.
    pub records: u64,
    /// Bytes of the data read so far, when known.
    pub bytes: Option<u64>,
    /// Bytes of data in all, when known.
    pub total_bytes: Option<u64>,
}

/// Records between two progress reports.
const PROGRESS_EVERY_RECORDS: u64 = 1 << 16;

impl ReadStats {
    /// True when the graph shows only part of the recording.
    pub fn is_partial(&self) -> bool {
        self.damage.is_some() || self.stopped_early.is_some()
    }
}

/// The bytes of a recording, which can give back the memory of parts
/// already read.
trait RecordingBytes: AsRef<[u8]> {
    /// Drops `range` from this process's resident memory where that is
    /// free: the bytes stay readable. Default: keeps everything.
    fn release(&self, range: std::ops::Range<usize>) {
        let _ = range;
    }
}

impl RecordingBytes for Vec<u8> {}

impl RecordingBytes for memmap2::Mmap {
    /// A read-only file mapping reads released pages back from the page
    /// cache on the next access, so a gigabyte recording costs resident
    /// memory only for the stretch being read, not for the whole file.
    fn release(&self, range: std::ops::Range<usize>) {
        const PAGE: usize = 4096;
        let start = range.start.div_ceil(PAGE) * PAGE;
        let end = range.end.min(self.len()) / PAGE * PAGE;
        if start < end {
            // SAFETY: the mapping is private and read-only, so MADV_DONTNEED
            // discards no data: later reads see the file's bytes again.
            let _ = unsafe {
                self.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start, end - start)
            };
        }
    }
}

/// Bytes shared between the parser (through [`Patched`]) and the direct walker.
#[derive(Clone)]
struct Shared<B>(std::sync::Arc<B>);

impl<B: AsRef<[u8]>> AsRef<[u8]> for Shared<B> {
    fn as_ref(&self) -> &[u8] {
        (*self.0).as_ref()
    }
}

/// The bytes of a file-mode recording plus the range of its data section
/// that holds only complete records.
type DirectData = (std::sync::Arc<dyn RecordingBytes>, std::ops::Range<usize>);

enum Records {
    File(PerfRecordIter<Patched<Shared<memmap2::Mmap>>>),
    Bytes(PerfRecordIter<Patched<Shared<Vec<u8>>>>),
    Stdin(PerfRecordIter<PipeGuard<BufReader<Stdin>>>),
}

/// True when `bytes` start with perf.data's magic, `PERFILE2` (byte-swapped
/// from big-endian writers), as file-mode and pipe-mode data both do.
pub fn starts_like_perf_data(bytes: &[u8]) -> bool {
    bytes.starts_with(b"PERFILE2") || bytes.starts_with(b"2ELIFREP")
}

/// An open recording, ready to stream.
pub struct PerfDataReader {
    info: RecordingInfo,
    perf_file: PerfFile,
    records: Records,
    /// Damage known before reading (from the layout check).
    damage: Option<Damage>,
    /// For stdin: what the stream guard saw.
    pipe_state: Option<Rc<RefCell<PipeState>>>,
    /// File mode: the data section's complete records, for the direct walk.
    direct: Option<DirectData>,
    /// The layout check walked the records (else the direct walk checks them).
    records_checked: bool,
}

impl PerfDataReader {
    /// Opens a perf.data file, or stdin for `-` (pipe mode).
    pub fn open(path: &Path) -> Result<PerfDataReader, ReadError> {
        let io_error = |error| ReadError::Io {
            path: path.to_owned(),
            error,
        };
        if path == Path::new("-") {
            let (reader, state) = PipeGuard::new(BufReader::with_capacity(1 << 20, io::stdin()));
            let parsed = PerfFileReader::parse_pipe(reader).map_err(|error| match error {
                linux_perf_data::Error::IoError(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    ReadError::Empty {
                        path: path.to_owned(),
                    }
                }
                error => ReadError::Parse {
                    path: path.to_owned(),
                    error,
                },
            })?;
            let mut reader = PerfDataReader::new(
                path,
                true,
                parsed.perf_file,
                Records::Stdin(parsed.record_iter),
            );
            reader.pipe_state = Some(state);
            return Ok(reader);
        }
        let file = File::open(path).map_err(io_error)?;
        let metadata = file.metadata().map_err(io_error)?;
        if metadata.is_dir() {
            return Err(io_error(io::Error::other("is a directory")));
        }
        if metadata.is_file() {
            if metadata.len() == 0 {
                return Err(ReadError::Empty {
                    path: path.to_owned(),
                });
            }
            // SAFETY: read-only mapping of a file we opened; see `validate_header`
            // for the checks that keep every access inside it.
            let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io_error)?;
            return Self::parse(path, Shared(std::sync::Arc::new(map)), Records::File);
        }
        // A FIFO or character device: read it as a pipe-mode stream.
        let mut bytes = Vec::new();
        (&file).read_to_end(&mut bytes).map_err(io_error)?;
        Self::from_bytes(path, bytes)
    }

    /// Reads a recording held in memory (file or pipe mode).
    pub fn from_bytes(path: &Path, bytes: Vec<u8>) -> Result<PerfDataReader, ReadError> {
        if bytes.is_empty() {
            return Err(ReadError::Empty {
                path: path.to_owned(),
            });
        }
        Self::parse(path, Shared(std::sync::Arc::new(bytes)), Records::Bytes)
    }

    /// Parses an in-memory recording after checking (and where possible
    /// repairing) its structure.
    fn parse<B: RecordingBytes + 'static>(
        path: &Path,
        bytes: Shared<B>,
        records: fn(PerfRecordIter<Patched<Shared<B>>>) -> Records,
    ) -> Result<PerfDataReader, ReadError> {
        let layout =
            inspect_releasing(path, bytes.as_ref(), &|range| bytes.0.release(range), true)?;
        let direct = layout.data_range.and_then(|(offset, len)| {
            let start = usize::try_from(offset).ok()?;
            let shared: std::sync::Arc<dyn RecordingBytes> = bytes.0.clone();
            Some((shared, start..start + usize::try_from(len).ok()?))
        });
        let file = Patched::new(bytes, layout.readable_len, layout.patches);
        let parsed = if layout.pipe_mode {
            PerfFileReader::parse_pipe(file)
        } else {
            PerfFileReader::parse_file(file)
        }
        .map_err(|error| parse_error(path, error))?;
        let mut reader = PerfDataReader::new(
            path,
            layout.pipe_mode,
            parsed.perf_file,
            records(parsed.record_iter),
        );
        reader.damage = layout.damage;
        reader.direct = direct;
        reader.records_checked = layout.records_checked;
        Ok(reader)
    }

    fn new(path: &Path, pipe_mode: bool, perf_file: PerfFile, records: Records) -> PerfDataReader {
        let info = describe(path, pipe_mode, &perf_file);
        PerfDataReader {
            info,
            perf_file,
            records,
            damage: None,
            pipe_state: None,
            direct: None,
            records_checked: true,
        }
    }

    /// What the recording says about itself.
    pub fn info(&self) -> &RecordingInfo {
        &self.info
    }

    /// Streams every record into `sink`, in time order.
    pub fn read_events(&mut self, sink: &mut dyn EventSink) -> ReadStats {
        self.read_events_reporting(sink, &mut |_| {})
    }

    /// [`Self::read_events`], telling `progress` how far it has got every
    /// few tens of thousands of records.
    pub fn read_events_reporting(
        &mut self,
        sink: &mut dyn EventSink,
        progress: &mut dyn FnMut(ReadProgress),
    ) -> ReadStats {
        let direct = self.direct.take().and_then(|(bytes, range)| {
            let start = range.start;
            let section = direct::DataSection {
                bytes: &(*bytes).as_ref()[range],
                file_offset: start as u64,
                records_checked: self.records_checked,
            };
            let release = |r: std::ops::Range<usize>| bytes.release(start + r.start..start + r.end);
            direct::stream(
                section,
                self.perf_file.event_attributes(),
                sink,
                &release,
                progress,
            )
        });
        let mut stats = match direct {
            Some(stats) => stats,
            None => self.read_with_parser(sink, progress),
        };
        stats.damage = stats
            .damage
            .take()
            .or_else(|| self.damage.clone())
            .or_else(|| {
                self.pipe_state
                    .as_ref()
                    .and_then(|state| state.borrow().damage.clone())
            });
        stats
    }

    fn read_with_parser(
        &mut self,
        sink: &mut dyn EventSink,
        progress: &mut dyn FnMut(ReadProgress),
    ) -> ReadStats {
        match &mut self.records {
            Records::File(iter) => stream(&mut self.perf_file, iter, sink, progress),
            Records::Bytes(iter) => stream(&mut self.perf_file, iter, sink, progress),
            Records::Stdin(iter) => stream(&mut self.perf_file, iter, sink, progress),
        }
    }
}

fn parse_error(path: &Path, error: linux_perf_data::Error) -> ReadError {
    ReadError::Parse {
        path: path.to_owned(),
        error,
    }
}

fn stream<R: Read>(
    perf_file: &mut PerfFile,
    iter: &mut PerfRecordIter<R>,
    sink: &mut dyn EventSink,
    progress: &mut dyn FnMut(ReadProgress),
) -> ReadStats {
    let mut stats = ReadStats::default();
    let mut callchain = Vec::new();
    let mut names = Vec::new();
    loop {
        let record = match iter.next_record(perf_file) {
            Ok(Some(record)) => record,
            Ok(None) => break,
            Err(e) => {
                stats.stopped_early = Some(e.to_string());
                break;
            }
        };
        stats.records += 1;
        if stats.records % PROGRESS_EVERY_RECORDS == 0 {
            progress(ReadProgress {
                records: stats.records,
                ..ReadProgress::default()
            });
        }
        if let PerfFileRecord::EventRecord { attr_index, record } = record {
            match event_from_record(&record, attr_index, &mut callchain, &mut names) {
                Ok(Some(event)) => sink.event(&event),
                Ok(None) => {}
                Err(_) => stats.malformed_records += 1,
            }
        }
    }
    stats
}

fn describe(path: &Path, pipe_mode: bool, perf_file: &PerfFile) -> RecordingInfo {
    let events = perf_file
        .event_attributes()
        .iter()
        .map(describe_event)
        .collect();
    let mut build_ids: Vec<(Vec<u8>, Vec<u8>)> = perf_file
        .build_ids()
        .unwrap_or_default()
        .into_values()
        .map(|info| (info.path, info.build_id))
        .collect();
    build_ids.sort();
    RecordingInfo {
        path: path.to_owned(),
        hostname: perf_file.hostname().ok().flatten().map(str::to_owned),
        os_release: perf_file.os_release().ok().flatten().map(str::to_owned),
        perf_version: perf_file.perf_version().ok().flatten().map(str::to_owned),
        arch: perf_file.arch().ok().flatten().map(str::to_owned),
        cmdline: perf_file
            .cmdline()
            .ok()
            .flatten()
            .map(|args| args.into_iter().map(str::to_owned).collect()),
        events,
        build_ids,
        pipe_mode,
    }
}

fn describe_event(attr: &AttributeDescription) -> EventInfo {
    let attributes = attr.attributes();
    let kind = match attributes.type_ {
        PerfEventType::Software(SoftwareCounterType::CpuClock) => EventKind::CpuClock,
        PerfEventType::Software(SoftwareCounterType::TaskClock) => EventKind::TaskClock,
        PerfEventType::Software(SoftwareCounterType::Dummy) => EventKind::Dummy,
        PerfEventType::Software(_) => EventKind::Software,
        PerfEventType::Hardware(..) | PerfEventType::HwCache(..) => EventKind::Hardware,
        PerfEventType::Tracepoint(_) => EventKind::Tracepoint,
        _ => EventKind::Other,
    };
    let name = attr
        .name()
        .map(str::to_owned)
        .unwrap_or_else(|| match attributes.type_ {
            PerfEventType::Software(SoftwareCounterType::CpuClock) => "cpu-clock".into(),
            PerfEventType::Software(SoftwareCounterType::TaskClock) => "task-clock".into(),
            PerfEventType::Software(SoftwareCounterType::Dummy) => "dummy".into(),
            PerfEventType::Tracepoint(id) => format!("tracepoint:{id}"),
            ref other => format!("{other:?}"),
        });
    let (frequency, period) = match attributes.sampling_policy {
        SamplingPolicy::Frequency(hz) => (Some(hz), None),
        SamplingPolicy::Period(period) => (None, Some(period.get())),
        _ => (None, None),
    };
    EventInfo {
        name,
        kind,
        has_callchain: attributes
            .sample_format
            .contains(linux_perf_data::linux_perf_event_reader::SampleFormat::CALLCHAIN),
        frequency,
        period,
        max_stack: (attributes.sample_max_stack > 0)
            .then_some(usize::from(attributes.sample_max_stack)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_names_match_with_and_without_modifiers() {
        let info = RecordingInfo {
            events: vec![
                EventInfo {
                    name: "cpu-clock:ppp".into(),
                    kind: EventKind::CpuClock,
                    has_callchain: true,
                    frequency: Some(99),
                    period: None,
                    max_stack: None,
                },
                EventInfo {
                    name: "timer:timer_start".into(),
                    kind: EventKind::Tracepoint,
                    has_callchain: true,
                    frequency: None,
                    period: Some(1),
                    max_stack: None,
                },
            ],
            ..RecordingInfo::default()
        };
        assert_eq!(info.event_by_name("cpu-clock"), Some(0));
        assert_eq!(info.event_by_name("cpu-clock/freq=999/:ppp"), Some(0));
        assert_eq!(info.event_by_name("timer:timer_start"), Some(1));
        assert_eq!(info.event_by_name("sched:sched_switch"), None);
    }
}

#[cfg(test)]
mod direct_walk_tests {
    use super::*;

    /// Every event, formatted, in delivery order.
    #[derive(Default)]
    struct Transcript(Vec<String>);

    impl EventSink for Transcript {
        fn event(&mut self, event: &crate::event::Event<'_>) {
            self.0.push(format!("{event:?}"));
        }
    }

    fn recordings() -> Vec<std::path::PathBuf> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures");
        let mut found = Vec::new();
        for dir in std::fs::read_dir(&root).unwrap() {
            let dir = dir.unwrap().path();
            if !dir.is_dir() {
                continue;
            }
            for file in std::fs::read_dir(&dir).unwrap() {
                let file = file.unwrap().path();
                if file.extension().is_some_and(|e| e == "data") {
                    found.push(file);
                }
            }
        }
        found.sort();
        found
    }

    /// The direct walk must deliver exactly what linux-perf-data's iterator
    /// delivers, in the same order, on every recording we keep — intact,
    /// damaged and fuzz-found alike.
    #[test]
    fn direct_walk_matches_the_parser() {
        let mut walked = 0;
        for path in recordings() {
            let Ok(mut direct) = PerfDataReader::open(&path) else {
                continue; // unreadable either way; the CLI tests cover the error
            };
            let Ok(mut parser) = PerfDataReader::open(&path) else {
                unreachable!("opened once already");
            };
            if direct.direct.is_none() {
                continue;
            }
            walked += 1;
            parser.direct = None;
            let (mut by_walk, mut by_parser) = (Transcript::default(), Transcript::default());
            let walk_stats = direct.read_events(&mut by_walk);
            let parser_stats = parser.read_events(&mut by_parser);
            assert_eq!(by_walk.0.len(), by_parser.0.len(), "{}", path.display());
            for (index, (a, b)) in by_walk.0.iter().zip(&by_parser.0).enumerate() {
                assert_eq!(a, b, "{} event {index}", path.display());
            }
            assert_eq!(
                walk_stats.malformed_records,
                parser_stats.malformed_records,
                "{}",
                path.display()
            );
        }
        assert!(
            walked >= 10,
            "only {walked} recordings took the direct walk"
        );
    }

    /// Where the layout check leaves the records to the walk, the walk
    /// finds the same damage the full record scan finds.
    #[test]
    fn walk_finds_the_damage_the_scan_finds() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/spin/perf.data");
        let original = std::fs::read(&path).unwrap();
        let unscanned = inspect_releasing(&path, &original, &|_| {}, true).unwrap();
        assert!(
            !unscanned.records_checked,
            "a clean file leaves the records to the walk"
        );
        let data_offset = u64::from_le_bytes(original[40..48].try_into().unwrap()) as usize;
        let data_size = u64::from_le_bytes(original[48..56].try_into().unwrap()) as usize;
        // Record starts, to corrupt a few of them.
        let mut starts = Vec::new();
        let mut at = data_offset;
        while at < data_offset + data_size {
            starts.push(at);
            at += usize::from(u16::from_le_bytes([original[at + 6], original[at + 7]]));
        }
        let mut checked = 0;
        for (index, size) in [
            (1usize, 4u16),
            (starts.len() / 2, 0),
            (starts.len() - 1, 0xfff8),
        ] {
            let mut bytes = original.clone();
            let at = starts[index];
            bytes[at + 6..at + 8].copy_from_slice(&size.to_le_bytes());
            let scanned = inspect(&path, &bytes).unwrap();
            let expected = scanned.damage.expect("the scan sees the damage");
            let mut reader = PerfDataReader::from_bytes(&path, bytes).unwrap();
            let mut events = Transcript::default();
            let stats = reader.read_events(&mut events);
            assert!(stats.is_partial());
            let found = stats.damage.expect("the walk sees the damage");
            assert_eq!(found.offset, expected.offset, "record {index}");
            assert_eq!(found.what, expected.what, "record {index}");
            checked += 1;
        }
        assert_eq!(checked, 3);
    }
}
