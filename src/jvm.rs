//! Getting perf maps from the JVMs a recording sampled.

use std::time::Duration;

use jvm_maps::attach::{request_perf_map, AttachError};
use jvm_maps::process::is_hotspot_jvm;

/// How long one JVM may take to write its map.
const ATTACH_TIMEOUT: Duration = Duration::from_secs(10);

/// Asks every live HotSpot JVM among `pids` to write its perf map, and
/// says on stderr how each went.
pub fn dump_perf_maps(pids: &[i32], quiet: bool) {
    for &pid in pids {
        if !is_hotspot_jvm(pid) {
            continue;
        }
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .map(|c| c.trim().to_owned())
            .unwrap_or_default();
        let outcome = match request_perf_map(pid, ATTACH_TIMEOUT) {
            Ok(info) => format!(
                "perf map dumped (/tmp/perf-{}.map in its root)",
                info.ns_pid
            ),
            Err(AttachError::Gone(_)) => "exited before its perf map could be dumped".to_owned(),
            Err(AttachError::NotJvm(_)) => continue,
            Err(error) => error.to_string(),
        };
        if !quiet {
            eprintln!("flamegraph-perf: JVM {pid} ({comm}): {outcome}");
        }
    }
}
