//! Writing results: SVG or folded text to stdout or `flamegraph.svg`, and
//! the summary on stderr.

use std::fs::OpenOptions;
use std::io::{self, BufWriter, IsTerminal, Write};
use std::path::Path;

use anyhow::{Context, Result};

use crate::cli::{Args, WeightArg};
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

fn render_options(args: &Args, hostname: &str) -> render::Options {
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
            match args.weight {
                WeightArg::Samples => "samples",
                WeightArg::Period => "ns",
            }
            .to_owned()
        }),
    }
}

/// Writes folded text or the SVG, as the arguments ask.
pub fn write(args: &Args, stacks: &FoldedStacks, hostname: &str) -> Result<()> {
    let stdout = io::stdout();
    if args.folded {
        let mut out = BufWriter::with_capacity(1 << 16, stdout.lock());
        stacks
            .write_folded(&mut out)
            .context("writing folded stacks")?;
        return Ok(());
    }
    let options = render_options(args, hostname);
    if stdout.is_terminal() {
        write_file_replacing(Path::new(TERMINAL_SVG_PATH), |out| {
            render::render_svg(stacks, &options, out).map_err(io::Error::other)
        })
        .with_context(|| format!("writing {TERMINAL_SVG_PATH}"))?;
        eprintln!("flamegraph-perf: stdout is a terminal; wrote {TERMINAL_SVG_PATH}");
        return Ok(());
    }
    let mut out = BufWriter::with_capacity(1 << 16, stdout.lock());
    render::render_svg(stacks, &options, &mut out).context("writing SVG")?;
    out.flush().context("writing SVG")?;
    Ok(())
}

/// Writes a file by creating a fresh temporary file beside it (never
/// following or truncating anything already there) and renaming it into
/// place, so a planted symlink or a concurrent reader never sees a partial file.
fn write_file_replacing(
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
