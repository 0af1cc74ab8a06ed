//! Writing results: SVG or folded text to stdout or `flamegraph.svg`, and
//! the summary on stderr.

use std::fs::OpenOptions;
use std::io::{self, BufWriter, IsTerminal, Write};
use std::path::Path;

use anyhow::{Context, Result};

use crate::cli::{Args, RenderArgs, WeightArg};
use collapse::{CollapseStats, ReadStats};
use folded::FoldedStacks;

/// Where the SVG goes when stdout is a terminal.
const TERMINAL_SVG_PATH: &str = "flamegraph.svg";

/// True when the error is a closed stdout pipe (`| head`): not worth a message.
pub fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
            || cause
                .downcast_ref::<render::RenderError>()
                .is_some_and(|e| matches!(e, render::RenderError::Io(io) if io.kind() == io::ErrorKind::BrokenPipe))
    })
}

/// The renderer's options for these arguments; `hostname` is the default title.
pub fn render_options(args: &RenderArgs, weight: WeightArg, hostname: &str) -> render::Options {
    render::Options {
        title: args.title.clone().unwrap_or_else(|| hostname.to_owned()),
        subtitle: args.subtitle.clone(),
        colors: args.colors.clone(),
        hash: !args.no_hash,
        width: args.width,
        min_width: args.minwidth,
        reverse: args.reverse,
        inverted: args.inverted,
        count_name: args.countname.clone().unwrap_or_else(|| {
            match weight {
                WeightArg::Samples => "samples",
                WeightArg::Period => "ns",
            }
            .to_owned()
        }),
    }
}

/// Writes folded text or the SVG, as the arguments ask.
pub fn write(args: &Args, stacks: &FoldedStacks, hostname: &str) -> Result<()> {
    if args.folded {
        return emit(None, "folded stacks", |out| stacks.write_folded(out));
    }
    let options = render_options(&args.render, args.read.weight, hostname);
    emit(Some(Path::new(TERMINAL_SVG_PATH)), "SVG", |out| {
        if stacks.is_empty() {
            render::render_empty(&options, "No samples were recorded", out)
        } else {
            render::render_svg(stacks, &options, out)
        }
        .map_err(io::Error::other)
    })
}

