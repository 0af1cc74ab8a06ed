//! A per-boot cache of the core kernel's symbols.
//!
//! Reading `/proc/kallsyms` costs tens of milliseconds of kernel time (the
//! kernel formats a hundred thousand lines), more than everything else
//! together for a small recording. The core kernel's symbols cannot change
//! before the next boot, so the first run of a boot keeps them in
//! `$XDG_CACHE_HOME/flamegraph-perf/` (like perf's `~/.debug` build-id
//! cache keeps kallsyms), and later runs read them back in a millisecond.
//! Addresses outside the core kernel (modules, BPF programs, which come and
//! go) are still looked up in `/proc/kallsyms`.
//!
//! The cache belongs to the user running us: its directory and file must be
//! owned by that user and writable by no one else, the file is opened
//! without following symlinks, and its contents are checked like any other
//! input. `FLAMEGRAPH_PERF_NO_CACHE=1` turns it off.

use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use flamegraph_perf_jvm_maps::safe_file;

use super::kallsyms::{Binding, Kallsyms};

const MAGIC: &[u8; 8] = b"FGPKSYM1";
const FILE_PREFIX: &str = "kallsyms-v1-";
/// Largest cache file read (the real one is a few MB).
const MAX_CACHE_BYTES: u64 = 64 << 20;
const BOOT_ID_LEN: usize = 36;

/// The core kernel symbols cached for this boot, if there are any.
pub fn load() -> Option<Kallsyms> {
    let boot_id = boot_id()?;
    let dir = cache_dir()?;
    let dir_fd = open_own_directory(&dir)?;
    let file = safe_file::open_beneath(
        &dir_fd,
        Path::new(&format!("{FILE_PREFIX}{boot_id}")),
        libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK,
    )
    .ok()?;
    if !owned_and_private(&file) {
        return None;
    }
    let policy = safe_file::ReadPolicy {
        allowed_owners: vec![effective_uid()],
        max_bytes: MAX_CACHE_BYTES,
    };
    let bytes = safe_file::read_checked(file, &dir, &policy).ok()?;
    decode(&bytes, boot_id.as_bytes())
}

/// Keeps `core` (from [`Kallsyms::core_part`]) for later runs of this boot
/// and removes caches of earlier boots. Failures are ignored: the cache
/// only saves time.
pub fn store(core: &Kallsyms) {
    let (Some(boot_id), Some(dir)) = (boot_id(), cache_dir()) else {
        return;
    };
    let Some(bytes) = encode(core, boot_id.as_bytes()) else {
        return;
    };
    if std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .is_err()
    {
        return;
    }
    let Some(dir_fd) = open_own_directory(&dir) else {
        return;
    };
    let temporary = format!(".{FILE_PREFIX}{}.tmp", std::process::id());
    let final_name = format!("{FILE_PREFIX}{boot_id}");
    let Ok(file) = safe_file::open_beneath_mode(
        &dir_fd,
        Path::new(&temporary),
        libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW,
        0o600,
    ) else {
        return;
    };
    let written = std::fs::File::from(file).write_all(&bytes).is_ok();
    let renamed = written && rename_in(&dir_fd, &temporary, &final_name);
    if !renamed {
        unlink_in(&dir_fd, &temporary);
        return;
    }
    // Earlier boots' caches can never be used again.
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(FILE_PREFIX) && name != final_name {
                unlink_in(&dir_fd, &name);
            }
        }
    }
}

/// True unless `FLAMEGRAPH_PERF_NO_CACHE` is set (to anything but `0`).
pub fn enabled() -> bool {
    std::env::var_os("FLAMEGRAPH_PERF_NO_CACHE").is_none_or(|v| v == "0")
}

fn boot_id() -> Option<String> {
    let text = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let id = text.trim();
    (id.len() == BOOT_ID_LEN && id.bytes().all(|c| c.is_ascii_hexdigit() || c == b'-'))
        .then(|| id.to_owned())
}

fn cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| {
            let home = PathBuf::from(std::env::var_os("HOME")?);
            home.is_absolute().then(|| home.join(".cache"))
        })?;
    Some(base.join("flamegraph-perf"))
}

fn effective_uid() -> u32 {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() }
}

/// The cache directory, if it is ours and no one else can write to it.
fn open_own_directory(dir: &Path) -> Option<OwnedFd> {
    let fd = safe_file::open_directory(dir).ok()?;
    owned_and_private(&fd).then_some(fd)
}

