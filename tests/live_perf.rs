//! Fresh recordings made with Linux perf on this machine, read by us and
//! by the oracle (`perf script | inferno-collapse-perf --all`) with the
//! host's own binaries, debug files and kallsyms: parity on whatever kernel
//! and libc the test runs on. Needs perf, gcc, inferno-collapse-perf and
//! perf_event_open; under `CI=true` they must be there, elsewhere the tests
//! skip with a reason.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::*;

/// The tools, or why the test cannot run.
fn tools() -> Option<(PathBuf, PathBuf, PathBuf)> {
    let found = (which("perf"), which("gcc"), which("inferno-collapse-perf"));
    let why = match &found {
        (None, _, _) => "perf is not installed",
        (_, None, _) => "gcc is not installed",
        (_, _, None) => "inferno-collapse-perf is not installed (cargo install inferno)",
        _ => "",
    };
    if !why.is_empty() {
        assert!(
            !ci_requires_live(),
            "CI=true requires this test to run: {why}"
        );
        eprintln!("skipped: {why}");
        return None;
    }
    let (Some(perf), Some(gcc), Some(inferno)) = found else {
        unreachable!()
    };
    Some((perf, gcc, inferno))
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("fgp-live-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs `perf record ARGS`; returns false (after asserting not in CI) when
/// perf_event_open is not permitted here.
fn perf_record(perf: &Path, dir: &Path, args: &[&str]) -> bool {
    let output = Command::new(perf)
        .current_dir(dir)
        .args(["record", "-N", "-q", "-o", "perf.data"])
        .args(args)
        .output()
        .unwrap();
    if !output.status.success() || !dir.join("perf.data").exists() {
        let why = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(
            !ci_requires_live(),
            "CI=true requires perf record to work: {why}"
        );
        eprintln!("skipped: perf record failed: {why}");
        return false;
    }
    true
}

fn oracle(perf: &Path, inferno: &Path, dir: &Path, fields: &str) -> Folded {
    let script = Command::new(perf)
        .current_dir(dir)
        .args(["script", "-i", "perf.data", "-F", fields])
        .output()
        .unwrap();
    assert!(
        script.status.success(),
        "{}",
        String::from_utf8_lossy(&script.stderr)
    );
    let mut collapse = Command::new(inferno)
        .arg("--all")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    collapse
        .stdin
        .take()
        .unwrap()
        .write_all(&script.stdout)
        .unwrap();
    let folded = collapse.wait_with_output().unwrap();
    parse_folded(&String::from_utf8_lossy(&folded.stdout))
}

fn ours(dir: &Path, extra: &[&str]) -> Folded {
    let data = dir.join("perf.data");
    let mut args = vec!["-i", data.to_str().unwrap(), "--folded"];
    args.extend_from_slice(extra);
    let output = run(&args);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    parse_folded(&String::from_utf8_lossy(&output.stdout))
}

/// Our folded output (with perf's return-address semantics, idle kept)
/// agrees with the oracle's on ≥ 99% of the samples, after the documented
/// deviations are mapped.
fn assert_matches_oracle(perf: &Path, inferno: &Path, dir: &Path, fields: &str) {
    let expected = oracle(perf, inferno, dir, fields);
    let raw = ours(dir, &["--keep-idle", "--raw-return-addresses"]);
    assert_eq!(total(&raw), total(&expected));
    let (expected, raw) = (normalize_oracle(&expected), normalize_ours(&raw, &[]));
    let score = agreement(&expected, &raw);
    assert!(
        score >= 0.99,
        "agreement {score:.4}:\n{}",
        top_differences(&expected, &raw, 10)
    );
}

#[test]
fn fresh_program_recording_matches_the_oracle() {
    let Some((perf, gcc, inferno)) = tools() else {
        return;
    };
    let dir = scratch("spin");
    let source = fixture("spin").join("src/spin.c");
    let status = Command::new(gcc)
        .args([
            "-O1",
            "-fno-omit-frame-pointer",
            "-mno-omit-leaf-frame-pointer",
            "-fno-inline",
            "-o",
        ])
        .arg(dir.join("spin"))
        .arg(source)
        .status()
        .unwrap();
    assert!(status.success());
    if !perf_record(&perf, &dir, &["-F", "999", "-g", "--", "./spin"]) {
        return;
    }
    assert_matches_oracle(&perf, &inferno, &dir, "comm,pid,tid,time,event,ip,sym,dso");
    let default = ours(&dir, &[]);
    assert!(
        default
            .iter()
            .any(|(s, &c)| s.ends_with(";main;work;spin") && c * 2 > total(&default)),
        "spin is the hot leaf under main;work"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn fresh_system_wide_recording_matches_the_oracle() {
    let Some((perf, _, inferno)) = tools() else {
        return;
    };
    let dir = scratch("system");
    if !perf_record(&perf, &dir, &["-a", "-g", "-F", "499", "--", "sleep", "1"]) {
        return;
    }
    // Other processes come and go during the recording; their binaries are
    // read at symbolization time by both tools alike.
    assert_matches_oracle(
        &perf,
        &inferno,
        &dir,
        "comm,pid,tid,cpu,time,event,ip,sym,dso",
    );
    std::fs::remove_dir_all(&dir).ok();
}
