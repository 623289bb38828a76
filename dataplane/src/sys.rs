//! The one module of the dataplane allowed `unsafe`: thin, checked wrappers over the kernel
//! calls the workers need (thread ids, eventfd wake-ups). Every wrapper returns
//! `io::Result` and owns its file descriptors, so callers stay in safe code.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// The kernel's id of the calling thread (what `/proc/self/task/<tid>` and `top -H` show).
pub(crate) fn current_thread_id() -> i32 {
    // SAFETY: gettid has no preconditions and cannot fail.
    unsafe { libc::gettid() }
}

/// Clock ticks per second used by `/proc/<pid>/task/<tid>/stat` time fields.
pub(crate) fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf has no memory preconditions; a negative answer is handled below.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(ticks).ok().filter(|&t| t > 0).unwrap_or(100)
}

/// A kernel counter used to wake a worker loop that sleeps in the kernel.
#[derive(Debug)]
pub(crate) struct EventFd {
    fd: OwnedFd,
}

impl EventFd {
    pub(crate) fn new() -> io::Result<Self> {
        // SAFETY: eventfd takes no pointers; the result is checked before use.
        let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a freshly created descriptor that nothing else owns.
        Ok(Self { fd: unsafe { OwnedFd::from_raw_fd(raw) } })
    }

    /// Adds one to the counter, waking a thread blocked in [`EventFd::wait`].
    pub(crate) fn notify(&self) -> io::Result<()> {
        let one: u64 = 1;
        // SAFETY: writes exactly 8 bytes from a live u64 to a descriptor we own.
        let n = unsafe { libc::write(self.fd.as_raw_fd(), (&raw const one).cast(), std::mem::size_of::<u64>()) };
        // EAGAIN means the counter is saturated: the reader is already due to wake.
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::WouldBlock {
                return Err(err);
            }
        }
        Ok(())
    }

    /// Blocks until the counter is non-zero, then resets it; returns the number of
    /// notifications folded into this wake-up.
    pub(crate) fn wait(&self) -> io::Result<u64> {
        let mut count: u64 = 0;
        loop {
            // SAFETY: reads exactly 8 bytes into a live u64 from a descriptor we own.
            let n = unsafe { libc::read(self.fd.as_raw_fd(), (&raw mut count).cast(), std::mem::size_of::<u64>()) };
            if n >= 0 {
                return Ok(count);
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eventfd_folds_notifications_into_one_wake() {
        let fd = EventFd::new().expect("eventfd");
        fd.notify().expect("notify");
        fd.notify().expect("notify");
        assert_eq!(fd.wait().expect("wait"), 2);
    }

    #[test]
    fn thread_id_differs_between_threads() {
        let main = current_thread_id();
        let other = std::thread::spawn(current_thread_id).join().expect("join");
        assert!(main > 0 && other > 0);
        assert_ne!(main, other);
    }
}
