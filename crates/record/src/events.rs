//! Which event to sample, and the `perf_event_attr` that asks for it.

use perf_event_open_sys::bindings::{self, perf_event_attr};

use crate::system::tracefs_root;
use crate::RecordError;

/// An event to sample, resolved against this machine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventSpec {
    /// `cpu-clock`: a timer per CPU, period in ns.
    CpuClock,
    /// `task-clock`: a timer per task, period in ns.
    TaskClock,
    /// A hardware event (`cycles`, `instructions`, …) with its config.
    Hardware {
        /// Name as typed.
        name: String,
        /// `PERF_COUNT_HW_*`.
        config: u64,
    },
    /// A tracepoint `subsystem:name`.
    Tracepoint {
        /// `subsystem:name`.
        name: String,
        /// Its id in tracefs.
        id: u64,
        /// Its tracefs `format` file (for perf.data's tracing data).
        format: String,
    },
}

impl EventSpec {
    /// Name as perf shows it.
    pub fn name(&self) -> String {
        match self {
            EventSpec::CpuClock => "cpu-clock".into(),
            EventSpec::TaskClock => "task-clock".into(),
            EventSpec::Hardware { name, .. } | EventSpec::Tracepoint { name, .. } => name.clone(),
        }
    }

    /// True for events sampled by frequency (timers, hardware); false for
    /// tracepoints, which sample every hit.
    pub fn by_frequency(&self) -> bool {
        !matches!(self, EventSpec::Tracepoint { .. })
    }
}

/// Parses `-e NAME`: `cpu-clock`, `task-clock`, hardware names, or
/// `subsystem:name` tracepoints (looked up in tracefs).
pub fn parse_event(name: &str) -> Result<EventSpec, RecordError> {
    let hardware = |config: u32| EventSpec::Hardware {
        name: name.to_owned(),
        config: u64::from(config),
    };
    Ok(match name {
        "cpu-clock" => EventSpec::CpuClock,
        "task-clock" => EventSpec::TaskClock,
        "cycles" | "cpu-cycles" => hardware(bindings::PERF_COUNT_HW_CPU_CYCLES),
        "instructions" => hardware(bindings::PERF_COUNT_HW_INSTRUCTIONS),
        "branches" | "branch-instructions" => hardware(bindings::PERF_COUNT_HW_BRANCH_INSTRUCTIONS),
        "branch-misses" => hardware(bindings::PERF_COUNT_HW_BRANCH_MISSES),
        "cache-misses" => hardware(bindings::PERF_COUNT_HW_CACHE_MISSES),
        "cache-references" => hardware(bindings::PERF_COUNT_HW_CACHE_REFERENCES),
        _ => match name.split_once(':') {
            Some((subsystem, event)) if is_tracefs_name(subsystem) && is_tracefs_name(event) => {
                tracepoint(subsystem, event)?
            }
            _ => {
                return Err(RecordError::Usage(format!(
                    "unknown event {name:?}: use cpu-clock, task-clock, cycles, instructions, or a tracepoint subsystem:name"
                )))
            }
        },
    })
}

