//! The one module of the dataplane allowed `unsafe`: thin, checked wrappers over the kernel
//! calls the workers need (thread ids, eventfd wake-ups, batched socket I/O through epoll
//! or io_uring, and the epoll set that watches the io layer's TCP streams under either
//! backend), and the counting wrapper the binary installs around its allocator. Every
//! wrapper returns `io::Result` and owns its file descriptors and kernel-visible buffers, so
//! callers stay in safe code.

pub(crate) mod epoll;
pub(crate) mod heap;
pub(crate) mod mmsg;
mod sockaddr;
pub(crate) mod uring;

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

pub(crate) use self::epoll::{Epoll, Events, Interest, REGISTRY_EVENTS, Readiness};
use crate::batch::SocketIndex;

/// What a backend's `poll` hands the io layer, together with its send side.
#[derive(Debug)]
pub(crate) enum Event<'a> {
    /// A datagram received on UDP socket `socket`, writable in place.
    Datagram { socket: SocketIndex, source: SocketAddr, bytes: &'a mut [u8] },
    /// An fd registered under `token` in the set the epoll backend waits on is ready.
    Ready { token: u64, readiness: Readiness },
    /// Some fd of the registry the io_uring backend polls is ready: wait on it with a zero
    /// timeout to learn which. The ring polls it again only after this event is handled.
    RegistryReady,
}

/// The kernel's id of the calling thread (what `/proc/self/task/<tid>` and `top -H` show).
pub(crate) fn current_thread_id() -> i32 {
    // SAFETY: gettid has no preconditions and cannot fail.
    unsafe { libc::gettid() }
}

/// Raises this process's soft limit of open files to its hard limit. Returns the soft limit
/// before and after.
pub(crate) fn raise_open_files_limit() -> io::Result<(u64, u64)> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes only into `limit`, which lives for the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let before = limit.rlim_cur;
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: setrlimit only reads `limit`, which lives for the call.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok((before, limit.rlim_cur))
}

/// Clock ticks per second used by `/proc/<pid>/task/<tid>/stat` time fields.
pub(crate) fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf has no memory preconditions; a negative answer is handled below.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(ticks).ok().filter(|&t| t > 0).unwrap_or(100)
}

/// A kernel counter that wakes a worker loop waiting in epoll or io_uring: senders
/// [`EventFd::notify`], the loop sees the fd readable and [`EventFd::drain`]s it.
#[derive(Debug)]
pub(crate) struct EventFd {
    fd: OwnedFd,
}

impl EventFd {
    pub(crate) fn new() -> io::Result<Self> {
        // SAFETY: eventfd takes no pointers; the result is checked before use.
        let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a freshly created descriptor that nothing else owns.
        Ok(Self { fd: unsafe { OwnedFd::from_raw_fd(raw) } })
    }

    /// Adds one to the counter, making the fd readable.
    pub(crate) fn notify(&self) -> io::Result<()> {
        let one: u64 = 1;
        // SAFETY: writes exactly 8 bytes from a live u64 to a descriptor we own.
        let n = unsafe { libc::write(self.fd.as_raw_fd(), (&raw const one).cast(), std::mem::size_of::<u64>()) };
        // EAGAIN means the counter is saturated: the loop is already due to wake.
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::WouldBlock {
                return Err(err);
            }
        }
        Ok(())
    }

    /// Resets the counter; returns how many notifications it held (0 if none).
    pub(crate) fn drain(&self) -> io::Result<u64> {
        let mut count: u64 = 0;
        // SAFETY: reads exactly 8 bytes into a live u64 from a descriptor we own.
        let n = unsafe { libc::read(self.fd.as_raw_fd(), (&raw mut count).cast(), std::mem::size_of::<u64>()) };
        if n < 0 {
            let err = io::Error::last_os_error();
            return if err.kind() == io::ErrorKind::WouldBlock { Ok(0) } else { Err(err) };
        }
        Ok(count)
    }
}

impl AsRawFd for EventFd {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eventfd_folds_notifications_into_one_wake() {
        let fd = EventFd::new().expect("eventfd");
        assert_eq!(fd.drain().expect("drain"), 0);
        fd.notify().expect("notify");
        fd.notify().expect("notify");
        assert_eq!(fd.drain().expect("drain"), 2);
        assert_eq!(fd.drain().expect("drain"), 0);
    }

    #[test]
    fn thread_id_differs_between_threads() {
        let main = current_thread_id();
        let other = std::thread::spawn(current_thread_id).join().expect("join");
        assert!(main > 0 && other > 0);
        assert_ne!(main, other);
    }
}
