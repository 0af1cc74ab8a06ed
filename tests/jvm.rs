//! Java frames without jmaps, agents or JDK tools: launched JVMs get our
//! flags, running JVMs are asked for their perf maps over the attach
//! protocol, maps are kept with -o, and hostile maps are refused. Needs a
//! JDK (java, javac), root and gcc-free; under `CI=true` it must run.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use support::*;

/// JitBusy compiled once, and the real `java` binary (not a PATH lookup).
fn jdk() -> Option<&'static (PathBuf, PathBuf)> {
    static JDK: OnceLock<Option<(PathBuf, PathBuf)>> = OnceLock::new();
    JDK.get_or_init(|| {
        let java = std::fs::canonicalize(which("java")?).ok()?;
        let javac = which("javac")?;
        let classes = std::env::temp_dir().join(format!("fgp-jvm-classes-{}", std::process::id()));
        std::fs::create_dir_all(&classes).ok()?;
        let built = Command::new(javac)
            .arg("-d")
            .arg(&classes)
            .arg(root().join("tests/programs/JitBusy.java"))
            .status()
            .is_ok_and(|s| s.success());
        built.then_some((java, classes))
    })
    .as_ref()
}

fn exclusive() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

fn ready() -> Option<&'static (PathBuf, PathBuf)> {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { geteuid() } == 0;
    let why = match (jdk(), root) {
        (None, _) => "needs a JDK (java and javac)",
        (_, false) => "needs root to record and attach",
        _ => return jdk(),
    };
    assert!(
        !ci_requires_live(),
        "CI=true requires the JVM tests to run: {why}"
    );
    eprintln!("skipped: {why}");
    None
}

extern "C" {
    fn geteuid() -> u32;
}

/// Starts JitBusy the way a user's JVM runs: only frame pointers preserved.
fn running_jvm(java: &Path, classes: &Path, seconds: u32) -> Child {
    Command::new(java)
        .args(["-XX:+PreserveFramePointer", "-cp"])
        .arg(classes)
        .args(["JitBusy", &seconds.to_string()])
        .env_remove("JAVA_TOOL_OPTIONS")
        .stdout(Stdio::null())
        .spawn()
        .unwrap()
}

fn run_ours(args: &[&str]) -> Output {
    binary()
        .args(args)
        .env_remove("JAVA_TOOL_OPTIONS")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// Share of the JVM's samples (roots `thread-PID`, with --pid) that have a
/// named JIT frame of JitBusy's own methods.
fn named_share(folded: &Folded, pid: u32) -> (f64, u64) {
    let suffix = format!("-{pid}");
    let mine: Vec<(&String, &u64)> = folded
        .iter()
        .filter(|(s, _)| s.split(';').next().is_some_and(|r| r.ends_with(&suffix)))
        .collect();
    let total: u64 = mine.iter().map(|(_, c)| **c).sum();
    let named: u64 = mine
        .iter()
        .filter(|(s, _)| {
            s.split(';')
                .any(|f| f.contains("JitBusy.") && f.ends_with("_[j]"))
        })
        .map(|(_, c)| **c)
        .sum();
    (named as f64 / total.max(1) as f64, total)
}

fn folded_of_output(output: &Output) -> Folded {
    assert!(
        output.status.success(),
        "{:?}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    parse_folded(&String::from_utf8_lossy(&output.stdout))
}

#[test]
fn launched_jvm_gets_named_java_frames_without_jdk_tools_on_path() {
    let _lock = exclusive();
    let Some((java, classes)) = ready() else {
        return;
    };
    let output = binary()
        .args(["-g", "--pid", "--folded", "--"])
        .arg(java)
        .arg("-cp")
        .arg(classes)
        .args(["JitBusy", "4"])
        .env("PATH", "/nonexistent")
        .env_remove("JAVA_TOOL_OPTIONS")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let folded = folded_of_output(&output);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("Picked up JAVA_TOOL_OPTIONS: -XX:+PreserveFramePointer"),
        "{stderr}"
    );
    let pid = folded
        .keys()
        .find_map(|s| s.split(';').next()?.rsplit_once('-')?.1.parse::<u32>().ok())
        .expect("a root with a pid");
    let (share, samples) = named_share(&folded, pid);
    assert!(samples > 200, "{samples} samples");
    assert!(
        share >= 0.6,
        "{:.0}% of the JVM's samples in named JitBusy frames",
        share * 100.0
    );
    assert!(
        folded
            .keys()
            .any(|s| s.contains("long JitBusy.fib_[j];long JitBusy.fib_[j]")),
        "recursion shows"
    );
    assert!(
        stderr.contains(" of ") && stderr.contains("JIT frames unresolved"),
        "{stderr}"
    );
}

/// Records a running JVM with the arguments `record(pid)` gives: it must
/// be asked for its perf map at the end, and its samples must be named.
fn running_jvm_is_named(record: impl FnOnce(u32) -> Vec<String>) {
    let _lock = exclusive();
    let Some((java, classes)) = ready() else {
        return;
    };
    let mut jvm = running_jvm(java, classes, 12);
    let pid = jvm.id();
    let _ = std::fs::remove_file(format!("/tmp/perf-{pid}.map"));
    std::thread::sleep(Duration::from_secs(3));
    let args = record(pid);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let output = run_ours(&args);
    let _ = jvm.kill();
    let _ = jvm.wait();
    let folded = folded_of_output(&output);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("JVM {pid} (java): perf map dumped")),
        "{stderr}"
    );
    let (share, samples) = named_share(&folded, pid);
    assert!(samples > 200, "{samples} samples of the JVM");
    assert!(share >= 0.6, "{:.0}% named", share * 100.0);
    let _ = std::fs::remove_file(format!("/tmp/perf-{pid}.map"));
}