fn is_tracefs_name(part: &str) -> bool {
    !part.is_empty()
        && part
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn tracepoint(subsystem: &str, event: &str) -> Result<EventSpec, RecordError> {
    let Some(root) = tracefs_root() else {
        return Err(RecordError::Usage(format!(
            "tracepoint {subsystem}:{event} needs tracefs, which is not mounted: run `mount -t tracefs nodev /sys/kernel/tracing` as root"
        )));
    };
    let dir = root.join("events").join(subsystem).join(event);
    let id = std::fs::read_to_string(dir.join("id"))
        .ok()
        .and_then(|t| t.trim().parse::<u64>().ok())
        .ok_or_else(|| {
            RecordError::Usage(format!(
                "no tracepoint {subsystem}:{event} (no {}); list them with `ls {}`",
                dir.join("id").display(),
                root.join("events").display()
            ))
        })?;
    let format = std::fs::read_to_string(dir.join("format")).unwrap_or_default();
    Ok(EventSpec::Tracepoint {
        name: format!("{subsystem}:{event}"),
        id,
        format,
    })
}

/// How to build the attribute.
#[derive(Clone, Debug)]
pub struct AttrSettings {
    /// Samples per second (frequency events).
    pub frequency: u64,
    /// Collect callchains (`-g`), at most this many frames.
    pub callchain_depth: Option<u16>,
    /// Leave out kernel-mode samples and kernel frames.
    pub exclude_kernel: bool,
    /// Follow new tasks (per-task events).
    pub inherit: bool,
    /// Start enabled at the next exec (launched commands).
    pub enable_on_exec: bool,
    /// Emit MMAP2/COMM/FORK/EXIT side-band records.
    pub side_band: bool,
    /// Ask for build ids in MMAP2 records (kernel ≥ 5.12).
    pub build_ids: bool,
    /// Wake the reader once this many bytes are in the buffer.
    pub wakeup_bytes: u32,
}

/// The sample layout every event uses: the identifier first, so records
/// of any event are attributable.
pub fn sample_type(spec: &EventSpec, callchains: bool) -> u64 {
    let mut sample_type = bindings::PERF_SAMPLE_IDENTIFIER
        | bindings::PERF_SAMPLE_IP
        | bindings::PERF_SAMPLE_TID
        | bindings::PERF_SAMPLE_TIME
        | bindings::PERF_SAMPLE_CPU
        | bindings::PERF_SAMPLE_PERIOD;
    if callchains {
        sample_type |= bindings::PERF_SAMPLE_CALLCHAIN;
    }
    if matches!(spec, EventSpec::Tracepoint { .. }) {
        sample_type |= bindings::PERF_SAMPLE_RAW;
    }
    u64::from(sample_type)
}

/// Builds the attribute for `spec`.
pub fn build_attr(spec: &EventSpec, settings: &AttrSettings) -> perf_event_attr {
    let mut attr = perf_event_attr {
        size: std::mem::size_of::<perf_event_attr>() as u32,
        ..Default::default()
    };
    match spec {
        EventSpec::CpuClock => {
            attr.type_ = bindings::PERF_TYPE_SOFTWARE;
            attr.config = u64::from(bindings::PERF_COUNT_SW_CPU_CLOCK);
        }
        EventSpec::TaskClock => {
            attr.type_ = bindings::PERF_TYPE_SOFTWARE;
            attr.config = u64::from(bindings::PERF_COUNT_SW_TASK_CLOCK);
        }
        EventSpec::Hardware { config, .. } => {
            attr.type_ = bindings::PERF_TYPE_HARDWARE;
            attr.config = *config;
        }
        EventSpec::Tracepoint { id, .. } => {
            attr.type_ = bindings::PERF_TYPE_TRACEPOINT;
            attr.config = *id;
        }
    }
    if spec.by_frequency() {
        attr.set_freq(1);
        attr.sample_freq = settings.frequency;
    } else {
        attr.sample_period = 1;
    }
    attr.sample_type = sample_type(spec, settings.callchain_depth.is_some());
    if let Some(depth) = settings.callchain_depth {
        attr.sample_max_stack = depth;
    }
    attr.set_disabled(1);
    attr.set_inherit(u64::from(settings.inherit));
    attr.set_enable_on_exec(u64::from(settings.enable_on_exec));
    attr.set_exclude_kernel(u64::from(settings.exclude_kernel));
    attr.set_exclude_callchain_kernel(u64::from(settings.exclude_kernel));
    attr.set_exclude_hv(1);
    if settings.side_band {
        attr.set_mmap(1);
        attr.set_mmap2(1);
        attr.set_comm(1);
        attr.set_comm_exec(1);
        attr.set_task(1);
        attr.set_build_id(u64::from(settings.build_ids));
    }
    attr.set_sample_id_all(1);
    attr.set_watermark(1);
    attr.wakeup_watermark = settings.wakeup_bytes.max(1);
    attr
}

/// The attribute's bytes as the kernel ABI lays them out.
pub fn attr_bytes(attr: &perf_event_attr) -> Vec<u8> {
    // SAFETY: perf_event_attr is a plain C struct of integers; reading its
    // bytes is defined (padding is zero because it starts from Default).
    unsafe {
        std::slice::from_raw_parts(
            (attr as *const perf_event_attr).cast::<u8>(),
            std::mem::size_of::<perf_event_attr>(),
        )
    }
    .to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_known_events_and_rejects_others() {
        assert_eq!(parse_event("cpu-clock").unwrap(), EventSpec::CpuClock);
        assert_eq!(parse_event("task-clock").unwrap(), EventSpec::TaskClock);
        assert!(matches!(
            parse_event("cycles").unwrap(),
            EventSpec::Hardware { config: 0, .. }
        ));
        assert!(parse_event("bogus").is_err());
        assert!(parse_event("a:b/c").is_err());
        match parse_event("no_such_subsystem:no_such_event") {
            Err(RecordError::Usage(message)) => {
                assert!(
                    message.contains("tracefs") || message.contains("no tracepoint"),
                    "{message}"
                )
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn attr_layout_matches_the_reader() {
        let settings = AttrSettings {
            frequency: 99,
            callchain_depth: Some(127),
            exclude_kernel: false,
            inherit: true,
            enable_on_exec: true,
            side_band: true,
            build_ids: true,
            wakeup_bytes: 4096,
        };
        let attr = build_attr(&EventSpec::CpuClock, &settings);
        let bytes = attr_bytes(&attr);
        let (parsed, _) = linux_perf_data::linux_perf_event_reader::PerfEventAttr::parse::<
            _,
            byteorder::NativeEndian,
        >(&bytes[..])
        .expect("attr parses");
        assert!(parsed
            .sample_format
            .contains(linux_perf_data::linux_perf_event_reader::SampleFormat::CALLCHAIN));
        assert_eq!(attr.sample_max_stack, 127);
    }
}
