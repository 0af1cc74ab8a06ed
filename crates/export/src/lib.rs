//! Profiles in other tools' formats, from the same collapsed samples the
//! flamegraph shows: gzip-compressed pprof (`profile.proto`, read by
//! `go tool pprof`, Grafana Pyroscope, Parca) and speedscope JSON.
//!
//! Frame names are exactly the folded output's, annotations included
//! (`do_sendfile_[k]`, `Busy.fib_[j]`, `inner_[i]`): a pprof function's
//! `name` is the folded frame, its `system_name` the bare name. The root
//! frame of a folded stack (comm, or comm-PID/TID) is not a location but
//! a sample label. Output bytes depend only on the input.

pub mod pprof;
pub mod speedscope;

pub use pprof::{upload_parts, write_pprof, PprofOptions, SampleUnit, UploadLimits};
pub use speedscope::write_speedscope;

/// Why an export could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// There are no samples to export.
    #[error("no samples to export")]
    NoSamples,
    /// Writing failed.
    #[error("cannot write: {0}")]
    Io(#[from] std::io::Error),
}
