//! flamegraph-perf: the command-line glue between reading, collapsing and
//! rendering. All real work lives in the workspace crates.

mod cli;
mod continuous;
mod diff;
mod exports;
mod jvm;
mod output;
mod push;
mod summary;

use std::io::{self, BufReader, IsTerminal};
use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Parser;

use cli::{Args, ReadArgs, Subcommand, WeightArg};
use collapse::{
    AddressProfile, CollapseOptions, CollapseStats, Collapsed, Collapser, EventInfo, IdleFilter,
    PerfDataReader, ReadStats, RecordingInfo, ReturnAddresses, RootFrame, SymbolizerOptions,
    Weight,
};
use folded::FoldedStacks;

/// Exit status when the graph was made from partial data.
const EXIT_PARTIAL: u8 = 3;
/// Exit status for errors (no graph).
const EXIT_ERROR: u8 = 2;
/// Exit status when every local output was written but `--push` failed.
const EXIT_PUSH_FAILED: u8 = 4;

/// How the run ended, for the exit status.
enum Completeness {
    /// Everything read and shown.
    Complete,
    /// The graph shows partial data.
    Partial,
    /// A recorded command's exit status, passed on.
    Command(i32),
    /// Local outputs written, the upload failed (said on stderr).
    PushFailed,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(Completeness::Complete) => ExitCode::SUCCESS,
        Ok(Completeness::Partial) => ExitCode::from(EXIT_PARTIAL),
        Ok(Completeness::Command(status)) => ExitCode::from(status.clamp(0, 255) as u8),
        Ok(Completeness::PushFailed) => ExitCode::from(EXIT_PUSH_FAILED),
        Err(error) if output::is_broken_pipe(&error) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("flamegraph-perf: {error:#}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

fn run(args: &Args) -> Result<Completeness> {
    let threads = match &args.subcommand {
        Some(Subcommand::Diff(diff)) => diff.threads,
        None => args.threads,
    };
    if let Some(threads) = threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(usize::from(threads))
            .build_global()
            .context("starting the thread pool")?;
    }
    if let Some(Subcommand::Diff(diff)) = &args.subcommand {
        return diff::run(diff);
    }
    if let Some(url) = &args.push {
        // Bad names and labels are usage errors: refuse them before any work.
        push::Target::new(
            url,
            args.app.as_deref().unwrap_or(""),
            &args.labels,
            "check",
        )?;
    }
    if let Some(path) = &args.from_folded {
        let stacks = read_folded(path)?;
        if !args.quiet {
            eprintln!(
                "flamegraph-perf: {}: {} stacks, {} samples",
                path.display(),
                stacks.len(),
                stacks.total()
            );
        }
        if let Some(json) = &args.summary_json {
            let facts = summary::Facts {
                input: Some(path),
                samples: stacks.total(),
                ..summary::Facts::default()
            };
            summary::write(json, &facts, &stacks)?;
        }
        let exports = exports::Exports {
            unit: export::SampleUnit::Count,
            weights_are_periods: false,
            time_nanos: 0,
            duration_nanos: 0,
            name: path.display().to_string(),
        };
        exports.write_with_output(args, &stacks, None, &this_hostname())?;
        return Ok(Completeness::Complete);
    }
    let Some(input) = &args.input else {
        return record_live(args);
    };
    if args.all_cpus || !args.attach.is_empty() || !args.command.is_empty() || args.output.is_some()
    {
        bail!("-i reads an existing recording; -a, -p, -o and a command are for recording");
    }
    let mut timings = output::PhaseTimer::new(args.timings);
    let recording = read_recording(
        input,
        &args.read,
        args.threads,
        args.quiet,
        args.needs_addresses(),
        &mut timings,
    )?;
    if recording.stacks.is_empty() {
        bail!(
            "{}: no samples of {} to show{}",
            input.display(),
            recording.event.name,
            if recording.stats.idle_samples > 0 {
                format!(
                    " ({} idle samples dropped; --keep-idle shows them)",
                    recording.stats.idle_samples
                )
            } else {
                String::new()
            }
        );
    }
    if let Some(json) = &args.summary_json {
        summary::write(json, &recording.facts(input), &recording.stacks)?;
    }
    let duration_ns = recording
        .stats
        .sample_time_range
        .map_or(0, |(first, last)| last - first);
    let exports = exports::Exports {
        unit: exports::sample_unit(&recording.event),
        weights_are_periods: args.read.weight == WeightArg::Period,
        time_nanos: exports::recording_start(input, duration_ns),
        duration_nanos: duration_ns,
        name: input.display().to_string(),
    };
    let hostname = recording
        .info
        .hostname
        .clone()
        .unwrap_or_else(this_hostname);
    let took = exports.write_with_output(
        args,
        &recording.stacks,
        recording.addresses.as_ref(),
        &hostname,
    )?;
    timings.phase("render");
    timings.steps(&took);
    if let Err(error) = exports.push(
        args,
        &recording.stacks,
        recording.addresses.as_ref(),
        &hostname,
    ) {
        eprintln!("flamegraph-perf: {error:#}");
        return Ok(Completeness::PushFailed);
    }
    timings.finish();
    Ok(if recording.read.is_partial() {
        Completeness::Partial
    } else {
        Completeness::Complete
    })
}

/// A perf.data file, read, symbolized and folded.
struct Recording {
    stacks: FoldedStacks,
    stats: CollapseStats,
    read: ReadStats,
    info: RecordingInfo,
    /// The folded event.
    event: EventInfo,
    addresses: Option<AddressProfile>,
}

impl Recording {
    fn facts<'a>(&'a self, input: &'a Path) -> summary::Facts<'a> {
        summary::Facts {
            input: Some(input),
            hostname: self.info.hostname.as_deref(),
            event: Some(&self.event.name),
            events: self.info.events.iter().map(|e| e.name.as_str()).collect(),
            samples: self.stats.samples,
            lost_samples: self.stats.lost_samples,
            lost_records: self.stats.lost_records,
            duration_seconds: self
                .stats
                .sample_time_range
                .map(|(first, last)| (last - first) as f64 / 1e9),
            idle_samples: self.stats.idle_samples,
            unresolved_frames: self.stats.unresolved_frames,
            frames: self.stats.frames,
            partial: self.read.is_partial(),
        }
    }
}

/// Reads `input` and folds its samples, printing the summary and any
/// warnings about damage on stderr (unless `quiet`, for the summary).
fn read_recording(
    input: &Path,
    args: &ReadArgs,
    threads: Option<u16>,
    quiet: bool,
    keep_addresses: bool,
    timings: &mut output::PhaseTimer,
) -> Result<Recording> {
    let mut reader = PerfDataReader::open(input)?;
    timings.phase("open");
    let info = reader.info().clone();
    let event_index = choose_event(args, quiet, &info)?;
    let max_stack = info
        .events
        .get(event_index)
        .and_then(|e| e.max_stack)
        .unwrap_or_else(kernel_max_stack);
    let kept_maps = output::perf_maps_dir(input);
    let symbolizer_options = SymbolizerOptions {
        symfs: args.symfs.clone(),
        kallsyms: args.kallsyms.clone(),
        inline: args.inline,
        no_demangle: args.no_demangle,
        perf_map_dirs: kept_maps.into_iter().filter(|d| d.is_dir()).collect(),
        live_processes: false,
        recorded_kernel_release: info.os_release.clone(),
    };
    let mut collapser = Collapser::new(CollapseOptions {
        keep_addresses,
        ..collapse_options(args, threads, event_index, max_stack)?
    });
    if threads != Some(1) {
        collapser.preload_kernel_symbols(&symbolizer_options);
    }
    for (path, build_id) in &info.build_ids {
        collapser.add_build_id(path, build_id);
    }
    let mut progress = output::ReadProgressLine::new(input, quiet);
    let read = reader.read_events_reporting(&mut collapser, &mut |p| progress.update(p));
    progress.finish();
    drop(reader);
    timings.phase("read");
    let Collapsed {
        stacks,
        stats,
        addresses,
        ..
    } = collapser.finish(symbolizer_options);
    timings.phase("symbolize+fold");
    timings.steps(&stats.steps);
    let event = info.events[event_index].clone();
    if !quiet {
        output::print_summary(input, &event.name, &read, &stats);
    }
    if let Some(damage) = &read.damage {
        eprintln!(
            "flamegraph-perf: warning: {}: damaged at byte {}: {}; the graph is partial ({} samples)",
            input.display(),
            damage.offset,
            damage.what,
            stats.samples
        );
    }
    if let Some(why) = &read.stopped_early {
        eprintln!(
            "flamegraph-perf: warning: {}: reading stopped early ({why}); the graph shows the {} samples before that point",
            input.display(),
            stats.samples
        );
    }
    Ok(Recording {
        stacks,
        stats,
        read,
        event,
        info,
        addresses,
    })
}

/// Records live, then folds and renders what was recorded.
fn record_live(args: &Args) -> Result<Completeness> {
    let cpus = match &args.cpus {
        Some(list) => Some(record::system::parse_cpu_list(list).map_err(anyhow::Error::msg)?),
        None => None,
    };
    let options = record::RecordOptions {
        system_wide: args.all_cpus,
        pids: args.attach.clone(),
        command: args.command.clone(),
        command_env: if args.no_jvm_flags || args.command.is_empty() {
            Vec::new()
        } else {
            let existing = std::env::var("JAVA_TOOL_OPTIONS").ok();
            vec![(
                "JAVA_TOOL_OPTIONS".into(),
                jvm_maps::java_tool_options(existing.as_deref()).into(),
            )]
        },
        cpus,
        event: args
            .read
            .event
            .clone()
            .unwrap_or_else(|| "cpu-clock".to_owned()),
        frequency: args.frequency,
        callchains: args.callchains,
        mmap_pages: args.mmap_pages,
        output: args.output.clone(),
        duration: None,
    };
    let mut collapser = Collapser::new(CollapseOptions {
        keep_addresses: args.needs_addresses(),
        ..collapse_options(&args.read, args.threads, 0, kernel_max_stack())?
    });
    let mut reporter = output::StderrReporter::new(args.quiet);
    let symbolizer_options = SymbolizerOptions {
        symfs: args.read.symfs.clone(),
        kallsyms: args.read.kallsyms.clone(),
        inline: args.read.inline,
        no_demangle: args.read.no_demangle,
        perf_map_dirs: Vec::new(),
        live_processes: true,
        recorded_kernel_release: None,
    };
    let unit = exports::sample_unit(&exports::live_event(
        args.read.event.as_deref().unwrap_or("cpu-clock"),
        args.frequency,
    ));
    let mut push_failed = false;
    let (summary, stacks, stats, perf_maps, addresses) = if let Some(url) = &args.push {
        if args.pprof.is_some() {
            bail!("--pprof and --push while recording: each window is uploaded on its own; write a pprof file with -o and -i instead");
        }
        let target = push::Target::new(
            url,
            args.app.as_deref().unwrap_or(""),
            &args.labels,
            &this_hostname(),
        )?;
        let mut windowed = continuous::WindowedPush::new(
            &mut collapser,
            symbolizer_options,
            target,
            continuous::WindowOptions {
                interval: args.push_interval,
                unit,
                weights_are_periods: args.read.weight == WeightArg::Period,
                jvm_attach: !args.no_jvm_attach,
                quiet: args.quiet,
            },
        );
        let summary = record::record(
            &options,
            record::Consumers {
                sink: &mut windowed,
                reporter: &mut reporter,
            },
        )?;
        reporter.finish();
        let finished = windowed.finish()?;
        push_failed = finished.failed > 0;
        (
            summary,
            finished.stacks,
            finished.stats,
            finished.perf_maps,
            None,
        )
    } else {
        let summary = record::record(
            &options,
            record::Consumers {
                sink: &mut collapser,
                reporter: &mut reporter,
            },
        )?;
        reporter.finish();
        if !args.no_jvm_attach {
            jvm::dump_perf_maps(&collapser.sampled_pids(), args.quiet);
        }
        let Collapsed {
            stacks,
            stats,
            perf_maps,
            addresses,
        } = collapser.finish(symbolizer_options);
        (summary, stacks, stats, perf_maps, addresses)
    };
    if !args.quiet {
        output::print_record_summary(&summary, &stats);
    }
    if let Some(saved) = &summary.output {
        if !perf_maps.is_empty() {
            let dir = output::save_perf_maps(saved, &perf_maps)?;
            if !args.quiet {
                eprintln!(
                    "flamegraph-perf: kept {} perf map{} in {} (used by -i {})",
                    perf_maps.len(),
                    if perf_maps.len() == 1 { "" } else { "s" },
                    dir.display(),
                    saved.display()
                );
            }
        }
    }
    let hostname = this_hostname();
    if stacks.is_empty() {
        eprintln!(
            "flamegraph-perf: warning: no samples of {} were recorded{}",
            summary.event_name,
            if stats.idle_samples > 0 {
                format!(
                    " except {} idle ones (--keep-idle shows them)",
                    stats.idle_samples
                )
            } else {
                String::new()
            }
        );
    }
    if let Some(json) = &args.summary_json {
        let facts = summary::Facts {
            input: None,
            hostname: Some(&hostname),
            event: Some(&summary.event_name),
            events: vec![summary.event_name.as_str()],
            samples: stats.samples,
            lost_samples: summary.lost,
            lost_records: stats.lost_records,
            duration_seconds: Some(summary.duration.as_secs_f64()),
            idle_samples: stats.idle_samples,
            unresolved_frames: stats.unresolved_frames,
            frames: stats.frames,
            partial: false,
        };
        summary::write(json, &facts, &stacks)?;
    }
    let duration_ns = summary.duration.as_nanos() as u64;
    let exports = exports::Exports {
        unit,
        weights_are_periods: args.read.weight == WeightArg::Period,
        time_nanos: exports::started_before_now(duration_ns),
        duration_nanos: duration_ns,
        name: hostname.clone(),
    };
    exports.write_with_output(args, &stacks, addresses.as_ref(), &hostname)?;
    if push_failed {
        return Ok(Completeness::PushFailed);
    }
    Ok(match summary.command_status {
        Some(status) if status != 0 => Completeness::Command(status),
        _ => Completeness::Complete,
    })
}

pub(crate) fn read_folded(path: &Path) -> Result<FoldedStacks> {
    let stacks = if path == Path::new("-") {
        let stdin = io::stdin();
        if stdin.is_terminal() {
            bail!("--from-folded -: stdin is a terminal; pipe folded stacks in");
        }
        FoldedStacks::parse(stdin.lock())
    } else {
        let file = std::fs::File::open(path).with_context(|| path.display().to_string())?;
        FoldedStacks::parse(BufReader::new(file))
    }
    .with_context(|| path.display().to_string())?;
    if stacks.is_empty() {
        bail!("{}: no folded stacks", path.display());
    }
    Ok(stacks)
}

fn choose_event(args: &ReadArgs, quiet: bool, info: &RecordingInfo) -> Result<usize> {
    let sampled = info.sampled_events();
    let names = || {
        sampled
            .iter()
            .map(|&i| info.events[i].name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if let Some(name) = &args.event {
        return info.event_by_name(name).with_context(|| {
            format!(
                "{}: no event {name:?} in this recording (it has: {})",
                info.path.display(),
                names()
            )
        });
    }
    let Some(&first) = sampled.first() else {
        bail!(
            "{}: the recording has no sampled events",
            info.path.display()
        );
    };
    if sampled.len() > 1 && !quiet {
        eprintln!(
            "flamegraph-perf: {}: several events ({}); showing {}, choose another with --event NAME",
            info.path.display(),
            names(),
            info.events[first].name
        );
    }
    Ok(first)
}

fn collapse_options(
    args: &ReadArgs,
    threads: Option<u16>,
    event_index: usize,
    max_stack: usize,
) -> Result<CollapseOptions> {
    let idle_filter = if args.keep_idle {
        None
    } else if let Some(pattern) = &args.idle_regex {
        Some(IdleFilter::new(pattern).with_context(|| format!("--idle-regex {pattern:?}"))?)
    } else {
        Some(IdleFilter::default())
    };
    Ok(CollapseOptions {
        event_index,
        weight: match args.weight {
            WeightArg::Samples => Weight::Samples,
            WeightArg::Period => Weight::Period,
        },
        root: if args.tid {
            RootFrame::Tid
        } else if args.pid {
            RootFrame::Pid
        } else {
            RootFrame::Comm
        },
        idle_filter,
        return_addresses: if args.raw_return_addresses {
            ReturnAddresses::AsIs
        } else {
            ReturnAddresses::CallSite
        },
        max_stack,
        counting_thread: threads != Some(1),
        keep_addresses: false,
    })
}

/// `kernel.perf_event_max_stack` here (127 if unreadable).
fn kernel_max_stack() -> usize {
    std::fs::read_to_string("/proc/sys/kernel/perf_event_max_stack")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(127)
}

pub(crate) fn this_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "Flame Graph".to_owned())
}
