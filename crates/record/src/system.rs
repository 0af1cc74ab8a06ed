//! What the running kernel allows: sysctls, limits, CPUs, page size.

use std::path::Path;

/// Kernel settings that decide what a recording may do.
#[derive(Clone, Debug)]
pub struct SystemLimits {
    /// `/proc/sys/kernel/perf_event_paranoid` (2 when unreadable).
    pub paranoid: i32,
    /// `/proc/sys/kernel/kptr_restrict` (0 when unreadable).
    pub kptr_restrict: i32,
    /// `/proc/sys/kernel/perf_event_max_sample_rate` (100000 when unreadable).
    pub max_sample_rate: u64,
    /// `/proc/sys/kernel/perf_event_max_stack` (127 when unreadable).
    pub max_stack: u16,
    /// `/proc/sys/kernel/perf_event_mlock_kb` (516 when unreadable).
    pub mlock_kb: u64,
    /// Effective uid is 0.
    pub root: bool,
    /// The process has CAP_PERFMON (38) or CAP_SYS_ADMIN (21) in its effective set.
    pub perf_capable: bool,
    /// System page size in bytes.
    pub page_size: usize,
}

fn read_number<T: std::str::FromStr>(path: &str) -> Option<T> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

impl SystemLimits {
    /// Reads the limits of this machine and process.
    pub fn read() -> SystemLimits {
        // SAFETY: plain libc queries without pointers.
        let (euid, page_size) = unsafe { (libc::geteuid(), libc::sysconf(libc::_SC_PAGESIZE)) };
        SystemLimits {
            paranoid: read_number("/proc/sys/kernel/perf_event_paranoid").unwrap_or(2),
            kptr_restrict: read_number("/proc/sys/kernel/kptr_restrict").unwrap_or(0),
            max_sample_rate: read_number("/proc/sys/kernel/perf_event_max_sample_rate")
                .unwrap_or(100_000),
            max_stack: read_number("/proc/sys/kernel/perf_event_max_stack").unwrap_or(127),
            mlock_kb: read_number("/proc/sys/kernel/perf_event_mlock_kb").unwrap_or(516),
            root: euid == 0,
            perf_capable: euid == 0 || has_capability(38) || has_capability(21),
            page_size: usize::try_from(page_size)
                .ok()
                .filter(|&p| p > 0)
                .unwrap_or(4096),
        }
    }

    /// Whether kernel frames can be sampled: root/CAP_PERFMON, or paranoid ≤ 1.
    pub fn kernel_sampling_allowed(&self) -> bool {
        self.perf_capable || self.paranoid <= 1
    }

    /// Whether system-wide (`-a`) sampling is allowed: root/CAP_PERFMON, or paranoid ≤ 0.
    pub fn system_wide_allowed(&self) -> bool {
        self.perf_capable || self.paranoid <= 0
    }

    /// Whether kernel symbol addresses are visible in /proc/kallsyms.
    pub fn kernel_symbols_visible(&self) -> bool {
        match self.kptr_restrict {
            0 => true,
            1 => self.perf_capable,
            _ => false,
        }
    }
}

/// True when the effective capability set has bit `cap` (from /proc/self/status).
fn has_capability(cap: u32) -> bool {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|caps| caps >> cap & 1 == 1)
}

/// Parses a CPU list like `0,2-3,7` (as in /sys/devices/system/cpu/online
/// and perf's `-C`).
pub fn parse_cpu_list(text: &str) -> Result<Vec<u32>, String> {
    let mut cpus = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        let (first, last) = match part.split_once('-') {
            Some((a, b)) => (a, b),
            None => (part, part),
        };
        let parse = |s: &str| {
            s.trim().parse::<u32>().map_err(|_| {
                format!("bad CPU list {text:?}: {part:?} is not a CPU number or range")
            })
        };
        let (first, last) = (parse(first)?, parse(last)?);
        if last < first || last - first > 65535 {
            return Err(format!("bad CPU range {part:?} in {text:?}"));
        }
        cpus.extend(first..=last);
    }
    cpus.sort_unstable();
    cpus.dedup();
    if cpus.is_empty() {
        return Err(format!("empty CPU list {text:?}"));
    }
    Ok(cpus)
}

/// The CPUs that are online.
pub fn online_cpus() -> Vec<u32> {
    std::fs::read_to_string("/sys/devices/system/cpu/online")
        .ok()
        .and_then(|t| parse_cpu_list(&t).ok())
        .unwrap_or_else(|| {
            let n = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
            (0..n).collect()
        })
}

/// Where tracefs is mounted, if it is.
pub fn tracefs_root() -> Option<&'static Path> {
    ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.join("events").is_dir())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0-3,6,2").unwrap(), vec![0, 1, 2, 3, 6]);
        assert_eq!(parse_cpu_list("1\n").unwrap(), vec![1]);
        assert!(parse_cpu_list("3-1").is_err());
        assert!(parse_cpu_list("x").is_err());
        assert!(parse_cpu_list("").is_err());
        assert!(!online_cpus().is_empty());
    }

    #[test]
    fn limits_are_read() {
        let limits = SystemLimits::read();
        assert!(limits.page_size >= 4096);
        assert!(limits.max_stack > 0);
    }
}
