//! Command-line arguments.

use std::path::PathBuf;

use clap::{Parser, ValueEnum};

/// Linux CPU samples to an interactive flamegraph, in one command.
///
/// Records on-CPU stacks through perf_event_open (`-a`, `-p`, `-- CMD`; no
/// perf binary needed), or reads a perf.data recording (`-i`) or folded
/// stacks (`--from-folded`); symbolizes, drops idle time, folds the stacks
/// and writes an SVG flamegraph to stdout (to `flamegraph.svg` when stdout
/// is a terminal).
///
///   flamegraph-perf -a -g -- sleep 10 > out.svg
///
/// Exit status: 0 success; 2 error, no graph; 3 graph made from partial data
/// (the recording is damaged or was cut short); 4 local outputs written but
/// --push failed; when recording a command,
/// the command's exit status (128+N if it died of signal N).
#[derive(Debug, Parser)]
#[command(
    name = "flamegraph-perf",
    version,
    about,
    long_about,
    args_conflicts_with_subcommands = true
)]
pub struct Args {
    /// Something else to do than making one flamegraph.
    #[command(subcommand)]
    pub subcommand: Option<Subcommand>,

    /// perf.data file to read; `-` reads a pipe-mode stream from stdin.
    #[arg(short = 'i', long = "input", value_name = "FILE")]
    pub input: Option<PathBuf>,

    /// Record every CPU. Without a command or -p, recording runs until Ctrl-C.
    #[arg(short = 'a', long = "all-cpus", help_heading = "Recording")]
    pub all_cpus: bool,

    /// Record kernel and user call stacks (frame pointers).
    #[arg(short = 'g', help_heading = "Recording")]
    pub callchains: bool,

    /// Samples per second per CPU.
    #[arg(
        short = 'F',
        long = "freq",
        value_name = "HZ",
        default_value_t = 99,
        help_heading = "Recording"
    )]
    pub frequency: u64,

    /// Record these running processes (and the threads they start).
    #[arg(
        short = 'p',
        long = "attach",
        value_name = "PID[,PID...]",
        value_delimiter = ',',
        help_heading = "Recording"
    )]
    pub attach: Vec<i32>,

    /// Record only these CPUs (e.g. 0,2-3).
    #[arg(
        short = 'C',
        long = "cpu",
        value_name = "CPUS",
        help_heading = "Recording"
    )]
    pub cpus: Option<String>,

    /// Also save the recording as a perf.data file Linux perf can read.
    #[arg(
        short = 'o',
        long = "output",
        value_name = "FILE",
        help_heading = "Recording"
    )]
    pub output: Option<PathBuf>,

    /// Ring buffer data pages per CPU (a power of two).
    #[arg(
        short = 'm',
        long = "mmap-pages",
        value_name = "PAGES",
        default_value_t = 128,
        help_heading = "Recording"
    )]
    pub mmap_pages: usize,

    /// Do not add JVM flags for launched commands. By default
    /// JAVA_TOOL_OPTIONS gets -XX:+PreserveFramePointer
    /// -XX:+UnlockDiagnosticVMOptions -XX:+DumpPerfMapAtExit appended, so
    /// Java stacks are complete and JIT frames get names.
    #[arg(long, help_heading = "Recording")]
    pub no_jvm_flags: bool,

    /// Do not ask running JVMs for their perf maps at the end of a recording.
    #[arg(long, help_heading = "Recording")]
    pub no_jvm_attach: bool,

    /// Command to launch and record (with -a or -p it only sets the duration).
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<std::ffi::OsString>,

    /// Render existing folded stacks (`frame;frame;... COUNT` lines) from
    /// FILE, or stdin for `-`.
    #[arg(long, value_name = "FILE", conflicts_with = "input")]
    pub from_folded: Option<PathBuf>,

    /// Print folded stacks instead of an SVG.
    #[arg(long)]
    pub folded: bool,

    /// No summary on stderr.
    #[arg(short, long)]
    pub quiet: bool,

    /// Threads for reading, symbolizing and sorting (default: one per CPU).
    #[arg(short = 'j', long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub threads: Option<u16>,

    /// Print how long each phase took (open, read, symbolize, render) and the peak memory, on stderr.
    #[arg(long)]
    pub timings: bool,

    /// Also write a JSON summary of the profile to FILE (samples, lost,
    /// duration, events, top functions, unresolved share; see README).
    #[arg(long, value_name = "FILE")]
    pub summary_json: Option<PathBuf>,

    /// Also write the profile as gzip-compressed pprof (profile.proto) to
    /// FILE, for go tool pprof, Grafana Pyroscope, Parca.
    #[arg(long, value_name = "FILE", conflicts_with = "from_folded")]
    pub pprof: Option<PathBuf>,

    /// Also write the profile as speedscope JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub speedscope: Option<PathBuf>,

    /// Upload the profile to a Grafana Pyroscope server (its base URL, e.g.
    /// http://pyroscope:4040) through its /ingest API, as pprof. Local
    /// outputs are written first and kept whatever happens.
    #[arg(
        long,
        value_name = "URL",
        requires = "app",
        conflicts_with = "from_folded",
        help_heading = "Pyroscope"
    )]
    pub push: Option<String>,

    /// Application name for --push ([A-Za-z0-9_.-]).
    #[arg(long, value_name = "NAME", help_heading = "Pyroscope")]
    pub app: Option<String>,

    /// Extra label for --push, KEY=VALUE (KEY in [A-Za-z0-9_.]); repeatable.
    /// `hostname` is always added.
    #[arg(long = "label", value_name = "KEY=VALUE", help_heading = "Pyroscope")]
    pub labels: Vec<String>,

    /// When recording with --push: upload a profile of each interval
    /// (e.g. 15s, 1m, 500ms) while sampling goes on; the last one when
    /// recording stops.
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "15s",
        value_parser = parse_duration,
        help_heading = "Pyroscope"
    )]
    pub push_interval: std::time::Duration,

    /// Upload a recording whose samples are more than an hour old (which
    /// Pyroscope refuses) as if it had just been made.
    #[arg(long, help_heading = "Pyroscope")]
    pub override_timestamp: bool,

    #[command(flatten)]
    pub read: ReadArgs,

    #[command(flatten)]
    pub render: RenderArgs,
}