fn owned_and_private(fd: &OwnedFd) -> bool {
    let Ok(clone) = fd.try_clone() else {
        return false;
    };
    let Ok(metadata) = std::fs::File::from(clone).metadata() else {
        return false;
    };
    metadata.uid() == effective_uid() && metadata.mode() & 0o022 == 0
}

fn rename_in(dir: &OwnedFd, from: &str, to: &str) -> bool {
    let (Ok(from), Ok(to)) = (std::ffi::CString::new(from), std::ffi::CString::new(to)) else {
        return false;
    };
    // SAFETY: a valid directory fd and NUL-terminated names.
    unsafe { libc::renameat(dir.as_raw_fd(), from.as_ptr(), dir.as_raw_fd(), to.as_ptr()) == 0 }
}

fn unlink_in(dir: &OwnedFd, name: &str) {
    if let Ok(name) = std::ffi::CString::new(name) {
        // SAFETY: a valid directory fd and a NUL-terminated name.
        unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), 0) };
    }
}

/// `MAGIC, boot id, covers.start, covers.end, count`, then per symbol
/// `start, end, binding, name length (u16), name`; little-endian.
fn encode(core: &Kallsyms, boot_id: &[u8]) -> Option<Vec<u8>> {
    let covers = core.covers()?;
    let mut out = Vec::with_capacity(8 << 20);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(boot_id);
    out.extend_from_slice(&covers.start.to_le_bytes());
    out.extend_from_slice(&covers.end.to_le_bytes());
    out.extend_from_slice(&(core.symbols().count() as u64).to_le_bytes());
    for (start, end, binding, name) in core.symbols() {
        out.extend_from_slice(&start.to_le_bytes());
        out.extend_from_slice(&end.to_le_bytes());
        out.push(match binding {
            Binding::Local => 0,
            Binding::Global => 1,
            Binding::Weak => 2,
        });
        out.extend_from_slice(&u16::try_from(name.len()).ok()?.to_le_bytes());
        out.extend_from_slice(name);
    }
    Some(out)
}

/// Reads what [`encode`] wrote, checking every length and order; `None` for
/// anything else, including another boot's cache.
fn decode(bytes: &[u8], boot_id: &[u8]) -> Option<Kallsyms> {
    let mut at = 0usize;
    let mut take = |n: usize| -> Option<&[u8]> {
        let slice = bytes.get(at..at.checked_add(n)?)?;
        at += n;
        Some(slice)
    };
    let u64_at = |b: &[u8]| u64::from_le_bytes(b.try_into().expect("8 bytes"));
    if take(MAGIC.len())? != MAGIC || take(BOOT_ID_LEN)? != boot_id {
        return None;
    }
    let covers = u64_at(take(8)?)..u64_at(take(8)?);
    let count = u64_at(take(8)?);
    let mut symbols = Vec::with_capacity(usize::try_from(count.min(1 << 20)).ok()?);
    for _ in 0..count {
        let start = u64_at(take(8)?);
        let end = u64_at(take(8)?);
        let binding = match take(1)?[0] {
            0 => Binding::Local,
            1 => Binding::Global,
            2 => Binding::Weak,
            _ => return None,
        };
        let len = u16::from_le_bytes(take(2)?.try_into().expect("2 bytes"));
        let name = take(usize::from(len))?;
        symbols.push((start, end, binding, name));
    }
    if at != bytes.len() {
        return None;
    }
    Kallsyms::from_part(symbols.into_iter(), covers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_other_boots_and_damage() {
        let text = b"ffffffff81000000 T _text\n\
ffffffff81001000 t do_one\n\
ffffffff81002000 T do_sendfile\n\
ffffffffc0000000 t nf_hook\t[nf_conntrack]\n";
        let core = Kallsyms::parse(text).unwrap().core_part().unwrap();
        let boot = b"01234567-89ab-cdef-0123-456789abcdef";
        let bytes = encode(&core, boot).unwrap();
        let back = decode(&bytes, boot).unwrap();
        assert_eq!(back.covers(), core.covers());
        assert_eq!(back.lookup(0xffffffff81002010), Some(&b"do_sendfile"[..]));
        assert!(decode(&bytes, b"11234567-89ab-cdef-0123-456789abcdef").is_none());
        for cut in [0, 10, bytes.len() / 2, bytes.len() - 1] {
            assert!(decode(&bytes[..cut], boot).is_none(), "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode(&longer, boot).is_none());
        // Every single-byte change decodes to nothing or to a valid table.
        for i in 0..bytes.len() {
            let mut changed = bytes.clone();
            changed[i] ^= 0xff;
            if let Some(k) = decode(&changed, boot) {
                assert!(k.covers().is_some());
            }
        }
    }
}