/// Runs `write` on stdout, buffered; when stdout is a terminal and there is
/// a `terminal_path`, on that file instead (replaced atomically), and says so.
pub fn emit(
    terminal_path: Option<&Path>,
    what: &str,
    write: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> Result<()> {
    let stdout = io::stdout();
    if let Some(path) = terminal_path.filter(|_| stdout.is_terminal()) {
        write_file_replacing(path, |out| write(out))
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!(
            "flamegraph-perf: stdout is a terminal; wrote {}",
            path.display()
        );
        return Ok(());
    }
    let mut out = BufWriter::with_capacity(1 << 16, stdout.lock());
    write(&mut out)
        .and_then(|()| out.flush())
        .with_context(|| format!("writing {what}"))?;
    Ok(())
}

/// Warnings and (on a terminal) a progress line on stderr while recording.
pub struct StderrReporter {
    quiet: bool,
    progress_shown: bool,
    terminal: bool,
}

impl StderrReporter {
    /// A reporter; progress only when stderr is a terminal.
    pub fn new(quiet: bool) -> StderrReporter {
        StderrReporter {
            quiet,
            progress_shown: false,
            terminal: io::stderr().is_terminal(),
        }
    }

    fn clear_progress(&mut self) {
        if self.progress_shown {
            eprint!("\r\x1b[K");
            self.progress_shown = false;
        }
    }

    /// Removes the progress line.
    pub fn finish(&mut self) {
        self.clear_progress();
    }
}

impl record::Reporter for StderrReporter {
    fn warn(&mut self, message: &str) {
        self.clear_progress();
        eprintln!("flamegraph-perf: warning: {message}");
    }

    fn progress(&mut self, elapsed: std::time::Duration, samples: u64, lost: u64) {
        if self.quiet || !self.terminal {
            return;
        }
        eprint!(
            "\r\x1b[Kflamegraph-perf: recording {:.0} s, {samples} samples, {lost} lost (Ctrl-C to stop)",
            elapsed.as_secs_f64()
        );
        self.progress_shown = true;
    }
}

/// Reading that ends sooner shows no progress line.
const PROGRESS_FIRST_AFTER: std::time::Duration = std::time::Duration::from_millis(300);

/// A progress line while a recording is read, on a terminal only, and only
/// once reading has taken long enough to be worth watching.
pub struct ReadProgressLine {
    enabled: bool,
    label: String,
    first_after: std::time::Duration,
    started: std::time::Instant,
    last_shown: Option<std::time::Instant>,
}

impl ReadProgressLine {
    /// Shows nothing unless stderr is a terminal and not `quiet`.
    pub fn new(path: &Path, quiet: bool) -> ReadProgressLine {
        // FLAMEGRAPH_PERF_PROGRESS_AFTER_MS moves the start (tests use 0).
        let after = std::env::var("FLAMEGRAPH_PERF_PROGRESS_AFTER_MS")
            .ok()
            .and_then(|ms| ms.parse().ok())
            .map_or(PROGRESS_FIRST_AFTER, std::time::Duration::from_millis);
        ReadProgressLine {
            enabled: !quiet && io::stderr().is_terminal(),
            label: path.display().to_string(),
            first_after: after,
            started: std::time::Instant::now(),
            last_shown: None,
        }
    }

    /// Takes a report from the reader.
    pub fn update(&mut self, progress: collapse::ReadProgress) {
        const EVERY: std::time::Duration = std::time::Duration::from_millis(200);
        if !self.enabled {
            return;
        }
        let now = std::time::Instant::now();
        let due = match self.last_shown {
            None => now - self.started >= self.first_after,
            Some(last) => now - last >= EVERY,
        };
        if due {
            eprint!("\r\x1b[K{}", progress_text(&self.label, &progress));
            self.last_shown = Some(now);
        }
    }

    /// Removes the line.
    pub fn finish(&mut self) {
        if self.last_shown.take().is_some() {
            eprint!("\r\x1b[K");
        }
    }
}

/// `flamegraph-perf: reading FILE: 120 of 260 MB (46%), 524288 records`.
fn progress_text(label: &str, progress: &collapse::ReadProgress) -> String {
    const MB: f64 = 1e6;
    match (progress.bytes, progress.total_bytes) {
        (Some(done), Some(total)) if total > 0 => format!(
            "flamegraph-perf: reading {label}: {:.0} of {:.0} MB ({}%), {} records",
            done as f64 / MB,
            total as f64 / MB,
            done.saturating_mul(100) / total,
            progress.records
        ),
        _ => format!(
            "flamegraph-perf: reading {label}: {} records",
            progress.records
        ),
    }
}

/// The one-line summary of a live recording.
pub fn print_record_summary(summary: &record::RecordSummary, stats: &CollapseStats) {
    let total = summary.samples + summary.lost;
    let mut line = format!(
        "flamegraph-perf: recorded {:.1} s, {} samples of {}, lost {} of {total} samples",
        summary.duration.as_secs_f64(),
        summary.samples,
        summary.event_name,
        summary.lost
    );
    if summary.throttled > 0 {
        line.push_str(&format!(", throttled {} times", summary.throttled));
    }
    if stats.frames > 0 {
        line.push_str(&format!(
            ", {:.1}% of frames unresolved",
            100.0 * stats.unresolved_frames as f64 / stats.frames as f64
        ));
    }
    line.push_str(&format!(
        ", {} idle samples dropped, recorder CPU {:.2} s",
        stats.idle_samples,
        summary.recorder_cpu.as_secs_f64()
    ));
    push_jit_share(&mut line, stats);
    if let Some(signal) = summary.stopped_by_signal {
        line.push_str(&format!(", stopped by signal {signal}"));
    }
    if let Some(path) = &summary.output {
        line.push_str(&format!(", saved {}", path.display()));
    }
    eprintln!("{line}");
}

/// Writes a file by creating a fresh temporary file beside it (never
/// following or truncating anything already there) and renaming it into
/// place, so a planted symlink or a concurrent reader never sees a partial file.
pub fn write_file_replacing(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<std::fs::File>) -> io::Result<()>,
) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    for attempt in 0..100u32 {
        let temp = dir.join(format!(".{name}.{}.{attempt}.tmp", std::process::id()));
        let file = match OpenOptions::new().write(true).create_new(true).open(&temp) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        };
        let result = (|| {
            let mut out = BufWriter::new(file);
            write(&mut out)?;
            out.flush()?;
            out.get_ref().sync_all()?;
            std::fs::rename(&temp, path)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&temp);
        }
        return result;
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        "could not create a temporary file",
    ))
}

