//! One recording: open, synthesize, stream, stop, finish.

use std::ffi::{CString, OsString};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::time::{Duration, Instant};

use byteorder::NativeEndian;
use flamegraph_perf_collapse::event::event_from_record;
use flamegraph_perf_collapse::{Event, EventSink};
use linux_perf_data::linux_perf_event_reader::{
    PerfEventAttr, RawData, RawEventRecord, RecordParseInfo, RecordType,
};
use linux_perf_data::Endianness;
use perf_event_open_sys::bindings::perf_event_attr;

use crate::events::{attr_bytes, build_attr, parse_event, AttrSettings, EventSpec};
use crate::output::{EventDescription, PerfDataOutput, RecordingHost};
use crate::ring::RingBuffer;
use crate::signals::StopSignals;
use crate::synth::{self, RecordWriter};
use crate::system::{online_cpus, SystemLimits};
use crate::{Consumers, RecordError, RecordOptions, RecordSummary, Reporter};

/// Per-CPU sample rates above this cost more than they tell (a 49,999 Hz
/// recording slowed a benchmark 55× on this kind of VM).
const HIGH_FREQUENCY: u64 = 10_000;
/// How often the buffers are drained even without a wake-up.
const POLL_INTERVAL: Duration = Duration::from_millis(200);

const PERF_RECORD_LOST: u32 = 2;
const PERF_RECORD_THROTTLE: u32 = 5;
const PERF_RECORD_SAMPLE: u32 = 9;
const PERF_RECORD_LOST_SAMPLES: u32 = 13;