#[test]
fn running_jvm_is_attached_with_a() {
    running_jvm_is_named(|_| {
        ["-a", "-g", "--pid", "--folded", "--", "sleep", "3"]
            .map(String::from)
            .to_vec()
    });
}

#[test]
fn running_jvm_is_attached_with_p() {
    running_jvm_is_named(|pid| {
        [
            "-g",
            "-p",
            &pid.to_string(),
            "--pid",
            "--folded",
            "--",
            "sleep",
            "3",
        ]
        .map(String::from)
        .to_vec()
    });
}

#[test]
fn kept_maps_name_java_frames_after_the_jvm_is_gone() {
    let _lock = exclusive();
    let Some((java, classes)) = ready() else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("fgp-jvm-keep-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let data = dir.join("java.data");
    let output = binary()
        .args(["-g", "--pid", "--folded", "-o"])
        .arg(&data)
        .arg("--")
        .arg(java)
        .arg("-cp")
        .arg(classes)
        .args(["JitBusy", "3"])
        .env_remove("JAVA_TOOL_OPTIONS")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let live = folded_of_output(&output);
    let pid = live
        .keys()
        .find_map(|s| s.split(';').next()?.rsplit_once('-')?.1.parse::<u32>().ok())
        .unwrap();
    // The JVM is gone and so is its map in /tmp: only the kept copy remains.
    let _ = std::fs::remove_file(format!("/tmp/perf-{pid}.map"));
    let kept = dir.join("java.data.maps").join(format!("perf-{pid}.map"));
    assert!(kept.is_file(), "{} kept", kept.display());
    let again = folded_of_output(&run_ours(&[
        "-i",
        data.to_str().unwrap(),
        "--pid",
        "--folded",
    ]));
    let (share, _) = named_share(&again, pid);
    assert!(
        share >= 0.6,
        "{:.0}% named from the kept map",
        share * 100.0
    );
    assert_eq!(again, live, "the same graph as the live run");
    std::fs::remove_dir_all(&dir).ok();
}

/// Copies the jit fixture's symfs so its perf map can be tampered with.
fn tampered_symfs(name: &str) -> (PathBuf, PathBuf) {
    let fixture_symfs = fixture("jit").join("symfs");
    let dir = std::env::temp_dir().join(format!("fgp-jvm-hostile-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let status = Command::new("cp")
        .arg("-a")
        .arg(&fixture_symfs)
        .arg(&dir)
        .status()
        .unwrap();
    assert!(status.success());
    let map = std::fs::read_dir(dir.join("tmp"))
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "map"))
        .expect("the jit fixture keeps its map");
    (dir, map)
}

fn read_jit_fixture(symfs: &Path) -> (Folded, String) {
    let jit = fixture("jit");
    let output = run_ours(&[
        "-i",
        jit.join("perf.data").to_str().unwrap(),
        "--symfs",
        symfs.to_str().unwrap(),
        "--kallsyms",
        jit.join("kallsyms").to_str().unwrap(),
        "--folded",
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (folded_of_output(&output), stderr)
}

#[test]
fn hostile_perf_maps_are_refused_with_a_warning() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { geteuid() } != 0 {
        assert!(!ci_requires_live(), "CI=true runs as root");
        eprintln!("skipped: making a file owned by another user needs root");
        return;
    }
    let unnamed = |folded: &Folded| folded.keys().all(|s| !s.contains("Busy.fib"));
    // Owned by another user (nobody).
    let (dir, map) = tampered_symfs("owner");
    std::os::unix::fs::chown(&map, Some(65534), Some(65534)).unwrap();
    let (folded, stderr) = read_jit_fixture(&dir);
    assert!(
        unnamed(&folded) && stderr.contains("owned by uid 65534"),
        "{stderr}"
    );
    assert!(
        folded.keys().any(|s| s.contains(".map]_[j]")),
        "still JIT frames, unnamed"
    );
    std::fs::remove_dir_all(&dir).ok();
    // A symlink to a readable map elsewhere.
    let (dir, map) = tampered_symfs("symlink");
    let elsewhere = dir.join("elsewhere.map");
    std::fs::rename(&map, &elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &map).unwrap();
    let (folded, stderr) = read_jit_fixture(&dir);
    assert!(
        unnamed(&folded) && stderr.contains("symbolic links"),
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).ok();
    // A FIFO (reading it would block forever).
    let (dir, map) = tampered_symfs("fifo");
    std::fs::remove_file(&map).unwrap();
    assert!(Command::new("mkfifo").arg(&map).status().unwrap().success());
    let (folded, stderr) = read_jit_fixture(&dir);
    assert!(
        unnamed(&folded) && stderr.contains("not a regular file"),
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).ok();
    // Oversize (sparse: no disk used).
    let (dir, map) = tampered_symfs("oversize");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&map)
        .unwrap()
        .set_len(300 << 20)
        .unwrap();
    let (folded, stderr) = read_jit_fixture(&dir);
    assert!(unnamed(&folded) && stderr.contains("over the"), "{stderr}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn jvm_in_its_own_pid_and_mount_namespace_is_attached() {
    let _lock = exclusive();
    let Some((java, classes)) = ready() else {
        return;
    };
    let Some(unshare) = tool_or_skip("unshare", "util-linux, for a pid namespace") else {
        return;
    };
    // Like a container: its own pid namespace (the JVM is pid 1 there) and
    // a private /tmp, so its map is /tmp/perf-1.map inside it, not on the host.
    let private_classes = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("jvm-ns-classes");
    std::fs::create_dir_all(&private_classes).unwrap();
    std::fs::copy(
        classes.join("JitBusy.class"),
        private_classes.join("JitBusy.class"),
    )
    .unwrap();
    let script = format!(
        "mount -t tmpfs tmpfs /tmp && exec {} -XX:+PreserveFramePointer -cp {} JitBusy 12",
        java.display(),
        private_classes.display()
    );
    let mut container = Command::new(unshare)
        .args([
            "--pid",
            "--fork",
            "--mount",
            "--mount-proc",
            "sh",
            "-c",
            &script,
        ])
        .env_remove("JAVA_TOOL_OPTIONS")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    // The JVM is the process whose innermost pid is 1.
    let jvm = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|s| {
                s.lines().any(|l| {
                    l.starts_with("NStgid:")
                        && l.split_whitespace().last() == Some("1")
                        && l.split_whitespace().count() == 3
                })
            }) && std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.contains("JitBusy"))
        })
        .expect("the JVM in its namespace");
    let output = run_ours(&[
        "-g",
        "-p",
        &jvm.to_string(),
        "--pid",
        "--folded",
        "--",
        "sleep",
        "2",
    ]);
    let _ = container.kill();
    let _ = Command::new("kill").args(["-9", &jvm.to_string()]).status();
    let _ = container.wait();
    let folded = folded_of_output(&output);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("perf map dumped (/tmp/perf-1.map in its root)"),
        "{stderr}"
    );
    assert!(
        !Path::new(&format!("/tmp/perf-{jvm}.map")).exists(),
        "nothing written to the host's /tmp"
    );
    let (share, samples) = named_share(&folded, jvm);
    assert!(samples > 100, "{samples}");
    assert!(
        share >= 0.6,
        "{:.0}% named through the container's root",
        share * 100.0
    );
}
