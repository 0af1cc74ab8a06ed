//! The event stream: what a recording says happened, in time order.
//!
//! The perf.data reader ([`crate::perf_data`]) and the live recorder both
//! produce these events and push them into an [`EventSink`], normally a
//! [`crate::Collapser`]. Events borrow their variable-length parts (names,
//! paths, callchains) from the producer's buffers, so producing one costs no
//! allocation; a sink copies what it keeps.

use linux_perf_data::linux_perf_event_reader::{
    CpuMode as RecordCpuMode, EventRecord, Mmap2FileId, RawEventRecord, RecordType,
};
use linux_perf_data::Endianness;

/// Where the CPU was when a sample or mapping was taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CpuMode {
    /// Not known.
    Unknown,
    /// The host kernel.
    Kernel,
    /// Host user space.
    User,
    /// A hypervisor.
    Hypervisor,
    /// A guest's kernel.
    GuestKernel,
    /// A guest's user space.
    GuestUser,
}

impl From<RecordCpuMode> for CpuMode {
    fn from(mode: RecordCpuMode) -> CpuMode {
        match mode {
            RecordCpuMode::Kernel => CpuMode::Kernel,
            RecordCpuMode::User => CpuMode::User,
            RecordCpuMode::Hypervisor => CpuMode::Hypervisor,
            RecordCpuMode::GuestKernel => CpuMode::GuestKernel,
            RecordCpuMode::GuestUser => CpuMode::GuestUser,
            _ => CpuMode::Unknown,
        }
    }
}

/// A sample of one event: where a thread was, with its callchain.
#[derive(Clone, Debug)]
pub struct Sample<'a> {
    /// Index of the event (attribute) this sample belongs to, in
    /// [`crate::RecordingInfo::events`] order.
    pub event_index: usize,
    /// Process id (`-1` when the record had none).
    pub pid: i32,
    /// Thread id (`-1` when the record had none).
    pub tid: i32,
    /// Timestamp in ns, when recorded.
    pub time: Option<u64>,
    /// CPU the sample was taken on, when recorded.
    pub cpu: Option<u32>,
    /// Event period (ns for cpu-clock), when recorded.
    pub period: Option<u64>,
    /// CPU mode of the sampled instruction.
    pub cpu_mode: CpuMode,
    /// Sampled instruction pointer, when recorded.
    pub ip: Option<u64>,
    /// Raw callchain, leaf first, including the kernel's context markers
    /// (`PERF_CONTEXT_*`); empty when the recording had no callchains.
    pub callchain: &'a [u64],
}

/// A thread got a name: at exec (`exec == true`) or via `prctl`/`pthread_setname_np`.
#[derive(Clone, Debug)]
pub struct Comm<'a> {
    /// Process id.
    pub pid: i32,
    /// Thread id.
    pub tid: i32,
    /// New name, raw bytes (the kernel caps it at 15 bytes).
    pub name: &'a [u8],
    /// True when the name comes from an exec: the process's address space was replaced.
    pub exec: bool,
    /// Timestamp in ns, when recorded.
    pub time: Option<u64>,
}

/// A mapping appeared: a file or anonymous memory mapped into a process, or
/// the kernel image / a module (with `pid == -1` and a kernel `cpu_mode`).
#[derive(Clone, Debug)]
pub struct Mmap<'a> {
    /// Process id (`-1` for kernel mappings).
    pub pid: i32,
    /// Thread id.
    pub tid: i32,
    /// First mapped address.
    pub start: u64,
    /// Length in bytes.
    pub len: u64,
    /// File offset of `start`; for the kernel map, the address of the
    /// reference symbol named after `]` in the path (e.g. `_text`).
    pub pgoff: u64,
    /// Path as the kernel reported it (`//anon`, `[vdso]`, `[kernel.kallsyms]_text`, …).
    pub path: &'a [u8],
    /// True for executable mappings (perf records data mappings only on request).
    pub executable: bool,
    /// CPU mode from the record: kernel for kernel and module maps.
    pub cpu_mode: CpuMode,
    /// GNU build id, when the kernel put one in the record.
    pub build_id: Option<&'a [u8]>,
    /// Timestamp in ns, when recorded.
    pub time: Option<u64>,
}

/// A task was created (`Fork`) or ended (`Exit`).
#[derive(Clone, Copy, Debug)]
pub struct TaskEvent {
    /// Process id of the task.
    pub pid: i32,
    /// Parent process id.
    pub ppid: i32,
    /// Thread id of the task.
    pub tid: i32,
    /// Parent thread id.
    pub ptid: i32,
    /// Timestamp in ns.
    pub time: u64,
}

