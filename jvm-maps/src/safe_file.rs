//! Opening files that other users control, as root, without being tricked:
//! no symlinks, no FIFOs or devices, bounded size, an owner we trust, and
//! for paths inside a process's root (containers) no escape from that root.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Which files may be read.
#[derive(Clone, Debug)]
pub struct ReadPolicy {
    /// Owners whose files are trusted (root, the invoking user, the target
    /// process's user).
    pub allowed_owners: Vec<u32>,
    /// Largest file accepted, in bytes.
    pub max_bytes: u64,
}

impl ReadPolicy {
    /// Root, the user running us, and `target_uid` when known.
    pub fn for_target(target_uid: Option<u32>, max_bytes: u64) -> ReadPolicy {
        // SAFETY: getuid has no preconditions.
        let mut allowed_owners = vec![0, unsafe { libc::getuid() }];
        allowed_owners.extend(target_uid);
        allowed_owners.sort_unstable();
        allowed_owners.dedup();
        ReadPolicy {
            allowed_owners,
            max_bytes,
        }
    }
}

/// Why a file was not read.
#[derive(Debug, thiserror::Error)]
pub enum UnsafeFile {
    /// Opening or reading failed; a symlink shows up as ELOOP ("Too many
    /// levels of symbolic links"), an escape from a root as EXDEV.
    #[error("{path}: {error}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        error: io::Error,
    },
    /// Not a regular file (a FIFO, device, directory…).
    #[error("{path}: not a regular file, ignored")]
    NotRegular {
        /// The file.
        path: PathBuf,
    },
    /// Owned by a user we do not trust for this file.
    #[error("{path}: owned by uid {owner}, not by root, you or the process; ignored")]
    WrongOwner {
        /// The file.
        path: PathBuf,
        /// Its owner.
        owner: u32,
    },
    /// Larger than the policy allows.
    #[error("{path}: {size} bytes is over the {max}-byte limit; ignored")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        size: u64,
        /// The limit.
        max: u64,
    },
}

impl UnsafeFile {
    /// True when the file simply does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, UnsafeFile::Io { error, .. } if error.kind() == io::ErrorKind::NotFound)
    }
}

