//! The native recorder, end to end: real perf_event_open sampling on this
//! machine. These need root (or a permissive perf_event_paranoid) and gcc;
//! under `CI=true` they must run, elsewhere they skip with a reason.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use support::*;

/// The test program, built once: main → outer_loop → hot_leaf.
fn busy() -> Option<&'static Path> {
    static BUSY: OnceLock<Option<PathBuf>> = OnceLock::new();
    BUSY.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("fgp-record-{}", std::process::id()));
        std::fs::create_dir_all(&dir).ok()?;
        let binary = dir.join("busy");
        let built = Command::new("gcc")
            .args([
                "-O1",
                "-fno-omit-frame-pointer",
                "-mno-omit-leaf-frame-pointer",
                "-fno-inline",
                "-o",
            ])
            .arg(&binary)
            .arg(root().join("tests/programs/busy.c"))
            .status()
            .is_ok_and(|s| s.success());
        built.then_some(binary)
    })
    .as_deref()
}

/// The benchmark workload (deep, varied stacks: big samples), built once.
fn deep_workload() -> Option<&'static Path> {
    static WORKLOAD: OnceLock<Option<PathBuf>> = OnceLock::new();
    WORKLOAD
        .get_or_init(|| {
            let binary = busy()?.with_file_name("workload");
            Command::new("gcc")
                .args([
                    "-O1",
                    "-fno-omit-frame-pointer",
                    "-mno-omit-leaf-frame-pointer",
                    "-fno-inline",
                    "-o",
                ])
                .arg(&binary)
                .arg(root().join("bench/workload.c"))
                .status()
                .is_ok_and(|s| s.success())
                .then_some(binary)
        })
        .as_deref()
}

/// Recordings measure rates and see each other system-wide: one at a time.
fn exclusive() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Whether recording can work here; explains (or, under CI, fails) if not.
fn can_record() -> bool {
    let why = if busy().is_none() {
        "gcc could not build tests/programs/busy.c"
    } else {
        let limits =
            std::fs::read_to_string("/proc/sys/kernel/perf_event_paranoid").unwrap_or_default();
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc_geteuid() } == 0;
        if !root && limits.trim().parse::<i32>().unwrap_or(2) > 0 {
            "needs root or kernel.perf_event_paranoid <= 0"
        } else {
            ""
        }
    };
    if why.is_empty() {
        return true;
    }
    assert!(
        !ci_requires_live(),
        "CI=true requires the recorder tests to run: {why}"
    );
    eprintln!("skipped: {why}");
    false
}

extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

fn record(args: &[&str]) -> Output {
    binary()
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run flamegraph-perf")
}

/// "N samples" from the summary line.
fn samples_in(stderr: &str) -> u64 {
    stderr
        .lines()
        .flat_map(|l| l.split(", "))
        .find_map(|part| part.split_once(" samples of ")?.0.parse().ok())
        .unwrap_or_else(|| panic!("no sample count in: {stderr}"))
}