impl Args {
    /// An output needs samples at address level (pprof, or pprof uploads).
    pub fn needs_addresses(&self) -> bool {
        self.pprof.is_some() || self.push.is_some()
    }
}

/// Subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Subcommand {
    /// Differential flamegraph: AFTER's shape, red where it grew and blue
    /// where it shrank compared with BEFORE (difffolded.pl semantics).
    ///
    /// Each side is a perf.data recording or a folded-stacks file (told
    /// apart by their first bytes). Symbolization options apply to both
    /// sides; for recordings from different machines, fold each on its own
    /// machine (`flamegraph-perf -i perf.data --folded > x.folded`) and
    /// compare the folded files.
    ///
    ///   flamegraph-perf diff before.data after.data > diff.svg
    Diff(DiffArgs),
}

/// `flamegraph-perf diff` arguments.
#[derive(Debug, clap::Args)]
pub struct DiffArgs {
    /// The baseline: a perf.data file or folded stacks.
    #[arg(value_name = "BEFORE")]
    pub before: PathBuf,

    /// The profile to compare with it: a perf.data file or folded stacks.
    #[arg(value_name = "AFTER")]
    pub after: PathBuf,

    /// Scale BEFORE's counts to AFTER's total, to compare recordings of
    /// different lengths or rates.
    #[arg(short = 'n', long)]
    pub normalize: bool,

    /// Draw BEFORE's shape instead (code paths that went away stay
    /// visible); red still means more samples in AFTER.
    #[arg(long)]
    pub negate: bool,

    /// Write one self-contained HTML page with BEFORE, AFTER and the
    /// difference, whose zoom and search follow each other.
    #[arg(long, conflicts_with = "folded")]
    pub side_by_side: bool,

    /// Print `stack before after` lines (difffolded.pl's format) instead
    /// of a graph.
    #[arg(long)]
    pub folded: bool,

    /// No summary on stderr.
    #[arg(short, long)]
    pub quiet: bool,

    /// Threads for reading, symbolizing and sorting (default: one per CPU).
    #[arg(short = 'j', long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub threads: Option<u16>,

    #[command(flatten)]
    pub read: ReadArgs,

    #[command(flatten)]
    pub render: RenderArgs,
}

/// How recordings are read and folded (shared by every mode).
#[derive(Debug, clap::Args)]
pub struct ReadArgs {
    /// Event to sample when recording: cpu-clock (default), task-clock,
    /// cycles, instructions, or a tracepoint subsystem:name (e.g.
    /// sched:sched_switch). With -i: the event to fold when the file has
    /// several (default: the first).
    #[arg(short = 'e', long, value_name = "EVENT")]
    pub event: Option<String>,

    /// What each sample weighs.
    #[arg(long, value_enum, default_value_t = WeightArg::Samples)]
    pub weight: WeightArg,

    /// Root frames are `comm-PID`.
    #[arg(long)]
    pub pid: bool,