/// Opens `path` read-only without following a symlink in its last
/// component and without blocking on a FIFO.
pub fn open_no_follow(path: &Path) -> io::Result<OwnedFd> {
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)?;
    // SAFETY: a NUL-terminated path; the fd is owned below.
    let fd = unsafe {
        libc::open(
            c_path.as_ptr(),
            libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new fd owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Opens `relative` inside the directory tree `root` as if `root` were `/`
/// (symlinks, absolute or `..`, cannot leave it; `openat2` with
/// `RESOLVE_IN_ROOT`), refusing a symlink as the last component.
pub fn open_in_root(root: &Path, relative: &Path) -> io::Result<OwnedFd> {
    let root_fd = open_directory(root)?;
    open_beneath(
        &root_fd,
        relative,
        libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK,
    )
}

/// Opens a directory (following symlinks: `/proc/PID/root` is one).
pub fn open_directory(path: &Path) -> io::Result<OwnedFd> {
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)?;
    // SAFETY: a NUL-terminated path; the fd is owned below.
    let fd = unsafe {
        libc::open(
            c_path.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new fd owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `openat2(root_fd, relative, flags, mode, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`.
pub fn open_beneath(root_fd: &OwnedFd, relative: &Path, flags: i32) -> io::Result<OwnedFd> {
    open_beneath_mode(root_fd, relative, flags, 0)
}

/// [`open_beneath`] with a creation mode.
pub fn open_beneath_mode(
    root_fd: &OwnedFd,
    relative: &Path,
    flags: i32,
    mode: u32,
) -> io::Result<OwnedFd> {
    let relative = relative.strip_prefix("/").unwrap_or(relative);
    let c_path =
        std::ffi::CString::new(relative.as_os_str().as_bytes()).map_err(io::Error::other)?;
    // SAFETY: open_how is a plain struct; zeroed is its documented default.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    how.mode = u64::from(mode);
    how.resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: valid fd, NUL-terminated path and a correctly sized open_how.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root_fd.as_raw_fd(),
            c_path.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new fd owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Reads an opened file if it is regular, owned by an allowed user and
/// within the size limit, with bounded reads (no mmap: the owner could
/// truncate it under us).
pub fn read_checked(fd: OwnedFd, path: &Path, policy: &ReadPolicy) -> Result<Vec<u8>, UnsafeFile> {
    let file = File::from(fd);
    let io_error = |error| UnsafeFile::Io {
        path: path.to_owned(),
        error,
    };
    let metadata = file.metadata().map_err(io_error)?;
    if !metadata.is_file() {
        return Err(UnsafeFile::NotRegular {
            path: path.to_owned(),
        });
    }
    if !policy.allowed_owners.contains(&metadata.uid()) {
        return Err(UnsafeFile::WrongOwner {
            path: path.to_owned(),
            owner: metadata.uid(),
        });
    }
    if metadata.len() > policy.max_bytes {
        return Err(UnsafeFile::TooLarge {
            path: path.to_owned(),
            size: metadata.len(),
            max: policy.max_bytes,
        });
    }
    let mut bytes = Vec::with_capacity(metadata.len() as usize);
    file.take(policy.max_bytes)
        .read_to_end(&mut bytes)
        .map_err(io_error)?;
    Ok(bytes)
}

/// Reads `path` safely (see [`read_checked`]).
pub fn read_file(path: &Path, policy: &ReadPolicy) -> Result<Vec<u8>, UnsafeFile> {
    let fd = open_no_follow(path).map_err(|error| UnsafeFile::Io {
        path: path.to_owned(),
        error,
    })?;
    read_checked(fd, path, policy)
}

/// Reads `relative` inside `root` safely (see [`open_in_root`], [`read_checked`]).
pub fn read_file_in_root(
    root: &Path,
    relative: &Path,
    policy: &ReadPolicy,
) -> Result<Vec<u8>, UnsafeFile> {
    let shown = root.join(relative.strip_prefix("/").unwrap_or(relative));
    let fd = open_in_root(root, relative).map_err(|error| UnsafeFile::Io {
        path: shown.clone(),
        error,
    })?;
    read_checked(fd, &shown, policy)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("jvm-maps-safe-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn refuses_symlinks_fifos_oversize_and_strangers() {
        let dir = scratch("refuse");
        let policy = ReadPolicy::for_target(None, 100);
        let good = dir.join("good");
        std::fs::write(&good, "ok").unwrap();
        assert_eq!(read_file(&good, &policy).unwrap(), b"ok");

        let link = dir.join("link");
        std::os::unix::fs::symlink(&good, &link).unwrap();
        let err = read_file(&link, &policy).unwrap_err();
        assert!(
            matches!(err, UnsafeFile::Io { ref error, .. } if error.raw_os_error() == Some(libc::ELOOP)),
            "{err}"
        );

        let fifo = dir.join("fifo");
        let c = std::ffi::CString::new(fifo.as_os_str().as_bytes()).unwrap();
        // SAFETY: creating a FIFO at a path we own.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert!(matches!(
            read_file(&fifo, &policy),
            Err(UnsafeFile::NotRegular { .. })
        ));

        let big = dir.join("big");
        std::fs::write(&big, vec![b'x'; 101]).unwrap();
        assert!(matches!(
            read_file(&big, &policy),
            Err(UnsafeFile::TooLarge { size: 101, .. })
        ));

        let strict = ReadPolicy {
            allowed_owners: vec![u32::MAX - 1],
            max_bytes: 100,
        };
        assert!(matches!(
            read_file(&good, &strict),
            Err(UnsafeFile::WrongOwner { .. })
        ));
        assert!(read_file(&dir.join("missing"), &policy)
            .unwrap_err()
            .is_not_found());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn paths_in_a_root_cannot_escape_it() {
        let root = scratch("root");
        std::fs::create_dir_all(root.join("tmp")).unwrap();
        std::fs::write(root.join("tmp/inside"), "inside").unwrap();
        let outside = scratch("outside");
        std::fs::write(outside.join("secret"), "secret").unwrap();
        // An absolute symlink inside the root points at the host's file.
        std::os::unix::fs::symlink(&outside, root.join("tmp/escape")).unwrap();
        let policy = ReadPolicy::for_target(None, 100);
        assert_eq!(
            read_file_in_root(&root, Path::new("/tmp/inside"), &policy).unwrap(),
            b"inside"
        );
        let escaped = read_file_in_root(&root, Path::new("/tmp/escape/secret"), &policy);
        assert!(
            escaped.is_err(),
            "resolved inside the root, where it does not exist"
        );
        std::fs::remove_dir_all(&root).unwrap();
        std::fs::remove_dir_all(&outside).unwrap();
    }
}
