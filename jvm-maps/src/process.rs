//! What /proc says about a (possibly containerized) process.

use std::path::{Path, PathBuf};

/// Identity of a live process, as the attach protocol needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessInfo {
    /// Host pid.
    pub pid: i32,
    /// Pid inside the process's own pid namespace (the number in its
    /// `/tmp/perf-NSPID.map` and `/tmp/.java_pidNSPID`).
    pub ns_pid: i32,
    /// Effective uid.
    pub euid: u32,
    /// Effective gid.
    pub egid: u32,
    /// Process start time in clock ticks since boot (tells a reused pid apart).
    pub start_time: u64,
}

/// Reads /proc/PID/status and /proc/PID/stat. `None` if the process is gone.
pub fn process_info(pid: i32) -> Option<ProcessInfo> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|rest| rest.split_whitespace().collect::<Vec<_>>())
    };
    // Uid:/Gid: real, effective, saved, filesystem.
    let euid = field("Uid:")?.get(1)?.parse().ok()?;
    let egid = field("Gid:")?.get(1)?.parse().ok()?;
    // NStgid: the pid in each nested namespace, innermost last.
    let ns_pid = field("NStgid:")
        .and_then(|ids| ids.last()?.parse().ok())
        .unwrap_or(pid);
    Some(ProcessInfo {
        pid,
        ns_pid,
        euid,
        egid,
        start_time: start_time(pid)?,
    })
}

/// Field 22 of /proc/PID/stat (after the parenthesized comm, which may hold spaces).
fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_comm = &stat[stat.rfind(')')? + 1..];
    after_comm.split_whitespace().nth(19)?.parse().ok()
}

/// True when the process maps HotSpot's `libjvm.so`: only then is it safe
/// to send it SIGQUIT (which kills other programs).
pub fn is_hotspot_jvm(pid: i32) -> bool {
    let Ok(maps) = std::fs::read(format!("/proc/{pid}/maps")) else {
        return false;
    };
    maps.split(|&b| b == b'\n')
        .any(|line| line.ends_with(b"/libjvm.so"))
}

/// The process's root directory as seen from here (`/proc/PID/root`).
pub fn root_of(pid: i32) -> PathBuf {
    Path::new("/proc").join(pid.to_string()).join("root")
}

/// Where a process writes its perf map, relative to its own root.
pub fn perf_map_path(info: &ProcessInfo) -> PathBuf {
    PathBuf::from(format!("/tmp/perf-{}.map", info.ns_pid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_this_process() {
        let pid = std::process::id() as i32;
        let info = process_info(pid).unwrap();
        assert_eq!(info.pid, pid);
        assert!(info.start_time > 0);
        assert!(!is_hotspot_jvm(pid), "this test is not a JVM");
        assert!(process_info(i32::MAX).is_none());
        assert_eq!(
            perf_map_path(&info),
            PathBuf::from(format!("/tmp/perf-{}.map", info.ns_pid))
        );
    }
}
