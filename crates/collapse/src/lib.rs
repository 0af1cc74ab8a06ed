//! perf.data and live samples → symbolized, folded stacks.
//!
//! The pipeline: a producer ([`PerfDataReader`], or the live recorder)
//! pushes [`Event`]s into a [`Collapser`], which keeps the process model
//! and aggregates samples on raw address stacks; [`Collapser::finish`]
//! symbolizes each distinct address once and returns
//! [`flamegraph_perf_folded::FoldedStacks`] with stackcollapse-perf's
//! `--all` conventions (`_[k]` kernel and `_[j]` JIT frames, process name
//! as root) and idle time removed.

pub mod address_profile;
pub mod collapser;
pub mod dso;
pub mod event;
pub mod idle;
pub mod names;
pub mod perf_data;
pub mod process;
mod stack_counter;
pub mod symbols;

pub use address_profile::{
    AddressProfile, AddressSample, CodeLocation, CodeObject, SourcePosition, ThreadRoot,
};
pub use collapser::{
    CollapseOptions, CollapseStats, Collapsed, Collapser, ReturnAddresses, RootFrame, Weight,
};
pub use event::{Comm, CpuMode, Event, EventSink, Loss, Mmap, Sample, TaskEvent};
pub use idle::{IdleFilter, DEFAULT_IDLE_PATTERN};
pub use perf_data::{
    starts_like_perf_data, EventInfo, EventKind, PerfDataReader, ReadError, ReadProgress,
    ReadStats, RecordingInfo,
};
pub use symbols::{SourceLine, SymbolizerOptions};
