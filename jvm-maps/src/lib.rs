//! JIT symbol maps: reading `/tmp/perf-PID.map` files safely, and getting
//! HotSpot JVMs to write them without any JDK tool on the machine.
//!
//! - [`perf_map`]: the map format (0x-prefixed and plain hex, names with
//!   spaces; the later line wins where lines overlap).
//! - [`safe_file`]: reading files other users control, as root: regular
//!   files only, no symlinks, trusted owners, bounded size and reads, and
//!   paths inside a container's root that cannot leave it.
//! - [`process`]: a process's namespace pid, user, and whether it is a JVM.
//! - [`attach`]: the HotSpot dynamic-attach handshake for `Compiler.perfmap`.
//! - [`find_perf_map`]: where a process's map is, container first.

pub mod attach;
pub mod perf_map;
pub mod process;
pub mod safe_file;

use std::path::Path;

pub use perf_map::{
    read_perf_map, read_perf_map_in_root, LoadedMap, PerfMap, PerfMapEntry, MAX_MAP_BYTES,
};
pub use safe_file::{ReadPolicy, UnsafeFile};

/// JVM flags that make Java stacks complete and leave a perf map at exit.
pub const LAUNCH_FLAGS: &str =
    "-XX:+PreserveFramePointer -XX:+UnlockDiagnosticVMOptions -XX:+DumpPerfMapAtExit";

/// `JAVA_TOOL_OPTIONS` with [`LAUNCH_FLAGS`] appended to what the user set.
pub fn java_tool_options(existing: Option<&str>) -> String {
    match existing.map(str::trim).filter(|e| !e.is_empty()) {
        Some(existing) => format!("{existing} {LAUNCH_FLAGS}"),
        None => LAUNCH_FLAGS.to_owned(),
    }
}

/// Reads the perf map of live process `pid`: first inside its own root
/// (`/proc/PID/root/tmp/perf-NSPID.map`, which is where a containerized
/// JVM writes it), then the host's `/tmp/perf-PID.map`. Files must be
/// owned by root, us, or the process's user.
pub fn find_perf_map(pid: i32) -> Result<LoadedMap, UnsafeFile> {
    let host_path = format!("/tmp/perf-{pid}.map");
    let Some(info) = process::process_info(pid) else {
        // Gone: only the host path can tell.
        return read_perf_map(
            Path::new(&host_path),
            &ReadPolicy::for_target(None, MAX_MAP_BYTES),
        );
    };
    let policy = ReadPolicy::for_target(Some(info.euid), MAX_MAP_BYTES);
    match read_perf_map_in_root(
        &process::root_of(pid),
        &process::perf_map_path(&info),
        &policy,
    ) {
        Err(e) if e.is_not_found() => read_perf_map(Path::new(&host_path), &policy),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_options_append_to_the_users() {
        assert_eq!(java_tool_options(None), LAUNCH_FLAGS);
        assert_eq!(java_tool_options(Some("  ")), LAUNCH_FLAGS);
        assert_eq!(
            java_tool_options(Some("-Xmx1g")),
            format!("-Xmx1g {LAUNCH_FLAGS}")
        );
    }
}
