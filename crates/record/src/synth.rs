//! Records for what existed before recording started, read from /proc and
//! written in the kernel's own record format (so they reach the collapser
//! and perf.data exactly like kernel records).

use std::fs;
use std::path::Path;

const PERF_RECORD_MMAP: u32 = 1;
const PERF_RECORD_COMM: u32 = 3;
const PERF_RECORD_MMAP2: u32 = 10;
const MISC_KERNEL: u16 = 1;
const MISC_USER: u16 = 2;

/// Writes synthesized records with the `sample_id_all` trailer our sample
/// layout implies (tid, time, cpu, identifier).
#[derive(Clone, Copy, Debug)]
pub struct RecordWriter {
    /// Identifier of the event the records are attributed to.
    pub id: u64,
}

impl RecordWriter {
    fn record(&self, out: &mut Vec<u8>, kind: u32, misc: u16, body: &[u8], pid: i32, tid: i32) {
        let trailer = 24 + 8;
        let size = 8 + body.len() + trailer;
        debug_assert_eq!(size % 8, 0);
        let Ok(size16) = u16::try_from(size) else {
            return;
        };
        out.extend_from_slice(&kind.to_ne_bytes());
        out.extend_from_slice(&misc.to_ne_bytes());
        out.extend_from_slice(&size16.to_ne_bytes());
        out.extend_from_slice(body);
        // sample_id: { pid, tid } { time } { cpu, res } { identifier }
        out.extend_from_slice(&pid.to_ne_bytes());
        out.extend_from_slice(&tid.to_ne_bytes());
        out.extend_from_slice(&0u64.to_ne_bytes());
        out.extend_from_slice(&0u64.to_ne_bytes());
        out.extend_from_slice(&self.id.to_ne_bytes());
    }

    /// A COMM record naming thread `tid` of process `pid`.
    pub fn comm(&self, out: &mut Vec<u8>, pid: i32, tid: i32, name: &[u8]) {
        let mut body = Vec::with_capacity(32);
        body.extend_from_slice(&pid.to_ne_bytes());
        body.extend_from_slice(&tid.to_ne_bytes());
        push_padded_string(&mut body, &name[..name.len().min(15)]);
        self.record(out, PERF_RECORD_COMM, 0, &body, pid, tid);
    }

    /// An MMAP2 record for an executable user mapping.
    #[allow(clippy::too_many_arguments)]
    pub fn mmap2(&self, out: &mut Vec<u8>, pid: i32, map: &ProcMapping) {
        let mut body = Vec::with_capacity(96);
        body.extend_from_slice(&pid.to_ne_bytes());
        body.extend_from_slice(&pid.to_ne_bytes());
        body.extend_from_slice(&map.start.to_ne_bytes());
        body.extend_from_slice(&(map.end - map.start).to_ne_bytes());
        body.extend_from_slice(&map.offset.to_ne_bytes());
        body.extend_from_slice(&map.major.to_ne_bytes());
        body.extend_from_slice(&map.minor.to_ne_bytes());
        body.extend_from_slice(&map.inode.to_ne_bytes());
        body.extend_from_slice(&0u64.to_ne_bytes());
        body.extend_from_slice(&map.prot.to_ne_bytes());
        body.extend_from_slice(&map.flags.to_ne_bytes());
        push_padded_string(&mut body, &map.path);
        self.record(out, PERF_RECORD_MMAP2, MISC_USER, &body, pid, pid);
    }

    /// The kernel image mapping, `[kernel.kallsyms]_text`, with the address
    /// of `_text` as pgoff (perf's relocation reference).
    pub fn kernel_mmap(&self, out: &mut Vec<u8>, text_address: u64) {
        let mut body = Vec::with_capacity(64);
        body.extend_from_slice(&(-1i32).to_ne_bytes());
        body.extend_from_slice(&0i32.to_ne_bytes());
        body.extend_from_slice(&text_address.to_ne_bytes());
        body.extend_from_slice(&(u64::MAX - text_address).to_ne_bytes());
        body.extend_from_slice(&text_address.to_ne_bytes());
        push_padded_string(&mut body, b"[kernel.kallsyms]_text");
        self.record(out, PERF_RECORD_MMAP, MISC_KERNEL, &body, -1, 0);
    }

