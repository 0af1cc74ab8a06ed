//! Live sampling through perf_event_open, without the perf binary.
//!
//! [`record`] opens one sampling event per CPU (per task and CPU when
//! following processes), maps one ring buffer per CPU, synthesizes what
//! already existed from /proc, and streams every record — kernel-made or
//! synthesized, in time order — through the same conversion the perf.data
//! reader uses into an [`EventSink`] (normally the collapser). With
//! [`RecordOptions::output`], the same records also go to a perf.data file
//! that Linux perf reads.

pub mod events;
pub mod output;
pub mod ring;
pub mod signals;
pub mod synth;
pub mod system;

mod session;

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

pub use events::EventSpec;
pub use session::record;
pub use system::SystemLimits;

use flamegraph_perf_collapse::EventSink;

/// What to record. Defaults follow `perf record` with the seed's 99 Hz.
#[derive(Clone, Debug)]
pub struct RecordOptions {
    /// Sample every CPU (`-a`). Default: `false` (but see [`record`]: with
    /// no command and no pids, recording is system-wide).
    pub system_wide: bool,
    /// Attach to these processes and their threads (`-p`). Default: none.
    pub pids: Vec<i32>,
    /// Launch and follow this command (`-- CMD ARGS…`); with
    /// `system_wide` or `pids` it only sets the duration. Default: none.
    pub command: Vec<OsString>,
    /// Extra environment for the command (name, value). Default: none.
    pub command_env: Vec<(OsString, OsString)>,
    /// Restrict to these CPUs (`-C`). Default: every online CPU.
    pub cpus: Option<Vec<u32>>,
    /// Event name (`-e`). Default: `cpu-clock`.
    pub event: String,
    /// Samples per second per CPU (`-F`). Default: 99.
    pub frequency: u64,
    /// Frame-pointer callchains, kernel and user (`-g`). Default: `false`.
    pub callchains: bool,
    /// Data pages per ring buffer, a power of two (`-m`). Default: 128
    /// (512 KiB with 4 KiB pages), or what the mlock limit allows.
    pub mmap_pages: usize,
    /// Save the recording as perf.data here (`-o`). Default: none.
    pub output: Option<PathBuf>,
    /// Stop after this long even if nothing else stops the recording.
    /// Default: none.
    pub duration: Option<Duration>,
}

impl Default for RecordOptions {
    fn default() -> RecordOptions {
        RecordOptions {
            system_wide: false,
            pids: Vec::new(),
            command: Vec::new(),
            command_env: Vec::new(),
            cpus: None,
            event: "cpu-clock".to_owned(),
            frequency: 99,
            callchains: false,
            mmap_pages: 128,
            output: None,
            duration: None,
        }
    }
}

/// How a recording went.
#[derive(Clone, Debug, Default)]
pub struct RecordSummary {
    /// Name of the event sampled (after any fallback).
    pub event_name: String,
    /// Samples received.
    pub samples: u64,
    /// Samples the kernel dropped because a buffer was full.
    pub lost: u64,
    /// Times the kernel throttled sampling.
    pub throttled: u64,
    /// Wall time recorded.
    pub duration: Duration,
    /// CPU time (user + system) this process spent while recording, not
    /// counting symbolization and rendering afterwards.
    pub recorder_cpu: Duration,
    /// The launched command's exit status, shell-style (128+N for signal N).
    pub command_status: Option<i32>,
    /// The stop signal that ended the recording early, if one did.
    pub stopped_by_signal: Option<i32>,
    /// Where perf.data was written.
    pub output: Option<PathBuf>,
    /// Whether kernel frames were sampled.
    pub kernel_sampled: bool,
}

/// Why a recording failed.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The arguments cannot work (unknown event, bad CPU list, …).
    #[error("{0}")]
    Usage(String),
    /// The kernel refused, with what to change.
    #[error("{0}")]
    Permission(String),
    /// The command could not be started.
    #[error("cannot run {command}: {error}")]
    Launch {
        /// The command.
        command: String,
        /// The cause.
        error: std::io::Error,
    },
    /// A system call failed.
    #[error("{what}: {error}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        error: std::io::Error,
    },
    /// perf.data could not be written.
    #[error(transparent)]
    Output(#[from] output::OutputError),
}

/// Something worth telling the user while recording.
pub trait Reporter {
    /// A warning (one line).
    fn warn(&mut self, message: &str);
    /// Progress: elapsed time, samples and lost samples so far.
    fn progress(&mut self, elapsed: Duration, samples: u64, lost: u64);
}

/// The event sink and reporter a recording feeds.
pub struct Consumers<'a> {
    /// Receives every event, in time order.
    pub sink: &'a mut dyn EventSink,
    /// Receives warnings and progress.
    pub reporter: &'a mut dyn Reporter,
}