/// Records as [`RecordOptions`] say, feeding `consumers`.
///
/// Without a command and without pids the recording is system-wide and
/// runs until SIGINT/SIGTERM (or `duration`). The first stop signal ends
/// sampling, is passed to the launched command, and the recording is still
/// delivered complete; a second one exits the process at once.
pub fn record(
    options: &RecordOptions,
    consumers: Consumers<'_>,
) -> Result<RecordSummary, RecordError> {
    let Consumers { sink, reporter } = consumers;
    let limits = SystemLimits::read();
    raise_fd_limit();
    let system_wide =
        options.system_wide || (options.pids.is_empty() && options.command.is_empty());
    if system_wide && !limits.system_wide_allowed() {
        return Err(RecordError::Permission(format!(
            "system-wide recording needs root, CAP_PERFMON, or kernel.perf_event_paranoid <= 0 (it is {}): \
             run as root, or `sysctl kernel.perf_event_paranoid=0`, or record a command or -p PID instead",
            limits.paranoid
        )));
    }
    let mut spec = parse_event(&options.event)?;
    let exclude_kernel = !limits.kernel_sampling_allowed();
    if exclude_kernel {
        reporter.warn(&format!(
            "kernel frames need root, CAP_PERFMON or kernel.perf_event_paranoid <= 1 (it is {}): recording user space only",
            limits.paranoid
        ));
    } else if !limits.kernel_symbols_visible() {
        reporter.warn(&format!(
            "kernel frames will be unnamed: /proc/kallsyms hides addresses (kernel.kptr_restrict={}); run as root or `sysctl kernel.kptr_restrict=0`",
            limits.kptr_restrict
        ));
    }
    let mut frequency = options.frequency.max(1);
    if spec.by_frequency() {
        if frequency > limits.max_sample_rate {
            reporter.warn(&format!(
                "-F {frequency} is above kernel.perf_event_max_sample_rate ({}): sampling at {} Hz",
                limits.max_sample_rate, limits.max_sample_rate
            ));
            frequency = limits.max_sample_rate;
        }
        if frequency > HIGH_FREQUENCY {
            reporter.warn(&format!(
                "-F {frequency}: above ~{HIGH_FREQUENCY} Hz per CPU the sampling interrupt itself slows the workload and loses samples"
            ));
        }
    }
    let cpus = match &options.cpus {
        Some(cpus) => cpus.clone(),
        None => online_cpus(),
    };
    for pid in &options.pids {
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            return Err(RecordError::Usage(format!("-p {pid}: no such process")));
        }
    }

    let signals = StopSignals::install().map_err(|error| RecordError::Io {
        what: "installing signal handlers".into(),
        error,
    })?;
    let mut child = if options.command.is_empty() {
        None
    } else {
        Some(GatedChild::spawn(&options.command, &options.command_env)?)
    };
    if let Some(child) = &child {
        signals.forward_to(child.pid);
    }
    let follow_command = child.is_some() && !system_wide && options.pids.is_empty();

    // Who to sample: every CPU, or each task on each CPU.
    let tasks: Vec<i32> = if system_wide {
        vec![-1]
    } else if follow_command {
        vec![child.as_ref().expect("command").pid]
    } else {
        options
            .pids
            .iter()
            .flat_map(|&pid| synth::threads_of(pid))
            .collect()
    };
    let mut settings = AttrSettings {
        frequency,
        callchain_depth: options
            .callchains
            .then_some(limits.max_stack.clamp(1, 1024)),
        exclude_kernel,
        inherit: !system_wide,
        enable_on_exec: follow_command,
        side_band: true,
        build_ids: true,
        wakeup_bytes: 0,
    };
    let mut pages = options.mmap_pages.max(1).next_power_of_two();
    // Wake at half full, as perf does: fewer wake-ups, room to spare.
    settings.wakeup_bytes = ((pages * limits.page_size) / 2) as u32;

    let opened = open_all(&mut spec, &mut settings, &tasks, &cpus, reporter);
    let (attr, fds) = match opened {
        Ok(opened) => opened,
        Err(e) => {
            if let Some(child) = child.take() {
                child.abort();
            }
            return Err(e);
        }
    };
    let mut rings = match map_rings(fds, &cpus, &mut pages, &limits, reporter) {
        Ok(rings) => rings,
        Err(e) => {
            if let Some(child) = child.take() {
                child.abort();
            }
            return Err(e);
        }
    };
    let ids: Vec<u64> = rings
        .iter()
        .flat_map(|group| group.fds())
        .filter_map(event_id)
        .collect();

    let bytes = attr_bytes(&attr);
    let parse_info = match PerfEventAttr::parse::<_, NativeEndian>(&bytes[..]) {
        Ok((reader_attr, _size)) => RecordParseInfo::new(&reader_attr, native_endianness()),
        Err(error) => {
            return Err(RecordError::Io {
                what: "reading back the event attribute".into(),
                error,
            })
        }
    };
    let mut output = match &options.output {
        Some(path) => Some(PerfDataOutput::create(path)?),
        None => None,
    };
    let mut collector = Collector::new(parse_info);

    // What existed before: the kernel, and the processes being sampled.
    let writer = RecordWriter {
        id: ids.first().copied().unwrap_or(0),
    };
    let mut synthesized = Vec::new();
    if !exclude_kernel {
        synth::synthesize_kernel(&writer, &mut synthesized);
    }
    let existing: Vec<i32> = if system_wide {
        synth::all_pids()
    } else {
        options.pids.clone()
    };
    for pid in existing {
        synth::synthesize_process(&writer, &mut synthesized, pid);
    }
    collector.add_bytes(&synthesized);

    let started = Instant::now();
    let cpu_at_start = own_cpu_time();
    if !follow_command {
        for fd in rings.iter().flat_map(|group| group.fds()) {
            ioctl_checked(fd, Ioctl::Enable);
        }
    }
    if let Some(child) = &mut child {
        child.release()?;
    }

    // Stream until something says stop.
    let mut command_status = None;
    let mut last_progress = Instant::now();
    let mut stopped_by_signal = None;
    loop {
        poll_rings(&rings, signals.wake_fd(), POLL_INTERVAL);
        for group in &mut rings {
            collector.drain(&mut group.ring);
        }
        collector.finish_round(sink, output.as_mut())?;
        if last_progress.elapsed() >= Duration::from_secs(1) {
            reporter.progress(started.elapsed(), collector.samples, collector.lost);
            last_progress = Instant::now();
        }
        if let Some(signal) = signals.received() {
            stopped_by_signal = Some(signal);
            break;
        }
        if let Some(child) = &mut child {
            if let Some(status) = child.try_wait() {
                command_status = Some(status);
                break;
            }
        }
        if options.duration.is_some_and(|d| started.elapsed() >= d) {
            break;
        }
        if !options.pids.is_empty()
            && child.is_none()
            && options
                .pids
                .iter()
                .all(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists())
        {
            break;
        }
    }
    for fd in rings.iter().flat_map(|group| group.fds()) {
        ioctl_checked(fd, Ioctl::Disable);
    }
    let duration = started.elapsed();
    for group in &mut rings {
        collector.drain(&mut group.ring);
    }
    collector.flush_all(sink, output.as_mut())?;
    let recorder_cpu = own_cpu_time().saturating_sub(cpu_at_start);
    if let (Some(child), None) = (&mut child, command_status) {
        // The command got the stop signal too; its status is ours.
        command_status = Some(child.wait());
    }
    drop(signals);

    let output_path = match output {
        Some(mut output) => {
            if !exclude_kernel {
                if let Some(id) = kernel_build_id() {
                    output.note_build_id(b"[kernel.kallsyms]", &id, true);
                }
            }
            for (path, id) in &collector.build_ids {
                output.note_build_id(path, id, false);
            }
            let description = EventDescription {
                attr: &bytes,
                name: &spec.name(),
                ids: &ids,
                tracepoint_format: match &spec {
                    EventSpec::Tracepoint { format, .. } => Some(format.as_str()),
                    _ => None,
                },
            };
            Some(output.finish(&description, &RecordingHost::current())?)
        }
        None => None,
    };
    Ok(RecordSummary {
        event_name: spec.name(),
        samples: collector.samples,
        lost: collector.lost,
        throttled: collector.throttled,
        duration,
        recorder_cpu,
        command_status,
        stopped_by_signal,
        output: output_path,
        kernel_sampled: !exclude_kernel,
    })
}

