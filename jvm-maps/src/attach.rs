//! Asking a running HotSpot JVM to write its perf map, over the JDK's
//! dynamic-attach protocol, with no JDK tools on the machine.
//!
//! The handshake (protocol 1, JDK 6 to 25): if the JVM's attach socket
//! `/tmp/.java_pidNSPID` does not exist yet, create `/tmp/.attach_pidNSPID`
//! (inside the JVM's root, owned by the JVM's user) and send SIGQUIT; the
//! JVM then starts its attach listener and creates the socket. Connect,
//! send `1\0jcmd\0Compiler.perfmap\0\0\0`, read the decimal result code
//! and output. The JVM has written `/tmp/perf-NSPID.map` by then.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::process::{is_hotspot_jvm, process_info, root_of, ProcessInfo};
use crate::safe_file::{open_beneath, open_directory};

/// Why no map was dumped.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    /// The process exited.
    #[error("process {0} is gone")]
    Gone(i32),
    /// The process is not a HotSpot JVM (it was not signalled).
    #[error("process {0} is not a HotSpot JVM")]
    NotJvm(i32),
    /// We may not talk to it.
    #[error("not permitted: {0}")]
    NotPermitted(String),
    /// It did not answer in time (attach disabled, or a busy or stopped JVM).
    #[error("timed out: {0}")]
    TimedOut(String),
    /// It answered with an error.
    #[error("the JVM refused: {0}")]
    Refused(String),
    /// A system call failed.
    #[error("{what}: {error}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The cause.
        error: io::Error,
    },
}

fn io_error(what: &'static str) -> impl FnOnce(io::Error) -> AttachError {
    move |error| AttachError::Io { what, error }
}

/// Asks the JVM `pid` to write `/tmp/perf-NSPID.map` (in its own root)
/// and waits for the answer, at most `timeout` in all. Sends SIGQUIT only
/// after confirming, right before, that the same process maps libjvm.so.
pub fn request_perf_map(pid: i32, timeout: Duration) -> Result<ProcessInfo, AttachError> {
    let deadline = Instant::now() + timeout;
    let info = process_info(pid).ok_or(AttachError::Gone(pid))?;
    if !is_hotspot_jvm(pid) {
        return Err(AttachError::NotJvm(pid));
    }
    // SAFETY: geteuid has no preconditions.
    let our_euid = unsafe { libc::geteuid() };
    if our_euid != 0 && our_euid != info.euid {
        return Err(AttachError::NotPermitted(format!(
            "the JVM runs as uid {}, we as uid {our_euid} (run as root or as that user)",
            info.euid
        )));
    }
    let root = open_directory(&root_of(pid)).map_err(|e| match e.raw_os_error() {
        Some(libc::EACCES | libc::EPERM) => {
            AttachError::NotPermitted(format!("/proc/{pid}/root: {e}"))
        }
        _ => AttachError::Gone(pid),
    })?;
    let tmp = open_beneath(&root, Path::new("/tmp"), libc::O_RDONLY | libc::O_DIRECTORY)
        .map_err(io_error("opening the JVM's /tmp"))?;
    let socket_name = format!(".java_pid{}", info.ns_pid);
    if !is_socket(&tmp, &socket_name) {
        start_attach_listener(&info, &tmp, &socket_name, deadline)?;
    }
    let socket_path = format!("/proc/self/fd/{}/{socket_name}", tmp.as_raw_fd());
    let mut stream = as_user(&info, || UnixStream::connect(&socket_path)).map_err(|e| {
        match e.raw_os_error() {
            Some(libc::EACCES | libc::EPERM) => {
                AttachError::NotPermitted(format!("connecting to {socket_name}: {e}"))
            }
            _ => AttachError::Io {
                what: "connecting to the attach socket",
                error: e,
            },
        }
    })?;
    let remaining = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(100));
    stream
        .set_read_timeout(Some(remaining))
        .and_then(|()| stream.set_write_timeout(Some(remaining)))
        .map_err(io_error("setting socket timeouts"))?;
    stream
        .write_all(b"1\0jcmd\0Compiler.perfmap\0\0\0")
        .map_err(io_error("sending the attach request"))?;
    let mut reply = Vec::new();
    match stream.take(1 << 20).read_to_end(&mut reply) {
        Ok(_) => {}
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            return Err(AttachError::TimedOut(
                "no answer to Compiler.perfmap".into(),
            ));
        }
        Err(e) => return Err(io_error("reading the attach reply")(e)),
    }
    let reply = String::from_utf8_lossy(&reply);
    let (code, output) = reply.split_once('\n').unwrap_or((reply.as_ref(), ""));
    match code.trim().parse::<i32>() {
        Ok(0) if !output.contains("Unknown diagnostic command") => Ok(info),
        _ => Err(AttachError::Refused(
            reply.trim().chars().take(200).collect(),
        )),
    }
}