    /// A kernel module mapping `[name]`.
    pub fn module_mmap(&self, out: &mut Vec<u8>, name: &[u8], start: u64, len: u64) {
        let mut body = Vec::with_capacity(64);
        body.extend_from_slice(&(-1i32).to_ne_bytes());
        body.extend_from_slice(&0i32.to_ne_bytes());
        body.extend_from_slice(&start.to_ne_bytes());
        body.extend_from_slice(&len.to_ne_bytes());
        body.extend_from_slice(&0u64.to_ne_bytes());
        let mut bracketed = b"[".to_vec();
        bracketed.extend_from_slice(name);
        bracketed.push(b']');
        push_padded_string(&mut body, &bracketed);
        self.record(out, PERF_RECORD_MMAP, MISC_KERNEL, &body, -1, 0);
    }
}

/// Appends a NUL-terminated string padded with zeros to a multiple of 8.
fn push_padded_string(out: &mut Vec<u8>, s: &[u8]) {
    let s = &s[..s.len().min(4000)];
    out.extend_from_slice(s);
    let padded = (s.len() + 1).next_multiple_of(8);
    out.resize(out.len() + padded - s.len(), 0);
}

/// One line of /proc/PID/maps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcMapping {
    /// Start address.
    pub start: u64,
    /// End address.
    pub end: u64,
    /// File offset.
    pub offset: u64,
    /// Device major number.
    pub major: u32,
    /// Device minor number.
    pub minor: u32,
    /// Inode.
    pub inode: u64,
    /// PROT_* bits.
    pub prot: u32,
    /// MAP_* bits (private or shared).
    pub flags: u32,
    /// Path, or `//anon` for anonymous memory.
    pub path: Vec<u8>,
}

/// Parses /proc/PID/maps text; returns executable mappings only.
pub fn parse_maps(text: &[u8]) -> Vec<ProcMapping> {
    let mut maps = Vec::new();
    for line in text.split(|&b| b == b'\n') {
        let mut fields = line.splitn(6, |&b| b == b' ');
        let (Some(range), Some(perms), Some(offset), Some(dev), Some(inode)) = (
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
        ) else {
            continue;
        };
        let path = fields
            .next()
            .map(|p| p.trim_ascii_start())
            .unwrap_or_default();
        if perms.get(2) != Some(&b'x') {
            continue;
        }
        let hex = |b: &[u8]| {
            std::str::from_utf8(b)
                .ok()
                .and_then(|s| u64::from_str_radix(s, 16).ok())
        };
        let Some((start, end)) = range
            .iter()
            .position(|&b| b == b'-')
            .and_then(|i| Some((hex(&range[..i])?, hex(&range[i + 1..])?)))
        else {
            continue;
        };
        let (major, minor) = dev
            .iter()
            .position(|&b| b == b':')
            .and_then(|i| Some((hex(&dev[..i])? as u32, hex(&dev[i + 1..])? as u32)))
            .unwrap_or((0, 0));
        let mut prot = 0;
        if perms.first() == Some(&b'r') {
            prot |= libc::PROT_READ as u32;
        }
        if perms.get(1) == Some(&b'w') {
            prot |= libc::PROT_WRITE as u32;
        }
        prot |= libc::PROT_EXEC as u32;
        let flags = if perms.get(3) == Some(&b's') {
            libc::MAP_SHARED as u32
        } else {
            libc::MAP_PRIVATE as u32
        };
        maps.push(ProcMapping {
            start,
            end,
            offset: hex(offset).unwrap_or(0),
            major,
            minor,
            inode: std::str::from_utf8(inode)
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0),
            prot,
            flags,
            path: if path.is_empty() {
                b"//anon".to_vec()
            } else {
                path.to_vec()
            },
        });
    }
    maps
}

fn read_comm(path: &Path) -> Option<Vec<u8>> {
    let mut name = fs::read(path).ok()?;
    if name.last() == Some(&b'\n') {
        name.pop();
    }
    Some(name)
}

