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

/// The sample unit of a recorded `event`: CPU time for the clock events
/// (at their frequency or fixed period) and for hardware events sampled by
/// frequency (they count only while on CPU, and the kernel spaces their
/// samples about 1/F of that apart); counts for tracepoints, other
/// software events and events sampled every N occurrences. The one rule
/// for recordings read with `-i` and recordings made here.
pub fn sample_unit(event: &EventInfo) -> SampleUnit {
    let frequency = event.frequency.filter(|&hz| hz > 0);
    let period = event.period.filter(|&ns| ns > 0);
    match (event.kind, frequency, period) {
        (EventKind::CpuClock | EventKind::TaskClock | EventKind::Hardware, Some(hz), _) => {
            SampleUnit::CpuNanoseconds {
                period: 1_000_000_000 / hz as i64,
            }
        }
        (EventKind::CpuClock | EventKind::TaskClock, None, Some(ns)) => {
            SampleUnit::CpuNanoseconds { period: ns as i64 }
        }
        (EventKind::CpuClock | EventKind::TaskClock, None, None) => SampleUnit::CpuNanoseconds {
            period: 1_000_000_000 / 99,
        },
        _ => SampleUnit::Count,
    }
}

/// The event a live recording of `event_name` at `frequency` Hz samples,
/// as far as [`sample_unit`] cares (tracepoints sample every hit, the rest
/// by frequency; hardware events that fall back to cpu-clock keep that).
pub fn live_event(event_name: &str, frequency: u64) -> EventInfo {
    let (kind, frequency) = match event_name {
        "cpu-clock" => (EventKind::CpuClock, Some(frequency)),
        "task-clock" => (EventKind::TaskClock, Some(frequency)),
        name if name.contains(':') => (EventKind::Tracepoint, None),
        _ => (EventKind::Hardware, Some(frequency)),
    };
    EventInfo {
        name: event_name.to_owned(),
        kind,
        has_callchain: true,
        frequency,
        period: None,
        max_stack: None,
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

/// Now, in ns since the Unix epoch (0 if the clock is before it).
pub fn unix_now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

/// Now minus `duration_ns`, for a recording that just ended.
pub fn started_before_now(duration_ns: u64) -> i64 {
    unix_now_ns() - duration_ns as i64
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
    /// took, for `--timings`, when there were exports (none otherwise).
    pub fn write_with_output(
        &self,
        args: &Args,
        stacks: &FoldedStacks,
        addresses: Option<&AddressProfile>,
        hostname: &str,
    ) -> Result<Vec<(&'static str, Duration)>> {
        if args.pprof.is_none() && args.speedscope.is_none() {
            output::write(args, stacks, hostname)?;
            return Ok(Vec::new());
        }
        let timed = |work: &dyn Fn() -> Result<()>| {
            let start = Instant::now();
            work().map(|()| start.elapsed())
        };
        let (exported, written) = std::thread::scope(|scope| {
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
        });
        let exported = exported?;
        Ok(vec![("output", written?), ("exports", exported)])
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

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: EventKind, frequency: Option<u64>, period: Option<u64>) -> EventInfo {
        EventInfo {
            name: "e".into(),
            kind,
            has_callchain: true,
            frequency,
            period,
            max_stack: None,
        }
    }

    #[test]
    fn one_rule_for_read_and_live_sample_units() {
        let cpu = |period| SampleUnit::CpuNanoseconds { period };
        let cases = [
            (event(EventKind::CpuClock, Some(99), None), cpu(10_101_010)),
            (
                event(EventKind::TaskClock, None, Some(250_000)),
                cpu(250_000),
            ),
            (event(EventKind::Hardware, Some(1000), None), cpu(1_000_000)),
            (
                event(EventKind::Hardware, None, Some(100_003)),
                SampleUnit::Count,
            ),
            (
                event(EventKind::Software, Some(99), None),
                SampleUnit::Count,
            ),
            (
                event(EventKind::Tracepoint, None, Some(1)),
                SampleUnit::Count,
            ),
        ];
        for (event, unit) in cases {
            assert_eq!(sample_unit(&event), unit, "{:?}", event.kind);
        }
        // Recording here: cycles falls back to cpu-clock at the same rate.
        assert_eq!(sample_unit(&live_event("cpu-clock", 99)), cpu(10_101_010));
        assert_eq!(sample_unit(&live_event("cycles", 4999)), cpu(200_040));
        assert_eq!(
            sample_unit(&live_event("sched:sched_switch", 99)),
            SampleUnit::Count
        );
    }
}
