//! Ctrl-C and SIGTERM during a recording: the first one asks the recording
//! to stop (and is passed on to the launched command), the second ends the
//! process at once.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};

static WAKE_FD: AtomicI32 = AtomicI32::new(-1);
static RECEIVED: AtomicU32 = AtomicU32::new(0);
static LAST_SIGNAL: AtomicI32 = AtomicI32::new(0);
static CHILD: AtomicI32 = AtomicI32::new(0);

/// Installed handlers for SIGINT, SIGTERM and SIGHUP; restored on drop.
pub struct StopSignals {
    wake_read: OwnedFd,
    _wake_write: OwnedFd,
    previous: Vec<(i32, libc::sigaction)>,
}

extern "C" fn on_signal(signal: libc::c_int) {
    // Only async-signal-safe calls here: atomics, write, kill, _exit.
    let count = RECEIVED.fetch_add(1, Ordering::SeqCst) + 1;
    LAST_SIGNAL.store(signal, Ordering::SeqCst);
    if count >= 2 {
        // SAFETY: _exit is async-signal-safe.
        unsafe { libc::_exit(128 + signal) };
    }
    let child = CHILD.load(Ordering::SeqCst);
    if child > 0 {
        // SAFETY: kill is async-signal-safe.
        unsafe { libc::kill(child, signal) };
    }
    let fd = WAKE_FD.load(Ordering::SeqCst);
    if fd >= 0 {
        let byte = 1u8;
        // SAFETY: write is async-signal-safe; the pipe is non-blocking.
        unsafe { libc::write(fd, (&byte as *const u8).cast(), 1) };
    }
}

const SIGNALS: [i32; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

impl StopSignals {
    /// Installs the handlers.
    pub fn install() -> std::io::Result<StopSignals> {
        let mut fds = [0i32; 2];
        // SAFETY: pipe2 fills two fds we then own.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: both fds were just created and are owned here.
        let (wake_read, wake_write) =
            unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        WAKE_FD.store(wake_write.as_raw_fd(), Ordering::SeqCst);
        RECEIVED.store(0, Ordering::SeqCst);
        let mut previous = Vec::new();
        for signal in SIGNALS {
            // SAFETY: installing a plain handler; the old action is saved.
            unsafe {
                let mut action: libc::sigaction = std::mem::zeroed();
                action.sa_sigaction = on_signal as *const () as libc::sighandler_t;
                libc::sigemptyset(&mut action.sa_mask);
                action.sa_flags = 0;
                let mut old: libc::sigaction = std::mem::zeroed();
                if libc::sigaction(signal, &action, &mut old) == 0 {
                    previous.push((signal, old));
                }
            }
        }
        Ok(StopSignals {
            wake_read,
            _wake_write: wake_write,
            previous,
        })
    }

    /// The fd that becomes readable when a signal arrives (for poll).
    pub fn wake_fd(&self) -> i32 {
        self.wake_read.as_raw_fd()
    }

    /// The first stop signal received, if any.
    pub fn received(&self) -> Option<i32> {
        (RECEIVED.load(Ordering::SeqCst) > 0).then(|| LAST_SIGNAL.load(Ordering::SeqCst))
    }

    /// Sets the launched command that signals are passed on to (0: none).
    pub fn forward_to(&self, pid: i32) {
        CHILD.store(pid, Ordering::SeqCst);
    }
}

impl Drop for StopSignals {
    fn drop(&mut self) {
        WAKE_FD.store(-1, Ordering::SeqCst);
        CHILD.store(0, Ordering::SeqCst);
        for (signal, old) in &self.previous {
            // SAFETY: restoring the saved action.
            unsafe { libc::sigaction(*signal, old, std::ptr::null_mut()) };
        }
    }
}