    /// Root frames are `comm-PID/TID`.
    #[arg(long)]
    pub tid: bool,

    /// Keep the idle task's idle stacks.
    #[arg(long)]
    pub keep_idle: bool,

    /// Regex of idle frames, replacing the default set (matched anywhere in
    /// a frame name, like `grep -E`).
    #[arg(long, value_name = "REGEX", conflicts_with = "keep_idle")]
    pub idle_regex: Option<String>,

    /// Look for binaries (and perf maps) under DIR, like perf's --symfs.
    #[arg(long, value_name = "DIR")]
    pub symfs: Option<PathBuf>,

    /// Kernel symbols from FILE instead of /proc/kallsyms.
    #[arg(long, value_name = "FILE")]
    pub kallsyms: Option<PathBuf>,

    /// Show functions inlined into each frame (from DWARF) as `_[i]` frames.
    #[arg(long)]
    pub inline: bool,

    /// Look up callers' return addresses as they are, as perf script does,
    /// instead of the call instruction before them. Use it to compare with
    /// folded stacks made by `perf script | stackcollapse-perf.pl`: perf
    /// names the wrong function when a call is a function's last instruction.
    #[arg(long)]
    pub raw_return_addresses: bool,

    /// Show mangled C++/Rust names.
    #[arg(long)]
    pub no_demangle: bool,
}

/// How the graph is drawn (shared by every mode).
#[derive(Debug, clap::Args)]
pub struct RenderArgs {
    /// Graph title (default: the recording's hostname).
    #[arg(long)]
    pub title: Option<String>,

    /// Second title line.
    #[arg(long)]
    pub subtitle: Option<String>,

    /// Image width in pixels (default: fluid, fills the window).
    #[arg(long, value_name = "PIXELS")]
    pub width: Option<usize>,

    /// Omit frames narrower than this many pixels.
    #[arg(long, value_name = "PIXELS", default_value_t = 0.1)]
    pub minwidth: f64,

    /// Colour palette (java colours kernel, JIT and inlined frames apart).
    #[arg(long, default_value = "java")]
    pub colors: String,

    /// Colour by position instead of by a hash of the function name.
    #[arg(long)]
    pub no_hash: bool,

    /// Reverse stacks: leaf functions at the root (a "who calls the hot function" view).
    #[arg(long)]
    pub reverse: bool,

    /// Icicle graph: grow top-down.
    #[arg(long)]
    pub inverted: bool,

    /// Name of the counted unit in tooltips (default: samples, or ns for --weight period).
    #[arg(long, value_name = "NAME")]
    pub countname: Option<String>,
}

/// `15s`, `1m`, `500ms`, `2h`, or plain seconds.
fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("{text:?}: expected a number and a unit (15s, 1m, 500ms)"))?;
    let seconds = match unit {
        "" | "s" => number,
        "ms" => number / 1000.0,
        "m" => number * 60.0,
        "h" => number * 3600.0,
        _ => return Err(format!("{text:?}: unknown unit {unit:?} (ms, s, m, h)")),
    };
    if !(0.1..=86400.0).contains(&seconds) {
        return Err(format!("{text:?}: between 100ms and 24h"));
    }
    Ok(std::time::Duration::from_secs_f64(seconds))
}

/// `--weight` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum WeightArg {
    /// One per sample.
    Samples,
    /// Sum of sample periods (ns for cpu-clock).
    Period,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn durations() {
        assert_eq!(
            parse_duration("15s"),
            Ok(std::time::Duration::from_secs(15))
        );
        assert_eq!(parse_duration("1m"), Ok(std::time::Duration::from_secs(60)));
        assert_eq!(
            parse_duration("500ms"),
            Ok(std::time::Duration::from_millis(500))
        );
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("0s").is_err());
    }

    #[test]
    fn argument_definitions_are_consistent() {
        Args::command().debug_assert();
    }

    #[test]
    fn diff_is_a_subcommand_and_commands_still_follow_double_dash() {
        let args = Args::try_parse_from(["fgp", "diff", "-n", "a.data", "b.folded"]).unwrap();
        let Some(Subcommand::Diff(diff)) = args.subcommand else {
            panic!("diff subcommand");
        };
        assert!(diff.normalize);
        assert_eq!(diff.after, PathBuf::from("b.folded"));
        let args = Args::try_parse_from(["fgp", "-g", "--", "diff", "x"]).unwrap();
        assert!(args.subcommand.is_none());
        assert_eq!(args.command, ["diff", "x"]);
        assert!(Args::try_parse_from(["fgp", "-i", "x.data", "diff", "a", "b"]).is_err());
    }
}