/// Something the kernel could not deliver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Loss {
    /// `PERF_RECORD_LOST`: this many records were dropped (ring buffer full).
    Records(u64),
    /// `PERF_RECORD_LOST_SAMPLES`: this many samples were dropped.
    Samples(u64),
    /// `PERF_RECORD_THROTTLE`: the kernel throttled sampling once.
    Throttled,
}

/// One event of the stream.
#[derive(Clone, Debug)]
pub enum Event<'a> {
    /// A sample.
    Sample(Sample<'a>),
    /// A thread name change or exec.
    Comm(Comm<'a>),
    /// A new mapping.
    Mmap(Mmap<'a>),
    /// A new process or thread.
    Fork(TaskEvent),
    /// A process or thread ended.
    Exit(TaskEvent),
    /// Data the kernel dropped.
    Lost(Loss),
}

/// Consumes the event stream.
pub trait EventSink {
    /// Handles one event. Events arrive in time order.
    fn event(&mut self, event: &Event<'_>);
}

/// Why a raw record did not become an [`Event`].
#[derive(Debug)]
pub enum RecordError {
    /// The record's bytes do not parse.
    Malformed(std::io::Error),
}

const PERF_RECORD_MISC_MMAP_BUILD_ID: u16 = 1 << 14;
const PERF_RECORD_MISC_MMAP_DATA: u16 = 1 << 13;
const PERF_RECORD_LOST_SAMPLES: u32 = 13;

/// Converts one raw kernel record into an event, copying a callchain into
/// `callchain_buf` (reused between calls) so the event can borrow it.
///
/// Returns `Ok(None)` for record types the stream does not carry.
pub fn event_from_record<'r, 'b>(
    record: &RawEventRecord<'r>,
    attr_index: usize,
    callchain_buf: &'b mut Vec<u64>,
    path_buf: &'b mut Vec<u8>,
) -> Result<Option<Event<'b>>, RecordError>
where
    'r: 'b,
{
    // linux-perf-event-reader asserts (panics) on an MMAP2 build id longer
    // than 20 bytes; reject such records before parsing.
    if record.record_type == RecordType::MMAP2 && record.misc & PERF_RECORD_MISC_MMAP_BUILD_ID != 0
    {
        let mut data = record.data;
        let mut len = [0u8; 1];
        if data.skip(32).is_err() || data.read_exact(&mut len).is_err() || len[0] > 20 {
            return Err(RecordError::Malformed(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "MMAP2 record with an invalid build id length",
            )));
        }
    }
    if record.record_type.0 == PERF_RECORD_LOST_SAMPLES {
        let mut data = record.data;
        let lost = match record.parse_info.endian {
            Endianness::LittleEndian => data.read_u64::<byteorder::LittleEndian>(),
            Endianness::BigEndian => data.read_u64::<byteorder::BigEndian>(),
        }
        .map_err(RecordError::Malformed)?;
        return Ok(Some(Event::Lost(Loss::Samples(lost))));
    }
    if record.record_type == RecordType::SAMPLE {
        if let Some(fields) = sample_fast(record, callchain_buf) {
            return Ok(Some(Event::Sample(Sample {
                event_index: attr_index,
                callchain: callchain_buf,
                ..fields
            })));
        }
    }
    let parsed = record.parse().map_err(RecordError::Malformed)?;
    let time = || record.timestamp();
    Ok(Some(match parsed {
        EventRecord::Sample(sample) => {
            callchain_buf.clear();
            if let Some(chain) = sample.callchain {
                callchain_buf.extend((0..chain.len()).filter_map(|i| chain.get(i)));
            }
            Event::Sample(Sample {
                event_index: attr_index,
                pid: sample.pid.unwrap_or(-1),
                tid: sample.tid.unwrap_or(-1),
                time: sample.timestamp,
                cpu: sample.cpu,
                period: sample.period,
                cpu_mode: sample.cpu_mode.into(),
                ip: sample.ip,
                callchain: callchain_buf,
            })
        }
        EventRecord::Comm(comm) => {
            copy_into(path_buf, &comm.name.as_slice());
            Event::Comm(Comm {
                pid: comm.pid,
                tid: comm.tid,
                name: path_buf,
                exec: comm.is_execve,
                time: time(),
            })
        }
        EventRecord::Mmap(mmap) => {
            copy_into(path_buf, &mmap.path.as_slice());
            Event::Mmap(Mmap {
                pid: mmap.pid,
                tid: mmap.tid,
                start: mmap.address,
                len: mmap.length,
                pgoff: mmap.page_offset,
                path: path_buf,
                executable: mmap.is_executable,
                cpu_mode: mmap.cpu_mode.into(),
                build_id: None,
                time: time(),
            })
        }
        EventRecord::Mmap2(mmap) => {
            // Path and build id share one buffer: path first, then the id.
            copy_into(path_buf, &mmap.path.as_slice());
            let path_len = path_buf.len();
            let has_build_id = if let Mmap2FileId::BuildId(id) = &mmap.file_id {
                path_buf.extend_from_slice(id);
                true
            } else {
                false
            };
            let (path, build_id) = path_buf.split_at(path_len);
            Event::Mmap(Mmap {
                pid: mmap.pid,
                tid: mmap.tid,
                start: mmap.address,
                len: mmap.length,
                pgoff: mmap.page_offset,
                path,
                executable: record.misc & PERF_RECORD_MISC_MMAP_DATA == 0,
                cpu_mode: mmap.cpu_mode.into(),
                build_id: has_build_id.then_some(build_id),
                time: time(),
            })
        }
        EventRecord::Fork(task) => Event::Fork(TaskEvent {
            pid: task.pid,
            ppid: task.ppid,
            tid: task.tid,
            ptid: task.ptid,
            time: task.timestamp,
        }),
        EventRecord::Exit(task) => Event::Exit(TaskEvent {
            pid: task.pid,
            ppid: task.ppid,
            tid: task.tid,
            ptid: task.ptid,
            time: task.timestamp,
        }),
        EventRecord::Lost(lost) => Event::Lost(Loss::Records(lost.count)),
        EventRecord::Throttle(_) => Event::Lost(Loss::Throttled),
        _ => return Ok(None),
    }))
}

/// The common case without the general parser: a native-endian sample in
/// one piece, without `PERF_SAMPLE_READ` (whose layout varies). The fields
/// up to the callchain have fixed sizes; the callchain is copied with one
/// pass over its bytes. `None` means "use the general parser" (also for a
/// sample too short for what its format promises, which the general parser
/// then reports).
/// The sample's fields, with an empty callchain: the chain is in `callchain_buf`.
fn sample_fast(
    record: &RawEventRecord<'_>,
    callchain_buf: &mut Vec<u64>,
) -> Option<Sample<'static>> {
    use linux_perf_data::linux_perf_event_reader::{RawData, SampleFormat};
    let info = &record.parse_info;
    let native = if cfg!(target_endian = "little") {
        Endianness::LittleEndian
    } else {
        Endianness::BigEndian
    };
    let format = info.sample_format;
    if info.endian != native || format.contains(SampleFormat::READ) {
        return None;
    }
    let RawData::Single(bytes) = record.data else {
        return None;
    };
    let mut at = 0usize;
    let mut take = |present: bool| -> Option<Option<u64>> {
        if !present {
            return Some(None);
        }
        let value = u64::from_ne_bytes(bytes.get(at..at + 8)?.try_into().ok()?);
        at += 8;
        Some(Some(value))
    };
    take(format.contains(SampleFormat::IDENTIFIER))?;
    let ip = take(format.contains(SampleFormat::IP))?;
    let tid_word = take(format.contains(SampleFormat::TID))?;
    let time = take(format.contains(SampleFormat::TIME))?;
    take(format.contains(SampleFormat::ADDR))?;
    take(format.contains(SampleFormat::ID))?;
    take(format.contains(SampleFormat::STREAM_ID))?;
    let cpu_word = take(format.contains(SampleFormat::CPU))?;
    let period = take(format.contains(SampleFormat::PERIOD))?;
    callchain_buf.clear();
    if format.contains(SampleFormat::CALLCHAIN) {
        let count = take(true)??;
        let len = usize::try_from(count).ok()?.checked_mul(8)?;
        let chain = bytes.get(at..at.checked_add(len)?)?;
        callchain_buf.extend(
            chain
                .chunks_exact(8)
                .map(|c| u64::from_ne_bytes(c.try_into().expect("8 bytes"))),
        );
    }
    // { u32 pid, tid } and { u32 cpu, res } in memory order.
    let (pid, tid) = match tid_word {
        Some(word) => {
            let raw = word.to_ne_bytes();
            (
                i32::from_ne_bytes(raw[..4].try_into().expect("4 bytes")),
                i32::from_ne_bytes(raw[4..].try_into().expect("4 bytes")),
            )
        }
        None => (-1, -1),
    };
    let cpu = cpu_word
        .map(|word| u32::from_ne_bytes(word.to_ne_bytes()[..4].try_into().expect("4 bytes")));
    Some(Sample {
        event_index: 0,
        pid,
        tid,
        time,
        cpu,
        period,
        cpu_mode: RecordCpuMode::from_misc(record.misc).into(),
        ip,
        callchain: &[],
    })
}

fn copy_into(buf: &mut Vec<u8>, bytes: &[u8]) {
    buf.clear();
    buf.extend_from_slice(bytes);
}