/// One or two lines on stderr: what was read and how well it resolved.
pub fn print_summary(input: &Path, event: &str, read: &ReadStats, stats: &CollapseStats) {
    let mut line = format!(
        "flamegraph-perf: {}: {} samples of {event}",
        input.display(),
        stats.samples
    );
    if stats.lost_records > 0 || stats.lost_samples > 0 {
        line.push_str(&format!(
            ", lost {} events and {} samples",
            stats.lost_records, stats.lost_samples
        ));
    } else {
        line.push_str(", 0 lost");
    }
    if stats.throttled > 0 {
        line.push_str(&format!(", throttled {} times", stats.throttled));
    }
    if stats.frames > 0 {
        line.push_str(&format!(
            ", {:.1}% of frames unresolved",
            100.0 * stats.unresolved_frames as f64 / stats.frames as f64
        ));
    }
    line.push_str(&format!(", {} idle samples dropped", stats.idle_samples));
    push_jit_share(&mut line, stats);
    if read.malformed_records > 0 {
        line.push_str(&format!(
            ", {} malformed records skipped",
            read.malformed_records
        ));
    }
    eprintln!("{line}");
    const SHOWN_PROBLEMS: usize = 5;
    for problem in stats.object_problems.iter().take(SHOWN_PROBLEMS) {
        eprintln!("flamegraph-perf: no symbols: {problem}");
    }
    if stats.object_problems.len() > SHOWN_PROBLEMS {
        eprintln!(
            "flamegraph-perf: ... and {} more objects without symbols",
            stats.object_problems.len() - SHOWN_PROBLEMS
        );
    }
}

/// ", N of M JIT frames unresolved" when there was JIT code, and how many
/// stacks the kernel cut at its depth limit.
fn push_jit_share(line: &mut String, stats: &CollapseStats) {
    if stats.truncated_stacks > 0 {
        line.push_str(&format!(
            ", {} stacks truncated at the depth limit (kernel.perf_event_max_stack)",
            stats.truncated_stacks
        ));
    }
    if stats.jit_frames > 0 {
        line.push_str(&format!(
            ", {} of {} JIT frames unresolved",
            stats.unresolved_jit_frames, stats.jit_frames
        ));
    }
}

/// Where perf maps are kept for a perf.data file: `FILE.maps/`.
pub fn perf_maps_dir(perf_data: &Path) -> Option<std::path::PathBuf> {
    if perf_data == Path::new("-") {
        return None;
    }
    let mut name = perf_data.file_name()?.to_os_string();
    name.push(".maps");
    Some(perf_data.with_file_name(name))
}

