//! `--pprof` and `--speedscope`: the glue between the collapsed profile and
//! the export crate.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use collapse::{AddressProfile, EventInfo, EventKind};
use export::{PprofOptions, SampleUnit};
use folded::FoldedStacks;

use crate::cli::Args;
use crate::{output, push};

/// What the exports need to know besides the stacks.
pub struct Exports {
    pub unit: SampleUnit,
    pub weights_are_periods: bool,
    pub time_nanos: i64,
    pub duration_nanos: u64,
    /// The profile's name in speedscope.
    pub name: String,
}

/// The sample unit of a recorded `event`: CPU time at its frequency or
/// fixed period for the clock events, counts for tracepoints and the like.
pub fn sample_unit(event: &EventInfo) -> SampleUnit {
    match event.kind {
        EventKind::CpuClock | EventKind::TaskClock => {
            let period = match (event.frequency, event.period) {
                (Some(hz), _) if hz > 0 => 1_000_000_000 / hz as i64,
                (_, Some(ns)) if ns > 0 => ns as i64,
                _ => 1_000_000_000 / 99,
            };
            SampleUnit::CpuNanoseconds { period }
        }
        _ => SampleUnit::Count,
    }
}

/// When a recording read from `path` started: its file's modification time
/// minus the sampled duration (perf.data has no wall clock of its own).
/// The same file always gives the same time.
pub fn recording_start(path: &Path, duration_ns: u64) -> i64 {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos() as i64 - duration_ns as i64)
}

/// Now minus `duration_ns`, for a recording that just ended.
pub fn started_before_now(duration_ns: u64) -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64 - duration_ns as i64)
}

impl Exports {
    /// Writes the files `args` asks for.
    pub fn write(
        &self,
        args: &Args,
        stacks: &FoldedStacks,
        addresses: Option<&AddressProfile>,
    ) -> Result<()> {
        if let Some(path) = &args.pprof {
            let Some(addresses) = addresses else {
                bail!("--pprof: no address-level samples were kept");
            };
            let options = PprofOptions {
                unit: self.unit,
                weights_are_periods: self.weights_are_periods,
                time_nanos: self.time_nanos,
                duration_nanos: self.duration_nanos as i64,
            };
            output::write_file_replacing(path, |out| {
                export::write_pprof(addresses, stacks, &options, out).map_err(std::io::Error::other)
            })
            .with_context(|| format!("writing {}", path.display()))?;
        }
        if let Some(path) = &args.speedscope {
            let nanoseconds = match self.unit {
                SampleUnit::CpuNanoseconds { period } if !self.weights_are_periods => {
                    Some(period as u64)
                }
                SampleUnit::CpuNanoseconds { .. } => Some(1),
                SampleUnit::Count => None,
            };
            output::write_file_replacing(path, |out| {
                export::write_speedscope(stacks, &self.name, nanoseconds, out)
                    .map_err(std::io::Error::other)
            })
            .with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(())
    }

    /// Writes the export files and the main output (SVG or folded, see
    /// [`output::write`]) at the same time: the exports run on a thread of
    /// their own while the SVG renders, so they add less than their own
    /// time. The exports' error wins when both fail. Returns how long each
    /// took, for `--timings`.
    pub fn write_with_output(
        &self,
        args: &Args,
        stacks: &FoldedStacks,
        addresses: Option<&AddressProfile>,
        hostname: &str,
    ) -> Result<[(&'static str, Duration); 2]> {
        let timed = |work: &dyn Fn() -> Result<()>| {
            let start = Instant::now();
            work().map(|()| start.elapsed())
        };
        let (exported, written) = if args.pprof.is_none() && args.speedscope.is_none() {
            (
                Ok(Duration::ZERO),
                timed(&|| output::write(args, stacks, hostname)),
            )
        } else {
            std::thread::scope(|scope| {
                let exports = std::thread::Builder::new()
                    .name("exports".into())
                    .spawn_scoped(scope, || timed(&|| self.write(args, stacks, addresses)));
                let written = timed(&|| output::write(args, stacks, hostname));
                let exported = match exports {
                    Ok(handle) => handle
                        .join()
                        .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
                    // No thread to be had: export here, after the output.
                    Err(_) => timed(&|| self.write(args, stacks, addresses)),
                };
                (exported, written)
            })
        };
        let exported = exported?;
        Ok([("output", written?), ("exports", exported)])
    }

    /// `--push`: uploads the profile (split to Pyroscope's limits). Called
    /// after every local output is written.
    pub fn push(
        &self,
        args: &Args,
        stacks: &FoldedStacks,
        addresses: Option<&AddressProfile>,
        hostname: &str,
    ) -> Result<()> {
        let Some(url) = &args.push else {
            return Ok(());
        };
        let Some(addresses) = addresses else {
            bail!("--push: no address-level samples were kept");
        };
        let target = push::Target::new(
            url,
            args.app.as_deref().unwrap_or(""),
            &args.labels,
            hostname,
        )?;
        let sample_rate = self.unit.sample_rate_hz();
        let window = push::Window {
            start_ns: self.time_nanos,
            end_ns: self.time_nanos + self.duration_nanos as i64,
            sample_rate,
        }
        .checked(args.override_timestamp)?;
        let options = PprofOptions {
            unit: self.unit,
            weights_are_periods: self.weights_are_periods,
            time_nanos: window.start_ns,
            duration_nanos: window.end_ns - window.start_ns,
        };
        let parts =
            export::upload_parts(addresses, stacks, &options, export::UploadLimits::default())
                .context("--push: encoding the profile")?;
        push::upload(&target, &window, &parts, args.quiet)
    }
}