/// User + system CPU time of this process so far.
fn own_cpu_time() -> Duration {
    // SAFETY: getrusage fills a local struct.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let micros = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    Duration::from_micros(micros(usage.ru_utime) + micros(usage.ru_stime))
}

fn native_endianness() -> Endianness {
    if cfg!(target_endian = "little") {
        Endianness::LittleEndian
    } else {
        Endianness::BigEndian
    }
}

/// Raises the soft open-file limit to the hard one: one fd per task and CPU
/// adds up (the launched command gets the original limit back at exec,
/// see [`GatedChild`]).
fn raise_fd_limit() {
    // SAFETY: getrlimit/setrlimit on a local struct.
    unsafe {
        let mut limit: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            ORIGINAL_NOFILE.store(limit.rlim_cur, std::sync::atomic::Ordering::SeqCst);
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

static ORIGINAL_NOFILE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn perf_event_open(attr: &mut perf_event_attr, pid: i32, cpu: i32) -> std::io::Result<OwnedFd> {
    // SAFETY: attr is a valid, initialized attribute; the fd is owned below.
    let fd = unsafe {
        perf_event_open_sys::perf_event_open(
            attr,
            pid,
            cpu,
            -1,
            perf_event_open_sys::bindings::PERF_FLAG_FD_CLOEXEC as libc::c_ulong,
        )
    };
    if fd < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        // SAFETY: a new fd from the kernel, owned by nobody else.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }
}

/// Opens the event for every (task, CPU), adjusting to what the kernel
/// allows: hardware events fall back to cpu-clock, kernel sampling to
/// user-only, build ids in MMAP2 off on old kernels.
fn open_all(
    spec: &mut EventSpec,
    settings: &mut AttrSettings,
    tasks: &[i32],
    cpus: &[u32],
    reporter: &mut dyn Reporter,
) -> Result<(perf_event_attr, Vec<(u32, OwnedFd)>), RecordError> {
    let (first_task, first_cpu) = (tasks[0], cpus[0] as i32);
    // Settle the attribute on the first open, then use it everywhere.
    let attr = loop {
        let mut attr = build_attr(spec, settings);
        match perf_event_open(&mut attr, first_task, first_cpu) {
            Ok(fd) => break (attr, fd),
            Err(e) => {
                let errno = e.raw_os_error().unwrap_or(0);
                if matches!(spec, EventSpec::Hardware { .. })
                    && matches!(
                        errno,
                        libc::ENOENT | libc::EOPNOTSUPP | libc::ENODEV | libc::EINVAL
                    )
                {
                    reporter.warn(&format!(
                        "{} is not supported here (no hardware PMU, as in most VMs): sampling cpu-clock instead",
                        spec.name()
                    ));
                    *spec = EventSpec::CpuClock;
                    continue;
                }
                if errno == libc::EINVAL && settings.build_ids {
                    settings.build_ids = false;
                    continue;
                }
                if matches!(errno, libc::EACCES | libc::EPERM)
                    && !settings.exclude_kernel
                    && first_task != -1
                {
                    reporter.warn(
                        "the kernel refused kernel-mode sampling (needs root, CAP_PERFMON or kernel.perf_event_paranoid <= 1): recording user space only",
                    );
                    settings.exclude_kernel = true;
                    continue;
                }
                if errno == libc::EOVERFLOW && settings.callchain_depth.is_some_and(|d| d > 127) {
                    settings.callchain_depth = Some(127);
                    continue;
                }
                return Err(open_error(e, spec, first_task));
            }
        }
    };
    let (attr, first_fd) = attr;
    let mut fds = vec![(cpus[0], first_fd)];
    for &task in tasks {
        for &cpu in cpus {
            if task == first_task && cpu == cpus[0] {
                continue;
            }
            let mut attr = attr;
            match perf_event_open(&mut attr, task, cpu as i32) {
                Ok(fd) => fds.push((cpu, fd)),
                // A thread that exited since we listed it, or an offline CPU.
                Err(e) if matches!(e.raw_os_error(), Some(libc::ESRCH | libc::ENODEV)) => {}
                Err(e) => return Err(open_error(e, spec, task)),
            }
        }
    }
    Ok((attr, fds))
}

fn open_error(e: std::io::Error, spec: &EventSpec, task: i32) -> RecordError {
    match e.raw_os_error() {
        Some(libc::EACCES | libc::EPERM) => RecordError::Permission(format!(
            "perf_event_open({}) refused: {e}; run as root or lower kernel.perf_event_paranoid",
            spec.name()
        )),
        Some(libc::EMFILE) => RecordError::Permission(format!(
            "out of file descriptors opening one event per task and CPU: {e}; raise `ulimit -n`"
        )),
        Some(libc::ESRCH) => RecordError::Usage(format!("process {task} is gone")),
        _ => RecordError::Io {
            what: format!("perf_event_open({})", spec.name()),
            error: e,
        },
    }
}

/// The fds of one CPU: the first owns the ring, the others write into it.
struct CpuRing {
    ring: RingBuffer,
    others: Vec<OwnedFd>,
}

impl CpuRing {
    fn fds(&self) -> impl Iterator<Item = &OwnedFd> {
        std::iter::once(self.ring.fd()).chain(&self.others)
    }
}

/// Maps one ring per CPU, halving the size while the mlock limit refuses.
fn map_rings(
    fds: Vec<(u32, OwnedFd)>,
    cpus: &[u32],
    pages: &mut usize,
    limits: &SystemLimits,
    reporter: &mut dyn Reporter,
) -> Result<Vec<CpuRing>, RecordError> {
    let mut by_cpu: Vec<(u32, Vec<OwnedFd>)> = cpus.iter().map(|&c| (c, Vec::new())).collect();
    for (cpu, fd) in fds {
        if let Some((_, list)) = by_cpu.iter_mut().find(|(c, _)| *c == cpu) {
            list.push(fd);
        }
    }
    let requested = *pages;
    let mut rings = Vec::new();
    for (_, mut list) in by_cpu.into_iter().filter(|(_, l)| !l.is_empty()) {
        let mut first = list.remove(0);
        let ring = loop {
            match RingBuffer::map(first, *pages, limits.page_size) {
                Ok(ring) => break ring,
                Err((fd, e)) if *pages > 1 && matches!(e.raw_os_error(), Some(libc::EPERM | libc::ENOMEM)) => {
                    first = fd;
                    *pages /= 2;
                }
                Err((_, e)) => {
                    return Err(RecordError::Permission(format!(
                        "cannot map the sample buffer: {e}; raise kernel.perf_event_mlock_kb (now {} KiB) or `ulimit -l`, or run as root",
                        limits.mlock_kb
                    )))
                }
            }
        };
        for other in &list {
            // SAFETY: redirecting an event fd into the ring of another fd on the same CPU.
            let result = unsafe {
                perf_event_open_sys::ioctls::SET_OUTPUT(other.as_raw_fd(), ring.fd().as_raw_fd())
            };
            if result != 0 {
                return Err(RecordError::Io {
                    what: "redirecting events into the CPU's buffer".into(),
                    error: std::io::Error::last_os_error(),
                });
            }
        }
        rings.push(CpuRing { ring, others: list });
    }
    if *pages < requested {
        reporter.warn(&format!(
            "sample buffers shrunk from {requested} to {} pages per CPU by the mlock limit: samples may be lost; \
             raise kernel.perf_event_mlock_kb (now {} KiB) or run as root",
            *pages, limits.mlock_kb
        ));
    }
    Ok(rings)
}

enum Ioctl {
    Enable,
    Disable,
}

fn ioctl_checked(fd: &OwnedFd, which: Ioctl) {
    // SAFETY: plain ioctls on an owned perf event fd.
    unsafe {
        match which {
            Ioctl::Enable => perf_event_open_sys::ioctls::ENABLE(fd.as_raw_fd(), 0),
            Ioctl::Disable => perf_event_open_sys::ioctls::DISABLE(fd.as_raw_fd(), 0),
        };
    }
}

fn event_id(fd: &OwnedFd) -> Option<u64> {
    let mut id = 0u64;
    // SAFETY: PERF_EVENT_IOC_ID writes one u64.
    let result = unsafe { perf_event_open_sys::ioctls::ID(fd.as_raw_fd(), &mut id) };
    (result == 0).then_some(id)
}

fn poll_rings(rings: &[CpuRing], wake_fd: i32, timeout: Duration) {
    let mut fds: Vec<libc::pollfd> = rings
        .iter()
        .map(|r| libc::pollfd {
            fd: r.ring.fd().as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    fds.push(libc::pollfd {
        fd: wake_fd,
        events: libc::POLLIN,
        revents: 0,
    });
    // SAFETY: fds is a valid array for the call's duration.
    unsafe {
        libc::poll(
            fds.as_mut_ptr(),
            fds.len() as libc::nfds_t,
            timeout.as_millis() as i32,
        )
    };
}

/// The GNU build id of the running kernel, from /sys/kernel/notes.
fn kernel_build_id() -> Option<Vec<u8>> {
    let notes = std::fs::read("/sys/kernel/notes").ok()?;
    let mut at = 0;
    while at + 12 <= notes.len() {
        let word =
            |i: usize| u32::from_ne_bytes(notes[i..i + 4].try_into().expect("4 bytes")) as usize;
        let (name_size, desc_size, kind) = (word(at), word(at + 4), word(at + 8));
        let name_start = at + 12;
        let desc_start = name_start + name_size.next_multiple_of(4);
        let next = desc_start + desc_size.next_multiple_of(4);
        if next > notes.len() {
            return None;
        }
        if kind == 3 && notes[name_start..name_start + name_size].starts_with(b"GNU") {
            return Some(notes[desc_start..desc_start + desc_size].to_vec());
        }
        at = next;
    }
    None
}

/// Orders records across CPUs and delivers them.
///
/// Each round drains every buffer. A record read in round N can still be
/// older than one read in round N−1 on another CPU, but not older than the
/// newest record of round N−1 (that one was already visible when round N
/// began), so records up to that time are released after round N, in
/// time order — perf's FINISHED_ROUND rule.
struct Collector {
    parse_info: RecordParseInfo,
    arena: Vec<u8>,
    /// (time, sequence, start, end) of pending records in `arena`.
    pending: Vec<(u64, u64, usize, usize)>,
    sequence: u64,
    round_max: u64,
    previous_round_max: u64,
    callchain: Vec<u64>,
    names: Vec<u8>,
    samples: u64,
    lost: u64,
    throttled: u64,
    build_ids: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Collector {
    fn new(parse_info: RecordParseInfo) -> Collector {
        Collector {
            parse_info,
            arena: Vec::new(),
            pending: Vec::new(),
            sequence: 0,
            round_max: 0,
            previous_round_max: 0,
            callchain: Vec::new(),
            names: Vec::new(),
            samples: 0,
            lost: 0,
            throttled: 0,
            build_ids: Vec::new(),
        }
    }

    fn raw<'a>(parse_info: RecordParseInfo, bytes: &'a [u8]) -> RawEventRecord<'a> {
        let kind = u32::from_ne_bytes(bytes[0..4].try_into().expect("header"));
        let misc = u16::from_ne_bytes(bytes[4..6].try_into().expect("header"));
        RawEventRecord::new(
            RecordType(kind),
            misc,
            RawData::from(&bytes[8..]),
            parse_info,
        )
    }

    fn note(&mut self, start: usize, end: usize) {
        let bytes = &self.arena[start..end];
        let time = Self::raw(self.parse_info, bytes).timestamp().unwrap_or(0);
        let kind = u32::from_ne_bytes(bytes[0..4].try_into().expect("header"));
        let u64_at = |offset: usize| {
            bytes
                .get(offset..offset + 8)
                .map_or(0, |b| u64::from_ne_bytes(b.try_into().expect("8 bytes")))
        };
        match kind {
            PERF_RECORD_SAMPLE => self.samples += 1,
            PERF_RECORD_LOST => self.lost += u64_at(16),
            PERF_RECORD_LOST_SAMPLES => self.lost += u64_at(8),
            PERF_RECORD_THROTTLE => self.throttled += 1,
            _ => {}
        }
        self.round_max = self.round_max.max(time);
        self.pending.push((time, self.sequence, start, end));
        self.sequence += 1;
    }

    /// Adds already-formatted records (synthesized ones).
    fn add_bytes(&mut self, bytes: &[u8]) {
        let mut at = 0;
        while at + 8 <= bytes.len() {
            let size = u16::from_ne_bytes([bytes[at + 6], bytes[at + 7]]) as usize;
            if size < 8 || at + size > bytes.len() {
                break;
            }
            let start = self.arena.len();
            self.arena.extend_from_slice(&bytes[at..at + size]);
            self.note(start, start + size);
            at += size;
        }
    }

    fn drain(&mut self, ring: &mut RingBuffer) {
        let mut ranges = Vec::new();
        ring.drain(&mut self.arena, |range| ranges.push(range));
        for range in ranges {
            self.note(range.start, range.end);
        }
    }

    fn finish_round(
        &mut self,
        sink: &mut dyn EventSink,
        output: Option<&mut PerfDataOutput>,
    ) -> Result<(), RecordError> {
        let bound = self.previous_round_max;
        self.previous_round_max = self.round_max;
        self.deliver(Some(bound), sink, output)
    }

    fn flush_all(
        &mut self,
        sink: &mut dyn EventSink,
        output: Option<&mut PerfDataOutput>,
    ) -> Result<(), RecordError> {
        self.deliver(None, sink, output)
    }

    fn deliver(
        &mut self,
        up_to: Option<u64>,
        sink: &mut dyn EventSink,
        output: Option<&mut PerfDataOutput>,
    ) -> Result<(), RecordError> {
        self.pending
            .sort_unstable_by_key(|&(time, sequence, _, _)| (time, sequence));
        let ready = match up_to {
            Some(bound) => self.pending.partition_point(|&(time, ..)| time <= bound),
            None => self.pending.len(),
        };
        if ready == 0 {
            return Ok(());
        }
        // One write per round: records go to the file in delivery order.
        let mut file_bytes = Vec::new();
        for &(_, _, start, end) in &self.pending[..ready] {
            let bytes = &self.arena[start..end];
            if output.is_some() {
                file_bytes.extend_from_slice(bytes);
            }
            let record = Self::raw(self.parse_info, bytes);
            if let Ok(Some(event)) =
                event_from_record(&record, 0, &mut self.callchain, &mut self.names)
            {
                if let Event::Mmap(mmap) = &event {
                    if let Some(id) = mmap.build_id {
                        if !self.build_ids.iter().any(|(p, _)| p == mmap.path) {
                            self.build_ids.push((mmap.path.to_vec(), id.to_vec()));
                        }
                    }
                }
                sink.event(&event);
            }
        }
        if let Some(output) = output {
            output.write_record(&file_bytes)?;
            output.finish_round()?;
        }
        // Keep the records not yet delivered, compacted.
        let remaining: Vec<(u64, u64, usize, usize)> = self.pending.drain(ready..).collect();
        let mut arena = Vec::with_capacity(remaining.iter().map(|r| r.3 - r.2).sum());
        self.pending = remaining
            .into_iter()
            .map(|(time, sequence, start, end)| {
                let new_start = arena.len();
                arena.extend_from_slice(&self.arena[start..end]);
                (time, sequence, new_start, arena.len())
            })
            .collect();
        self.arena = arena;
        Ok(())
    }
}

/// A launched command, stopped just before exec until the events are ready.
struct GatedChild {
    pid: i32,
    gate: Option<OwnedFd>,
    exec_error: Option<OwnedFd>,
    command: String,
    status: Option<i32>,
}

fn cloexec_pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 fills two fds we then own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both fds are new and owned here.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

impl GatedChild {
    /// Forks; the child waits on a pipe, then execs `command` with its
    /// stdout on our stderr (our stdout carries the graph) and default
    /// signal handling.
    fn spawn(
        command: &[OsString],
        env: &[(OsString, OsString)],
    ) -> Result<GatedChild, RecordError> {
        let display = command
            .iter()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ");
        let launch_error = |error| RecordError::Launch {
            command: display.clone(),
            error,
        };
        let to_cstring = |s: &[u8]| {
            CString::new(s)
                .map_err(|_| launch_error(std::io::Error::other("argument contains a NUL byte")))
        };
        let argv: Vec<CString> = command
            .iter()
            .map(|a| to_cstring(a.as_bytes()))
            .collect::<Result<_, _>>()?;
        let mut environment: Vec<(OsString, OsString)> = std::env::vars_os().collect();
        for (name, value) in env {
            environment.retain(|(n, _)| n != name);
            environment.push((name.clone(), value.clone()));
        }
        let envp: Vec<CString> = environment
            .iter()
            .map(|(n, v)| {
                let mut entry = n.as_bytes().to_vec();
                entry.push(b'=');
                entry.extend_from_slice(v.as_bytes());
                to_cstring(&entry)
            })
            .collect::<Result<_, _>>()?;
        let mut argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
        argv_ptrs.push(std::ptr::null());
        let mut envp_ptrs: Vec<*const libc::c_char> = envp.iter().map(|e| e.as_ptr()).collect();
        envp_ptrs.push(std::ptr::null());
        let (gate_read, gate_write) = cloexec_pipe().map_err(launch_error)?;
        let (error_read, error_write) = cloexec_pipe().map_err(launch_error)?;
        let original_nofile = ORIGINAL_NOFILE.load(std::sync::atomic::Ordering::SeqCst);

        // SAFETY: after fork the child only makes async-signal-safe calls
        // (read, dup2, sigaction, sigprocmask, setrlimit, execvpe, write,
        // _exit) on data prepared before the fork.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(launch_error(std::io::Error::last_os_error()));
        }
        if pid == 0 {
            unsafe {
                let mut byte = 0u8;
                loop {
                    let n = libc::read(gate_read.as_raw_fd(), (&mut byte as *mut u8).cast(), 1);
                    if n == 1 {
                        break;
                    }
                    if n == 0 || *libc::__errno_location() != libc::EINTR {
                        libc::_exit(127);
                    }
                }
                libc::dup2(2, 1);
                let mut default: libc::sigaction = std::mem::zeroed();
                default.sa_sigaction = libc::SIG_DFL;
                for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGPIPE] {
                    libc::sigaction(signal, &default, std::ptr::null_mut());
                }
                let mut empty: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut empty);
                libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
                if original_nofile != 0 {
                    let mut limit: libc::rlimit = std::mem::zeroed();
                    libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
                    limit.rlim_cur = original_nofile;
                    libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
                }
                libc::execvpe(argv_ptrs[0], argv_ptrs.as_ptr(), envp_ptrs.as_ptr());
                let errno = *libc::__errno_location();
                libc::write(error_write.as_raw_fd(), (&errno as *const i32).cast(), 4);
                libc::_exit(127);
            }
        }
        drop(gate_read);
        drop(error_write);
        Ok(GatedChild {
            pid,
            gate: Some(gate_write),
            exec_error: Some(error_read),
            command: display,
            status: None,
        })
    }

    /// Lets the child exec; fails if exec failed.
    fn release(&mut self) -> Result<(), RecordError> {
        if let Some(gate) = self.gate.take() {
            // SAFETY: writing one byte to our pipe.
            unsafe { libc::write(gate.as_raw_fd(), [1u8].as_ptr().cast(), 1) };
        }
        if let Some(errors) = self.exec_error.take() {
            let mut errno = [0u8; 4];
            // SAFETY: reading up to 4 bytes into a local buffer; EOF means exec succeeded.
            let n = unsafe { libc::read(errors.as_raw_fd(), errno.as_mut_ptr().cast(), 4) };
            if n == 4 {
                self.wait();
                return Err(RecordError::Launch {
                    command: self.command.clone(),
                    error: std::io::Error::from_raw_os_error(i32::from_ne_bytes(errno)),
                });
            }
        }
        Ok(())
    }

    /// Ends a child that never got to exec.
    fn abort(mut self) {
        self.gate = None; // EOF: the child exits 127 without exec.
        self.wait();
    }

    fn decode(status: i32) -> i32 {
        if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else if libc::WIFSIGNALED(status) {
            128 + libc::WTERMSIG(status)
        } else {
            1
        }
    }

    fn try_wait(&mut self) -> Option<i32> {
        if self.status.is_none() {
            let mut status = 0;
            // SAFETY: waitpid on our own child.
            if unsafe { libc::waitpid(self.pid, &mut status, libc::WNOHANG) } == self.pid {
                self.status = Some(Self::decode(status));
            }
        }
        self.status
    }

    fn wait(&mut self) -> i32 {
        while self.status.is_none() {
            let mut status = 0;
            // SAFETY: waitpid on our own child.
            let result = unsafe { libc::waitpid(self.pid, &mut status, 0) };
            if result == self.pid {
                self.status = Some(Self::decode(status));
            } else if result < 0
                && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR)
            {
                self.status = Some(1);
            }
        }
        self.status.unwrap_or(1)
    }
}