fn is_socket(dir: &OwnedFd, name: &str) -> bool {
    open_beneath(dir, Path::new(name), libc::O_PATH | libc::O_NOFOLLOW)
        .ok()
        .and_then(|fd| std::fs::File::from(fd).metadata().ok())
        .is_some_and(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()))
}

/// Creates the trigger file, signals the JVM, waits for the socket.
fn start_attach_listener(
    info: &ProcessInfo,
    tmp: &OwnedFd,
    socket_name: &str,
    deadline: Instant,
) -> Result<(), AttachError> {
    let trigger_name = format!(".attach_pid{}", info.ns_pid);
    let trigger = std::ffi::CString::new(trigger_name.as_str()).expect("no NUL");
    // SAFETY: openat relative to an fd we hold; O_EXCL|O_NOFOLLOW never
    // reuses or follows something planted there.
    let fd = unsafe {
        libc::openat(
            tmp.as_raw_fd(),
            trigger.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            0o600,
        )
    };
    let created = fd >= 0;
    if created {
        // SAFETY: fd is new and ours; fchown makes the trigger the JVM
        // user's, which HotSpot requires (or root).
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        unsafe { libc::fchown(fd.as_raw_fd(), info.euid, info.egid) };
    } else if io::Error::last_os_error().raw_os_error() != Some(libc::EEXIST) {
        return Err(io_error("creating the attach trigger")(
            io::Error::last_os_error(),
        ));
    }
    let remove_trigger = || {
        if created {
            // SAFETY: unlinking the file we created, relative to the same dir fd.
            unsafe { libc::unlinkat(tmp.as_raw_fd(), trigger.as_ptr(), 0) };
        }
    };
    // Only a confirmed JVM, and the same process we looked at (not a reused pid).
    let same = process_info(info.pid).is_some_and(|now| now.start_time == info.start_time);
    if !same || !is_hotspot_jvm(info.pid) {
        remove_trigger();
        return Err(AttachError::Gone(info.pid));
    }
    // SAFETY: kill with a confirmed pid.
    if unsafe { libc::kill(info.pid, libc::SIGQUIT) } != 0 {
        let error = io::Error::last_os_error();
        remove_trigger();
        return Err(AttachError::NotPermitted(format!(
            "signalling the JVM: {error}"
        )));
    }
    let mut found = false;
    while Instant::now() < deadline {
        if is_socket(tmp, socket_name) {
            found = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    remove_trigger();
    if found {
        Ok(())
    } else {
        Err(AttachError::TimedOut(
            "the JVM did not open its attach socket (started with -XX:+DisableAttachMechanism?)"
                .into(),
        ))
    }
}

/// Runs `f` with our effective uid/gid switched to the JVM's when we are
/// root, so the JVM's peer-credential check (exact match on old JDKs)
/// passes; switches back afterwards.
fn as_user<T>(info: &ProcessInfo, f: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
    // SAFETY: getegid/geteuid have no preconditions.
    let (euid, egid) = unsafe { (libc::geteuid(), libc::getegid()) };
    if euid != 0 || info.euid == 0 {
        return f();
    }
    // SAFETY: changing and then restoring our own effective ids; the
    // result of each call is checked.
    unsafe {
        if libc::setegid(info.egid) != 0 {
            return f();
        }
        if libc::seteuid(info.euid) != 0 {
            libc::setegid(egid);
            return f();
        }
    }
    let result = f();
    // SAFETY: restoring root (still our saved uid) and the old gid.
    unsafe {
        libc::seteuid(0);
        libc::setegid(egid);
    }
    result
}
