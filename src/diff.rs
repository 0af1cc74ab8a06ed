//! `flamegraph-perf diff BEFORE AFTER`: glue between reading two profiles
//! and the differential renderers.

use std::io::Read;
use std::path::Path;

use anyhow::{bail, Context, Result};
use folded::{DiffOptions, DiffStacks, FoldedStacks};

use crate::cli::DiffArgs;
use crate::{output, read_folded, read_recording, Completeness};

/// Where the graph goes when stdout is a terminal.
const TERMINAL_SVG_PATH: &str = "diff.svg";
const TERMINAL_HTML_PATH: &str = "diff.html";

pub fn run(args: &DiffArgs) -> Result<Completeness> {
    let (before, before_partial) = load(&args.before, args)?;
    let (after, after_partial) = load(&args.after, args)?;
    let diff = DiffStacks::new(
        &before,
        &after,
        DiffOptions {
            normalize: args.normalize,
        },
    );
    if !args.quiet {
        eprintln!(
            "flamegraph-perf: diff: BEFORE {} samples{}, AFTER {} samples, {} stacks in all",
            before.total(),
            if args.normalize {
                format!(" (scaled to {})", diff.before_total())
            } else {
                String::new()
            },
            after.total(),
            diff.len()
        );
    }
    let label = |path: &Path| path.display().to_string();
    let default_title = format!("{} → {}", label(&args.before), label(&args.after));
    let options = output::render_options(&args.render, args.read.weight, &default_title);
    let view = render::DiffView {
        negate: args.negate,
    };
    if args.folded {
        output::emit(None, "differential folded stacks", |out| {
            diff.write_folded(out)
        })?;
    } else if args.side_by_side {
        let graphs = render::SideBySide {
            before: &before,
            after: &after,
            diff: &diff,
            before_label: &label(&args.before),
            after_label: &label(&args.after),
        };
        output::emit(Some(Path::new(TERMINAL_HTML_PATH)), "HTML", |out| {
            render::render_side_by_side(graphs, &options, view, out).map_err(std::io::Error::other)
        })?;
    } else {
        let options = render::Options {
            subtitle: options.subtitle.clone().or_else(|| {
                Some(format!(
                    "{} shape; red: more samples in AFTER, blue: fewer{}",
                    if args.negate { "BEFORE's" } else { "AFTER's" },
                    if args.normalize {
                        "; BEFORE scaled to AFTER's total"
                    } else {
                        ""
                    }
                ))
            }),
            ..options
        };
        output::emit(Some(Path::new(TERMINAL_SVG_PATH)), "SVG", |out| {
            render::render_diff_svg(&diff, &options, view, out).map_err(std::io::Error::other)
        })?;
    }
    Ok(if before_partial || after_partial {
        Completeness::Partial
    } else {
        Completeness::Complete
    })
}

/// One side: a perf.data file (by its magic) or folded stacks.
fn load(path: &Path, args: &DiffArgs) -> Result<(FoldedStacks, bool)> {
    if is_perf_data(path)? {
        let mut timings = output::PhaseTimer::new(false);
        let recording = read_recording(
            path,
            &args.read,
            args.threads,
            args.quiet,
            false,
            &mut timings,
        )?;
        if recording.stacks.is_empty() {
            bail!(
                "{}: no samples of {} to compare",
                path.display(),
                recording.event.name
            );
        }
        let partial = recording.read.is_partial();
        Ok((recording.stacks, partial))
    } else {
        Ok((read_folded(path)?, false))
    }
}

fn is_perf_data(path: &Path) -> Result<bool> {
    if path == Path::new("-") {
        bail!("diff reads files; `-` (stdin) cannot be told apart or read twice");
    }
    let mut magic = [0u8; 8];
    let mut file = std::fs::File::open(path).with_context(|| path.display().to_string())?;
    let mut got = 0;
    while got < magic.len() {
        match file
            .read(&mut magic[got..])
            .with_context(|| path.display().to_string())?
        {
            0 => break,
            n => got += n,
        }
    }
    Ok(collapse::starts_like_perf_data(&magic[..got]))
}