/// Saves perf maps as `FILE.maps/perf-PID.map`: written into a fresh
/// private directory, then renamed into place (replacing an earlier
/// `FILE.maps` of ours, never following a planted symlink).
pub fn save_perf_maps(perf_data: &Path, maps: &[(i32, Vec<u8>)]) -> Result<std::path::PathBuf> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    let target = perf_maps_dir(perf_data).context("perf.data path has no file name")?;
    let parent = target
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let temp = (0..1000u32)
        .map(|n| parent.join(format!(".flamegraph-perf-maps.{}.{n}", std::process::id())))
        .find(|dir| std::fs::DirBuilder::new().mode(0o700).create(dir).is_ok())
        .context("creating a temporary directory for perf maps")?;
    let result = (|| -> Result<()> {
        for (pid, bytes) in maps {
            let path = temp.join(format!("perf-{pid}.map"));
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)?;
            file.write_all(bytes)?;
        }
        std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(0o755))?;
        match std::fs::symlink_metadata(&target) {
            // An earlier copy of ours: replace it.
            // SAFETY: geteuid has no preconditions.
            Ok(m) if m.is_dir() && m.uid() == unsafe { libc_geteuid() } => {
                std::fs::remove_dir_all(&target)?
            }
            Ok(m) if m.is_dir() => {
                anyhow::bail!("{} exists and belongs to someone else", target.display())
            }
            // A symlink or file: rename replaces the name itself.
            Ok(_) => std::fs::remove_file(&target)?,
            Err(_) => {}
        }
        std::fs::rename(&temp, &target)?;
        Ok(())
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_dir_all(&temp);
        return Err(e.context(format!("saving perf maps to {}", target.display())));
    }
    Ok(target)
}

extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

/// `--timings`: wall time per phase and the peak RSS, on stderr.
pub struct PhaseTimer {
    enabled: bool,
    start: std::time::Instant,
    last: std::time::Instant,
}

impl PhaseTimer {
    /// A timer that prints only when `enabled`.
    pub fn new(enabled: bool) -> PhaseTimer {
        let now = std::time::Instant::now();
        PhaseTimer {
            enabled,
            start: now,
            last: now,
        }
    }

    /// Ends the phase called `name`.
    pub fn phase(&mut self, name: &str) {
        if self.enabled {
            let now = std::time::Instant::now();
            eprintln!(
                "flamegraph-perf: timing: {name:<26} {:>8.3} s  (rss {} MiB, peak so far {} MiB)",
                (now - self.last).as_secs_f64(),
                current_rss_kib() / 1024,
                peak_rss_kib() / 1024
            );
            self.last = now;
        }
    }

    /// Prints the steps inside the last phase.
    pub fn steps(&self, steps: &[(&str, std::time::Duration)]) {
        if self.enabled {
            for (name, took) in steps {
                eprintln!(
                    "flamegraph-perf: timing:   {name:<24} {:>8.3} s",
                    took.as_secs_f64()
                );
            }
        }
    }

    /// Prints the total and the peak RSS.
    pub fn finish(&self) {
        if self.enabled {
            eprintln!(
                "flamegraph-perf: timing: {:<26} {:>8.3} s  (peak rss {} MiB)",
                "total",
                self.start.elapsed().as_secs_f64(),
                peak_rss_kib() / 1024
            );
        }
    }
}

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status.lines().find_map(|line| {
                line.strip_prefix(field)?
                    .trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse()
                    .ok()
            })
        })
        .unwrap_or(0)
}

fn current_rss_kib() -> u64 {
    status_kib("VmRSS:")
}

fn peak_rss_kib() -> u64 {
    status_kib("VmHWM:")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_shows_bytes_when_known() {
        let known = collapse::ReadProgress {
            records: 524_288,
            bytes: Some(120_000_000),
            total_bytes: Some(260_000_000),
        };
        assert_eq!(
            progress_text("perf.data", &known),
            "flamegraph-perf: reading perf.data: 120 of 260 MB (46%), 524288 records"
        );
        let records_only = collapse::ReadProgress {
            records: 65_536,
            ..collapse::ReadProgress::default()
        };
        assert_eq!(
            progress_text("-", &records_only),
            "flamegraph-perf: reading -: 65536 records"
        );
    }
}