/// Appends COMM records for every thread of `pid` and MMAP2 records for
/// its executable mappings. Returns false if the process is gone.
pub fn synthesize_process(writer: &RecordWriter, out: &mut Vec<u8>, pid: i32) -> bool {
    let proc_dir = Path::new("/proc").join(pid.to_string());
    let Ok(tasks) = fs::read_dir(proc_dir.join("task")) else {
        return false;
    };
    let mut tids: Vec<i32> = tasks
        .filter_map(|t| t.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    tids.sort_unstable();
    for tid in tids {
        if let Some(name) = read_comm(&proc_dir.join("task").join(tid.to_string()).join("comm")) {
            writer.comm(out, pid, tid, &name);
        }
    }
    if let Ok(maps) = fs::read(proc_dir.join("maps")) {
        for map in parse_maps(&maps) {
            writer.mmap2(out, pid, &map);
        }
    }
    true
}

/// Every process on the system, in pid order.
pub fn all_pids() -> Vec<i32> {
    let mut pids: Vec<i32> = fs::read_dir("/proc")
        .map(|dir| {
            dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    pids.sort_unstable();
    pids
}

/// The threads of a process.
pub fn threads_of(pid: i32) -> Vec<i32> {
    let mut tids: Vec<i32> = fs::read_dir(format!("/proc/{pid}/task"))
        .map(|dir| {
            dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    tids.sort_unstable();
    tids
}

/// Appends the kernel image and module mappings (when kallsyms shows
/// addresses): `_text` comes from the first lines of /proc/kallsyms.
pub fn synthesize_kernel(writer: &RecordWriter, out: &mut Vec<u8>) {
    if let Some(text) = kernel_text_address() {
        writer.kernel_mmap(out, text);
    }
    if let Ok(modules) = fs::read_to_string("/proc/modules") {
        for line in modules.lines() {
            // name size refcount deps state address
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(name), Some(size), Some(address)) =
                (fields.first(), fields.get(1), fields.get(5))
            else {
                continue;
            };
            let size: u64 = size.parse().unwrap_or(0);
            let address = u64::from_str_radix(address.trim_start_matches("0x"), 16).unwrap_or(0);
            if address != 0 && size != 0 {
                writer.module_mmap(out, name.as_bytes(), address, size);
            }
        }
    }
}

/// Address of `_text`, read from the start of /proc/kallsyms (where it is
/// listed among the first symbols) without reading the whole file.
pub fn kernel_text_address() -> Option<u64> {
    use std::io::{BufRead, BufReader};
    let file = fs::File::open("/proc/kallsyms").ok()?;
    for line in BufReader::new(file).lines().take(4096) {
        let line = line.ok()?;
        let mut fields = line.split_whitespace();
        let (Some(address), Some(_), Some(name)) = (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        if name == "_text" {
            let address = u64::from_str_radix(address, 16).ok()?;
            return (address != 0).then_some(address);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_executable_mappings() {
        let text = b"55d0c0a00000-55d0c0a20000 r-xp 00002000 fd:01 131090   /usr/bin/cat\n\
55d0c0a20000-55d0c0a30000 rw-p 00000000 00:00 0 \n\
7f00000000-7f00001000 r-xp 00000000 00:00 0 \n\
7ffd0000-7ffd2000 r-xp 00000000 00:00 0                  [vdso]\n\
7f1-7f2 r-xp 00000000 08:02 77 /tmp/x (deleted)\n";
        let maps = parse_maps(text);
        assert_eq!(maps.len(), 4);
        assert_eq!(maps[0].path, b"/usr/bin/cat");
        assert_eq!(
            (maps[0].offset, maps[0].major, maps[0].minor, maps[0].inode),
            (0x2000, 0xfd, 1, 131090)
        );
        assert_eq!(maps[1].path, b"//anon");
        assert_eq!(maps[2].path, b"[vdso]");
        assert_eq!(maps[3].path, b"/tmp/x (deleted)");
    }

    #[test]
    fn records_are_aligned_and_sized() {
        let writer = RecordWriter { id: 7 };
        let mut out = Vec::new();
        writer.comm(&mut out, 1, 2, b"a-long-thread-name-here");
        writer.kernel_mmap(&mut out, 0xffffffff81000000);
        let mut at = 0;
        while at < out.len() {
            let size = u16::from_ne_bytes([out[at + 6], out[at + 7]]) as usize;
            assert_eq!(size % 8, 0);
            let id = u64::from_ne_bytes(out[at + size - 8..at + size].try_into().unwrap());
            assert_eq!(id, 7, "identifier closes the sample_id trailer");
            at += size;
        }
        assert_eq!(at, out.len());
        assert!(synthesize_process(
            &writer,
            &mut out,
            std::process::id() as i32
        ));
    }
}