fn folded_stdout(output: &Output) -> Folded {
    assert!(
        output.status.success(),
        "status {:?}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    parse_folded(&String::from_utf8_lossy(&output.stdout))
}

fn weight_where(folded: &Folded, predicate: impl Fn(&str) -> bool) -> u64 {
    folded
        .iter()
        .filter(|(s, _)| predicate(s))
        .map(|(_, c)| c)
        .sum()
}

#[test]
fn launched_command_is_sampled_at_99_hz_with_its_call_chain() {
    let _exclusive = exclusive();
    if !can_record() {
        return;
    }
    let busy = busy().unwrap().to_str().unwrap();
    let output = record(&["-g", "--folded", "--", busy, "2"]);
    let folded = folded_stdout(&output);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let samples = samples_in(&stderr);
    assert!(
        (158..=238).contains(&samples),
        "2 s at 99 Hz: {samples} samples"
    );
    let hot = weight_where(&folded, |s| {
        s.starts_with("busy;") && s.ends_with(";main;deep;outer_loop;hot_leaf")
    });
    assert!(
        hot * 10 >= total(&folded) * 8,
        "hot_leaf under main;deep;outer_loop: {hot} of {}",
        total(&folded)
    );
    assert!(stderr.contains("lost 0 of"), "{stderr}");
}

#[test]
fn attaches_to_a_running_process() {
    let _exclusive = exclusive();
    if !can_record() {
        return;
    }
    let mut target = Command::new(busy().unwrap()).arg("4").spawn().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let pid = target.id().to_string();
    let output = record(&["-g", "-p", &pid, "--folded", "--", "sleep", "1"]);
    let _ = target.kill();
    let _ = target.wait();
    let folded = folded_stdout(&output);
    let samples = samples_in(&String::from_utf8_lossy(&output.stderr));
    assert!(
        (79..=119).contains(&samples),
        "1 s at 99 Hz of one process: {samples}"
    );
    assert!(
        folded.keys().all(|s| s.starts_with("busy;")),
        "only the attached process"
    );
    assert!(
        weight_where(&folded, |s| s.ends_with(";outer_loop;hot_leaf")) * 10 >= total(&folded) * 8
    );
}

#[test]
fn system_wide_recording_shows_several_processes() {
    let _exclusive = exclusive();
    if !can_record() {
        return;
    }
    // Two processes with different names, started before the recording.
    let twin = busy().unwrap().with_file_name("twin");
    std::fs::copy(busy().unwrap(), &twin).unwrap();
    let mut others: Vec<_> = [busy().unwrap(), twin.as_path()]
        .into_iter()
        .map(|program| Command::new(program).arg("3").spawn().unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    let output = record(&["-a", "-g", "--keep-idle", "--folded", "--", "sleep", "2"]);
    for other in &mut others {
        let _ = other.kill();
        let _ = other.wait();
    }
    let folded = folded_stdout(&output);
    let roots: std::collections::BTreeSet<&str> = folded
        .keys()
        .map(|s| s.split(';').next().unwrap())
        .collect();
    assert!(
        roots.contains("busy") && roots.contains("twin"),
        "several processes: {roots:?}"
    );
    // The busy process was already running: its mappings came from /proc.
    assert!(
        weight_where(&folded, |s| s.starts_with("busy;")
            && s.contains(";outer_loop;hot_leaf"))
            > 50
    );
}

#[test]
fn tracepoint_recording_gives_stacks() {
    let _exclusive = exclusive();
    if !can_record() {
        return;
    }
    if !Path::new("/sys/kernel/tracing/events").is_dir() {
        assert!(!ci_requires_live(), "CI=true: .ci/run mounts tracefs");
        eprintln!("skipped: tracefs is not mounted");
        return;
    }
    let output = record(&[
        "-a",
        "-g",
        "--keep-idle",
        "-e",
        "sched:sched_switch",
        "--folded",
        "--",
        "sleep",
        "1",
    ]);
    let folded = folded_stdout(&output);
    assert!(total(&folded) > 10, "context switches in a second");
    let at_schedule = weight_where(&folded, |s| s.ends_with(";__schedule_[k]"));
    assert!(
        at_schedule * 10 >= total(&folded) * 9,
        "sched_switch fires in __schedule"
    );
    assert!(String::from_utf8_lossy(&output.stderr).contains("samples of sched:sched_switch"));
}

#[test]
fn saved_perf_data_is_read_by_perf_and_by_us_the_same() {
    let _exclusive = exclusive();
    if !can_record() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("fgp-record-out-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let data = dir.join("saved.data");
    let busy = busy().unwrap().to_str().unwrap();
    let live = record(&[
        "-a",
        "-g",
        "--keep-idle",
        "--folded",
        "-o",
        data.to_str().unwrap(),
        "--",
        busy,
        "1",
    ]);
    let live = folded_stdout(&live);
    let reread = folded_of_file(&data);
    assert_eq!(reread, live, "our -i gives the same stacks as the live run");

    if let Some(perf) = which("perf") {
        let script = Command::new(&perf)
            .args(["script", "-F", "comm,tid,time,event,ip,sym,dso", "-i"])
            .arg(&data)
            .output()
            .unwrap();
        assert!(
            script.status.success(),
            "{}",
            String::from_utf8_lossy(&script.stderr)
        );
        let text = String::from_utf8_lossy(&script.stdout);
        let perf_samples = text.lines().filter(|l| l.contains("cpu-clock")).count() as u64;
        assert_eq!(
            perf_samples,
            total(&live),
            "perf script sees every sample we folded"
        );
        assert!(text.contains("hot_leaf"), "perf symbolizes our file too");
        let report = Command::new(&perf)
            .args(["report", "--stdio", "--header", "-i"])
            .arg(&data)
            .output()
            .unwrap();
        let report_text = String::from_utf8_lossy(&report.stdout);
        assert!(
            report.status.success(),
            "{}",
            String::from_utf8_lossy(&report.stderr)
        );
        for header in [
            "# hostname :",
            "# os release :",
            "# nrcpus online :",
            "# cmdline :",
            "# event : name = cpu-clock",
        ] {
            assert!(report_text.contains(header), "perf report shows {header}");
        }
        assert!(report_text.contains("hot_leaf"));
    } else {
        assert!(!ci_requires_live(), "CI=true: perf must be installed");
        eprintln!("perf not installed: only our own reading was checked");
    }
    std::fs::remove_dir_all(&dir).ok();
}

fn folded_of_file(path: &Path) -> Folded {
    let output = record(&["-i", path.to_str().unwrap(), "--folded", "--keep-idle"]);
    folded_stdout(&output)
}

#[test]
fn output_never_follows_a_planted_symlink() {
    let _exclusive = exclusive();
    if !can_record() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("fgp-record-link-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let victim = dir.join("victim");
    std::fs::write(&victim, "precious").unwrap();
    let link = dir.join("out.data");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    let output = record(&["-o", link.to_str().unwrap(), "--folded", "--", "true"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    assert!(
        !std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink(),
        "replaced, not followed"
    );
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .collect();
    assert_eq!(leftovers.len(), 2, "no temporary files left: {leftovers:?}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn command_exit_status_is_passed_on_and_the_svg_still_written() {
    let _exclusive = exclusive();
    if !can_record() {
        return;
    }
    let output = record(&["--", "sh", "-c", "exit 7"]);
    assert_eq!(output.status.code(), Some(7));
    assert!(
        String::from_utf8_lossy(&output.stdout).contains("<svg"),
        "an SVG even without samples"
    );
    let output = record(&["--", "sh", "-c", "kill -TERM $$"]);
    assert_eq!(output.status.code(), Some(128 + 15), "died of SIGTERM");
    let output = record(&["--", "/nonexistent/command"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot run /nonexistent/command"));
}

#[test]
fn sigint_ends_an_open_ended_recording_with_a_complete_graph() {
    let _exclusive = exclusive();
    if !can_record() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("fgp-record-int-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let data = dir.join("int.data");
    let mut busy = Command::new(busy().unwrap()).arg("3").spawn().unwrap();
    let child = binary()
        .args(["-a", "-g", "-o", data.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let _ = busy.kill();
    let _ = busy.wait();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("stopped by signal 2"), "{stderr}");
    assert!(samples_in(&stderr) > 100, "{stderr}");
    let svg = String::from_utf8(output.stdout).unwrap();
    assert!(
        svg.contains("<title>hot_leaf ("),
        "the graph has the busy process"
    );
    assert!(svg.trim_end().ends_with("</svg>"));
    // The saved file is complete too.
    assert!(total(&folded_of_file(&data)) > 100);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn lost_samples_are_counted_with_a_tiny_buffer() {
    let _exclusive = exclusive();
    if !can_record() {
        return;
    }
    let workload = deep_workload()
        .expect("gcc builds bench/workload.c")
        .to_str()
        .unwrap();
    let output = record(&[
        "-a", "-g", "-F", "9999", "-m", "1", "--folded", "--", workload, "2", "4",
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let lost: u64 = stderr
        .split("lost ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no lost count: {stderr}"));
    assert!(
        lost > 0,
        "a one-page buffer at 9999 Hz with deep stacks overflows: {stderr}"
    );
    let samples = samples_in(&stderr);
    assert!(
        stderr.contains(&format!("lost {lost} of {}", samples + lost)),
        "{stderr}"
    );
}

#[test]
fn hardware_events_fall_back_to_cpu_clock_without_a_pmu() {
    let _exclusive = exclusive();
    if !can_record() {
        return;
    }
    let busy = busy().unwrap().to_str().unwrap();
    let output = record(&["-e", "cycles", "--folded", "--", busy, "1"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    if stderr.contains("not supported") {
        assert!(stderr.contains("samples of cpu-clock"), "{stderr}");
    } else {
        assert!(
            stderr.contains("samples of cycles"),
            "a PMU is present: {stderr}"
        );
    }
    assert!(total(&folded_stdout(&output)) > 50);
}

#[test]
fn without_privileges_it_records_user_space_and_says_why() {
    let _exclusive = exclusive();
    if !can_record() {
        return;
    }
    let Some(setpriv) = tool_or_skip("setpriv", "util-linux, to drop privileges") else {
        return;
    };
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc_geteuid() } != 0 {
        eprintln!("skipped: needs root to drop privileges");
        return;
    }
    // A copy of our binary and the program that the nobody user can run.
    let dir = std::env::temp_dir().join(format!("fgp-record-nobody-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ours = dir.join("flamegraph-perf");
    std::fs::copy(env!("CARGO_BIN_EXE_flamegraph-perf"), &ours).unwrap();
    let program = dir.join("busy");
    std::fs::copy(busy().unwrap(), &program).unwrap();
    use std::os::unix::fs::PermissionsExt;
    for path in [&dir, &ours, &program] {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let output = Command::new(setpriv)
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&ours)
        // More buffer than an unprivileged user may lock: it must shrink.
        .args(["-g", "-m", "4096", "--folded", "--"])
        .arg(&program)
        .arg("1")
        .current_dir(&dir)
        .output()
        .unwrap();
    std::fs::remove_dir_all(&dir).ok();
    let paranoid: i32 = std::fs::read_to_string("/proc/sys/kernel/perf_event_paranoid")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    if paranoid > 2 {
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        return;
    }
    assert!(output.status.success(), "{stderr}");
    let folded = folded_stdout(&output);
    assert!(weight_where(&folded, |s| s.ends_with(";outer_loop;hot_leaf")) > 50);
    assert!(
        stderr.contains("sample buffers shrunk from 4096")
            && stderr.contains("perf_event_mlock_kb"),
        "{stderr}"
    );
    if paranoid >= 2 {
        assert!(stderr.contains("recording user space only"), "{stderr}");
        assert!(
            !folded.keys().any(|s| s.contains("_[k]")),
            "no kernel frames"
        );
    }
}

#[test]
fn cpu_list_restricts_sampling_to_those_cpus() {
    let _exclusive = exclusive();
    if !can_record() {
        return;
    }
    let Some(perf) = tool_or_skip("perf", "to read CPU numbers") else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("fgp-record-cpu-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let data = dir.join("cpu.data");
    let busy = busy().unwrap().to_str().unwrap();
    let output = record(&[
        "-a",
        "-C",
        "0",
        "--keep-idle",
        "--folded",
        "-o",
        data.to_str().unwrap(),
        "--",
        "sh",
        "-c",
        &format!("{busy} 1 & {busy} 1; wait"),
    ]);
    assert!(total(&folded_stdout(&output)) > 50);
    let script = Command::new(perf)
        .args(["script", "-F", "cpu", "-i"])
        .arg(&data)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&script.stdout);
    let cpus: std::collections::BTreeSet<&str> = text.split_whitespace().collect();
    assert_eq!(
        cpus.into_iter().collect::<Vec<_>>(),
        vec!["[000]"],
        "only CPU 0 sampled"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn stacks_cut_at_the_kernel_depth_limit_are_counted() {
    let _exclusive = exclusive();
    if !can_record() {
        return;
    }
    let busy = busy().unwrap().to_str().unwrap();
    let output = record(&["-g", "--folded", "--", busy, "1", "busy", "200"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("stacks truncated at the depth limit"),
        "{stderr}"
    );
    let shallow = record(&["-g", "--folded", "--", busy, "1"]);
    assert!(!String::from_utf8_lossy(&shallow.stderr).contains("truncated"));
}

#[test]
fn fd_limit_is_raised_for_us_and_kept_for_the_command() {
    let _exclusive = exclusive();
    if !can_record() {
        return;
    }
    // A soft limit of 12 fds: too few for one event per CPU and task on
    // bigger machines; we raise ours, the command still sees 12.
    let ours = env!("CARGO_BIN_EXE_flamegraph-perf");
    let output = Command::new("sh")
        .args([
            "-c",
            &format!("ulimit -Sn 12 && exec {ours} -a --folded -- sh -c 'ulimit -Sn'"),
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.lines().any(|l| l.trim() == "12"),
        "the command's limit: {stderr}"
    );
}

/// A program in its own root (a chroot, like a container's file system):
/// its binary is found inside that root, and a symlink planted inside the
/// root afterwards cannot redirect symbolization to a file of the host.
#[test]
fn binaries_resolve_inside_a_process_root_and_cannot_escape_it() {
    let _exclusive = exclusive();
    if !can_record() {
        return;
    }
    let Some(unshare) = tool_or_skip("unshare", "util-linux, for a private namespace") else {
        return;
    };
    let base =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("croot-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let root_dir = base.join("root");
    std::fs::create_dir_all(root_dir.join("opt")).unwrap();
    let built = Command::new("gcc")
        .args(["-static", "-O1", "-fno-omit-frame-pointer", "-o"])
        .arg(root_dir.join("opt/busy"))
        .arg(root().join("tests/programs/busy.c"))
        .status()
        .is_ok_and(|s| s.success());
    if !built {
        assert!(
            !ci_requires_live(),
            "CI=true: static glibc (libc6-dev) is needed"
        );
        eprintln!("skipped: cannot link statically");
        return;
    }
    // A decoy on the host with other function names, for the escape attempt.
    let decoy_dir = base.join("decoy-opt");
    std::fs::create_dir_all(&decoy_dir).unwrap();
    let decoy_source = base.join("decoy.c");
    std::fs::write(
        &decoy_source,
        "int decoy_a(void){return 1;} int decoy_b(void){return 2;} int main(void){return decoy_a()+decoy_b();}\n\
         char decoy_pad[1<<16];\n",
    )
    .unwrap();
    assert!(Command::new("gcc")
        .args(["-static", "-O0", "-o"])
        .arg(decoy_dir.join("busy"))
        .arg(&decoy_source)
        .status()
        .unwrap()
        .success());

    // The program starts inside its root during a system-wide recording, so
    // the kernel reports its path as seen from there: /opt/busy.
    let script = format!(
        "sleep 0.3; exec {} --root={} /opt/busy 4",
        unshare.display(),
        root_dir.display()
    );
    let mut program = Command::new("sh").args(["-c", &script]).spawn().unwrap();
    let output = record(&["-a", "-g", "--folded", "--", "sleep", "1.5"]);
    let folded = folded_stdout(&output);
    assert!(
        weight_where(&folded, |s| s.starts_with("busy;")
            && s.contains(";outer_loop;hot_leaf"))
            > 50,
        "named from the binary inside the root: {:?}",
        folded
            .keys()
            .filter(|s| s.starts_with("busy;"))
            .take(3)
            .collect::<Vec<_>>()
    );

    // Now plant an absolute symlink inside the root pointing at the host's
    // decoy, and record again while the program still runs.
    std::fs::rename(root_dir.join("opt"), root_dir.join("opt-real")).unwrap();
    std::os::unix::fs::symlink(&decoy_dir, root_dir.join("opt")).unwrap();
    let output = record(&["-a", "-g", "--folded", "--", "sleep", "1"]);
    let _ = program.kill();
    let _ = Command::new("pkill").args(["-f", "^/opt/busy 4"]).status();
    let _ = program.wait();
    let folded = folded_stdout(&output);
    assert!(
        !folded.keys().any(|s| s.contains("decoy")),
        "a symlink inside the root never reaches the host's files"
    );
    std::fs::remove_dir_all(&base).ok();
}
