//! Shared test helpers: running the binary, reading folded stacks, and
//! comparing with the perf + inferno oracle.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// Folded stacks: text stack → weight.
pub type Folded = BTreeMap<String, u64>;

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A fixture directory.
pub fn fixture(name: &str) -> PathBuf {
    root().join("fixtures").join(name)
}

/// The binary under test.
pub fn binary() -> Command {
    Command::new(env!("CARGO_BIN_EXE_flamegraph-perf"))
}

/// Runs the binary; stdin is closed unless the caller set it.
pub fn run(args: &[&str]) -> Output {
    binary()
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run flamegraph-perf")
}

/// Arguments that read a fixture offline (its perf.data, symfs and kallsyms).
pub fn fixture_args(name: &str) -> Vec<String> {
    let dir = fixture(name);
    vec![
        "-i".into(),
        dir.join("perf.data").display().to_string(),
        "--symfs".into(),
        dir.join("symfs").display().to_string(),
        "--kallsyms".into(),
        dir.join("kallsyms").display().to_string(),
    ]
}

/// Runs the binary on a fixture (its perf.data, symfs and kallsyms) plus
/// `extra`, asserting success; returns stdout.
pub fn stdout_of(name: &str, extra: &[&str]) -> Vec<u8> {
    let mut args = fixture_args(name);
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let output = run(&args);
    assert!(
        output.status.success(),
        "flamegraph-perf {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// Runs the binary on a fixture with `--folded` plus `extra`, asserting success.
pub fn folded_of(name: &str, extra: &[&str]) -> Folded {
    let mut args = vec!["--folded"];
    args.extend_from_slice(extra);
    parse_folded(&String::from_utf8(stdout_of(name, &args)).expect("folded output is UTF-8"))
}

/// Parses folded text.
pub fn parse_folded(text: &str) -> Folded {
    let mut folded = Folded::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        let (stack, count) = line.rsplit_once(' ').expect("line ends in a count");
        *folded.entry(stack.to_owned()).or_default() += count.parse::<u64>().expect("count");
    }
    folded
}

/// Reads a folded file.
pub fn read_folded(path: &Path) -> Folded {
    parse_folded(
        &std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
}

/// Sum of weights.
pub fn total(folded: &Folded) -> u64 {
    folded.values().sum()
}

/// Weighted agreement: shared weight over the larger total (1.0 = identical).
pub fn agreement(a: &Folded, b: &Folded) -> f64 {
    let shared: u64 = a
        .iter()
        .map(|(k, &v)| v.min(b.get(k).copied().unwrap_or(0)))
        .sum();
    shared as f64 / total(a).max(total(b)).max(1) as f64
}

/// The largest differences, for failure messages.
pub fn top_differences(expected: &Folded, actual: &Folded, n: usize) -> String {
    let mut diffs: Vec<(i64, &String)> = expected
        .keys()
        .chain(actual.keys())
        .map(|k| {
            let e = expected.get(k).copied().unwrap_or(0) as i64;
            let a = actual.get(k).copied().unwrap_or(0) as i64;
            (e - a, k)
        })
        .filter(|(d, _)| *d != 0)
        .collect();
    diffs.sort_by_key(|(d, k)| (-d.abs(), (*k).clone()));
    diffs.dedup();
    diffs
        .iter()
        .take(n)
        .map(|(d, k)| format!("  {d:+} {}", &k[..k.len().min(240)]))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Maps the oracle's output onto what flamegraph-perf deliberately does
/// differently (each rule is documented in fixtures/README.md, "Deliberate
/// deviations"):
/// - `[unknown]` frames right under the process root are junk from frame
///   pointer chains that left mapped code; flamegraph-perf cuts them.
/// - `[[name]]` (stackcollapse wraps a bracketed dso name again) is `[name]`,
///   and the vDSO is user code, not `_[k]`.
pub fn normalize_oracle(folded: &Folded) -> Folded {
    let mut out = Folded::new();
    for (stack, &count) in folded {
        let mut frames: Vec<String> = stack.split(';').map(str::to_owned).collect();
        let mut rest = frames.split_off(1);
        while rest.first().is_some_and(|f| f == "[unknown]") && rest.len() > 1 {
            rest.remove(0);
        }
        for frame in &mut rest {
            if frame == "[[vdso]]_[k]" {
                *frame = "[vdso]".into();
            } else if let Some(inner) = frame.strip_prefix("[[") {
                if let Some((name, suffix)) = inner.split_once("]]") {
                    *frame = format!("[{name}]{suffix}");
                }
            }
        }
        frames.extend(rest);
        *out.entry(frames.join(";")).or_default() += count;
    }
    out
}

/// Maps flamegraph-perf's output onto the oracle's conventions where the
/// oracle is wrong on purpose-built inputs (documented deviations):
/// - the root comm as inferno parses it: cut before the first all-digit
///   word (`io worker 7` → `io worker`), spaces → `_`; `comm_map` undoes the
///   `;` → `:` sanitizing of known comms (inferno splits them);
/// - frames starting with `(` dropped (`(anonymous namespace)::f`; stackcollapse skips them);
/// - vDSO symbols (which flamegraph-perf resolves, perf does not) → `[vdso]`.
pub fn normalize_ours(folded: &Folded, comm_map: &[(&str, &str)]) -> Folded {
    let mut out = Folded::new();
    for (stack, &count) in folded {
        let mut frames = stack.split(';');
        let root = frames.next().unwrap_or_default();
        let mut root = comm_map
            .iter()
            .find(|(ours, _)| *ours == root)
            .map(|(_, theirs)| theirs.to_string())
            .unwrap_or_else(|| root.to_owned());
        let words: Vec<&str> = root.split(' ').collect();
        if let Some(i) = words
            .iter()
            .position(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_digit()))
            .filter(|&i| i > 0)
        {
            root = words[..i].join(" ");
        }
        let root = root.replace(' ', "_");
        let mut kept = vec![root];
        for frame in frames {
            if frame.starts_with('(') {
                continue;
            }
            if frame.starts_with("__vdso_") {
                kept.push("[vdso]".into());
            } else {
                kept.push(frame.to_owned());
            }
        }
        *out.entry(kept.join(";")).or_default() += count;
    }
    out
}

/// True when the environment demands that tests needing real perf
/// recording run rather than skip.
pub fn ci_requires_live() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// `program` on PATH (or ~/.cargo/bin). When it is missing, the caller's
/// test is skipped with a printed reason, or fails under CI=true, where
/// every tool a test needs must be installed.
pub fn tool_or_skip(program: &str, needed_for: &str) -> Option<PathBuf> {
    let found = which(program);
    if found.is_none() {
        assert!(
            !ci_requires_live(),
            "CI=true: `{program}` is needed ({needed_for})"
        );
        eprintln!("skipped: `{program}` is not installed ({needed_for})");
    }
    found
}

/// Finds a program on PATH (or ~/.cargo/bin).
pub fn which(program: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(PathBuf::from(home).join(".cargo/bin"));
    }
    dirs.into_iter()
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}
